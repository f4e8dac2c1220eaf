//! The one read path: an influencer's points over a range, raw or in buckets, its gaps, and
//! many influencers' points over a window, from both tiers.
//!
//! Raw ranges read both tiers in one statement, so in one snapshot. Bucketed ranges read the
//! hot tier first (the cold read needs to know which hours have hot points), then the cold
//! one: a compaction that commits between the two reads moves points the first read saw into
//! segments the second one sees, the same slots twice, answered once. The other order would
//! miss them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Aggregate, BucketStats, DAY_MS, HOUR_MS, SeriesPoint, Summary, bucket_of, codec};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("a stored segment cannot be decoded: {0}")]
    Corrupt(#[from] codec::CodecError),
    #[error("the segments of influencer {0} changed during two reads in a row")]
    Changed(i64),
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}

#[derive(sqlx::FromRow)]
struct HotRow {
    slot: DateTime<Utc>,
    follower_count: i32,
    following_count: i32,
}

impl HotRow {
    fn point(&self) -> SeriesPoint {
        SeriesPoint {
            slot_ms: self.slot.timestamp_millis(),
            follower_count: self.follower_count,
            following_count: self.following_count,
        }
    }
}

/// `select` over both hot tables (`influencer_metrics`, then `late_points`), each with
/// `condition`, as one `union all`.
macro_rules! over_both_hot_tables {
    ($select:literal, $condition:literal) => {
        concat!(
            "select ",
            $select,
            " from influencer_metrics where ",
            $condition,
            " union all select ",
            $select,
            " from late_points where ",
            $condition
        )
    };
}

/// `select` over both cold tables (`influencer_segments`, then `influencer_hour_segments`),
/// each with `condition` and the [`WINDOW`] to be filled in by [`with_window`], as one
/// `union all`. Written out rather than through the `all_segments` view: PostgreSQL planned a
/// read through the view at about 6,000 a second (pgbench, 16 clients, the bench's
/// 100,000,000 points) and the same union written out at about 15,000.
macro_rules! over_both_cold_tables {
    ($select:literal, $condition:literal) => {
        concat!(
            "select ",
            $select,
            " from influencer_segments where ",
            $condition,
            " and __WINDOW__ union all select ",
            $select,
            " from influencer_hour_segments where ",
            $condition,
            " and __WINDOW__"
        )
    };
}

/// Where a cold statement's window of period starts goes.
const WINDOW: &str = "__WINDOW__";

/// The grid the window's bounds are aligned to: `influencer_segments`' chunk interval.
const WINDOW_GRID_MS: i64 = 28 * DAY_MS;

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

/// Raw points of one influencer over `[$2, $3]`, both hot tables.
const HOT_SQL: &str = over_both_hot_tables!(
    "slot, follower_count, following_count",
    "influencer_id = $1 and slot >= $2 and slot <= $3"
);

/// A row of [`RANGE_SQL`]: a hot point, or a segment with its encoded points.
#[derive(sqlx::FromRow)]
struct RangeRow {
    influencer_id: i64,
    /// The point's slot, or the segment's period start.
    at: DateTime<Utc>,
    /// A point's counts (0 for a segment).
    follower_count: i32,
    following_count: i32,
    /// A segment's encoded points; none for a point.
    data: Option<Vec<u8>>,
}

/// Everything of the influencers in `ids` (inclusive bounds) over `[start, end]`, both tiers in
/// one statement, so in one snapshot: a compaction has committed either before it (its
/// segments are seen, its points are gone) or after it (the other way round), never half, and
/// the range costs one round trip. Segments overlapping the range are found by their period
/// start (a segment spans at most a day, which lets the chunks of other times be skipped).
const RANGE_SQL: &str = concat!(
    over_both_hot_tables!(
        "influencer_id, slot as at, follower_count, following_count, null::bytea as data",
        "influencer_id >= $1 and influencer_id <= $2 and slot >= $3 and slot <= $4"
    ),
    " union all ",
    over_both_cold_tables!(
        "influencer_id, period_start, 0, 0, data_head || data_tail",
        "influencer_id >= $1 and influencer_id <= $2
           and period_start > $3 - interval '1 day' and period_start <= $4 and period_end > $3"
    )
);

/// Merges one influencer's hot points into its decoded segment points (both in slot order);
/// a slot in both keeps the segment's value. Only points within `[start, end]` are kept.
fn merge(
    cold: Vec<SeriesPoint>,
    mut hot: Vec<SeriesPoint>,
    start_ms: i64,
    end_ms: i64,
) -> Vec<SeriesPoint> {
    hot.sort_by_key(|p| p.slot_ms);
    hot.dedup_by_key(|p| p.slot_ms);
    let in_range = |p: &SeriesPoint| p.slot_ms >= start_ms && p.slot_ms <= end_ms;
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
    let sql = with_window(RANGE_SQL, start_ms, end_ms);
    let mut rows: Vec<RangeRow> = sqlx::query_as(&sql)
        .bind(ids.0)
        .bind(ids.1)
        .bind(at(start_ms))
        .bind(at(end_ms))
        .fetch_all(pool)
        .await?;
    // Segments in period order per influencer (points are sorted in `merge`).
    rows.sort_unstable_by_key(|row| (row.influencer_id, row.data.is_none(), row.at));
    let mut by_id: BTreeMap<i64, (Vec<SeriesPoint>, Vec<SeriesPoint>)> = BTreeMap::new();
    for row in rows {
        let (cold, hot) = by_id.entry(row.influencer_id).or_default();
        match &row.data {
            Some(data) => cold.extend(codec::decode(data)?),
            None => hot.push(SeriesPoint {
                slot_ms: row.at.timestamp_millis(),
                follower_count: row.follower_count,
                following_count: row.following_count,
            }),
        }
    }
    Ok(by_id
        .into_iter()
        .map(|(id, (cold, hot))| (id, merge(cold, hot, start_ms, end_ms)))
        .filter(|(_, points)| !points.is_empty())
        .collect())
}

#[derive(sqlx::FromRow)]
struct SummarizedRow {
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    first_slot: DateTime<Utc>,
    last_slot: DateTime<Utc>,
    follower_sum: i64,
    following_sum: i64,
    ratio_min: Option<f64>,
    ratio_max: Option<f64>,
    ratio_sum: Option<f64>,
    points: i32,
    ratio_points: i32,
    follower_min: i32,
    follower_max: i32,
    follower_last: i32,
    following_min: i32,
    following_max: i32,
    following_last: i32,
    data: Option<Vec<u8>>,
}

impl SummarizedRow {
    fn summary(&self) -> Summary {
        Summary {
            points: self.points,
            first_slot_ms: self.first_slot.timestamp_millis(),
            last_slot_ms: self.last_slot.timestamp_millis(),
            follower_sum: self.follower_sum,
            follower_min: self.follower_min,
            follower_max: self.follower_max,
            follower_last: self.follower_last,
            following_sum: self.following_sum,
            following_min: self.following_min,
            following_max: self.following_max,
            following_last: self.following_last,
            ratio_points: self.ratio_points,
            ratio_min: self.ratio_min,
            ratio_max: self.ratio_max,
            ratio_sum: self.ratio_sum,
        }
    }
}

/// Segments overlapping the range, with their data only where the answer needs the points: a
/// segment that lies whole inside one bucket and inside the range, with no hot point in its
/// period (hours listed in $6), is answered from its summary.
const BUCKETED_COLD_SQL: &str = over_both_cold_tables!(
    "period_start, period_end, first_slot, last_slot,
        follower_sum, following_sum, ratio_min, ratio_max, ratio_sum, points, ratio_points,
        follower_min, follower_max, follower_last, following_min, following_max, following_last,
        case when $5 and first_slot >= $2 and last_slot <= $3
                  and time_bucket(make_interval(secs => $4), first_slot)
                      = time_bucket(make_interval(secs => $4), last_slot)
                  and not exists (select 1 from unnest($6::timestamptz[]) h(hour)
                                  where h.hour >= period_start and h.hour < period_end)
             then null else data_head || data_tail end as data",
    "influencer_id = $1
       and period_start > $2 - interval '1 day' and period_start <= $3 and period_end > $2"
);

/// One influencer's points over `[start_ms, end_ms]` in buckets of `step_ms` aligned as
/// `time_bucket` aligns them; buckets without points are left out.
pub async fn buckets(
    pool: &PgPool,
    influencer_id: i64,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Vec<BucketStats>, ReadError> {
    // Both statements on one connection: one acquisition (and its round trips) for the range.
    let mut connection = pool.acquire().await?;
    let hot_rows: Vec<HotRow> = sqlx::query_as(HOT_SQL)
        .bind(influencer_id)
        .bind(at(start_ms))
        .bind(at(end_ms))
        .fetch_all(&mut *connection)
        .await?;
    let hot_points: Vec<SeriesPoint> = hot_rows.iter().map(HotRow::point).collect();
    let mut hot_hours: Vec<DateTime<Utc>> = hot_points
        .iter()
        .map(|p| at(p.slot_ms.div_euclid(HOUR_MS) * HOUR_MS))
        .collect();
    hot_hours.sort_unstable();
    hot_hours.dedup();
    // Summaries may stand in for segments; if one that came without its data turns out not
    // to fit one bucket after all, read again with every segment's data.
    let sql = with_window(BUCKETED_COLD_SQL, start_ms, end_ms);
    for use_summaries in [true, false] {
        let mut rows: Vec<SummarizedRow> = sqlx::query_as(&sql)
            .bind(influencer_id)
            .bind(at(start_ms))
            .bind(at(end_ms))
            .bind((step_ms / 1000) as f64)
            .bind(use_summaries)
            .bind(&hot_hours)
            .fetch_all(&mut *connection)
            .await?;
        rows.sort_unstable_by_key(|row| row.period_start);
        if let Some(answer) = fold_buckets(rows, &hot_points, start_ms, end_ms, step_ms)? {
            return Ok(answer);
        }
    }
    Err(ReadError::Changed(influencer_id))
}

fn fold_buckets(
    rows: Vec<SummarizedRow>,
    hot_points: &[SeriesPoint],
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Option<Vec<BucketStats>>, ReadError> {
    let mut decoded = Vec::new();
    // Segments answered by their summary: (period start, span, summary), in time order.
    let mut wholes = Vec::new();
    for row in rows {
        match &row.data {
            Some(data) => decoded.extend(codec::decode(data)?),
            None => {
                let summary = row.summary();
                if bucket_of(summary.first_slot_ms, step_ms)
                    != bucket_of(summary.last_slot_ms, step_ms)
                    || hot_points.iter().any(|p| {
                        p.slot_ms >= row.period_start.timestamp_millis()
                            && p.slot_ms < row.period_end.timestamp_millis()
                    })
                {
                    return Ok(None);
                }
                let start = row.period_start.timestamp_millis();
                wholes.push((start, row.period_end.timestamp_millis() - start, summary));
            }
        }
    }
    // Segments come in period order and never overlap, so their points are in slot order
    // already; sort only if that ever stops holding. Then points and whole segments are folded
    // into buckets in time order, taken from the two lists as they come (a month at step=1h
    // is 43,200 points: no list of both is built).
    if !decoded.is_sorted_by_key(|p| p.slot_ms) {
        decoded.sort_by_key(|p| p.slot_ms);
    }
    let mut points = merge(decoded, hot_points.to_vec(), start_ms, end_ms)
        .into_iter()
        .peekable();
    let mut wholes = wholes.into_iter().peekable();
    let mut out = Vec::new();
    let mut current: Option<(i64, Aggregate)> = None;
    loop {
        // A whole segment goes before a point only if it starts before it.
        let whole_first = match (wholes.peek(), points.peek()) {
            (Some((_, _, s)), Some(p)) => s.first_slot_ms < p.slot_ms,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let time = if whole_first {
            wholes.peek().map(|(_, _, s)| s.first_slot_ms)
        } else {
            points.peek().map(|p| p.slot_ms)
        }
        .expect("peeked above");
        let bucket = bucket_of(time, step_ms);
        if current.as_ref().is_none_or(|(b, _)| *b != bucket) {
            if let Some((b, acc)) = current.take() {
                out.extend(acc.bucket(b));
            }
            current = Some((bucket, Aggregate::default()));
        }
        let acc = &mut current.as_mut().expect("set above").1;
        if whole_first {
            let (start, span, summary) = wholes.next().expect("peeked");
            acc.add_summary(start, span, &summary);
        } else {
            acc.add_point(&points.next().expect("peeked"));
        }
    }
    if let Some((b, acc)) = current {
        out.extend(acc.bucket(b));
    }
    Ok(Some(out))
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
    use std::time::Duration;

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
}
