//! Scenario 8: `kill -9` of a compaction half-way (issue 17), run again, killed again, run to
//! the end: after each kill the read path answers exactly the points stored before, and at the
//! end every point is in a segment once.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use influencer_analytics::{jobs::compaction, series, testing::TestDb};

use crate::common::{SERIAL, report};

const INFLUENCERS: i64 = 4_000;
const HOURS: i64 = 12;

type Row = (i64, i64, i32, i32);

async fn raw_points(db: &TestDb) -> Vec<Row> {
    let mut rows: Vec<Row> = sqlx::query_as(
        "select influencer_id, (extract(epoch from slot) * 1000)::bigint, follower_count, following_count
         from influencer_metrics",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.sort_unstable();
    rows
}

/// Every point of every influencer, through the one read path.
async fn read_back(db: &TestDb, from_ms: i64, to_ms: i64) -> Vec<Row> {
    let mut rows: Vec<Row> = series::read::window(&db.pool, (i64::MIN, i64::MAX), from_ms, to_ms)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|(id, points)| {
            points
                .into_iter()
                .map(move |p| (id, p.slot_ms, p.follower_count, p.following_count))
        })
        .collect();
    rows.sort_unstable();
    rows
}

fn compact(db: &TestDb) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_influencer-analytics"))
        .arg("compact")
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_killed_half_way_and_run_again_ends_with_the_same_points() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    // Twelve hours of the latest day compaction may merge (yesterday, or the day before in
    // the first minutes after midnight), every influencer once a minute.
    let day_s = compaction::latest_settled_day_ms(chrono::Utc::now().timestamp_millis()) / 1000;
    for hour in 0..HOURS {
        sqlx::query(
            "insert into influencer_metrics
             select id, to_timestamp(t), to_timestamp(t) + interval '150 ms',
                    100000 + ((id * 7919 + t / 60 * 104729) % 20000)::int, 1000 + ((id + t / 60) % 97)::int
             from generate_series(1000000::bigint, 1000000 + $1 - 1) id,
                  generate_series($2::bigint, $2 + 3540, 60) t",
        )
        .bind(INFLUENCERS)
        .bind(day_s + hour * 3600)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let before = raw_points(&db).await;
    assert_eq!(before.len() as i64, INFLUENCERS * HOURS * 60);
    let (from_ms, to_ms) = (day_s * 1000, (day_s + 86_400) * 1000 - 1);
    let mut kills = Vec::new();

    // Run 1: killed as soon as it reports its first hour compacted.
    let mut first = compact(&db);
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let line = lines.next().expect("a progress line").unwrap();
    assert!(line.starts_with("hour "), "{line}");
    first.kill().unwrap();
    first.wait().unwrap();
    kills.push("after its first hour".to_string());
    let raw_left: i64 = sqlx::query_scalar("select count(*) from influencer_metrics")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        raw_left < before.len() as i64,
        "the first hour was committed"
    );
    assert_eq!(read_back(&db, from_ms, to_ms).await, before, "after kill 1");

    // Run 2: killed a moment in, wherever it is (mid-hour, between hours, or merging the day).
    let mut second = compact(&db);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut out = String::new();
    second.kill().unwrap();
    second.wait().unwrap();
    std::io::Read::read_to_string(&mut second.stdout.take().unwrap(), &mut out).unwrap();
    // Where it landed: its last progress line, and what the tiers held at the kill (hours
    // still raw: in the hours; none, and day segments written: in the day merge).
    let (raw_hours, day_segments): (i64, i64) = sqlx::query_as(
        "select (select count(*) from timescaledb_information.chunks
                 where hypertable_name = 'influencer_metrics'),
                (select count(*) from influencer_segments)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let stage = match (raw_hours, day_segments) {
        (0, 0) => "between the hours and the day merge",
        (0, _) => "inside the day merge",
        _ => "among the hours",
    };
    kills.push(format!(
        "after {:.1} s, {stage} ({} progress lines, the last {:?}; {raw_hours} hours raw, {day_segments} day segments)",
        started.elapsed().as_secs_f64(),
        out.lines().count(),
        out.lines().last().unwrap_or("none")
    ));
    assert_eq!(read_back(&db, from_ms, to_ms).await, before, "after kill 2");

    // Run 3: to the end.
    let third = compact(&db).wait_with_output().unwrap();
    assert!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stdout)
    );
    let after = read_back(&db, from_ms, to_ms).await;
    let counts: (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from influencer_metrics), (select count(*) from influencer_segments),
                (select coalesce(sum(points), 0)::bigint from all_segments)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let missing = before
        .iter()
        .filter(|p| after.binary_search(p).is_err())
        .count();
    let twice = after.len() as i64 - (before.len() - missing) as i64;
    report(
        "compaction_kill",
        format!(
            "compaction_kill: {} points ({INFLUENCERS} influencers × {HOURS} hours); compaction killed {} then run to the end: {} read back, {missing} missing, {twice} twice; {} raw rows left, {} day segments holding {} points",
            before.len(),
            kills.join(" and "),
            after.len(),
            counts.0,
            counts.1,
            counts.2
        ),
    );
    assert_eq!(after, before);
    assert_eq!(counts, (0, INFLUENCERS, before.len() as i64));
}
