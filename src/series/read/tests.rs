//! The read path's own tests: what needs no database.

use super::sql::{self, WINDOW_GRID_MS, Window};
use super::*;
use super::{
    gaps::find_gaps,
    hot::{merge, unpack_hot},
    summaries::{ColdSegments, buckets_from_summaries, has_point_in},
    tiers::Tiers,
};
use crate::schedule::SlotGrid;
use crate::series::HOUR_MS;
use crate::series::{Aggregate, Period, Summary, bucket_of};
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
    let window = Window::of_range(1_767_225_600_000, 1_767_225_600_000 + day - 60_000);
    // 2026-01-01: a day before it, 2025-12-31, is in the 28-day window from 2025-12-18 (the
    // grid counts from 1970-01-01), and the range ends before 2026-01-15.
    let condition = "period_start >= '2025-12-18T00:00:00+00:00' and period_start < '2026-01-15T00:00:00+00:00'";
    // Every cold table of every cold statement is read in it: both tables of a range, the
    // packs and the hour segments of the summaries, both tables of the segments' points.
    assert_eq!(sql::range(window).matches(condition).count(), 2);
    assert_eq!(sql::summaries(window).matches(condition).count(), 2);
    assert_eq!(sql::segment_data(window).matches(condition).count(), 2);
    for (start, end) in [
        (0, 0),
        (WINDOW_GRID_MS, WINDOW_GRID_MS),
        (WINDOW_GRID_MS + day, WINDOW_GRID_MS + day),
        (5 * day + 1, 400 * day),
        (-3 * day, -day),
    ] {
        let Window {
            low_ms: low,
            high_ms: high,
        } = Window::of_range(start, end);
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
