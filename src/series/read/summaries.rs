//! Buckets of a day or more: whole day segments answered from their summaries, the others
//! from their points, and the read started again if a compaction replaced them in between.

use chrono::{DateTime, Utc};

use super::{BUCKET_READ_ATTEMPTS, ReadError, fold::fold_buckets, hot::EpochMs, sql};
use crate::series::{
    BucketStats, DAY_MS, HOUR_MS, Period, SeriesPoint, Summary, at, bucket_of, codec, pack,
};

/// The cold tier of one influencer over one range, as a bucketed read takes it: the summaries
/// of the segments overlapping the range, then the encoded points of some or all of them. Two
/// reads, each its own snapshot: a compaction may replace segments between them.
pub(super) trait ColdSegments {
    /// The summaries of the segments overlapping the range, by period (none for a segment
    /// stored without one: an hour segment).
    async fn summaries(&mut self) -> Result<Vec<(Period, Option<Summary>)>, ReadError>;
    /// The encoded points of the segments overlapping the range whose periods start at one of
    /// `starts`, by period.
    async fn data(&mut self, starts: &[i64]) -> Result<Vec<(Period, Vec<u8>)>, ReadError>;
}

/// [`ColdSegments`] in the database: both cold tables, over the window of chunks the range can
/// reach.
pub(super) struct DatabaseSegments<'c> {
    pub(super) connection: &'c mut sqlx::PgConnection,
    pub(super) influencer_id: i64,
    pub(super) start_ms: i64,
    pub(super) end_ms: i64,
}

impl ColdSegments for DatabaseSegments<'_> {
    async fn summaries(&mut self) -> Result<Vec<(Period, Option<Summary>)>, ReadError> {
        use sqlx::Row;
        let sql = sql::summaries(sql::Window::of_range(self.start_ms, self.end_ms));
        let rows = sqlx::query(&sql)
            .bind(self.influencer_id)
            .bind(at(self.start_ms))
            .bind(at(self.end_ms))
            .fetch_all(&mut *self.connection)
            .await?;
        let mut summaries = Vec::new();
        for row in &rows {
            let EpochMs(start) = row.try_get(0)?;
            match row.try_get::<Option<&[u8]>, _>(1)? {
                // The pack's days overlapping the range, as the day rows are found.
                Some(days) => summaries.extend(
                    pack::decode(start, days)?
                        .into_iter()
                        .filter(|&((start, end), _)| {
                            start > self.start_ms - DAY_MS
                                && start <= self.end_ms
                                && end > self.start_ms
                        })
                        .map(|(period, summary)| (period, Some(summary))),
                ),
                None => summaries.push(((start, start + HOUR_MS), None)),
            }
        }
        Ok(summaries)
    }

    async fn data(&mut self, starts: &[i64]) -> Result<Vec<(Period, Vec<u8>)>, ReadError> {
        use sqlx::Row;
        let starts: Vec<DateTime<Utc>> = starts.iter().map(|&start| at(start)).collect();
        let sql = sql::segment_data(sql::Window::of_range(self.start_ms, self.end_ms));
        let rows = sqlx::query(&sql)
            .bind(self.influencer_id)
            .bind(at(self.start_ms))
            .bind(at(self.end_ms))
            .bind(starts)
            .fetch_all(&mut *self.connection)
            .await?;
        let mut data = Vec::with_capacity(rows.len());
        for row in rows {
            let (start, end): (EpochMs, EpochMs) = (row.try_get(0)?, row.try_get(1)?);
            data.push(((start.0, end.0), row.try_get(2)?));
        }
        Ok(data)
    }
}

/// The buckets of a step of a day or more: whole segments from their summaries, the others
/// from their points. If the segments the summaries named are not those whose points come
/// back (a day merge or a compaction committed between the two reads), the read starts again,
/// up to [`BUCKET_READ_ATTEMPTS`] times; none if they never agreed.
pub(super) async fn buckets_from_summaries(
    cold: &mut impl ColdSegments,
    hot_points: &[SeriesPoint],
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Option<Vec<BucketStats>>, ReadError> {
    for _ in 0..BUCKET_READ_ATTEMPTS {
        let mut wholes = Vec::new();
        let mut needed: Vec<Period> = Vec::new();
        for (period, summary) in cold.summaries().await? {
            let whole = summary.filter(|summary| {
                summary.first_slot_ms >= start_ms
                    && summary.last_slot_ms <= end_ms
                    && bucket_of(summary.first_slot_ms, step_ms)
                        == bucket_of(summary.last_slot_ms, step_ms)
                    && !has_point_in(hot_points, period)
            });
            match whole {
                Some(summary) => wholes.push((period, summary)),
                None => needed.push(period),
            }
        }
        wholes.sort_unstable_by_key(|(period, _)| *period);
        let data = if needed.is_empty() {
            Vec::new()
        } else {
            let starts: Vec<i64> = needed.iter().map(|(start, _)| *start).collect();
            cold.data(&starts).await?
        };
        // The points must be those of the very segments the summaries named.
        let mut got: Vec<Period> = data.iter().map(|(period, _)| *period).collect();
        got.sort_unstable();
        needed.sort_unstable();
        if got == needed {
            let decoded = decode_all(data)?;
            return Ok(Some(fold_buckets(
                decoded, wholes, hot_points, start_ms, end_ms, step_ms,
            )));
        }
    }
    Ok(None)
}

/// Whether any of `points` (in slot order) lies in `period`.
pub(super) fn has_point_in(points: &[SeriesPoint], (start, end): Period) -> bool {
    let first_at_or_after = points.partition_point(|p| p.slot_ms < start);
    points
        .get(first_at_or_after)
        .is_some_and(|p| p.slot_ms < end)
}

/// The points of segments, decoded in period order.
pub(super) fn decode_all(mut data: Vec<(Period, Vec<u8>)>) -> Result<Vec<SeriesPoint>, ReadError> {
    data.sort_unstable_by_key(|(period, _)| *period);
    // Room for a point a minute over the periods: the list rarely grows by copying.
    let slots: i64 = data
        .iter()
        .map(|((start, end), _)| (end - start) / 60_000)
        .sum();
    let mut decoded = Vec::with_capacity(slots.clamp(0, 1 << 20) as usize);
    for (_, bytes) in &data {
        codec::decode_into(bytes, &mut decoded)?;
    }
    // Segments never overlap, so their points are in slot order already; sort only if that
    // ever stops holding.
    if !decoded.is_sorted_by_key(|p| p.slot_ms) {
        decoded.sort_by_key(|p| p.slot_ms);
    }
    Ok(decoded)
}
