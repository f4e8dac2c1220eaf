//! What the tiers hold, measured from outside the read path: sizes on disk, points stored in a
//! window and how late they were fetched, what a range of influencers has in each tier. For
//! the benchmarks' reports and for an operator's questions; nothing here is on a hot path.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::HOUR_MS;

/// A table of the tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierTable {
    /// `influencer_metrics`: raw points, one row a point, in hour chunks.
    Raw,
    /// `late_points`: points that reached the sink after their hour closed.
    Late,
    /// `influencer_hour_blocks`: closed hours, 64 influencers a row.
    HourBlocks,
    /// `influencer_segments`: closed days, one row per influencer and day.
    DaySegments,
    /// `influencer_summary_packs`: the day segments' summaries, 28 days a row.
    SummaryPacks,
}

impl TierTable {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Raw => "influencer_metrics",
            Self::Late => "late_points",
            Self::HourBlocks => "influencer_hour_blocks",
            Self::DaySegments => "influencer_segments",
            Self::SummaryPacks => "influencer_summary_packs",
        }
    }
}

/// Refreshes the planner's statistics of `table` (and, with `vacuum`, its visibility map).
pub async fn analyze(pool: &PgPool, table: TierTable, vacuum: bool) -> sqlx::Result<()> {
    let verb = if vacuum { "vacuum analyze" } else { "analyze" };
    sqlx::query(&format!("{verb} {}", table.name()))
        .execute(pool)
        .await?;
    Ok(())
}

/// The bytes `table` takes on disk (heap, TOAST and indexes), after a `vacuum analyze` so that
/// dead rows are not counted as live.
pub async fn bytes(pool: &PgPool, table: TierTable) -> sqlx::Result<i64> {
    analyze(pool, table, true).await?;
    sqlx::query_scalar!(
r#"select coalesce((select total_bytes from hypertable_detailed_size($1::text::regclass)), 0)::bigint
     as "bytes!""#,
table.name()
)
    .fetch_one(pool)
    .await
}

/// The bytes of the day segments' encoded points (`None` when there is no day segment).
pub async fn day_data_bytes(pool: &PgPool) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        "select sum(length(data_head) + length(data_tail))::bigint from influencer_segments"
    )
    .fetch_one(pool)
    .await
}

/// The raw points of the slots in `[from, to)`: how many, and the median and 99th percentile
/// of their lateness (fetched after their slot), seconds (`NaN` without points).
#[derive(Debug, Clone, Copy)]
pub struct RawWindow {
    pub points: i64,
    pub lateness_p50: f64,
    pub lateness_p99: f64,
}

pub async fn raw_window(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<RawWindow> {
    let row = sqlx::query!(
        r#"select count(*) as "points!",
                percentile_disc(0.5) within group
                    (order by extract(epoch from fetched_at - slot))::float8 as p50,
                percentile_disc(0.99) within group
                    (order by extract(epoch from fetched_at - slot))::float8 as p99
         from influencer_metrics where slot >= $1 and slot < $2"#,
        from,
        to,
    )
    .fetch_one(pool)
    .await?;
    Ok(RawWindow {
        points: row.points,
        lateness_p50: row.p50.unwrap_or(f64::NAN),
        lateness_p99: row.p99.unwrap_or(f64::NAN),
    })
}

/// The points of both hot tables fetched in `[from, to)`.
pub async fn hot_points_fetched(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
"select (select count(*) from influencer_metrics where fetched_at >= $1 and fetched_at < $2)
              + (select count(*) from late_points where fetched_at >= $1 and fetched_at < $2)
     as \"points!\"",
from,
to
)
    .fetch_one(pool)
    .await
}

/// Whether the raw chunk of the hour starting at `hour_ms` is still there (not compacted).
pub async fn raw_hour_left(pool: &PgPool, hour_ms: i64) -> sqlx::Result<bool> {
    debug_assert_eq!(hour_ms.rem_euclid(HOUR_MS), 0);
    sqlx::query_scalar!(
        "select exists (select 1 from timescaledb_information.chunks
                        where hypertable_name = 'influencer_metrics' and range_start = $1)
         as \"left!\"",
        DateTime::from_timestamp_millis(hour_ms)
    )
    .fetch_one(pool)
    .await
}

/// What the influencers in `[first, last]` hold over `[start_s, end_s]` (epoch seconds) in
/// each tier: day segments, hour segments and raw points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeHoldings {
    pub day_segments: i64,
    pub hour_segments: i64,
    pub raw_points: i64,
}

pub async fn range_holdings(
    pool: &PgPool,
    (first, last): (i64, i64),
    (start_s, end_s): (i64, i64),
) -> sqlx::Result<RangeHoldings> {
    sqlx::query_as!(
        RangeHoldings,
        r#"select
           (select count(*) from influencer_segments
            where influencer_id between $1 and $2
              and period_end > to_timestamp($3) and period_start <= to_timestamp($4))
               as "day_segments!",
           (select count(*) from influencer_hour_blocks b, generate_series(0, 63) m
            where b.block between $1::bigint >> 6 and $2::bigint >> 6 and b.points[m + 1] > 0
              and b.period_start > to_timestamp($3) - interval '1 hour'
              and b.period_start <= to_timestamp($4)) as "hour_segments!",
           (select count(*) from influencer_metrics
            where influencer_id between $1 and $2
              and slot between to_timestamp($3) and to_timestamp($4)) as "raw_points!""#,
        first,
        last,
        start_s as f64,
        end_s as f64,
    )
    .fetch_one(pool)
    .await
}
