//! The unit tests of `store`.

use super::*;
use crate::series::HOUR_MS;

#[test]
fn the_head_is_whole_toast_chunks_and_the_tail_the_rest() {
    let data: Vec<u8> = (0..4509u32).map(|i| i as u8).collect();
    let (head, tail) = split_for_toast(&data);
    assert_eq!(
        (head.len(), tail.len()),
        (2 * TOAST_CHUNK_BYTES, 4509 - 2 * 1996)
    );
    assert_eq!([head, tail].concat(), data);
    let hour = vec![7u8; 250];
    assert_eq!(split_for_toast(&hour), (&[][..], &hour[..]));
    let exact = vec![1u8; TOAST_CHUNK_BYTES];
    assert_eq!(split_for_toast(&exact), (&exact[..], &[][..]));
}

#[test]
fn p99_is_the_nearest_rank() {
    assert_eq!(p99(&mut []), 0);
    assert_eq!(p99(&mut [5]), 5);
    let mut hundred: Vec<i32> = (1..=100).rev().collect();
    assert_eq!(p99(&mut hundred), 99);
    let mut thousand: Vec<i32> = (1..=1000).collect();
    assert_eq!(p99(&mut thousand), 990);
}

fn raw(influencer_id: i64, slot_ms: i64, follower_count: i32, lateness_ms: i32) -> RawPoint {
    RawPoint {
        influencer_id,
        point: SeriesPoint {
            slot_ms,
            follower_count,
            following_count: 1,
        },
        lateness_ms,
    }
}

/// A stored hour segment of influencer 7 with `slots`, each with 1 follower.
fn stored_hour(start_ms: i64, slots: &[i64]) -> merge::StoredSegment {
    let points: Vec<SeriesPoint> = slots
        .iter()
        .map(|&slot_ms| SeriesPoint {
            slot_ms,
            follower_count: 1,
            following_count: 1,
        })
        .collect();
    merge::StoredSegment {
        influencer_id: 7,
        period_start: crate::series::at(start_ms),
        period_end: crate::series::at(start_ms + HOUR_MS),
        lateness_max_ms: 500,
        lateness_p99_ms: 400,
        data: codec::encode(&points).unwrap(),
    }
}

#[test]
fn a_merge_plan_keeps_stored_slots_and_opens_hour_segments_for_the_rest() {
    let day = 20_000 * DAY_MS;
    let (hour, next_hour) = (day + 5 * HOUR_MS, day + 6 * HOUR_MS);
    let stored = vec![stored_hour(hour, &[hour + 1_000, hour + 61_000])];
    let points = [
        // A slot the stored segment holds, with another value: the stored value stays.
        raw(7, hour + 61_000, 99, 900),
        // A new slot of the stored segment's hour.
        raw(7, hour + 121_000, 2, 900),
        // The next hour: a new hour segment, and its day to merge.
        raw(7, next_hour + 1_000, 3, 100),
        // Another influencer in the same hour: its own new segment.
        raw(8, hour + 2_000, 4, 100),
    ];
    let plan = plan(stored, &points).unwrap();
    assert_eq!(
        (
            plan.report.points,
            plan.report.duplicates,
            plan.report.segments
        ),
        (3, 1, 3)
    );
    assert_eq!(plan.new_days, vec![day], "one day, named once");
    /// A segment as (influencer, period start, its (slot, followers)).
    type Written = (i64, i64, Vec<(i64, i32)>);
    let by_start: Vec<Written> = plan
        .segments
        .iter()
        .map(|s| {
            let points = codec::decode(&s.data).unwrap();
            let points = points
                .iter()
                .map(|p| (p.slot_ms, p.follower_count))
                .collect();
            (s.influencer_id, s.period_start_ms, points)
        })
        .collect();
    assert_eq!(
        by_start,
        vec![
            (
                7,
                hour,
                vec![(hour + 1_000, 1), (hour + 61_000, 1), (hour + 121_000, 2)]
            ),
            (7, next_hour, vec![(next_hour + 1_000, 3)]),
            (8, hour, vec![(hour + 2_000, 4)]),
        ]
    );
    // The stored segment's lateness is kept where the new points' is lower, raised where higher.
    assert_eq!(
        (
            plan.segments[0].lateness_max_ms,
            plan.segments[0].lateness_p99_ms
        ),
        (900, 900)
    );
    assert_eq!(plan.segments[1].lateness_max_ms, 100);
}

#[test]
fn a_merge_plan_of_slots_all_stored_writes_nothing() {
    let hour = 20_000 * DAY_MS;
    let stored = vec![stored_hour(hour, &[hour + 1_000])];
    let plan = plan(stored, &[raw(7, hour + 1_000, 5, 0)]).unwrap();
    assert!(plan.segments.is_empty() && plan.new_days.is_empty());
    assert_eq!((plan.report.points, plan.report.duplicates), (0, 1));
}
