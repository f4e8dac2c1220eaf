//! Issue 37, item 6: compaction's lock lost mid-pass. The lock is a session advisory lock on
//! one idle connection; when that session ends (here `pg_terminate_backend`, as an
//! `idle_session_timeout` or a network drop would) another compactor takes the lock while the
//! first one's pass goes on through its pool. Its writes are fenced (`db::Fence`): its next
//! transaction is refused, and the new holder does the rest. Every point is there once.
//!
//! Where the kill lands: the first compactor's progress callback, called by the day merge
//! after each batch of hour blocks it has committed (`day D: merged up to influencer N`),
//! terminates the lock's session and starts the second compactor, and returns only once the
//! second one has claimed the work (its fencing token is the current one): so the first
//! compactor is inside the day merge, between two of its batches, with the rest of the day's
//! blocks still to merge, when it loses the lock.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use influencer_analytics::{
    db::FenceLost,
    jobs::compaction::{self, Budget, LOCK_KEY, PassReport},
    series::{self, DAY_MS},
    testing::TestDb,
};

use crate::common::{SERIAL, report};

/// More than one batch of the day merge (312 hour blocks of 64 influencers).
const INFLUENCERS: i64 = 25_000;
const HOURS: i64 = 12;

type Row = (i64, i64, i32, i32);

/// Every point of every influencer, through the one read path.
async fn read_back(pool: &sqlx::PgPool, from_ms: i64, to_ms: i64) -> Vec<Row> {
    let mut rows: Vec<Row> = series::read::window(pool, (i64::MIN, i64::MAX), from_ms, to_ms)
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

async fn token(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select coalesce(max(token), 0) from work_fences where lock_key = $1")
        .bind(LOCK_KEY)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Ends the session that holds compaction's advisory lock in this database.
async fn terminate_the_lock_session(pool: &sqlx::PgPool) -> i32 {
    let pid: i32 = sqlx::query_scalar(
        "select pid from pg_locks
         where locktype = 'advisory' and granted
           and classid = ($1::bigint >> 32)::oid and objid = ($1::bigint & 4294967295)::oid
           and database = (select oid from pg_database where datname = current_database())",
    )
    .bind(LOCK_KEY)
    .fetch_one(pool)
    .await
    .unwrap();
    let ended: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(ended, "the lock's session {pid} was not ended");
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compactor_that_loses_its_lock_mid_day_stops_and_the_other_finishes() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let day = (chrono::Utc::now().timestamp_millis().div_euclid(DAY_MS) - 2) * DAY_MS;
    sqlx::query(
        "insert into influencer_metrics (influencer_id, slot, fetched_at, follower_count, following_count)
         select 1000000 + i, s, s + interval '120 ms', 5000 + (i * 7 + h * 13) % 1000, 10 + h
         from generate_series(0, $1 - 1) i, generate_series(0, $2 - 1) h,
              lateral (select to_timestamp($3 / 1000.0) + h * interval '1 hour'
                              + (i % 3600) * interval '1 second' as s) t",
    )
    .bind(INFLUENCERS)
    .bind(HOURS)
    .bind(day)
    .execute(&pool)
    .await
    .unwrap();
    let (from, to) = (day, day + DAY_MS - 1);
    let stored = read_back(&pool, from, to).await;
    assert_eq!(stored.len() as i64, INFLUENCERS * HOURS);
    // The hours first, so that the pass under test is the day merge.
    let hours = compaction::run_stages(&pool, Budget::FULL, false, &mut |_| {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hours.chunks as i64, HOURS, "{hours:?}");

    let tokens_before = token(&pool).await;
    let takeover: Arc<Mutex<Option<(String, i32)>>> = Arc::default();
    let second: Arc<Mutex<Option<tokio::task::JoinHandle<anyhow::Result<PassReport>>>>> =
        Arc::default();
    let mut progress = {
        let (pool, takeover, second) = (pool.clone(), takeover.clone(), second.clone());
        move |line: &str| {
            if !line.contains("merged up to influencer") || takeover.lock().unwrap().is_some() {
                return;
            }
            let handle = tokio::runtime::Handle::current();
            let pid = tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let pid = terminate_the_lock_session(&pool).await;
                    let pool2 = pool.clone();
                    *second.lock().unwrap() = Some(tokio::spawn(async move {
                        compaction::run_now(
                            &pool2,
                            Budget::FULL,
                            Duration::from_secs(60),
                            &mut |_| {},
                        )
                        .await
                    }));
                    // Back to the first compactor only once the second has claimed the work.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while token(&pool).await < tokens_before + 2 {
                        assert!(
                            Instant::now() < deadline,
                            "the second compactor never took over"
                        );
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    pid
                })
            });
            *takeover.lock().unwrap() = Some((line.to_string(), pid));
        }
    };
    let first = compaction::run(&pool, Budget::FULL, &mut progress).await;
    let (landed, pid) = takeover
        .lock()
        .unwrap()
        .clone()
        .expect("the day merge reported a batch: the kill landed inside it");
    let error = first.expect_err("the first compactor went on after losing its lock");
    assert!(
        error
            .chain()
            .any(|c| c.downcast_ref::<FenceLost>().is_some()),
        "{error:#}"
    );
    let second = second.lock().unwrap().take().unwrap();
    let finished = second.await.unwrap().unwrap();
    assert_eq!(finished.days, 1, "{finished:?}");

    let after = read_back(&pool, from, to).await;
    assert_eq!(after.len(), stored.len(), "points missing or twice");
    assert!(
        after == stored,
        "the points read back are not the ones stored"
    );
    let (segments, points): (i64, i64) = sqlx::query_as(
        "select count(*), coalesce(sum(points), 0)::bigint from influencer_segments",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((segments, points), (INFLUENCERS, INFLUENCERS * HOURS));
    let hour_blocks: i64 = sqlx::query_scalar("select count(*) from influencer_hour_blocks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(hour_blocks, 0);
    report(
        "compaction_lock_lost",
        format!(
            "compaction_lock_lost: {INFLUENCERS} influencers x {HOURS} hours; the lock's session {pid} ended after \
             \"{landed}\"; the first compactor refused at its next transaction ({error:#}); the second merged the rest: \
             {} points read back, {} stored, 0 missing, 0 twice, {segments} day segments",
            after.len(),
            stored.len()
        ),
    );
}
