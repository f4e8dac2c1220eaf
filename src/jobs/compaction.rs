//! Compaction: closed hours of raw points become per-influencer segments, closed days' hour
//! segments become day segments, late points join their segments (see [`crate::series`]).
//!
//! One pass, under a session advisory lock so one process at a time compacts, and fenced: the
//! holder takes the lock's next fencing token ([`Fence`]) and every transaction of the pass
//! checks it first, so if the lock's session ends and another process takes over, this one's
//! next transaction is refused and its pass ends ([`FenceLost`](crate::db::FenceLost)) instead of merging the same
//! day alongside the new holder:
//! 1. **Hours**: each `influencer_metrics` chunk whose hour ended [`SETTLE_MS`] ago is read
//!    (in scans of its physical order, a share of its influencers each: `passes_for`),
//!    written as hour segments (in block rows of 64 influencers, with the late points of
//!    that hour), and dropped, in one
//!    transaction: a pass stopped at any moment (kill -9 included) leaves the
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
//!
//! An hour, the late points or a day that fails with an error of its own (a segment that
//! cannot be decoded) is set aside in the [`quarantine`](super::quarantine) and tried again
//! later; the other steps go on. An error of the connection or the server ends the pass.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::quarantine::{self, Quarantine, Quarantined};
use crate::db::{Fence, SessionLock};
use crate::series::{
    DAY_MS, SETTLE_MS,
    compact::{self, ChunkScan, RawChunk, TierCounts},
    store::MergeReport,
};

/// Advisory lock key: "compact" in ASCII.
pub const LOCK_KEY: i64 = 0x63_6f6d_7061_6374;

/// Points of a chunk merged into segments per step (an hour of 3,000 influencers).
const POINTS_PER_MERGE: usize = 180_000;
/// Hour blocks (of 64 influencers) merged into day segments per transaction: about 20,000
/// influencers.
const HOUR_BLOCKS_PER_DAY_BATCH: i64 = 312;
const LATE_POINTS_PER_BATCH: i64 = 50_000;

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
    pub(crate) fn rest_after(self, worked: Duration) -> Duration {
        worked.mul_f64((1.0 - self.0) / self.0)
    }

    /// Rests after a step that took `worked`, adding the rest to `rested`.
    async fn rest(self, worked: Duration, rested: &mut Duration) {
        let rest = self.rest_after(worked);
        *rested += rest;
        if !rest.is_zero() {
            tokio::time::sleep(rest).await;
        }
    }
}

/// What compaction may take: its share of the time, and the points of a closed chunk it holds
/// in memory at once (`COMPACTION_PASS_POINTS`, 32 bytes each; a chunk is read in as many
/// scans as it takes, see `passes_for`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub pace: Pace,
    pub pass_points: usize,
}

impl Budget {
    /// No rest, and the default memory: what `compact` and the tests use when nothing else
    /// runs.
    pub const FULL: Budget = Budget {
        pace: Pace::FULL,
        pass_points: crate::config::DEFAULT_COMPACTION_PASS_POINTS,
    };

    /// The operator's settings.
    pub fn of(storage: &crate::config::StorageSettings) -> Self {
        Self {
            pace: Pace::new(storage.compaction_pace),
            pass_points: storage.compaction_pass_points,
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
    /// The rests the pace took between steps.
    pub rested: Duration,
    /// Work set aside by this pass (an error of its own) or left alone (it waits for its retry).
    pub quarantined: u64,
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
    /// Work set aside after an error of its own, with the error and its next retry.
    pub quarantined: Vec<Quarantined>,
}

/// Seconds since the end of the oldest closed hour still raw (0 when none is due); sets the
/// `compaction_lag_seconds` gauge. Reads only the chunk catalogue: cheap enough for every pass.
pub async fn lag_seconds(pool: &PgPool) -> sqlx::Result<f64> {
    let lag = compact::lag_seconds(pool).await?;
    metrics::gauge!("compaction_lag_seconds").set(lag);
    Ok(lag)
}

/// Reads the whole compaction status, for `compact --status`: besides the lag, it counts the
/// segments (a scan of the cold tier, not for every pass).
pub async fn status(pool: &PgPool) -> anyhow::Result<Status> {
    let lag_seconds = lag_seconds(pool).await?;
    let TierCounts {
        raw_chunks,
        due_chunks,
        late_points,
        days_pending,
        hour_segments,
        day_segments,
        segment_bytes,
    } = compact::counts(pool).await?;
    Ok(Status {
        lag_seconds,
        raw_chunks,
        due_chunks,
        late_points,
        days_pending,
        hour_segments,
        day_segments,
        segment_bytes,
        quarantined: quarantine::list(pool).await?,
    })
}

/// Runs one pass if no other process is compacting; `None` if one is. `progress` hears of
/// each step done.
pub async fn run(
    pool: &PgPool,
    budget: Budget,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Option<PassReport>> {
    run_stages(pool, budget, true, progress).await
}

/// [`run`], merging days only if `days` (the storage benchmark measures hour segments first).
pub async fn run_stages(
    pool: &PgPool,
    budget: Budget,
    days: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Option<PassReport>> {
    let Some(lock) = SessionLock::try_take(pool, LOCK_KEY).await? else {
        return Ok(None);
    };
    let result = match Fence::claim(pool, LOCK_KEY).await {
        Ok(fence) => pass(pool, &fence, budget, days, progress).await,
        Err(e) => Err(e.into()),
    };
    lock.release().await;
    // The lag and quarantine gauges are kept current whether the pass worked or not.
    if let Err(e) = lag_seconds(pool).await {
        tracing::warn!(error = format!("{e:#}"), "cannot read the compaction lag");
    }
    if let Err(e) = quarantine::list(pool).await {
        tracing::warn!(
            error = format!("{e:#}"),
            "cannot read the compaction quarantine"
        );
    }
    Ok(Some(result?))
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
    fence: &Fence,
    budget: Budget,
    days: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<PassReport> {
    let mut pass = Pass {
        pool,
        fence,
        budget,
        quarantine: Quarantine::read(pool).await?,
        report: PassReport::default(),
        progress,
    };
    pass.hours().await?;
    pass.late_points().await?;
    if days {
        pass.days().await?;
    }
    Ok(pass.report)
}

/// One pass under way: what it works with, and what it has done.
struct Pass<'a> {
    pool: &'a PgPool,
    fence: &'a Fence,
    budget: Budget,
    quarantine: Quarantine,
    report: PassReport,
    progress: &'a mut (dyn FnMut(&str) + Send),
}

impl Pass<'_> {
    /// Step 1: every due chunk compacted into hour segments, with its hour's late points.
    async fn hours(&mut self) -> anyhow::Result<()> {
        for chunk in compact::raw_chunks(self.pool, true).await? {
            let started = Instant::now();
            let work = format!("hour {}", chunk.range_start.format("%Y-%m-%d %H:%M"));
            if self.waits_for_retry(&work) {
                continue;
            }
            let rested = &mut self.report.rested;
            let result = compact_chunk(self.pool, self.fence, &chunk, self.budget, rested)
                .await
                .with_context(|| format!("cannot compact chunk {}", chunk.chunk_name));
            let Some(compacted) = self.settle(&work, result).await? else {
                continue;
            };
            let Some(ChunkReport { hour, late }) = compacted else {
                tracing::info!(
                    chunk = chunk.chunk_name,
                    "chunk still in use; compacting it next pass"
                );
                (self.progress)(&format!(
                    "{} is in use; left for the next pass",
                    chunk.chunk_name
                ));
                continue;
            };
            self.report.chunks += 1;
            self.report.hour_points += hour.points;
            metrics::counter!("compaction_points_total", "tier" => "hour").increment(hour.points);
            self.report.wrote("hour", hour);
            self.report.merged_late(late);
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
            (self.progress)(&done(format!("hour {hour_start} compacted"), hour, started));
        }
        Ok(())
    }

    /// Step 2: the late points of hours without a chunk merged into their segments.
    async fn late_points(&mut self) -> anyhow::Result<()> {
        let work = "late points";
        if self.waits_for_retry(work) {
            return Ok(());
        }
        let rested = &mut self.report.rested;
        let result = merge_late_points(self.pool, self.fence, self.budget.pace, rested).await;
        let late = self.settle(work, result).await?;
        if let Some(late) = late.filter(|late| late.points + late.duplicates > 0) {
            self.report.merged_late(late);
            (self.progress)(&format!(
                "{} late points merged into their segments ({} already stored)",
                late.points, late.duplicates
            ));
        }
        Ok(())
    }

    /// Step 3: the days due merged into day segments.
    async fn days(&mut self) -> anyhow::Result<()> {
        for day in compact::days_due(self.pool).await? {
            let started = Instant::now();
            let work = format!("day {}", day.date_naive());
            if self.waits_for_retry(&work) {
                continue;
            }
            let (pace, rested) = (self.budget.pace, &mut self.report.rested);
            let result = merge_day(self.pool, self.fence, day, pace, rested, self.progress).await;
            let Some(m) = self.settle(&work, result).await? else {
                continue;
            };
            self.report.days += 1;
            self.report.wrote("day", m);
            tracing::info!(day = %day.date_naive(), segments = m.segments, bytes = m.bytes, seconds = started.elapsed().as_secs_f64(), "day merged");
            (self.progress)(&done(
                format!("day {} merged", day.date_naive()),
                m,
                started,
            ));
        }
        Ok(())
    }

    /// Whether `work` is quarantined and waits for its retry (counted, and left alone).
    fn waits_for_retry(&mut self, work: &str) -> bool {
        let waits = self.quarantine.holds(work);
        if waits {
            self.report.quarantined += 1;
            (self.progress)(&format!("{work} is quarantined; left for its retry"));
        }
        waits
    }

    /// What came of one piece of work: its result (it leaves the quarantine if it was in), or
    /// `None` when it failed with an error of its own (set aside, the pass goes on); an error
    /// of the connection or the server ends the pass.
    async fn settle<T>(
        &mut self,
        work: &str,
        result: anyhow::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        match result {
            Ok(done) => {
                self.quarantine.release(self.pool, work).await?;
                Ok(Some(done))
            }
            Err(e) if quarantine::is_the_works_fault(&e) => {
                self.quarantine.set_aside(self.pool, work, &e).await?;
                self.report.quarantined += 1;
                (self.progress)(&format!("{work} set aside: {e:#}"));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
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
    fence: &Fence,
    chunk: &RawChunk,
    budget: Budget,
    rested: &mut Duration,
) -> anyhow::Result<Option<ChunkReport>> {
    let mut tx = pool.begin().await?;
    fence.check(&mut tx).await?;
    let scan = ChunkScan::start(&mut tx, chunk, budget.pass_points).await?;
    let mut hour = MergeReport::default();
    for pass in 0..scan.passes {
        let step = Instant::now();
        let points = scan.read_share(&mut tx, pass).await?;
        budget.pace.rest(step.elapsed(), rested).await;
        for batch in compact::by_block(&points, POINTS_PER_MERGE) {
            let step = Instant::now();
            hour += scan.merge(&mut tx, batch).await?;
            budget.pace.rest(step.elapsed(), rested).await;
        }
    }
    let Some(late) = scan.finish(&mut tx).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    tx.commit().await?;
    Ok(Some(ChunkReport { hour, late }))
}

/// Merges late points whose hour has no chunk any more, a batch per transaction.
async fn merge_late_points(
    pool: &PgPool,
    fence: &Fence,
    pace: Pace,
    rested: &mut Duration,
) -> anyhow::Result<MergeReport> {
    let remaining = compact::raw_chunks(pool, false).await?;
    let mut total = MergeReport::default();
    loop {
        let step = Instant::now();
        let mut tx = pool.begin().await?;
        fence.check(&mut tx).await?;
        let (taken, m) =
            compact::merge_late_points(&mut tx, &remaining, LATE_POINTS_PER_BATCH).await?;
        tx.commit().await?;
        total += m;
        if (taken as i64) < LATE_POINTS_PER_BATCH {
            return Ok(total);
        }
        pace.rest(step.elapsed(), rested).await;
    }
}

/// The start (epoch ms) of the latest UTC day a compaction at `now_ms` may merge into day
/// segments: one that ended a settle time ago (as [`days_due`] asks).
pub fn latest_settled_day_ms(now_ms: i64) -> i64 {
    ((now_ms - SETTLE_MS).div_euclid(DAY_MS) - 1) * DAY_MS
}

async fn merge_day(
    pool: &PgPool,
    fence: &Fence,
    day: DateTime<Utc>,
    pace: Pace,
    rested: &mut Duration,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<MergeReport> {
    let day_ms = day.timestamp_millis();
    debug_assert_eq!(day_ms % DAY_MS, 0);
    let mut total = MergeReport::default();
    let mut after = i64::MIN;
    loop {
        let step = Instant::now();
        let mut tx = pool.begin().await?;
        fence.check(&mut tx).await?;
        let (last, m) =
            compact::merge_day(&mut tx, day_ms, after, HOUR_BLOCKS_PER_DAY_BATCH).await?;
        total += m;
        match last {
            Some(last) => after = last,
            // The day's hour segments are all merged: its chunk goes whole.
            None => compact::finish_day(&mut tx, day).await?,
        }
        tx.commit().await?;
        let Some(last) = last else {
            return Ok(total);
        };
        progress(&format!(
            "day {}: merged up to influencer {} ({} points so far)",
            day.date_naive(),
            crate::series::member_of(last, crate::series::BLOCK_MEMBERS - 1),
            total.points
        ));
        pace.rest(step.elapsed(), rested).await;
    }
}

/// Runs passes until nothing is due, or the lock is held by another process (then waits for it
/// up to `wait`). For `influencer-analytics compact`.
pub async fn run_now(
    pool: &PgPool,
    budget: Budget,
    wait: Duration,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<PassReport> {
    let deadline = Instant::now() + wait;
    loop {
        match run(pool, budget, progress)
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

    /// Yesterday is not settled in the first minutes after midnight (`bench storage`, which
    /// took yesterday, failed then: its day was never merged).
    #[test]
    fn the_latest_settled_day_ended_a_settle_time_ago() {
        let midnight = 1_764_547_200_000; // 2025-12-01 00:00 UTC
        for after in [
            1,
            5 * 60_000,
            SETTLE_MS - 1,
            SETTLE_MS,
            SETTLE_MS + 1,
            DAY_MS / 2,
        ] {
            let now = midnight + after;
            let day = latest_settled_day_ms(now);
            assert_eq!(day.rem_euclid(DAY_MS), 0, "{after}: a UTC day");
            assert!(day + DAY_MS + SETTLE_MS <= now, "{after}: settled");
            assert!(
                day + 2 * DAY_MS + SETTLE_MS > now,
                "{after}: the latest such day"
            );
        }
        assert_eq!(
            latest_settled_day_ms(midnight + 5 * 60_000),
            midnight - 2 * DAY_MS
        );
        assert_eq!(
            latest_settled_day_ms(midnight + SETTLE_MS),
            midnight - DAY_MS
        );
    }

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
