//! Compaction: closed hours of raw points become per-influencer segments, closed days' hour
//! segments become day segments, late points join their segments (see [`crate::series`]).
//!
//! One pass, under a session advisory lock so one process at a time compacts:
//! 1. **Hours**: each `influencer_metrics` chunk whose hour ended [`SETTLE_MS`] ago is read in
//!    influencer order, written as hour segments (with the late points of that hour), and
//!    dropped, in one transaction: a pass stopped at any moment (kill -9 included) leaves the
//!    chunk as it was, and the next pass does it again. The chunk is locked only by the final
//!    `DROP TABLE`, bounded by a lock timeout; the sink never writes into a closed chunk
//!    (late points go to `late_points`), so nothing is dropped unread.
//! 2. **Late points** of hours that have no chunk any more are merged into their segments
//!    (a slot already stored keeps its stored value), a transaction per batch.
//! 3. **Days**: once a UTC day has ended and none of its hours is raw, its hour segments are
//!    merged into one day segment per influencer, a transaction per batch of influencers.
//!
//! Each step is followed by a rest ([`Pace`], `COMPACTION_PACE`), so that compaction takes
//! only its share of the time from the pipeline it shares the cores with.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::db::SessionLock;
use crate::series::{
    DAY_MS, SETTLE_MS,
    store::{self, MergeReport, RawPoint, RawRow},
};

/// Advisory lock key: "compact" in ASCII.
pub const LOCK_KEY: i64 = 0x63_6f6d_7061_6374;

/// Influencers read from a chunk per query (an hour of 3,000 is 180,000 points), and
/// influencers merged into day segments per transaction.
const INFLUENCERS_PER_READ: i64 = 3_000;
const INFLUENCERS_PER_DAY_BATCH: i64 = 20_000;
const LATE_POINTS_PER_BATCH: i64 = 50_000;

/// How long the final `DROP TABLE` of a chunk may wait for readers to let go of it.
const DROP_LOCK_TIMEOUT: &str = "2s";

/// How hard compaction works: the share of the time its steps may fill (`COMPACTION_PACE`).
/// After each step (a read of a chunk and its segments written, a batch of days or late
/// points) it rests so that its steps fill at most this share of the time, leaving the rest
/// of the cores to polling and the sink. Both this process's work and the database's count:
/// a step is timed from its query to its last segment written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace(f64);

impl Pace {
    /// No rest: what `compact` and the tests use when nothing else runs.
    pub const FULL: Pace = Pace(1.0);

    /// `share` of the time, clamped to 0.05..=1.
    pub fn new(share: f64) -> Self {
        Self(if share.is_nan() {
            1.0
        } else {
            share.clamp(0.05, 1.0)
        })
    }

    /// How long to rest after a step that took `worked`.
    pub fn rest_after(self, worked: Duration) -> Duration {
        worked.mul_f64((1.0 - self.0) / self.0)
    }

    async fn rest(self, worked: Duration) {
        let rest = self.rest_after(worked);
        if !rest.is_zero() {
            tokio::time::sleep(rest).await;
        }
    }
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub chunks: u64,
    pub hour_points: u64,
    pub late_points: u64,
    pub days: u64,
    pub segments: u64,
    pub bytes: u64,
}

/// How compaction stands.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    /// Seconds since the end of the oldest closed hour still raw (0 when none is due).
    pub lag_seconds: f64,
    /// Raw hour chunks, and how many of them are closed and settled (due).
    pub raw_chunks: i64,
    pub due_chunks: i64,
    pub late_points: i64,
    /// Days whose hour segments wait to be merged.
    pub days_pending: i64,
    pub hour_segments: i64,
    pub day_segments: i64,
    /// On-disk size of the cold tier (heap, TOAST and index).
    pub segment_bytes: i64,
}

/// Seconds since the end of the oldest closed hour still raw (0 when none is due); sets the
/// `compaction_lag_seconds` gauge. Reads only the chunk catalogue: cheap enough for every pass.
pub async fn lag_seconds(pool: &PgPool) -> sqlx::Result<f64> {
    let lag: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from now() - min(range_end))::float8
         from timescaledb_information.chunks
         where hypertable_name = 'influencer_metrics'
           and range_end <= now() - make_interval(secs => $1)",
    )
    .bind((SETTLE_MS / 1000) as f64)
    .fetch_one(pool)
    .await?;
    let lag = lag.unwrap_or(0.0).max(0.0);
    metrics::gauge!("compaction_lag_seconds").set(lag);
    Ok(lag)
}

/// Reads the whole compaction status, for `compact --status`: besides the lag, it counts the
/// segments (a scan of the cold tier, not for every pass).
pub async fn status(pool: &PgPool) -> anyhow::Result<Status> {
    let lag_seconds = lag_seconds(pool).await?;
    let row: (i64, i64, i64, i64, i64, i64, Option<i64>) = sqlx::query_as(
        "select count(c.*),
                count(c.*) filter (where c.range_end <= now() - make_interval(secs => $1)),
                (select count(*) from late_points),
                (select count(*) from compaction_days where merged_at is null),
                (select count(*) from influencer_hour_segments),
                (select count(*) from influencer_segments),
                (select sum(total_bytes)::bigint from (
                     select total_bytes from hypertable_detailed_size('influencer_segments')
                     union all
                     select total_bytes from hypertable_detailed_size('influencer_hour_segments')) s)
         from timescaledb_information.chunks c where c.hypertable_name = 'influencer_metrics'",
    )
    .bind((SETTLE_MS / 1000) as f64)
    .fetch_one(pool)
    .await?;
    Ok(Status {
        lag_seconds,
        raw_chunks: row.0,
        due_chunks: row.1,
        late_points: row.2,
        days_pending: row.3,
        hour_segments: row.4,
        day_segments: row.5,
        segment_bytes: row.6.unwrap_or(0),
    })
}

/// Runs one pass if no other process is compacting; `None` if one is. `progress` hears of
/// each step done.
pub async fn run(
    pool: &PgPool,
    pace: Pace,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Option<PassReport>> {
    run_stages(pool, pace, true, progress).await
}

/// [`run`], merging days only if `days` (the storage benchmark measures hour segments first).
pub async fn run_stages(
    pool: &PgPool,
    pace: Pace,
    days: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Option<PassReport>> {
    let Some(lock) = SessionLock::try_take(pool, LOCK_KEY).await? else {
        return Ok(None);
    };
    let result = pass(pool, pace, days, progress).await;
    lock.release().await;
    // The lag gauge is kept current whether the pass worked or not.
    if let Err(e) = lag_seconds(pool).await {
        tracing::warn!(error = format!("{e:#}"), "cannot read the compaction lag");
    }
    Ok(Some(result?))
}

#[derive(sqlx::FromRow)]
struct Chunk {
    chunk_schema: String,
    chunk_name: String,
    range_start: DateTime<Utc>,
    range_end: DateTime<Utc>,
}

async fn chunks(pool: &PgPool, due_only: bool) -> sqlx::Result<Vec<Chunk>> {
    sqlx::query_as(
        "select chunk_schema, chunk_name, range_start, range_end
         from timescaledb_information.chunks
         where hypertable_name = 'influencer_metrics'
           and (not $1 or range_end <= now() - make_interval(secs => $2))
         order by range_start",
    )
    .bind(due_only)
    .bind((SETTLE_MS / 1000) as f64)
    .fetch_all(pool)
    .await
}

impl PassReport {
    /// Counts segments written for `period` (`hour` or `day`), here and in the metrics.
    fn wrote(&mut self, period: &'static str, m: MergeReport) {
        self.segments += m.segments;
        self.bytes += m.bytes;
        metrics::counter!("segments_written_total", "period" => period).increment(m.segments);
        metrics::counter!("segment_bytes_written_total", "period" => period).increment(m.bytes);
    }

    /// Counts late points merged into their segments.
    fn merged_late(&mut self, m: MergeReport) {
        self.late_points += m.points;
        metrics::counter!("late_points_merged_total").increment(m.points);
        self.wrote("hour", m);
    }
}

/// A progress line: what was done, with its points, segments, bytes a point and time.
fn done(what: String, m: MergeReport, started: Instant) -> String {
    format!(
        "{what}: {} points into {} segments ({:.2} bytes a point) in {:.1} s",
        m.points,
        m.segments,
        m.bytes as f64 / m.points.max(1) as f64,
        started.elapsed().as_secs_f64()
    )
}

async fn pass(
    pool: &PgPool,
    pace: Pace,
    days: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<PassReport> {
    let mut report = PassReport::default();
    for chunk in chunks(pool, true).await? {
        let started = Instant::now();
        let Some(ChunkReport { hour, late }) = compact_chunk(pool, &chunk, pace)
            .await
            .with_context(|| format!("cannot compact chunk {}", chunk.chunk_name))?
        else {
            tracing::info!(
                chunk = chunk.chunk_name,
                "chunk still in use; compacting it next pass"
            );
            progress(&format!(
                "{} is in use; left for the next pass",
                chunk.chunk_name
            ));
            continue;
        };
        report.chunks += 1;
        report.hour_points += hour.points;
        metrics::counter!("compaction_points_total", "tier" => "hour").increment(hour.points);
        report.wrote("hour", hour);
        report.merged_late(late);
        tracing::info!(
            chunk = chunk.chunk_name,
            points = hour.points,
            late_points = late.points,
            segments = hour.segments,
            bytes = hour.bytes,
            seconds = started.elapsed().as_secs_f64(),
            "hour compacted"
        );
        let hour_start = chunk.range_start.format("%Y-%m-%d %H:00");
        progress(&done(format!("hour {hour_start} compacted"), hour, started));
    }
    let late = merge_late_points(pool, pace).await?;
    if late.points + late.duplicates > 0 {
        report.merged_late(late);
        progress(&format!(
            "{} late points merged into their segments ({} already stored)",
            late.points, late.duplicates
        ));
    }
    let due = if days {
        days_due(pool).await?
    } else {
        Vec::new()
    };
    for day in due {
        let started = Instant::now();
        let m = merge_day(pool, day, pace).await?;
        report.days += 1;
        report.wrote("day", m);
        tracing::info!(day = %day.date_naive(), segments = m.segments, bytes = m.bytes, seconds = started.elapsed().as_secs_f64(), "day merged");
        progress(&done(
            format!("day {} merged", day.date_naive()),
            m,
            started,
        ));
    }
    Ok(report)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What compacting one chunk wrote: its own points, and the late points of its hour.
struct ChunkReport {
    hour: MergeReport,
    late: MergeReport,
}

/// Compacts one closed chunk in one transaction; `None` if readers held it past the lock
/// timeout (nothing changed).
async fn compact_chunk(
    pool: &PgPool,
    chunk: &Chunk,
    pace: Pace,
) -> anyhow::Result<Option<ChunkReport>> {
    let table = format!(
        "{}.{}",
        quote(&chunk.chunk_schema),
        quote(&chunk.chunk_name)
    );
    let mut tx = pool.begin().await?;
    // Segments already covering this hour exist only if the chunk was written again after a
    // compaction (points inserted by hand): then each batch merges into them.
    let look_up: bool = sqlx::query_scalar(
        "select exists (select 1 from all_segments
                        where period_start > $1 - interval '1 day' and period_start < $2
                          and period_end > $1)",
    )
    .bind(chunk.range_start)
    .bind(chunk.range_end)
    .fetch_one(&mut *tx)
    .await?;
    // One row per influencer, its points as arrays: a row per point cost this process about
    // twice as much (decoding 60,000,000 rows an hour at 1,000,000 influencers).
    let read = format!(
        "select influencer_id, array_agg(slot) as slots, array_agg(fetched_at) as fetched_at,
                array_agg(follower_count) as followers, array_agg(following_count) as following
         from {table} where influencer_id > $1
         group by influencer_id order by influencer_id limit $2"
    );
    let mut total = MergeReport::default();
    let mut after = i64::MIN;
    loop {
        let step = Instant::now();
        let rows: Vec<InfluencerHour> = sqlx::query_as(&read)
            .bind(after)
            .bind(INFLUENCERS_PER_READ)
            .fetch_all(&mut *tx)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.influencer_id;
        let full = rows.len() as i64 == INFLUENCERS_PER_READ;
        let points = InfluencerHour::points(rows)?;
        total += store::merge(&mut tx, &points, look_up).await?;
        if !full {
            break;
        }
        pace.rest(step.elapsed()).await;
    }
    // The late points of this hour join it now (they may repeat a slot of the chunk).
    let late: Vec<RawRow> = sqlx::query_as(&format!(
        "delete from late_points where slot >= $1 and slot < $2 returning {}",
        RawRow::COLUMNS
    ))
    .bind(chunk.range_start)
    .bind(chunk.range_end)
    .fetch_all(&mut *tx)
    .await?;
    let late = merge_rows(&mut tx, &late).await?;
    sqlx::query(&format!("set local lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    match sqlx::query(&format!("drop table {table}"))
        .execute(&mut *tx)
        .await
    {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
            tx.rollback().await?;
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    Ok(Some(ChunkReport { hour: total, late }))
}

/// One influencer's points in a chunk, as arrays in the same order.
#[derive(sqlx::FromRow)]
struct InfluencerHour {
    influencer_id: i64,
    slots: Vec<DateTime<Utc>>,
    fetched_at: Vec<DateTime<Utc>>,
    followers: Vec<i32>,
    following: Vec<i32>,
}

impl InfluencerHour {
    /// Every influencer's points, by influencer then slot.
    fn points(rows: Vec<Self>) -> anyhow::Result<Vec<RawPoint>> {
        let mut points = Vec::with_capacity(rows.iter().map(|r| r.slots.len()).sum());
        for row in rows {
            let n = row.slots.len();
            anyhow::ensure!(
                row.fetched_at.len() == n && row.followers.len() == n && row.following.len() == n,
                "influencer {}'s arrays differ in length",
                row.influencer_id
            );
            let first = points.len();
            for i in 0..n {
                points.push(RawPoint::from(&RawRow {
                    influencer_id: row.influencer_id,
                    slot: row.slots[i],
                    fetched_at: row.fetched_at[i],
                    follower_count: row.followers[i],
                    following_count: row.following[i],
                }));
            }
            // array_agg keeps the scan's order (the index's: newest first), which SQL does not
            // promise: sort each influencer's points (a reversal when it held).
            let own = &mut points[first..];
            own.reverse();
            if !own.is_sorted_by_key(|p| p.point.slot_ms) {
                own.sort_by_key(|p| p.point.slot_ms);
            }
        }
        Ok(points)
    }
}

/// SQLSTATE of a lock timeout.
const LOCK_NOT_AVAILABLE: &str = "55P03";

async fn merge_rows(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[RawRow],
) -> anyhow::Result<MergeReport> {
    let mut points: Vec<RawPoint> = rows.iter().map(RawPoint::from).collect();
    points.sort_by_key(|p| (p.influencer_id, p.point.slot_ms));
    points.dedup_by_key(|p| (p.influencer_id, p.point.slot_ms));
    store::merge(tx, &points, true).await
}

/// Merges late points whose hour has no chunk any more, a batch per transaction.
async fn merge_late_points(pool: &PgPool, pace: Pace) -> anyhow::Result<MergeReport> {
    let remaining = chunks(pool, false).await?;
    let starts: Vec<DateTime<Utc>> = remaining.iter().map(|c| c.range_start).collect();
    let ends: Vec<DateTime<Utc>> = remaining.iter().map(|c| c.range_end).collect();
    let mut total = MergeReport::default();
    loop {
        let step = Instant::now();
        let mut tx = pool.begin().await?;
        let rows: Vec<RawRow> = sqlx::query_as(&format!(
            "delete from late_points where (influencer_id, slot) in (
                 select influencer_id, slot from late_points l
                 where not exists (select 1 from unnest($1::timestamptz[], $2::timestamptz[]) c(s, e)
                                   where l.slot >= c.s and l.slot < c.e)
                 order by influencer_id, slot limit $3)
             returning {}",
            RawRow::COLUMNS
        ))
        .bind(&starts)
        .bind(&ends)
        .bind(LATE_POINTS_PER_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let m = merge_rows(&mut tx, &rows).await?;
        tx.commit().await?;
        total += m;
        if (rows.len() as i64) < LATE_POINTS_PER_BATCH {
            return Ok(total);
        }
        pace.rest(step.elapsed()).await;
    }
}

/// Days with hour segments to merge: ended a settle time ago, none of their hours still raw.
async fn days_due(pool: &PgPool) -> sqlx::Result<Vec<DateTime<Utc>>> {
    sqlx::query_scalar(
        "select d.day from compaction_days d
         where d.merged_at is null
           and d.day + interval '1 day' <= now() - make_interval(secs => $1)
           and not exists (select 1 from timescaledb_information.chunks c
                           where c.hypertable_name = 'influencer_metrics'
                             and c.range_start < d.day + interval '1 day' and c.range_end > d.day)
         order by d.day",
    )
    .bind((SETTLE_MS / 1000) as f64)
    .fetch_all(pool)
    .await
}

async fn merge_day(pool: &PgPool, day: DateTime<Utc>, pace: Pace) -> anyhow::Result<MergeReport> {
    let day_ms = day.timestamp_millis();
    debug_assert_eq!(day_ms % DAY_MS, 0);
    let mut total = MergeReport::default();
    let mut after = i64::MIN;
    loop {
        let step = Instant::now();
        let mut tx = pool.begin().await?;
        let (last, m) = store::merge_day(&mut tx, day_ms, after, INFLUENCERS_PER_DAY_BATCH).await?;
        total += m;
        match last {
            Some(last) => after = last,
            None => {
                sqlx::query("update compaction_days set merged_at = now() where day = $1")
                    .bind(day)
                    .execute(&mut *tx)
                    .await?;
                // The day's hour segments are all merged: its chunk goes whole.
                sqlx::query(
                    "select drop_chunks('influencer_hour_segments',
                                        older_than => $1 + interval '1 day', newer_than => $1)",
                )
                .bind(day)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        if last.is_none() {
            return Ok(total);
        }
        pace.rest(step.elapsed()).await;
    }
}

/// Runs passes until nothing is due, or the lock is held by another process (then waits for it
/// up to `wait`). For `influencer-analytics compact`.
pub async fn run_now(
    pool: &PgPool,
    pace: Pace,
    wait: Duration,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<PassReport> {
    let deadline = Instant::now() + wait;
    loop {
        match run(pool, pace, progress)
            .await
            .context("compaction failed")?
        {
            Some(report) => return Ok(report),
            None if Instant::now() < deadline => {
                progress("another process is compacting; waiting for it");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => anyhow::bail!("another process kept compacting for {wait:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_rests_so_that_work_fills_its_share_of_the_time() {
        let step = Duration::from_millis(400);
        assert_eq!(Pace::FULL.rest_after(step), Duration::ZERO);
        // 0.4 of the time working: 400 ms of work, then 600 ms of rest.
        let rest = Pace::new(0.4).rest_after(step);
        assert!((rest.as_secs_f64() - 0.6).abs() < 1e-9, "{rest:?}");
        // Out of range is clamped, never a rest without end.
        assert_eq!(Pace::new(0.0), Pace::new(0.05));
        assert_eq!(Pace::new(7.0), Pace::FULL);
        assert_eq!(Pace::new(f64::NAN), Pace::FULL);
        assert!(Pace::new(0.0).rest_after(step) <= step * 19);
    }
}
