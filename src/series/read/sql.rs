//! The cold tier's statements of the read path (the hot tier's is fixed text, in `hot`),
//! written for a [`Window`] of period starts, given as constants so that PostgreSQL plans them with the
//! chunks they reach (see [`Window`]): the one kind of statement built at run time, and built
//! only here, from fixed fragments and a window.

use crate::series::{DAY_MS, at, pack};

/// The grid a window's bounds are aligned to: `influencer_segments`' chunk interval (a summary
/// pack's span).
pub(super) const WINDOW_GRID_MS: i64 = pack::SPAN_MS;

/// The period starts a cold statement may reach: those of a range `[start, end]` (after a day
/// before the start, up to the end) widened to the chunk grid, epoch ms, `[low, high)`.
///
/// The range's own bounds are parameters, so PostgreSQL cannot tell which chunks they reach
/// when it plans: every chunk of `influencer_segments` was in the (generic) plan and
/// TimescaleDB excluded them one by one each time a read started, about 10 µs a chunk (with
/// 14 chunks, a year's segments, that was most of a day's read: pgbench of it at 16 clients,
/// 10,000 a second, against 21,000 with 4 chunks and 44,000 on a plain table). Constants it can
/// use when it plans, so the plan holds the one or two chunks of the window (a year's range,
/// its fourteen). Aligned to the grid, there are few distinct windows, so few statements to
/// prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    pub low_ms: i64,
    pub high_ms: i64,
}

impl Window {
    /// The window of `[start_ms, end_ms]`: from a grid line at or before a day before the
    /// start, to the first grid line after the end (exclusive).
    pub(crate) fn of_range(start_ms: i64, end_ms: i64) -> Self {
        Self {
            low_ms: (start_ms - DAY_MS).div_euclid(WINDOW_GRID_MS) * WINDOW_GRID_MS,
            high_ms: (end_ms.div_euclid(WINDOW_GRID_MS) + 1) * WINDOW_GRID_MS,
        }
    }

    /// The window as a condition on `period_start`, its bounds written as constants.
    fn condition(self) -> String {
        format!(
            "period_start >= '{}' and period_start < '{}'",
            at(self.low_ms).to_rfc3339(),
            at(self.high_ms).to_rfc3339()
        )
    }
}

/// A day segment's encoded points (the view `all_segments` and migration 0003 say why in two
/// parts).
const DAY_DATA: &str = "data_head || data_tail";

/// The hour segments of the influencers in `[lo, hi]` (SQL expressions of any bigint: the
/// members are clamped to the block before subtracting, so no bound overflows) as a table of
/// `influencer_id, period_start, data`: the members with points of the block rows of
/// `influencer_hour_blocks` that hold them, each member's bytes cut out of its row's by
/// `hour_member_bytes` (migration 0005), which cuts them from `data_head`, `data_tail` or both
/// without joining them, so PostgreSQL fetches only the TOAST chunks holding them.
fn hour_segments(lo: &str, hi: &str) -> String {
    format!(
        "(select (b.block << 6) + m as influencer_id, b.period_start,
                 hour_member_bytes(b.data_head, b.data_tail, b.offsets[m + 1], b.offsets[m + 2]) as data
          from influencer_hour_blocks b
          cross join lateral generate_series(greatest({lo}, b.block << 6) - (b.block << 6),
                                             least({hi}, (b.block << 6) + 63) - (b.block << 6)) m
          where b.block >= ({lo} >> 6) and b.block <= ({hi} >> 6) and b.points[m + 1] > 0) hour_segments"
    )
}

/// How the end of a segment's period is written: the day table stores it, an hour segment's
/// ends an hour after its start.
const DAY_END: &str = "period_end";
const HOUR_END: &str = "(period_start + interval '1 hour')";

/// Everything of the influencers in `[$1, $2]` over `[$3, $4]`, both tiers in one statement, so
/// in one snapshot: a compaction has committed either before it (its segments are seen, its
/// points are gone) or after it (the other way round), never half, and the range costs one
/// round trip. Rows: `influencer_id, at, data, hot`: an influencer's hot points packed in one
/// row (as `hot::fetch` packs them; `at` the earliest slot), or a segment with its encoded points.
///
/// Segments overlapping the range are found by their period start (a segment spans at most a
/// day, which lets the chunks of other times be skipped). Both cold tables are written out
/// rather than read through the `all_segments` view: PostgreSQL planned a read through the view
/// at about 6,000 a second (pgbench, 16 clients, the bench's 100,000,000 points) and the same
/// union written out at about 15,000.
pub(super) fn range(window: Window) -> String {
    let condition = window.condition();
    let overlapping = |end: &str| {
        format!(
            "influencer_id >= $1 and influencer_id <= $2
               and period_start > $3 - interval '1 day' and period_start <= $4 and {end} > $3
               and {condition}"
        )
    };
    format!(
        "select influencer_id, min(at),
                string_agg(timestamptz_send(at) || int4send(follower_count) || int4send(following_count), ''::bytea order by at, late),
                true
         from (select influencer_id, slot as at, follower_count, following_count, false as late
               from influencer_metrics
               where influencer_id >= $1 and influencer_id <= $2 and slot >= $3 and slot <= $4
               union all
               select influencer_id, slot as at, follower_count, following_count, true as late
               from late_points
               where influencer_id >= $1 and influencer_id <= $2 and slot >= $3 and slot <= $4) hot
         group by influencer_id
         union all
         select influencer_id, period_start, {DAY_DATA}, false
         from influencer_segments where {}
         union all
         select influencer_id, period_start, data, false
         from {} where {}",
        overlapping(DAY_END),
        hour_segments("$1::bigint", "$2::bigint"),
        overlapping(HOUR_END),
    )
}

/// The segments of influencer $1 overlapping `[$2, $3]` in the window, given how the period's
/// end is written.
fn one_influencers_segments(end: &str, condition: &str) -> String {
    format!(
        "influencer_id = $1 and period_start > $2 - interval '1 day' and period_start <= $3
           and {end} > $2 and {condition}"
    )
}

/// The summary packs of influencer $1 that can hold a day segment overlapping `[$2, $3]` (a
/// pack holds the days starting in the 28 days from its period start, and a day overlapping
/// the range starts after a day before it), then its hour segments overlapping the range,
/// which have no summary (migration 0004): their period start and no pack.
pub(super) fn summaries(window: Window) -> String {
    let condition = window.condition();
    format!(
        "select period_start, days from influencer_summary_packs
         where influencer_id = $1 and period_start > $2 - interval '29 days' and period_start <= $3
           and {condition}
         union all
         select period_start, null::bytea from {} where {}",
        hour_segments("$1::bigint", "$1::bigint"),
        one_influencers_segments(HOUR_END, &condition),
    )
}

/// The encoded points (`period_start, period_end, data`) of influencer $1's segments
/// overlapping `[$2, $3]` whose period starts $4 lists.
pub(super) fn segment_data(window: Window) -> String {
    let condition = window.condition();
    format!(
        "select period_start, period_end, {DAY_DATA} from influencer_segments
         where {} and period_start = any($4)
         union all
         select period_start, period_start + interval '1 hour', data from {}
         where {} and period_start = any($4)",
        one_influencers_segments(DAY_END, &condition),
        hour_segments("$1::bigint", "$1::bigint"),
        one_influencers_segments(HOUR_END, &condition),
    )
}
