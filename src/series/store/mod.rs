//! Writes the cold tier: points merged into hour and day segments.
//!
//! Everything here runs inside the caller's transaction, so a compaction step either commits
//! whole (its segments written and its raw points gone) or not at all.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{DAY_MS, SeriesPoint, Summary, codec};

/// A raw point on its way to a segment: whose it is and how late its poll ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPoint {
    pub influencer_id: i64,
    pub point: SeriesPoint,
    pub lateness_ms: i32,
}

/// A raw row as `influencer_metrics` and `late_points` hold it ([`RawRow::COLUMNS`]).
#[derive(Debug)]
pub(crate) struct RawRow {
    pub influencer_id: i64,
    pub slot: DateTime<Utc>,
    pub fetched_at: DateTime<Utc>,
    pub follower_count: i32,
    pub following_count: i32,
}

impl RawRow {
    /// Its columns, for the statements that must name a chunk's table (built at run time).
    pub(crate) const COLUMNS: &'static str =
        "influencer_id, slot, fetched_at, follower_count, following_count";
}

impl From<&RawRow> for RawPoint {
    fn from(r: &RawRow) -> Self {
        let slot_ms = r.slot.timestamp_millis();
        Self {
            influencer_id: r.influencer_id,
            point: SeriesPoint {
                slot_ms,
                follower_count: r.follower_count,
                following_count: r.following_count,
            },
            lateness_ms: (r.fetched_at.timestamp_millis() - slot_ms).clamp(0, i32::MAX as i64)
                as i32,
        }
    }
}

impl From<&crate::model::Point> for RawPoint {
    fn from(p: &crate::model::Point) -> Self {
        Self {
            influencer_id: p.pk,
            point: SeriesPoint {
                slot_ms: p.slot_ms,
                follower_count: p.follower_count,
                following_count: p.following_count,
            },
            lateness_ms: (p.fetched_ms - p.slot_ms).clamp(0, i32::MAX as i64) as i32,
        }
    }
}

/// A segment as written: its period, its points' count (and summary, for a day) and lateness,
/// and its bytes.
#[derive(Debug, Clone)]
pub struct Segment {
    pub influencer_id: i64,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    pub points: i32,
    /// The summary of its points, for a day segment; an hour segment is stored without one
    /// (migration 0004), so none is computed for it.
    pub summary: Option<Summary>,
    pub lateness_max_ms: i32,
    pub lateness_p99_ms: i32,
    pub data: Vec<u8>,
}

impl Segment {
    /// Builds a segment from its points (in slot order, at least one).
    pub fn new(
        influencer_id: i64,
        period: (i64, i64),
        points: &[SeriesPoint],
        lateness_max_ms: i32,
        lateness_p99_ms: i32,
    ) -> Result<Self, codec::CodecError> {
        Ok(Self {
            influencer_id,
            period_start_ms: period.0,
            period_end_ms: period.1,
            points: points.len() as i32,
            summary: (Table::of_period(period) == Table::Days).then(|| Summary::of(points)),
            lateness_max_ms,
            lateness_p99_ms,
            data: codec::encode(points)?,
        })
    }

    /// The table the segment is stored in.
    pub fn table(&self) -> Table {
        Table::of_period((self.period_start_ms, self.period_end_ms))
    }
}

/// The 99th percentile (nearest rank) of lateness figures; 0 for none.
pub fn p99(lateness: &mut [i32]) -> i32 {
    if lateness.is_empty() {
        return 0;
    }
    let rank = (lateness.len() * 99).div_ceil(100).max(1) - 1;
    *lateness.select_nth_unstable(rank).1
}

/// What a merge wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeReport {
    /// Points newly in the cold tier (a slot it already held is not counted).
    pub points: u64,
    /// Slots that were already stored in a segment: the segment's value was kept.
    pub duplicates: u64,
    pub segments: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for MergeReport {
    fn add_assign(&mut self, other: Self) {
        self.points += other.points;
        self.duplicates += other.duplicates;
        self.segments += other.segments;
        self.bytes += other.bytes;
    }
}

/// The two cold tables: `influencer_hour_blocks` and `influencer_segments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Hours,
    Days,
}

impl Table {
    /// The table of a segment over `period`: a day's in the day table, an hour's in the hour
    /// table.
    pub(crate) fn of_period((start, end): (i64, i64)) -> Self {
        if end - start >= DAY_MS {
            Table::Days
        } else {
            Table::Hours
        }
    }
}

/// How many bytes of an out-of-line value PostgreSQL stores per TOAST chunk (its
/// `TOAST_MAX_CHUNK_SIZE` with 8 kB pages, the default and what every packaged server uses;
/// four chunks fill a page).
pub const TOAST_CHUNK_BYTES: usize = 1996;

/// A segment's encoded bytes as (head, tail): the head is the leading whole multiple of
/// [`TOAST_CHUNK_BYTES`], stored out of line where it fills whole TOAST chunks; the tail, the
/// rest, stays in the row (migrations/0003_segment_data_split.sql says why).
pub(crate) fn split_for_toast(data: &[u8]) -> (&[u8], &[u8]) {
    data.split_at(data.len() / TOAST_CHUNK_BYTES * TOAST_CHUNK_BYTES)
}

/// Writes segments, each into its table, replacing any stored under the same (influencer,
/// period start).
pub async fn upsert(tx: &mut PgConnection, segments: &[Segment]) -> anyhow::Result<()> {
    let (days, hours): (Vec<&Segment>, Vec<&Segment>) =
        segments.iter().partition(|s| s.table() == Table::Days);
    upsert_days(tx, &days).await?;
    upsert_hours(tx, &hours).await
}

mod blocks;
mod merge;

pub(crate) use blocks::merge_day;
use blocks::{upsert_days, upsert_hours};
pub use merge::{merge, plan};

#[cfg(test)]
mod tests;
