//! The one read path: an influencer's points over a range, raw or in buckets, its gaps, and
//! many influencers' points over a window, from both tiers.
//!
//! Raw ranges, and bucketed ranges with a step under a day, read both tiers in one statement,
//! so in one snapshot. Bucketed ranges with a step of a day or more read the hot tier first
//! (the cold read needs to know which days have hot points), then the cold one: a compaction
//! that commits between the two reads moves points the first read saw into segments the
//! second one sees, the same slots twice, answered once. The other order would miss them.
//!
//! One concern a file: [`sql`] the statements, [`tiers`] a range read in one statement,
//! [`hot`] the hot points and the first-stored rule, [`summaries`] buckets of a day or more,
//! [`fold`] buckets from points and summaries, [`gaps`] completeness.

use sqlx::PgPool;

use crate::series::{BucketStats, DAY_MS, SeriesPoint, codec, pack};
use hot::{first_stored, unpack_hot};
use summaries::{DatabaseSegments, buckets_from_summaries};
use tiers::read_tiers;

mod fold;
mod gaps;
mod hot;
mod sql;
mod summaries;
#[cfg(test)]
mod tests;
mod tiers;

pub use fold::fold_buckets;
pub use gaps::gaps;
pub use hot::EpochMs;
pub use tiers::fold_tiers;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("a stored segment cannot be decoded: {0}")]
    Corrupt(#[from] codec::CodecError),
    #[error(transparent)]
    Pack(#[from] pack::PackError),
    #[error("the segments of influencer {0} changed during two reads in a row")]
    Changed(i64),
}

/// One influencer's points over `[start_ms, end_ms]`, in slot order.
pub async fn points(
    pool: &PgPool,
    influencer_id: i64,
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<SeriesPoint>, ReadError> {
    let mut all = window(pool, (influencer_id, influencer_id), start_ms, end_ms).await?;
    Ok(all.pop().map(|(_, points)| points).unwrap_or_default())
}

/// The points of every influencer in `ids` (inclusive) over `[start_ms, end_ms]`, per
/// influencer in id order (influencers without a point are left out).
pub async fn window(
    pool: &PgPool,
    ids: (i64, i64),
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<(i64, Vec<SeriesPoint>)>, ReadError> {
    let mut out = Vec::new();
    for (id, tiers) in read_tiers(pool, ids, start_ms, end_ms).await? {
        let points = tiers.points(start_ms, end_ms)?;
        if !points.is_empty() {
            out.push((id, points));
        }
    }
    Ok(out)
}

/// How many times a bucketed read starts again when the segments it summarised changed before
/// it read the points of the others.
pub(super) const BUCKET_READ_ATTEMPTS: usize = 3;

/// One influencer's points over `[start_ms, end_ms]` in buckets of `step_ms` aligned as
/// `time_bucket` aligns them; buckets without points are left out.
///
/// With a step of a day or more, a day segment that lies whole inside one bucket and inside the
/// range, with no hot point in its period, is answered from its summary: the segments'
/// summaries are read first, then the points of only those that do not fit (at most the two at
/// the range's ends, usually) and of the hour segments, which have no summary (at most the
/// current day's 24). A finer step reads every segment's points (a day segment never fits an
/// hour bucket) with the hot points, in one statement as a raw range does.
pub async fn buckets(
    pool: &PgPool,
    influencer_id: i64,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Vec<BucketStats>, ReadError> {
    if step_ms < DAY_MS {
        // No bucket covers a day segment whole, so every segment's points are folded: both
        // tiers in one statement, as a raw range reads them (one round trip, one snapshot).
        let mut tiers = read_tiers(pool, (influencer_id, influencer_id), start_ms, end_ms).await?;
        return match tiers.remove(&influencer_id) {
            Some(tiers) => tiers.buckets(start_ms, end_ms, step_ms),
            None => Ok(Vec::new()),
        };
    }
    // All statements on one connection: one acquisition (and its round trips) for the range.
    let mut connection = pool.acquire().await?;
    let packed = hot::fetch(&mut connection, influencer_id, (start_ms, end_ms)).await?;
    let mut hot_points: Vec<SeriesPoint> = match &packed {
        Some(packed) => unpack_hot(packed)?.collect(),
        None => Vec::new(),
    };
    first_stored(&mut hot_points);
    let mut cold = DatabaseSegments {
        connection: &mut connection,
        influencer_id,
        start_ms,
        end_ms,
    };
    buckets_from_summaries(&mut cold, &hot_points, start_ms, end_ms, step_ms)
        .await?
        .ok_or(ReadError::Changed(influencer_id))
}
