//! Both tiers of a range read in one statement, by influencer, and what a range of them gives:
//! points, or buckets under a day.

use std::collections::BTreeMap;

use sqlx::PgPool;

use super::{
    ReadError,
    fold::Folder,
    hot::{EpochMs, first_stored, merge, unpack_hot},
    sql,
};
use crate::series::{BucketStats, SeriesPoint, at, codec};

/// A row of [`sql::range`]: an influencer's hot points packed into one value, or a segment with
/// its encoded points.
pub(super) struct RangeRow {
    influencer_id: i64,
    /// The segment's period start (the earliest hot point's slot for hot points).
    at: EpochMs,
    data: Vec<u8>,
    /// Whether `data` is hot points ([`unpack_hot`]) rather than a segment.
    hot: bool,
}

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for RangeRow {
    fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        use sqlx::Row;
        Ok(Self {
            influencer_id: row.try_get(0)?,
            at: row.try_get(1)?,
            data: row.try_get(2)?,
            hot: row.try_get(3)?,
        })
    }
}

/// What both tiers hold of one influencer over a range, as read in one statement.
#[derive(Debug, Default)]
pub(super) struct Tiers {
    /// Its segments' encoded points, in period order.
    pub(super) segments: Vec<Vec<u8>>,
    /// Its hot points, as [`super::hot::fetch`] orders them (a slot may be in a segment too).
    pub(super) hot: Vec<SeriesPoint>,
}

impl Tiers {
    /// The points in `[start_ms, end_ms]`, in slot order: the segments' decoded, the hot ones
    /// merged in.
    pub(super) fn points(self, start_ms: i64, end_ms: i64) -> Result<Vec<SeriesPoint>, ReadError> {
        let mut cold = Vec::new();
        for data in &self.segments {
            codec::decode_into(data, &mut cold)?;
        }
        Ok(merge(cold, self.hot, start_ms, end_ms))
    }

    /// The points in `[start_ms, end_ms]` folded into buckets of `step_ms`: the same as folding
    /// [`Self::points`], with each segment's decoded columns folded as they are where no hot
    /// point falls among them (always, but for a late point not merged yet).
    pub(super) fn buckets(
        self,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<BucketStats>, ReadError> {
        let mut hot = self.hot;
        hot.retain(|p| p.slot_ms >= start_ms && p.slot_ms <= end_ms);
        first_stored(&mut hot);
        let mut hot = hot.as_slice();
        let mut folder = Folder::new(step_ms);
        for data in &self.segments {
            let columns = codec::decode_columns(data)?;
            let range = columns.first_at_or_after(start_ms)
                ..columns.first_at_or_after(end_ms.saturating_add(1));
            if range.is_empty() {
                continue;
            }
            let (first, last) = (columns.slot(range.start), columns.slot(range.end - 1));
            let before = hot.partition_point(|p| p.slot_ms < first);
            folder.add_points(&hot[..before]);
            hot = &hot[before..];
            let among = hot.partition_point(|p| p.slot_ms <= last);
            if among == 0 {
                folder.add_columns(&columns, range);
            } else {
                let cold = range.map(|i| columns.point(i)).collect();
                folder.add_points(&merge(cold, hot[..among].to_vec(), start_ms, end_ms));
                hot = &hot[among..];
            }
        }
        folder.add_points(hot);
        Ok(folder.finish())
    }
}

/// One influencer's segments (encoded, in period order) and hot points over `[start_ms,
/// end_ms]` in buckets of `step_ms`, as a bucketed read with a step under a day folds what it
/// read (the benchmarks time it apart from the database).
pub fn fold_tiers(
    segments: Vec<Vec<u8>>,
    hot: Vec<SeriesPoint>,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Vec<BucketStats>, ReadError> {
    Tiers { segments, hot }.buckets(start_ms, end_ms, step_ms)
}

/// Both tiers of the influencers in `ids` (inclusive) over `[start_ms, end_ms]`, in one
/// statement, by influencer.
pub(super) async fn read_tiers(
    pool: &PgPool,
    ids: (i64, i64),
    start_ms: i64,
    end_ms: i64,
) -> Result<BTreeMap<i64, Tiers>, ReadError> {
    let sql = sql::range(sql::Window::of_range(start_ms, end_ms));
    let mut rows: Vec<RangeRow> = sqlx::query_as(&sql)
        .bind(ids.0)
        .bind(ids.1)
        .bind(at(start_ms))
        .bind(at(end_ms))
        .fetch_all(pool)
        .await?;
    // Segments in period order per influencer (hot points are sorted where they are merged).
    rows.sort_unstable_by_key(|row| (row.influencer_id, row.hot, row.at));
    let mut by_id: BTreeMap<i64, Tiers> = BTreeMap::new();
    for row in rows {
        let tiers = by_id.entry(row.influencer_id).or_default();
        match row.hot {
            true => tiers.hot.extend(unpack_hot(&row.data)?),
            false => tiers.segments.push(row.data),
        }
    }
    Ok(by_id)
}
