//! The one read path: an influencer's points over a range, raw or in buckets, its gaps, and
//! many influencers' points over a window, from both tiers.
//!
//! Raw ranges, and bucketed ranges with a step under a day, read both tiers in one statement,
//! so in one snapshot. Bucketed ranges with a step of a day or more read the hot tier first
//! (the cold read needs to know which days have hot points), then the cold one: a compaction
//! that commits between the two reads moves points the first read saw into segments the
//! second one sees, the same slots twice, answered once. The other order would miss them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{
    Aggregate, BucketStats, DAY_MS, HOUR_MS, SeriesPoint, Summary, at, bucket_of, codec, pack,
};

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

/// A `timestamptz` read as epoch milliseconds, straight from PostgreSQL's binary form (an i64 of
/// microseconds since 2000-01-01 UTC), without building a calendar date: a year at step=1d
/// reads 365 rows of three timestamps, and decoding them through chrono was about a twelfth of
/// the API's CPU in perf (a change wrk could not tell from the box's noise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EpochMs(pub i64);

/// 2000-01-01 00:00 UTC, PostgreSQL's epoch, in Unix epoch milliseconds.
const POSTGRES_EPOCH_MS: i64 = 946_684_800_000;

impl sqlx::Type<sqlx::Postgres> for EpochMs {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <DateTime<Utc> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for EpochMs {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        use sqlx::postgres::PgValueFormat;
        Ok(match value.format() {
            PgValueFormat::Binary => {
                let micros = <i64 as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Self(POSTGRES_EPOCH_MS + micros.div_euclid(1000))
            }
            PgValueFormat::Text => Self(
                <DateTime<Utc> as sqlx::Decode<sqlx::Postgres>>::decode(value)?.timestamp_millis(),
            ),
        })
    }
}

/// `select` over both hot tables (`influencer_metrics`, then `late_points`), each with
/// `condition`, as one `union all`, with a column `late` saying which table a row is from. A
/// slot can be in both (a re-fetch that reached the sink late, with other counts): the first
/// stored answer wins, and `influencer_metrics` holds the first (the sink writes only later
/// slots there, `sink::writer`), as compaction keeps it (a chunk's points go into segments
/// before the late points of its hour, which keep a stored slot's value).
macro_rules! over_both_hot_tables {
    ($select:literal, $condition:literal) => {
        concat!(
            "select ",
            $select,
            ", false as late from influencer_metrics where ",
            $condition,
            " union all select ",
            $select,
            ", true as late from late_points where ",
            $condition
        )
    };
}

/// `select` over both cold tables (`influencer_segments` with `$day_select`, then the hour
/// segments of the influencers in `[$lo, $hi]` ([`hour_segments`]) with `$hour_select`), each
/// with its condition and the [`WINDOW`] to be filled in by [`with_window`], as one
/// `union all`. `$condition` is a macro that writes the condition given how the table's
/// period end is written: the day table stores it, an hour segment's ends an hour after its
/// start. Written out rather than through the `all_segments` view: PostgreSQL planned a read
/// through the view at about 6,000 a second (pgbench, 16 clients, the bench's 100,000,000
/// points) and the same union written out at about 15,000.
macro_rules! over_both_cold_tables {
    ($day_select:expr, $hour_select:expr, $condition:ident, $lo:literal, $hi:literal) => {
        concat!(
            "select ",
            $day_select,
            " from influencer_segments where ",
            $condition!("period_end"),
            " and __WINDOW__ union all select ",
            $hour_select,
            " from ",
            hour_segments!($lo, $hi),
            " where ",
            $condition!("(period_start + interval '1 hour')"),
            " and __WINDOW__"
        )
    };
}

/// The hour segments of the influencers in `[$lo, $hi]` (SQL expressions, any bigint: the
/// members are clamped to the block before subtracting, so no bound overflows) as a table of
/// `influencer_id, period_start, data`: the members with points of the block rows of
/// `influencer_hour_blocks` that hold them, each member's bytes cut out of its row's
/// (migration 0005).
macro_rules! hour_segments {
    ($lo:literal, $hi:literal) => {
        concat!(
            "(select (b.block << 6) + m as influencer_id, b.period_start, ",
            hour_member_data!("b", "m"),
            " as data from influencer_hour_blocks b cross join lateral generate_series(greatest(",
            $lo,
            ", b.block << 6) - (b.block << 6), least(",
            $hi,
            ", (b.block << 6) + 63) - (b.block << 6)) m where b.block >= (",
            $lo,
            " >> 6) and b.block <= (",
            $hi,
            " >> 6) and ",
            hour_member!("b", "m", "points"),
            " > 0) hour_segments"
        )
    };
}

/// A day segment's encoded points (the view `all_segments` and migration 0003 say why in two
/// parts).
macro_rules! day_data {
    () => {
        "data_head || data_tail"
    };
}

/// Where a cold statement's window of period starts goes.
const WINDOW: &str = "__WINDOW__";

/// The grid the window's bounds are aligned to: `influencer_segments`' chunk interval (a
/// summary pack's span).
const WINDOW_GRID_MS: i64 = pack::SPAN_MS;

/// The window of `[start_ms, end_ms]`, epoch ms: from a grid line at or before a day before
/// the start, to the first grid line after the end (exclusive).
fn window_bounds(start_ms: i64, end_ms: i64) -> (i64, i64) {
    (
        (start_ms - DAY_MS).div_euclid(WINDOW_GRID_MS) * WINDOW_GRID_MS,
        (end_ms.div_euclid(WINDOW_GRID_MS) + 1) * WINDOW_GRID_MS,
    )
}

/// A cold statement with its window: the period starts its range can reach (those after a day
/// before `start_ms`, up to `end_ms`) widened to the chunk grid and written as constants.
///
/// The range's own bounds are parameters, so PostgreSQL cannot tell which chunks they reach
/// when it plans: every chunk of `influencer_segments` was in the (generic) plan and
/// TimescaleDB excluded them one by one each time a read started, about 10 µs a chunk (with
/// 14 chunks, a year's segments, that was most of a day's read: pgbench of it at 16 clients,
/// 10,000 a second, against 21,000 with 4 chunks and 44,000 on a plain table). Constants it can
/// use when it plans, so the plan holds the one or two chunks of the window (a year's range,
/// its fourteen). Aligned to the grid, there are few distinct windows, so few statements to
/// prepare.
fn with_window(sql: &str, start_ms: i64, end_ms: i64) -> String {
    let (low, high) = window_bounds(start_ms, end_ms);
    sql.replace(
        WINDOW,
        &format!(
            "period_start >= '{}' and period_start < '{}'",
            at(low).to_rfc3339(),
            at(high).to_rfc3339()
        ),
    )
}

/// SQL: the hot points aggregated (columns `at`, `follower_count`, `following_count`, `late`;
/// one influencer's) packed into one `bytea`, 16 bytes a point ([`unpack_hot`]), in slot
/// order, a slot in both hot tables first as `influencer_metrics` holds it (the first stored
/// answer, which [`first_stored`] keeps). One value instead of a row a point: the last 24
/// hours read up to 70 raw minutes, and each row through sqlx's row stream cost more of the API
/// than PostgreSQL spends packing it.
macro_rules! packed_hot {
    () => {
        "string_agg(timestamptz_send(at) || int4send(follower_count) || int4send(following_count), ''::bytea order by at, late)"
    };
}

/// Raw points of one influencer over `[$2, $3]`, both hot tables, packed in one value
/// ([`packed_hot`]; null when there are none).
const HOT_SQL: &str = concat!(
    "select ",
    packed_hot!(),
    " from (",
    over_both_hot_tables!(
        "slot as at, follower_count, following_count",
        "influencer_id = $1 and slot >= $2 and slot <= $3"
    ),
    ") hot"
);

/// A row of [`RANGE_SQL`]: an influencer's hot points packed into one value, or a segment with
/// its encoded points.
struct RangeRow {
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

/// Bytes a hot point takes in [`packed_hot`]: its slot (`timestamptz_send`: microseconds since
/// 2000-01-01 UTC, big-endian), then its two counts (`int4send`).
const PACKED_HOT_POINT: usize = 16;

/// The points [`packed_hot`] packed, in the order PostgreSQL aggregated them.
fn unpack_hot(packed: &[u8]) -> Result<impl Iterator<Item = SeriesPoint> + '_, codec::CodecError> {
    if !packed.len().is_multiple_of(PACKED_HOT_POINT) {
        return Err(codec::CodecError::Corrupt(format!(
            "{} bytes of hot points are not a whole number of {PACKED_HOT_POINT}-byte points",
            packed.len()
        )));
    }
    Ok(packed.chunks_exact(PACKED_HOT_POINT).map(|point| {
        let field = |at: usize| -> [u8; 4] { point[at..at + 4].try_into().expect("4 bytes") };
        let micros = i64::from_be_bytes(point[..8].try_into().expect("8 bytes"));
        SeriesPoint {
            slot_ms: POSTGRES_EPOCH_MS + micros.div_euclid(1000),
            follower_count: i32::from_be_bytes(field(8)),
            following_count: i32::from_be_bytes(field(12)),
        }
    }))
}

/// The segments of the influencers in `[$1, $2]` overlapping `[$3, $4]`, given how the
/// period's end is written: found by their period start (a segment spans at most a day, which
/// lets the chunks of other times be skipped).
macro_rules! window_segments {
    ($end:literal) => {
        concat!(
            "influencer_id >= $1 and influencer_id <= $2
               and period_start > $3 - interval '1 day' and period_start <= $4 and ",
            $end,
            " > $3"
        )
    };
}

/// Everything of the influencers in `ids` (inclusive bounds) over `[start, end]`, both tiers in
/// one statement, so in one snapshot: a compaction has committed either before it (its
/// segments are seen, its points are gone) or after it (the other way round), never half, and
/// the range costs one round trip. Segments overlapping the range are found by their period
/// start (a segment spans at most a day, which lets the chunks of other times be skipped); the
/// hot points come as one row per influencer ([`packed_hot`]).
const RANGE_SQL: &str = concat!(
    "select influencer_id, min(at), ",
    packed_hot!(),
    ", true from (",
    over_both_hot_tables!(
        "influencer_id, slot as at, follower_count, following_count",
        "influencer_id >= $1 and influencer_id <= $2 and slot >= $3 and slot <= $4"
    ),
    ") hot group by influencer_id union all ",
    over_both_cold_tables!(
        concat!("influencer_id, period_start, ", day_data!(), ", false"),
        "influencer_id, period_start, data, false",
        window_segments,
        "$1::bigint",
        "$2::bigint"
    )
);

/// Hot points as [`packed_hot`] orders them (by slot, the first stored answer of a slot first)
/// with one point a slot: the first stored. The one rule of every read path and of compaction
/// (`store::merge` keeps a stored slot's value): an answer never changes with which copy a read
/// happened to meet first.
fn first_stored(hot: &mut Vec<SeriesPoint>) {
    // Stable: of equal slots, the first stored stays first.
    if !hot.is_sorted_by_key(|p| p.slot_ms) {
        hot.sort_by_key(|p| p.slot_ms);
    }
    hot.dedup_by_key(|p| p.slot_ms);
}

/// Merges one influencer's hot points (as [`packed_hot`] orders them) into its decoded segment
/// points (in slot order); a slot in both keeps the segment's value, a slot in both hot tables
/// the first stored. Only points within `[start, end]` are kept.
fn merge(
    cold: Vec<SeriesPoint>,
    mut hot: Vec<SeriesPoint>,
    start_ms: i64,
    end_ms: i64,
) -> Vec<SeriesPoint> {
    let in_range = |p: &SeriesPoint| p.slot_ms >= start_ms && p.slot_ms <= end_ms;
    if hot.is_empty() {
        // Most long ranges: all of it is in segments, kept in place.
        let mut cold = cold;
        cold.retain(in_range);
        return cold;
    }
    first_stored(&mut hot);
    let mut out = Vec::with_capacity(cold.len() + hot.len());
    let mut cold = cold.into_iter().filter(in_range).peekable();
    let mut hot = hot.into_iter().filter(in_range).peekable();
    loop {
        match (cold.peek(), hot.peek()) {
            (Some(c), Some(h)) if h.slot_ms < c.slot_ms => out.extend(hot.next()),
            (Some(c), Some(h)) if h.slot_ms == c.slot_ms => {
                hot.next();
                out.extend(cold.next());
            }
            (Some(_), _) => out.extend(cold.next()),
            (None, Some(_)) => out.extend(hot.next()),
            (None, None) => return out,
        }
    }
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

/// What both tiers hold of one influencer over a range, as read in one statement.
#[derive(Debug, Default)]
struct Tiers {
    /// Its segments' encoded points, in period order.
    segments: Vec<Vec<u8>>,
    /// Its hot points, as [`packed_hot`] orders them (a slot may be in a segment too).
    hot: Vec<SeriesPoint>,
}

impl Tiers {
    /// The points in `[start_ms, end_ms]`, in slot order: the segments' decoded, the hot ones
    /// merged in.
    fn points(self, start_ms: i64, end_ms: i64) -> Result<Vec<SeriesPoint>, ReadError> {
        let mut cold = Vec::new();
        for data in &self.segments {
            codec::decode_into(data, &mut cold)?;
        }
        Ok(merge(cold, self.hot, start_ms, end_ms))
    }

    /// The points in `[start_ms, end_ms]` folded into buckets of `step_ms`: the same as folding
    /// [`Self::points`], with each segment's decoded columns folded as they are where no hot
    /// point falls among them (always, but for a late point not merged yet).
    fn buckets(
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
async fn read_tiers(
    pool: &PgPool,
    ids: (i64, i64),
    start_ms: i64,
    end_ms: i64,
) -> Result<BTreeMap<i64, Tiers>, ReadError> {
    let sql = with_window(RANGE_SQL, start_ms, end_ms);
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

/// The segments of influencer $1 overlapping `[$2, $3]`, given how the period's end is
/// written: found by their period start (a segment spans at most a day, which lets the chunks
/// of other times be skipped).
macro_rules! overlapping_segments {
    ($end:literal) => {
        concat!(
            "influencer_id = $1 and period_start > $2 - interval '1 day' and period_start <= $3
               and ",
            $end,
            " > $2"
        )
    };
}

/// [`overlapping_segments`] whose periods start at one of $4.
macro_rules! listed_segments {
    ($end:literal) => {
        concat!(overlapping_segments!($end), " and period_start = any($4)")
    };
}

/// The summary packs of influencer $1 that can hold a day segment overlapping `[$2, $3]` (a
/// pack holds the days starting in the 28 days from its period start, and a day overlapping
/// the range starts after a day before it), then its hour segments overlapping the range,
/// which have no summary (migration 0004): their period start and no pack.
const SUMMARIES_SQL: &str = concat!(
    "select period_start, days from influencer_summary_packs
     where influencer_id = $1 and period_start > $2 - interval '29 days' and period_start <= $3
       and __WINDOW__
     union all select period_start, null::bytea from ",
    hour_segments!("$1::bigint", "$1::bigint"),
    " where ",
    overlapping_segments!("(period_start + interval '1 hour')"),
    " and __WINDOW__"
);

/// The encoded points of one influencer's segments overlapping the range whose period starts
/// $4 lists.
const SEGMENT_DATA_SQL: &str = over_both_cold_tables!(
    concat!("period_start, period_end, ", day_data!()),
    "period_start, period_start + interval '1 hour', data",
    listed_segments,
    "$1::bigint",
    "$1::bigint"
);

/// A segment's period, epoch ms: `(start, end)`, end exclusive.
pub type Period = (i64, i64);

/// How many times a bucketed read starts again when the segments it summarised changed before
/// it read the points of the others.
const BUCKET_READ_ATTEMPTS: usize = 3;

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
    let packed: Option<Vec<u8>> = sqlx::query_scalar(HOT_SQL)
        .bind(influencer_id)
        .bind(at(start_ms))
        .bind(at(end_ms))
        .fetch_one(&mut *connection)
        .await?;
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

/// The cold tier of one influencer over one range, as a bucketed read takes it: the summaries
/// of the segments overlapping the range, then the encoded points of some or all of them. Two
/// reads, each its own snapshot: a compaction may replace segments between them.
trait ColdSegments {
    /// The summaries of the segments overlapping the range, by period (none for a segment
    /// stored without one: an hour segment).
    async fn summaries(&mut self) -> Result<Vec<(Period, Option<Summary>)>, ReadError>;
    /// The encoded points of the segments overlapping the range whose periods start at one of
    /// `starts`, by period.
    async fn data(&mut self, starts: &[i64]) -> Result<Vec<(Period, Vec<u8>)>, ReadError>;
}

/// [`ColdSegments`] in the database: both cold tables, over the window of chunks the range can
/// reach.
struct DatabaseSegments<'c> {
    connection: &'c mut sqlx::PgConnection,
    influencer_id: i64,
    start_ms: i64,
    end_ms: i64,
}

impl ColdSegments for DatabaseSegments<'_> {
    async fn summaries(&mut self) -> Result<Vec<(Period, Option<Summary>)>, ReadError> {
        use sqlx::Row;
        let sql = with_window(SUMMARIES_SQL, self.start_ms, self.end_ms);
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
        let sql = with_window(SEGMENT_DATA_SQL, self.start_ms, self.end_ms);
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
async fn buckets_from_summaries(
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
fn has_point_in(points: &[SeriesPoint], (start, end): Period) -> bool {
    let first_at_or_after = points.partition_point(|p| p.slot_ms < start);
    points
        .get(first_at_or_after)
        .is_some_and(|p| p.slot_ms < end)
}

/// The points of segments, decoded in period order.
fn decode_all(mut data: Vec<(Period, Vec<u8>)>) -> Result<Vec<SeriesPoint>, ReadError> {
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

/// Folds decoded points, hot points and whole segments (by their summaries, in period order)
/// into buckets, in time order, taking from the lists as they come (each bucket's run of
/// points is folded in one pass).
pub fn fold_buckets(
    decoded: Vec<SeriesPoint>,
    wholes: Vec<(Period, Summary)>,
    hot_points: &[SeriesPoint],
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Vec<BucketStats> {
    let merged = merge(decoded, hot_points.to_vec(), start_ms, end_ms);
    let mut points = merged.as_slice();
    let mut folder = Folder::new(step_ms);
    for (period, summary) in &wholes {
        // A whole segment goes after the points up to its first slot (that one included).
        let before = points.partition_point(|p| p.slot_ms <= summary.first_slot_ms);
        folder.add_points(&points[..before]);
        points = &points[before..];
        folder.add_summary(*period, summary);
    }
    folder.add_points(points);
    folder.finish()
}

/// Buckets filled in time order: runs of points, runs of a segment's decoded columns and whole
/// segments' summaries, each after all that came before.
struct Folder {
    step_ms: i64,
    done: Vec<BucketStats>,
    current: Option<(i64, Aggregate)>,
}

impl Folder {
    fn new(step_ms: i64) -> Self {
        Self {
            step_ms,
            done: Vec::new(),
            current: None,
        }
    }

    /// The end of the bucket `time` falls in and its aggregate: the current one (checked
    /// without dividing: most points are in it), or a new one once the current is closed.
    fn bucket_at(&mut self, time: i64) -> (i64, &mut Aggregate) {
        let step_ms = self.step_ms;
        if self
            .current
            .as_ref()
            .is_none_or(|(b, _)| time < *b || time >= *b + step_ms)
        {
            if let Some((b, acc)) = self.current.take() {
                self.done.extend(acc.bucket(b));
            }
            self.current = Some((bucket_of(time, step_ms), Aggregate::default()));
        }
        let (bucket, acc) = self.current.as_mut().expect("set above");
        (*bucket + step_ms, acc)
    }

    /// Points in slot order.
    fn add_points(&mut self, mut points: &[SeriesPoint]) {
        while let Some(first) = points.first() {
            let (end, acc) = self.bucket_at(first.slot_ms);
            let run = points.partition_point(|p| p.slot_ms < end).max(1);
            acc.add_points(&points[..run]);
            points = &points[run..];
        }
    }

    /// The points `range` of a segment's decoded columns.
    fn add_columns(&mut self, columns: &codec::Columns, range: std::ops::Range<usize>) {
        let mut i = range.start;
        while i < range.end {
            let (end, acc) = self.bucket_at(columns.slot(i));
            let run_end = columns.first_at_or_after(end).clamp(i + 1, range.end);
            let (followers, following) = columns.counts(i..run_end);
            acc.add_columns(followers, following, |k| columns.slot(i + k));
            i = run_end;
        }
    }

    /// A whole segment, by its summary.
    fn add_summary(&mut self, (start, end): Period, summary: &Summary) {
        let (_, acc) = self.bucket_at(summary.first_slot_ms);
        acc.add_summary(start, end - start, summary);
    }

    fn finish(mut self) -> Vec<BucketStats> {
        if let Some((b, acc)) = self.current.take() {
            self.done.extend(acc.bucket(b));
        }
        self.done
    }
}

/// The completeness of one influencer's series over a range: the slots its grid expected,
/// how many of them are stored, and the missing ones as runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gaps {
    pub expected: i64,
    pub stored: i64,
    /// Runs of consecutive missing slots: (first missing slot, last missing slot, how many),
    /// epoch ms.
    pub missing: Vec<(i64, i64, i64)>,
}

/// The gaps of one influencer over `[start_ms, end_ms]` on its slot grid (`first_slot` is any
/// slot of the grid; `interval_ms` its spacing). Runs past `max_runs` are left out (the counts
/// still cover them).
pub async fn gaps(
    pool: &PgPool,
    influencer_id: i64,
    (start_ms, end_ms): (i64, i64),
    grid: crate::schedule::SlotGrid,
    max_runs: usize,
) -> Result<Gaps, ReadError> {
    let stored = points(pool, influencer_id, start_ms, end_ms).await?;
    Ok(find_gaps(
        &stored,
        influencer_id,
        (start_ms, end_ms),
        grid,
        max_runs,
    ))
}

/// Walks the grid over the range against the stored slots (in order).
pub fn find_gaps(
    stored: &[SeriesPoint],
    influencer_id: i64,
    (start_ms, end_ms): (i64, i64),
    grid: crate::schedule::SlotGrid,
    max_runs: usize,
) -> Gaps {
    let mut gaps = Gaps {
        expected: 0,
        stored: 0,
        missing: Vec::new(),
    };
    let mut have = stored.iter().map(|p| p.slot_ms).peekable();
    let mut slot = grid.slot_at_or_after(influencer_id, start_ms);
    let mut run: Option<(i64, i64, i64)> = None;
    while slot <= end_ms {
        gaps.expected += 1;
        while have.next_if(|s| *s < slot).is_some() {}
        if have.next_if_eq(&slot).is_some() {
            gaps.stored += 1;
            if let Some(r) = run.take()
                && gaps.missing.len() < max_runs
            {
                gaps.missing.push(r);
            }
        } else {
            run = Some(match run {
                Some((first, _, n)) => (first, slot, n + 1),
                None => (slot, slot, 1),
            });
        }
        slot = grid.next_slot(influencer_id, slot);
    }
    if let Some(r) = run
        && gaps.missing.len() < max_runs
    {
        gaps.missing.push(r);
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::SlotGrid;
    use crate::series::HOUR_MS;
    use std::time::Duration;

    /// Hot points as `packed_hot` packs them: `timestamptz_send` (big-endian microseconds
    /// since 2000-01-01 UTC) and two `int4send`s.
    fn packed(points: &[(i64, i32, i32)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(micros, f, g) in points {
            out.extend_from_slice(&micros.to_be_bytes());
            out.extend_from_slice(&f.to_be_bytes());
            out.extend_from_slice(&g.to_be_bytes());
        }
        out
    }

    #[test]
    fn packed_hot_points_are_read_back_with_their_slots_in_epoch_milliseconds() {
        let bytes = packed(&[
            // 2026-01-01 00:01 UTC, then a slot before PostgreSQL's epoch (1999-12-31 23:59).
            (820_540_860_000_000, 5_000_000, 1_200),
            (-60_000_000, -1, 0),
        ]);
        let points: Vec<SeriesPoint> = unpack_hot(&bytes).unwrap().collect();
        assert_eq!(
            points,
            [
                SeriesPoint {
                    slot_ms: 1_767_225_660_000,
                    follower_count: 5_000_000,
                    following_count: 1_200,
                },
                SeriesPoint {
                    slot_ms: 946_684_740_000,
                    follower_count: -1,
                    following_count: 0,
                },
            ]
        );
        assert_eq!(unpack_hot(&[]).unwrap().count(), 0);
    }

    #[test]
    fn hot_points_cut_short_are_an_error() {
        let mut bytes = packed(&[(0, 1, 2), (60_000_000, 3, 4)]);
        bytes.pop();
        let error = unpack_hot(&bytes)
            .err()
            .expect("31 bytes are not whole points");
        assert!(error.to_string().contains("31 bytes"), "{error}");
    }

    fn p(slot_ms: i64, f: i32) -> SeriesPoint {
        SeriesPoint {
            slot_ms,
            follower_count: f,
            following_count: 1,
        }
    }

    #[test]
    fn a_window_holds_every_period_start_its_range_can_reach_on_the_chunk_grid() {
        let day = DAY_MS;
        let sql = with_window(
            RANGE_SQL,
            1_767_225_600_000,
            1_767_225_600_000 + day - 60_000,
        );
        assert!(!sql.contains(WINDOW));
        // 2026-01-01: a day before it, 2025-12-31, is in the 28-day window from 2025-12-18 (the
        // grid counts from 1970-01-01), and the range ends before 2026-01-15.
        assert_eq!(
            sql.matches(
                "period_start >= '2025-12-18T00:00:00+00:00' and period_start < '2026-01-15T00:00:00+00:00'"
            )
            .count(),
            2
        );
        for (start, end) in [
            (0, 0),
            (WINDOW_GRID_MS, WINDOW_GRID_MS),
            (WINDOW_GRID_MS + day, WINDOW_GRID_MS + day),
            (5 * day + 1, 400 * day),
            (-3 * day, -day),
        ] {
            let (low, high) = window_bounds(start, end);
            // from the earliest period start the range reaches (a segment starting a day
            // before the start, plus 1 ms) to its end, within a few grid cells
            assert!(low <= start - day + 1 && end < high, "{start} {end}");
            assert!(start - day - low < WINDOW_GRID_MS && high - end <= WINDOW_GRID_MS);
            assert_eq!((low % WINDOW_GRID_MS, high % WINDOW_GRID_MS), (0, 0));
        }
    }

    /// What a bucketed read must answer: every point folded one at a time, in slot order.
    fn folded_one_by_one(points: &[SeriesPoint], step_ms: i64) -> Vec<BucketStats> {
        let mut out: Vec<BucketStats> = Vec::new();
        let mut current: Option<(i64, Aggregate)> = None;
        for point in points {
            let bucket = bucket_of(point.slot_ms, step_ms);
            if current.as_ref().is_none_or(|(b, _)| *b != bucket) {
                if let Some((b, acc)) = current.take() {
                    out.extend(acc.bucket(b));
                }
                current = Some((bucket, Aggregate::default()));
            }
            current.as_mut().unwrap().1.add_point(point);
        }
        if let Some((b, acc)) = current {
            out.extend(acc.bucket(b));
        }
        out
    }

    #[test]
    fn segments_folded_as_columns_answer_as_their_points_folded_one_by_one() {
        let day0 = 1_767_225_600_000;
        let walk = |slot_ms: i64, i: i32| SeriesPoint {
            slot_ms,
            follower_count: 1_000_000 + i.wrapping_mul(7_919) % 50_000,
            // A zero now and then: a point without a ratio.
            following_count: if i % 97 == 0 { 0 } else { 500 + i % 40 },
        };
        // A full day on the grid, then an hour with a gap (its slots listed), then an hour
        // segment of another grid phase.
        let day: Vec<SeriesPoint> = (0..1440)
            .map(|i| walk(day0 + i * 60_000, i as i32))
            .collect();
        let gapped: Vec<SeriesPoint> = (0..60)
            .filter(|i| !(20..25).contains(i))
            .map(|i| walk(day0 + DAY_MS + i * 60_000, i as i32))
            .collect();
        let hour: Vec<SeriesPoint> = (0..60)
            .map(|i| walk(day0 + DAY_MS + HOUR_MS + 17_000 + i * 60_000, i as i32 + 3))
            .collect();
        let segments = vec![
            codec::encode(&day).unwrap(),
            codec::encode(&gapped).unwrap(),
            codec::encode(&hour).unwrap(),
        ];
        // Hot points: before the first segment, one in the gapped hour's gap (late, not merged
        // yet), one on a slot a segment holds (the segment's value is kept), and after.
        let hot = vec![
            walk(day0 - 60_000, 5),
            walk(day0 + DAY_MS + 22 * 60_000, 6),
            SeriesPoint {
                follower_count: -1,
                ..day[100]
            },
            walk(day0 + DAY_MS + 3 * HOUR_MS, 7),
        ];
        let tiers = || Tiers {
            segments: segments.clone(),
            hot: hot.clone(),
        };
        let everything = (day0 - HOUR_MS, day0 + 2 * DAY_MS);
        let inside = (day0 + 90 * 60_000 + 1, day0 + DAY_MS + 30 * 60_000);
        for (start, end) in [everything, inside] {
            let points = tiers().points(start, end).unwrap();
            assert!(!points.iter().any(|p| p.follower_count == -1));
            for step in [60_000, 5 * 60_000, HOUR_MS, 6 * HOUR_MS] {
                let expected = folded_one_by_one(&points, step);
                assert!(expected.len() > 1);
                assert_eq!(
                    tiers().buckets(start, end, step).unwrap(),
                    expected,
                    "{start}..{end} at {step}"
                );
                assert_eq!(
                    fold_buckets(points.clone(), Vec::new(), &[], start, end, step),
                    expected
                );
            }
        }
        // Hot points only (nothing compacted yet), and nothing at all.
        let only_hot = Tiers {
            segments: vec![],
            hot: hot.clone(),
        };
        assert_eq!(
            only_hot
                .buckets(everything.0, everything.1, HOUR_MS)
                .unwrap()
                .len(),
            4
        );
        assert!(
            Tiers::default()
                .buckets(0, DAY_MS, HOUR_MS)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_hot_point_in_a_segments_period_is_found_from_either_side() {
        let hot = vec![p(10, 1), p(20, 2), p(30, 3)];
        assert!(has_point_in(&hot, (20, 21)));
        assert!(has_point_in(&hot, (0, 11)));
        assert!(has_point_in(&hot, (25, 100)));
        // the end is exclusive; nothing before the first or after the last
        assert!(!has_point_in(&hot, (0, 10)));
        assert!(!has_point_in(&hot, (11, 20)));
        assert!(!has_point_in(&hot, (31, 100)));
        assert!(!has_point_in(&[], (0, 100)));
    }

    #[test]
    fn a_slot_in_both_tiers_is_answered_once_with_the_segments_value() {
        let cold = vec![p(10, 1), p(20, 2), p(30, 3)];
        let hot = vec![p(40, 40), p(20, 99), p(5, 5), p(40, 41)];
        let merged = merge(cold, hot, 0, 35);
        assert_eq!(merged, vec![p(5, 5), p(10, 1), p(20, 2), p(30, 3)]);
    }

    #[test]
    fn gaps_are_runs_of_missing_grid_slots() {
        let grid = SlotGrid::new(Duration::from_secs(60));
        let id = 1_000_001;
        let first = grid.slot_at_or_after(id, 1_700_000_000_000);
        let slots: Vec<i64> = (0..10).map(|i| first + i * 60_000).collect();
        // stored: 0, 1, 4, 5, 9 → missing 2-3 and 6-8
        let stored: Vec<SeriesPoint> = [0, 1, 4, 5, 9].iter().map(|&i| p(slots[i], 1)).collect();
        let g = find_gaps(&stored, id, (slots[0], slots[9]), grid, 10);
        assert_eq!(g.expected, 10);
        assert_eq!(g.stored, 5);
        assert_eq!(
            g.missing,
            vec![(slots[2], slots[3], 2), (slots[6], slots[8], 3)]
        );
        let capped = find_gaps(&stored, id, (slots[0], slots[9]), grid, 1);
        assert_eq!(capped.missing.len(), 1);
        // a point off the grid is not counted as a stored slot
        let off = vec![p(slots[0] + 1, 1)];
        assert_eq!(
            find_gaps(&off, id, (slots[0], slots[1]), grid, 10).stored,
            0
        );
    }

    /// Segments, each its period and its points.
    type Segments = Vec<(Period, Vec<SeriesPoint>)>;

    /// A cold tier that a compaction changes between a bucketed read's two reads: the
    /// summaries come from `states[state]`, and every read of points first moves to the next
    /// state, if any (as if its compaction had committed just before).
    struct Compacting {
        states: Vec<Segments>,
        state: usize,
        /// The period starts the last read of points asked for (`None`: no read yet).
        asked: Option<Vec<i64>>,
    }

    impl ColdSegments for Compacting {
        /// As the database answers them: a day segment's summary, none for an hour segment.
        async fn summaries(&mut self) -> Result<Vec<(Period, Option<Summary>)>, ReadError> {
            Ok(self.states[self.state]
                .iter()
                .map(|(period, points)| {
                    let day = period.1 - period.0 >= DAY_MS;
                    (*period, day.then(|| Summary::of(points)))
                })
                .collect())
        }

        async fn data(&mut self, starts: &[i64]) -> Result<Vec<(Period, Vec<u8>)>, ReadError> {
            self.state = (self.state + 1).min(self.states.len() - 1);
            self.asked = Some(starts.to_vec());
            Ok(self.states[self.state]
                .iter()
                .filter(|((start, _), _)| starts.contains(start))
                .map(|(period, points)| (*period, codec::encode(points).unwrap()))
                .collect())
        }
    }

    /// Two days of points a minute from midnight, as the hour segments of both days, or as the
    /// first day's day segment and the second day's hour segments (once the first is merged).
    fn two_days() -> (Vec<SeriesPoint>, Segments, Segments) {
        let day = 1_767_225_600_000;
        let points: Vec<SeriesPoint> = (0..2 * 1440)
            .map(|i| SeriesPoint {
                slot_ms: day + i * 60_000,
                follower_count: 1_000_000 + (i as i32 * 7919) % 50_000,
                following_count: (i as i32 * 31) % 7,
            })
            .collect();
        let segment = |start: i64, span: i64| {
            let of: Vec<SeriesPoint> = points
                .iter()
                .filter(|p| p.slot_ms >= start && p.slot_ms < start + span)
                .copied()
                .collect();
            ((start, start + span), of)
        };
        let hours: Vec<_> = (0..48)
            .map(|h| segment(day + h * HOUR_MS, HOUR_MS))
            .collect();
        let merged: Vec<_> = std::iter::once(segment(day, DAY_MS))
            .chain(hours[24..].iter().cloned())
            .collect();
        (points, hours, merged)
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// The first day is merged between the summaries (its hours; the first one needs its
    /// points, the range starting within it) and the read of points (which finds the day
    /// segment instead): the read starts again and answers as from the points themselves.
    #[test]
    fn a_bucketed_read_starts_again_when_a_merge_replaces_its_segments_between_reads() {
        let (points, hours, merged) = two_days();
        let (start, end) = (points[30].slot_ms, points[2 * 1440 - 2].slot_ms);
        let mut cold = Compacting {
            states: vec![hours, merged],
            state: 0,
            asked: None,
        };
        let answer = block_on(buckets_from_summaries(&mut cold, &[], start, end, DAY_MS))
            .unwrap()
            .expect("the second attempt sees one state");
        assert_eq!(cold.state, 1, "the merge was seen");
        assert_eq!(
            answer,
            fold_buckets(points, Vec::new(), &[], start, end, DAY_MS)
        );
        assert_eq!(answer.len(), 2);
        assert_eq!(answer[0].samples, 1440 - 30);
    }

    /// Whole days from the day segment's summary and from hour segments, which have none: the
    /// hours are decoded (and only they), and the answer is the points' own.
    #[test]
    fn hour_segments_without_a_summary_are_answered_from_their_points() {
        let (points, _, merged) = two_days();
        let (start, end) = (points[0].slot_ms, points[2 * 1440 - 1].slot_ms);
        let hours: Vec<i64> = (24..48).map(|h| start + h * HOUR_MS).collect();
        let mut cold = Compacting {
            states: vec![merged],
            state: 0,
            asked: None,
        };
        let answer = block_on(buckets_from_summaries(&mut cold, &[], start, end, DAY_MS))
            .unwrap()
            .expect("the segments did not change");
        assert_eq!(
            answer,
            fold_buckets(points, Vec::new(), &[], start, end, DAY_MS)
        );
        assert_eq!(answer.len(), 2);
        assert!(answer.iter().all(|bucket| bucket.samples == 1440));
        assert_eq!(
            cold.asked,
            Some(hours),
            "the 24 hours' points, not the day's"
        );
    }

    /// Segments that change between every two reads: after its attempts the read gives up.
    #[test]
    fn a_bucketed_read_gives_up_when_the_segments_keep_changing() {
        let (points, hours, merged) = two_days();
        let (start, end) = (points[30].slot_ms, points[2 * 1440 - 2].slot_ms);
        let mut cold = Compacting {
            states: [hours, merged].into_iter().cycle().take(8).collect(),
            state: 0,
            asked: None,
        };
        let answer = block_on(buckets_from_summaries(&mut cold, &[], start, end, DAY_MS));
        assert!(answer.unwrap().is_none());
        assert_eq!(
            cold.state, BUCKET_READ_ATTEMPTS,
            "one read of points per attempt"
        );
    }
}
