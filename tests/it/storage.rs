//! The two tiers (issue 17): compaction into segments, late points, retention, gaps; every
//! answer the same before and after compaction. Against the real TimescaleDB.

use std::time::Duration;

use chrono::Utc;
use influencer_analytics::{
    jobs::{
        compaction::{self, Budget},
        retention,
    },
    model::Point,
    queue::points::Outcomes,
    schedule::SlotGrid,
    series::{self, DAY_MS, HOUR_MS},
    sink::writer,
};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde_json::Value;

use crate::api::TestApi;

const IDS: [i64; 4] = [1_000_001, 1_000_002, 1_000_003, 1_000_004];

/// Midnight UTC `days` days ago, epoch ms.
fn midnight_days_ago(days: i64) -> i64 {
    (Utc::now().timestamp_millis().div_euclid(DAY_MS) - days) * DAY_MS
}

/// The API over a database of its own, with [`IDS`] registered 30 days ago.
struct Fixture {
    api: TestApi,
    db: sqlx::PgPool,
}

impl Fixture {
    async fn start() -> Self {
        let api = TestApi::start().await;
        for id in IDS {
            sqlx::query(
                "with added as (
                     insert into influencers (influencer_id, username, added_at)
                     values ($1, 'influencer-' || $1, now() - interval '30 days')
                     returning influencer_id, added_at
                 )
                 insert into tracking_periods (influencer_id, expected_from)
                 select influencer_id, added_at from added",
            )
            .bind(id)
            .execute(&api.db.pool)
            .await
            .unwrap();
        }
        let db = api.db.pool.clone();
        Self { api, db }
    }

    /// A successful answer's body.
    async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.api.get(path).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// Inserts points straight into the hot tier.
    async fn insert(&self, points: &[(i64, i64, i32, i32)]) {
        let ids: Vec<i64> = points.iter().map(|p| p.0).collect();
        let slots: Vec<chrono::DateTime<Utc>> = points
            .iter()
            .map(|p| chrono::DateTime::from_timestamp_millis(p.1).unwrap())
            .collect();
        let followers: Vec<i32> = points.iter().map(|p| p.2).collect();
        let following: Vec<i32> = points.iter().map(|p| p.3).collect();
        sqlx::query(
            "insert into influencer_metrics
             select u.id, u.slot, u.slot + interval '200 ms', u.f, u.g
             from unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::int[]) u(id, slot, f, g)",
        )
        .bind(&ids)
        .bind(&slots)
        .bind(&followers)
        .bind(&following)
        .execute(&self.db)
        .await
        .unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.db).await.unwrap()
    }

    /// Every day row's summary is in the pack of its span, and is the summary of its own points;
    /// no pack holds a day that has no row (migration 0006).
    async fn assert_packs_agree_with_days(&self, when: &str) {
        use influencer_analytics::series::{Summary, codec, pack};
        let ms = |t: chrono::DateTime<Utc>| t.timestamp_millis();
        let days: Vec<(i64, i64, i64, Vec<u8>)> = sqlx::query_as(
            "select influencer_id, (extract(epoch from period_start) * 1000)::bigint,
                    (extract(epoch from period_end) * 1000)::bigint, data_head || data_tail
             from influencer_segments order by 1, 2",
        )
        .fetch_all(&self.db)
        .await
        .unwrap();
        let from_days: Vec<(i64, (i64, i64), Summary)> = days
            .iter()
            .map(|(id, start, end, data)| {
                let points = codec::decode(data).unwrap();
                (*id, (*start, *end), Summary::of(&points))
            })
            .collect();
        let packs: Vec<(i64, chrono::DateTime<Utc>, Vec<u8>)> = sqlx::query_as(
            "select influencer_id, period_start, days from influencer_summary_packs order by 1, 2",
        )
        .fetch_all(&self.db)
        .await
        .unwrap();
        let mut from_packs = Vec::new();
        for (id, start, bytes) in &packs {
            for (period, summary) in pack::decode(ms(*start), bytes).unwrap() {
                assert_eq!(
                    pack::start_of(period.0),
                    ms(*start),
                    "{when}: a day in another span's pack"
                );
                from_packs.push((*id, period, summary));
            }
        }
        assert_eq!(
            from_packs, from_days,
            "summary packs against the day rows {when}"
        );
    }

    async fn compact(&self) -> compaction::PassReport {
        compaction::run(&self.db, Budget::FULL, &mut |_| {})
            .await
            .unwrap()
            .expect("no other compactor")
    }
}

/// The read path decodes `timestamptz` as epoch milliseconds from PostgreSQL's binary form
/// itself (`series::read::EpochMs`): the same milliseconds chrono gives, before and after
/// PostgreSQL's epoch (2000), with microseconds rounded down, and in text form too.
#[tokio::test]
async fn timestamps_are_read_as_the_milliseconds_chrono_reads() {
    use series::read::EpochMs;
    let fixture = Fixture::start().await;
    let sql = "select t from unnest(array[
                   '2026-01-01 00:00:00+00', '2026-11-30 23:59:59.9999+00',
                   '2000-01-01 00:00:00+00', '1999-12-31 23:59:59.9996+00',
                   '1970-01-01 00:00:00.0005+00', '1969-12-31 23:59:59.9995+00',
                   '2262-04-11 23:47:16.854775+00']::timestamptz[]) t";
    let as_chrono: Vec<chrono::DateTime<Utc>> = sqlx::query_scalar(sql)
        .fetch_all(&fixture.db)
        .await
        .unwrap();
    let binary: Vec<EpochMs> = sqlx::query_scalar(sql)
        .fetch_all(&fixture.db)
        .await
        .unwrap();
    let want: Vec<EpochMs> = as_chrono
        .iter()
        .map(|t| EpochMs(t.timestamp_millis()))
        .collect();
    assert_eq!(binary, want);
    assert_eq!(want[3], EpochMs(946_684_799_999));
    // A query without parameters sent as one string is answered in text form.
    use sqlx::Executor;
    let text: Vec<EpochMs> = fixture
        .db
        .fetch_all(sql)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get(row, 0))
        .collect();
    assert_eq!(text, want);
}

/// Random walks on each influencer's 1-minute grid from `from_ms` to `to_ms`, with a few slots
/// missing and some minutes following nobody (no ratio).
fn walks(from_ms: i64, to_ms: i64, seed: u64) -> Vec<(i64, i64, i32, i32)> {
    let grid = SlotGrid::new(Duration::from_secs(60));
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for id in IDS {
        let (mut f, mut g) = (
            rng.random_range(100_000..10_000_000i64),
            rng.random_range(0..3000i64),
        );
        let mut slot = grid.slot_at_or_after(id, from_ms);
        while slot < to_ms {
            f = (f + rng.random_range(-20_000..20_000)).max(0);
            g = (g + rng.random_range(-100..100)).max(0);
            if rng.random_range(0..100) >= 3 {
                let following = if rng.random_range(0..50) == 0 {
                    0
                } else {
                    g as i32
                };
                out.push((id, slot, f as i32, following));
            }
            slot += 60_000;
        }
    }
    out
}

/// Random ranges (raw and with a step) over `[from, to]` seconds.
fn ranges(from: i64, to: i64, seed: u64, n: usize) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let steps = ["60", "7m", "15m", "1h", "2h", "6h", "1d", "7d"];
    (0..n)
        .map(|i| {
            let id = IDS[rng.random_range(0..IDS.len())];
            let start = rng.random_range(from..to);
            if i % 3 == 0 {
                let end = (start + rng.random_range(0..6 * 86_400)).min(to);
                format!("/influencer_analytics/{id}?start_time={start}&end_time={end}")
            } else {
                let end = rng.random_range(start..=to);
                let step = steps[rng.random_range(0..steps.len())];
                format!("/influencer_analytics/{id}?start_time={start}&end_time={end}&step={step}")
            }
        })
        .collect()
}

/// Points across four closed days and the current hour; answers to random ranges (raw and
/// bucketed, crossing hours, days and the tiers) before compaction, after the hours are
/// compacted, and after the days are merged: identical, value for value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_answers_are_identical_before_and_after_compaction() {
    let f = Fixture::start().await;
    // Four closed days (whatever the time of day the test runs at), then the last half hour.
    let from = midnight_days_ago(6);
    let now = Utc::now().timestamp_millis();
    f.insert(&walks(from, midnight_days_ago(2), 7)).await;
    f.insert(&walks(now - 30 * 60_000, now - 60_000, 8)).await;
    // Re-fetches of stored slots that reached the sink late, with other counts: the first
    // stored answer (the raw row) is the one every read and compaction keep.
    let refetched = sqlx::query(
        "insert into late_points (influencer_id, slot, fetched_at, follower_count, following_count)
         select influencer_id, slot, fetched_at + interval '7 minutes', follower_count + 7777,
                following_count + 3
         from influencer_metrics where extract(minute from slot) in (17, 41)",
    )
    .execute(&f.db)
    .await
    .unwrap()
    .rows_affected();
    assert!(refetched > 100, "{refetched}");
    let (from_s, to_s) = (from / 1000 - 3600, now / 1000);
    let paths = ranges(from_s, to_s, 11, 120);
    let mut before = Vec::new();
    for path in &paths {
        before.push(f.get(path).await);
    }
    // Buckets agree with TimescaleDB's own time_bucket over the raw rows.
    for id in IDS {
        let (start, end) = (from_s, to_s);
        let sql: Vec<(i64, i64, i32, i32, i32, f64)> = sqlx::query_as(
            "select extract(epoch from time_bucket('1 hour', slot))::bigint, count(*), min(follower_count),
                    max(follower_count), last(follower_count, slot), avg(follower_count)::float8
             from influencer_metrics where influencer_id = $1
               and slot >= to_timestamp($2) and slot <= to_timestamp($3)
             group by 1 order by 1",
        )
        .bind(id)
        .bind(start as f64)
        .bind(end as f64)
        .fetch_all(&f.db)
        .await
        .unwrap();
        let api = f
            .get(&format!(
                "/influencer_analytics/{id}?start_time={start}&end_time={end}&step=1h"
            ))
            .await;
        let buckets = api["points"].as_array().unwrap();
        assert_eq!(buckets.len(), sql.len(), "influencer {id}");
        for (b, row) in buckets.iter().zip(&sql) {
            assert_eq!(b["time"].as_i64(), Some(row.0));
            assert_eq!(b["samples"].as_i64(), Some(row.1));
            assert_eq!(b["follower_count"]["min"].as_i64(), Some(row.2 as i64));
            assert_eq!(b["follower_count"]["max"].as_i64(), Some(row.3 as i64));
            assert_eq!(b["follower_count"]["last"].as_i64(), Some(row.4 as i64));
            let avg = b["follower_count"]["avg"].as_f64().unwrap();
            assert!(
                (avg - row.5).abs() <= row.5.abs() * 1e-12,
                "{avg} vs {}",
                row.5
            );
        }
    }
    let points_before = f.count("select count(*) from influencer_metrics").await;

    // Each hour read in several scans of its chunk (the ids modulo about 6: some scans find
    // one influencer, some none), as an hour of a million influencers is.
    let small_passes = Budget {
        pass_points: 50,
        ..Budget::FULL
    };
    let hours = compaction::run_stages(&f.db, small_passes, false, &mut |_| {})
        .await
        .unwrap()
        .unwrap();
    assert!(hours.chunks >= 4 * 24, "{hours:?}");
    assert_eq!(f.count("select count(*) from influencer_segments").await, 0);
    // Four closed days (and the last half hour's, if its hour has closed).
    assert!(
        f.count("select count(*) from compaction_days where merged_at is null")
            .await
            >= 4
    );
    for (path, want) in paths.iter().zip(&before) {
        assert_eq!(
            &f.get(path).await,
            want,
            "{path} after the hours were compacted"
        );
    }
    // The four closed days, and the day the last half hour began in if it was yesterday and
    // has settled (the test run in the first half hour after midnight).
    let settled = compaction::latest_settled_day_ms(Utc::now().timestamp_millis());
    let recent_day = (now - 30 * 60_000).div_euclid(DAY_MS) * DAY_MS;
    let days_due = 4 + u64::from(recent_day < midnight_days_ago(0) && recent_day <= settled);
    let days = f.compact().await;
    assert_eq!(days.days, days_due, "{days:?}");
    let hot_left = f.count("select count(*) from influencer_metrics").await;
    let cold: i64 = f
        .count("select coalesce(sum(points), 0)::bigint from all_segments")
        .await;
    assert_eq!(
        cold + hot_left,
        points_before,
        "every point is in exactly one tier"
    );
    assert_eq!(
        f.count("select count(*) from influencer_segments where period_end - period_start = interval '1 day'").await,
        days_due as i64 * IDS.len() as i64
    );
    // A day's out-of-line part fills whole TOAST chunks: the chunk size the writer splits at
    // is the server's own, and the row keeps the rest.
    let toast_tables: Vec<String> = sqlx::query_scalar(
        "select t.relname::text from pg_class c join pg_class t on t.oid = c.reltoastrelid
         where c.oid in (select format('%I.%I', chunk_schema, chunk_name)::regclass
                         from timescaledb_information.chunks
                         where hypertable_name = 'influencer_segments')",
    )
    .fetch_all(&f.db)
    .await
    .unwrap();
    let (mut chunks, mut short) = (0, 0);
    for table in toast_tables {
        chunks += f
            .count(&format!("select count(*) from pg_toast.{table}"))
            .await;
        short += f
            .count(&format!(
                "select count(*) from pg_toast.{table} where length(chunk_data) <> {}",
                series::store::TOAST_CHUNK_BYTES
            ))
            .await;
    }
    assert!(chunks >= 4 * IDS.len() as i64, "{chunks} TOAST chunks");
    assert_eq!(short, 0, "TOAST chunks shorter than a whole one");
    assert_eq!(
        f.count(&format!(
            "select count(*) from influencer_segments
             where length(data_tail) >= {0} or length(data_head) % {0} <> 0",
            series::store::TOAST_CHUNK_BYTES
        ))
        .await,
        0
    );
    // The merged days' hour segments are gone, chunks and all.
    assert_eq!(
        f.count("select count(*) from influencer_hour_blocks where period_start < now() - interval '2 days'").await,
        0
    );
    assert_eq!(
        f.count("select count(*) from timescaledb_information.chunks where hypertable_name = 'influencer_hour_blocks' and range_end <= now() - interval '2 days'").await,
        0
    );
    f.assert_packs_agree_with_days("after the days were merged")
        .await;
    assert!(
        f.count("select count(*) from influencer_summary_packs")
            .await
            >= IDS.len() as i64
    );
    for (path, want) in paths.iter().zip(&before) {
        assert_eq!(
            &f.get(path).await,
            want,
            "{path} after the days were merged"
        );
    }
    // A second pass has nothing to do.
    let again = f.compact().await;
    assert_eq!((again.chunks, again.days, again.segments), (0, 0, 0));
}

fn point(pk: i64, slot_ms: i64, follower_count: i32) -> Point {
    Point {
        pk,
        slot_ms,
        fetched_ms: Utc::now().timestamp_millis(),
        follower_count,
        following_count: 10,
    }
}

/// A point the sink receives for an hour already compacted is stored once (a repeat of a stored
/// slot keeps the stored value), shows in the range at once, and joins its segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_point_is_stored_once_and_shows_in_the_range() {
    let f = Fixture::start().await;
    let grid = SlotGrid::new(Duration::from_secs(60));
    let id = IDS[0];
    let day = midnight_days_ago(2);
    let first = grid.slot_at_or_after(id, day + 10 * HOUR_MS);
    let slots: Vec<i64> = (0..60)
        .map(|i| first + i * 60_000)
        .filter(|s| *s != first + 30 * 60_000)
        .collect();
    f.insert(
        &slots
            .iter()
            .map(|&s| (id, s, 5_000, 10))
            .collect::<Vec<_>>(),
    )
    .await;
    f.compact().await;
    assert_eq!(f.count("select count(*) from influencer_metrics").await, 0);
    let (start, end) = (first / 1000, (first + 59 * 60_000) / 1000 + 1);
    let path = format!("/influencer_analytics/{id}?start_time={start}&end_time={end}");
    assert_eq!(f.get(&path).await["points"].as_array().unwrap().len(), 59);

    // The missing slot arrives late, with a repeat of a stored slot carrying another value.
    let late = Outcomes {
        points: vec![
            point(id, first + 30 * 60_000, 7_777),
            point(id, first, 9_999),
        ],
        ..Outcomes::default()
    };
    let report = writer::write(&f.db, &[&late]).await.unwrap();
    assert_eq!(report.points_stored, 2, "both land in late_points");
    assert_eq!(f.count("select count(*) from late_points").await, 2);
    // The whole day at step=1d: from the late points and the segment's points before the
    // merge, from the day's summary (its pack) after it.
    let day_path = format!(
        "/influencer_analytics/{id}?start_time={}&end_time={}&step=1d",
        day / 1000,
        (day + DAY_MS) / 1000 - 1
    );
    for stage in ["before the merge", "after the merge"] {
        let bucket = f.get(&day_path).await["points"][0].clone();
        assert_eq!(bucket["samples"], 60, "{stage}: {bucket}");
        assert_eq!(bucket["follower_count"]["max"], 7_777, "{stage}: {bucket}");
        let points = f.get(&path).await["points"].as_array().unwrap().clone();
        assert_eq!(points.len(), 60, "{stage}");
        assert_eq!(points[30]["follower_count"], 7_777, "{stage}");
        assert_eq!(
            points[0]["follower_count"], 5_000,
            "{stage}: the stored value wins"
        );
        if stage == "before the merge" {
            let merged = f.compact().await;
            assert_eq!(merged.late_points, 1, "{merged:?}");
            assert_eq!(f.count("select count(*) from late_points").await, 0);
        }
    }
    assert_eq!(
        f.count("select coalesce(sum(points), 0)::bigint from influencer_segments")
            .await,
        60
    );
    assert_eq!(
        f.count("select count(*) from influencer_segments").await,
        1,
        "one day segment"
    );
    f.assert_packs_agree_with_days("after the late point's merge")
        .await;
}

/// Issue 37: one closed hour that cannot be compacted (here a day segment of its influencer
/// that cannot be decoded) is set aside with its error, and every other hour is compacted; it
/// waits for its retry, and once the cause is gone its retry compacts it and it leaves the
/// quarantine. Before, its error ended every pass before the later hours, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_fails_is_set_aside_and_the_rest_is_compacted() {
    let f = Fixture::start().await;
    let day = midnight_days_ago(3);
    let (bad, good) = (IDS[0], IDS[1]);
    sqlx::query(
        "insert into influencer_segments (influencer_id, period_start, period_end, points,
                                          lateness_max_ms, lateness_p99_ms, data_head, data_tail)
         values ($1, $2, $2 + interval '1 day', 60, 0, 0, '', '\\x02ff'::bytea)",
    )
    .bind(bad)
    .bind(chrono::DateTime::from_timestamp_millis(day).unwrap())
    .execute(&f.db)
    .await
    .unwrap();
    // The bad influencer's hour first, then a later hour of another influencer.
    f.insert(&[(bad, day + 5 * HOUR_MS + 7_000, 10, 1)]).await;
    f.insert(&[(good, day + 6 * HOUR_MS + 9_000, 20, 2)]).await;

    let first = f.compact().await;
    assert_eq!((first.chunks, first.quarantined), (1, 1), "{first:?}");
    let status = compaction::status(&f.db).await.unwrap();
    assert_eq!(status.quarantined.len(), 1, "{status:?}");
    let set_aside = &status.quarantined[0];
    assert!(set_aside.work.starts_with("hour "), "{set_aside:?}");
    assert!(set_aside.error.contains("segment"), "{set_aside:?}");
    assert_eq!(set_aside.failures, 1);
    assert!(set_aside.retry_at > Utc::now() + chrono::Duration::minutes(9));
    assert_eq!(
        f.count("select count(*) from influencer_metrics").await,
        1,
        "the bad hour stays raw, nothing lost"
    );

    // Waiting for its retry: left alone, not tried again every minute.
    let waiting = f.compact().await;
    assert_eq!((waiting.chunks, waiting.quarantined), (0, 1), "{waiting:?}");
    assert_eq!(
        compaction::status(&f.db).await.unwrap().quarantined[0].failures,
        1
    );

    // The cause gone and its retry due: compacted, and out of the quarantine.
    sqlx::query("delete from influencer_segments where influencer_id = $1")
        .bind(bad)
        .execute(&f.db)
        .await
        .unwrap();
    sqlx::query("update compaction_quarantine set retry_at = now()")
        .execute(&f.db)
        .await
        .unwrap();
    let retried = f.compact().await;
    assert_eq!((retried.chunks, retried.quarantined), (1, 0), "{retried:?}");
    assert!(
        compaction::status(&f.db)
            .await
            .unwrap()
            .quarantined
            .is_empty()
    );
    assert_eq!(f.count("select count(*) from influencer_metrics").await, 0);
}

/// While one process compacts (holds the lock), another skips. Shown with the two overlapping
/// in time: the first is stopped inside its pass (at its first progress line, after it took
/// the lock and compacted a chunk) while the second runs to its end; the second skipped, and
/// the first, let go, compacts every chunk. (Issue 37: the test joined two runs and counted
/// chunks, which holds just as well if they ran one after the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactors_one_works_the_other_skips() {
    let f = Fixture::start().await;
    let from = midnight_days_ago(2);
    f.insert(&walks(from, from + 6 * HOUR_MS, 3)).await;
    let points = f.count("select count(*) from influencer_metrics").await;
    let (inside_tx, inside) = tokio::sync::oneshot::channel::<()>();
    let (go_on, wait) = std::sync::mpsc::channel::<()>();
    let first = tokio::spawn({
        let pool = f.db.clone();
        async move {
            let (mut inside_tx, wait) = (Some(inside_tx), wait);
            let mut held_inside = move |_: &str| {
                if let Some(tx) = inside_tx.take() {
                    let _ = tx.send(());
                    // Inside the pass, the lock held: wait for the second compactor.
                    tokio::task::block_in_place(|| wait.recv().unwrap());
                }
            };
            compaction::run(&pool, Budget::FULL, &mut held_inside).await
        }
    });
    inside.await.expect("the first compactor reports progress");
    let second = compaction::run(&f.db, Budget::FULL, &mut |_| {})
        .await
        .unwrap();
    assert!(
        second.is_none(),
        "the second compacted while the first was inside its pass: {second:?}"
    );
    assert!(
        f.count("select count(*) from influencer_metrics").await > 0,
        "the first is stopped with work left"
    );
    go_on.send(()).unwrap();
    let report = first
        .await
        .unwrap()
        .unwrap()
        .expect("the first held the lock");
    assert_eq!(report.chunks, 6, "{report:?}");
    assert_eq!(f.count("select count(*) from influencer_metrics").await, 0);
    assert_eq!(
        f.count("select coalesce(sum(points), 0)::bigint from all_segments")
            .await,
        points
    );
}

/// Retention drops segments, raw chunks and averages older than RETENTION, never younger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_only_what_is_older_than_retention() {
    let f = Fixture::start().await;
    for days_ago in [70, 45, 16, 14, 3] {
        let from = midnight_days_ago(days_ago);
        f.insert(&walks(from, from + 2 * HOUR_MS, days_ago as u64))
            .await;
        sqlx::query("insert into average_followers values (to_timestamp($1), 1.0, 1)")
            .bind((from / 1000) as f64)
            .execute(&f.db)
            .await
            .unwrap();
    }
    f.compact().await;
    // One more raw chunk, never compacted, 70 days old (as if compaction had been down).
    let old = midnight_days_ago(70) + 5 * HOUR_MS;
    sqlx::query(
        "insert into influencer_metrics values ($1, to_timestamp($2), to_timestamp($2), 1, 1)",
    )
    .bind(IDS[0])
    .bind((old / 1000) as f64)
    .execute(&f.db)
    .await
    .unwrap();
    let before: Vec<(i64, i64)> = sqlx::query_as(
        "select influencer_id, (extract(epoch from period_start) * 1000)::bigint from all_segments",
    )
    .fetch_all(&f.db)
    .await
    .unwrap();
    let packs_before = f
        .count("select count(*) from influencer_summary_packs")
        .await;
    // Compaction wrote each merged day's closes.
    let close_days = |f: &Fixture| {
        let db = f.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "select (extract(epoch from day) * 1000)::bigint from influencer_day_closes order by 1",
            )
            .fetch_all(&db)
            .await
            .unwrap()
        }
    };
    let closed = close_days(&f).await;
    let merged = [70, 45, 16, 14, 3].map(midnight_days_ago).to_vec();
    assert_eq!(closed, merged, "a row of closes for each merged day");
    let keep = Duration::from_secs(15 * 86_400);
    let report = retention::apply(&f.db, keep).await.unwrap();
    // Closes go a day after their day passes the cutoff (as the compaction days do).
    assert_eq!(
        close_days(&f).await,
        [14, 3].map(midnight_days_ago).to_vec(),
        "the closes of the days older than the retention are deleted"
    );
    // A span's days and its pack go together.
    f.assert_packs_agree_with_days("after retention").await;
    assert!(
        f.count("select count(*) from influencer_summary_packs")
            .await
            < packs_before,
        "the oldest spans' packs were dropped"
    );
    assert!(report.chunks >= 2, "{report:?}");
    let cutoff = Utc::now().timestamp_millis() - 15 * DAY_MS;
    let after: Vec<(i64, i64)> = sqlx::query_as(
        "select influencer_id, (extract(epoch from period_start) * 1000)::bigint from all_segments",
    )
    .fetch_all(&f.db)
    .await
    .unwrap();
    for seg in &before {
        if seg.1 >= cutoff {
            assert!(
                after.contains(seg),
                "segment {seg:?} is younger than the cutoff and was dropped"
            );
        }
    }
    // Nothing older than the cutoff stays more than a chunk's span (28 days) past it.
    assert!(
        after.iter().all(|s| s.1 >= cutoff - 28 * DAY_MS),
        "{after:?}"
    );
    assert!(
        !after.iter().any(|s| s.1 < midnight_days_ago(69)),
        "70-day-old segments remain"
    );
    assert_eq!(
        f.count("select count(*) from influencer_metrics").await,
        0,
        "old raw chunk dropped"
    );
    let averages: Vec<f64> =
        sqlx::query_scalar("select extract(epoch from bucket)::float8 from average_followers")
            .fetch_all(&f.db)
            .await
            .unwrap();
    assert!(
        averages
            .iter()
            .all(|t| *t * 1000.0 >= (cutoff - 30 * DAY_MS) as f64)
    );
    assert!(
        averages
            .iter()
            .any(|t| *t * 1000.0 == midnight_days_ago(14) as f64)
    );
    assert!(
        averages
            .iter()
            .any(|t| *t * 1000.0 == midnight_days_ago(3) as f64)
    );
}

/// Issue 37, item 2: /gaps expects slots only while the influencer was tracked: not in a
/// stretch it was untracked before being tracked again, and not between its registration and
/// the first slot the schedule planned (before: both counted as missing for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_expects_slots_only_while_tracked() {
    let f = Fixture::start().await;
    let grid = SlotGrid::new(Duration::from_secs(60));
    let id = IDS[2];
    let hour = (Utc::now().timestamp_millis().div_euclid(HOUR_MS) - 3) * HOUR_MS;
    // Registered at the hour; its first slot planned from 10 minutes later; untracked at 25
    // minutes (the upstream did not know it), tracked again from 45 minutes, still tracked.
    let at =
        |minutes: i64| chrono::DateTime::from_timestamp_millis(hour + minutes * 60_000).unwrap();
    sqlx::query("update influencers set added_at = $2 where influencer_id = $1")
        .bind(id)
        .bind(at(0))
        .execute(&f.db)
        .await
        .unwrap();
    sqlx::query("delete from tracking_periods where influencer_id = $1")
        .bind(id)
        .execute(&f.db)
        .await
        .unwrap();
    sqlx::query(
        "insert into tracking_periods (influencer_id, expected_from, stopped_at, stop_reason)
         values ($1, $2, $3, 'InfluencerNotFoundError'), ($1, $4, null, null)",
    )
    .bind(id)
    .bind(at(10))
    .bind(at(25))
    .bind(at(45))
    .execute(&f.db)
    .await
    .unwrap();
    // Every slot of the two stretches stored.
    let slots = |from: i64, to: i64| {
        let mut slot = grid.slot_at_or_after(id, hour + from * 60_000);
        let mut out = Vec::new();
        while slot <= hour + to * 60_000 {
            out.push(slot);
            slot += 60_000;
        }
        out
    };
    let (first, second) = (slots(10, 25), slots(45, 60));
    let points: Vec<(i64, i64, i32, i32)> = first
        .iter()
        .chain(&second)
        .map(|&s| (id, s, 1_000, 10))
        .collect();
    f.insert(&points).await;
    let (start, end) = (hour / 1000, (hour + HOUR_MS) / 1000);
    let g = f
        .get(&format!(
            "/influencer_analytics/{id}/gaps?start_time={start}&end_time={end}"
        ))
        .await;
    assert_eq!(g["expected"], points.len(), "{g}");
    assert_eq!(g["stored"], points.len(), "{g}");
    assert_eq!(g["missing"], 0, "{g}");
    assert_eq!(
        g["tracked"],
        serde_json::json!([
            {"from": (hour + 10 * 60_000) / 1000, "to": (hour + 25 * 60_000) / 1000},
            {"from": (hour + 45 * 60_000) / 1000, "to": end},
        ]),
        "{g}"
    );
    assert_eq!(g["expected_from"], (hour + 10 * 60_000) / 1000);
}

/// The gaps endpoint: the grid's slots, how many are stored, the missing runs, across the
/// compacted and the raw tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_lists_the_missing_slots_across_both_tiers() {
    let f = Fixture::start().await;
    let grid = SlotGrid::new(Duration::from_secs(60));
    let id = IDS[1];
    let day = midnight_days_ago(1);
    let first = grid.slot_at_or_after(id, day);
    // 3 hours of slots: 10..=14 missing (compacted hour), 130..=131 missing (raw, re-inserted
    // after compaction into a recreated chunk).
    let all: Vec<i64> = (0..180).map(|i| first + i * 60_000).collect();
    let stored: Vec<(i64, i64, i32, i32)> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| !(10..=14).contains(i) && !(120..=131).contains(i))
        .map(|(_, &s)| (id, s, 1_000, 10))
        .collect();
    f.insert(&stored).await;
    f.compact().await;
    f.insert(
        &(120..130)
            .map(|i| (id, all[i], 1_000, 10))
            .collect::<Vec<_>>(),
    )
    .await;
    let (start, end) = (all[0] / 1000, all[179] / 1000);
    let g = f
        .get(&format!(
            "/influencer_analytics/{id}/gaps?start_time={start}&end_time={end}"
        ))
        .await;
    assert_eq!(g["expected"], 180);
    assert_eq!(g["stored"], 173);
    assert_eq!(g["missing"], 7);
    assert_eq!(
        g["gaps"],
        serde_json::json!([
            {"start_time": all[10] / 1000, "end_time": all[14] / 1000, "slots": 5},
            {"start_time": all[130] / 1000, "end_time": all[131] / 1000, "slots": 2},
        ])
    );
    assert_eq!(g["truncated"], false);
    // The recreated chunk is compacted into the existing segments: same answer.
    f.compact().await;
    let again = f
        .get(&format!(
            "/influencer_analytics/{id}/gaps?start_time={start}&end_time={end}"
        ))
        .await;
    assert_eq!(again, g);
    assert_eq!(
        series::read::points(&f.db, id, all[0], all[179])
            .await
            .unwrap()
            .len(),
        173
    );
    // Before the influencer was added nothing is expected.
    let added = f.count(&format!("select floor(extract(epoch from added_at))::bigint from influencers where influencer_id = {id}")).await;
    let early = f
        .get(&format!(
            "/influencer_analytics/{id}/gaps?start_time={}&end_time={}",
            added - 86_400,
            added - 1
        ))
        .await;
    assert_eq!(
        (early["expected"].as_i64(), early["expected_from"].is_null()),
        (Some(0), true)
    );
}

/// A full hour block (64 influencers, about 14 kB of points, so its head holds whole TOAST
/// chunks and its tail the rest): every member is read back exactly, one at a time and as a
/// window, whether its bytes lie in the head, in the tail or across both; a late point merged
/// into one member keeps the other 63 as they were.
#[tokio::test]
async fn every_member_of_an_hour_block_reads_back_across_its_head_and_tail() {
    use series::{SeriesPoint, store};
    let db = influencer_analytics::testing::TestDb::new().await;
    let hour = (Utc::now().timestamp_millis().div_euclid(HOUR_MS) - 30) * HOUR_MS;
    let block = 15_625i64; // influencers 1,000,000 to 1,000,063
    let mut rng = SmallRng::seed_from_u64(64);
    let members: Vec<(i64, Vec<SeriesPoint>)> = (0..64)
        .filter(|m| m % 17 != 3) // a few members without a segment
        .map(|m| {
            let mut followers = rng.random_range(1_000..50_000_000i32);
            let points = (0..60)
                .map(|i| {
                    followers = followers
                        .saturating_add(rng.random_range(-20_000..20_000))
                        .max(0);
                    SeriesPoint {
                        slot_ms: hour + 5_000 + i * 60_000,
                        follower_count: followers,
                        following_count: rng.random_range(0..5_000),
                    }
                })
                .collect();
            ((block << 6) + m, points)
        })
        .collect();
    let segments: Vec<store::Segment> = members
        .iter()
        .map(|(id, points)| {
            store::Segment::new(*id, (hour, hour + HOUR_MS), points, 900, 300).unwrap()
        })
        .collect();
    let mut tx = db.pool.begin().await.unwrap();
    store::upsert(&mut tx, &segments).await.unwrap();
    tx.commit().await.unwrap();

    let (head, offsets): (i32, Vec<i32>) = sqlx::query_as(
        "select octet_length(data_head), offsets from influencer_hour_blocks where block = $1",
    )
    .bind(block)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        head > 0 && (head as usize).is_multiple_of(store::TOAST_CHUNK_BYTES),
        "head {head}"
    );
    assert!(
        offsets.windows(2).any(|w| w[0] < head && w[1] > head),
        "a member's bytes cross from the head into the tail"
    );
    let read_all =
        |lo: i64, hi: i64| series::read::window(&db.pool, (lo, hi), hour, hour + HOUR_MS);
    for (id, points) in &members {
        let read = series::read::points(&db.pool, *id, hour, hour + HOUR_MS)
            .await
            .unwrap();
        assert_eq!(&read, points, "influencer {id}");
    }
    let window = read_all((block << 6) + 10, (block << 6) + 50)
        .await
        .unwrap();
    let want: Vec<(i64, Vec<SeriesPoint>)> = members
        .iter()
        .filter(|(id, _)| (10..=50).contains(&(id - (block << 6))))
        .cloned()
        .collect();
    assert_eq!(window, want);
    // The widest window (the fault suite reads everything so): no bound overflows.
    assert_eq!(read_all(i64::MIN, i64::MAX).await.unwrap(), members);

    // A late point for the member whose bytes cross into the tail.
    let crossing = offsets
        .windows(2)
        .position(|w| w[0] < head && w[1] > head)
        .unwrap() as i64;
    let late_id = (block << 6) + crossing;
    let late = store::RawPoint {
        influencer_id: late_id,
        point: SeriesPoint {
            slot_ms: hour + 5_000 + 59 * 60_000 + 30_000, // off the grid, after the last slot
            follower_count: 7,
            following_count: 7,
        },
        lateness_ms: 5_000,
    };
    let mut tx = db.pool.begin().await.unwrap();
    let report = store::merge(&mut tx, &[late], true).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!((report.points, report.segments), (1, 1));
    let after = read_all(block << 6, (block << 6) + 63).await.unwrap();
    let mut want = members.clone();
    for (id, points) in &mut want {
        if *id == late_id {
            points.push(late.point);
            points.sort_by_key(|p| p.slot_ms);
        }
    }
    assert_eq!(after, want);
}
