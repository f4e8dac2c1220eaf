//! The unit tests of `series`.

use super::*;

fn point(slot_ms: i64, follower_count: i32, following_count: i32) -> SeriesPoint {
    SeriesPoint {
        slot_ms,
        follower_count,
        following_count,
    }
}

#[test]
fn buckets_align_as_time_bucket_does() {
    // time_bucket('1 hour', ...) and ('1 day', ...) are aligned to the epoch's hours and
    // days; a week starts on Monday; 7 minutes align to 2000-01-03.
    assert_eq!(bucket_of(1_700_003_599_999, HOUR_MS), 1_700_002_800_000);
    assert_eq!(bucket_of(1_700_002_800_000, HOUR_MS), 1_700_002_800_000);
    assert_eq!(bucket_of(1_700_000_000_000, DAY_MS), 1_699_920_000_000);
    assert_eq!(bucket_of(1_700_000_000_000, 7 * DAY_MS), 1_699_833_600_000); // Mon 13 Nov
    assert_eq!(
        (bucket_of(1_700_000_000_000, 420_000) - BUCKET_ORIGIN_MS) % 420_000,
        0
    );
    assert_eq!(bucket_of(0, HOUR_MS), 0);
}

/// Two days of points: the ratio sum from points, from hour summaries and from a day's
/// summary is the same float.
#[test]
fn a_ratio_sum_is_the_same_from_points_hours_or_days() {
    let points: Vec<SeriesPoint> = (0..2 * 1440)
        .map(|i| {
            point(
                1_699_920_000_000 + i * 60_000,
                1_000_003 + (i as i32 * 7919) % 100_000,
                333 + (i as i32 % 97),
            )
        })
        .collect();
    let mut from_points = Aggregate::default();
    points.iter().for_each(|p| from_points.add_point(p));
    let mut from_hours = Aggregate::default();
    for hour in points.chunks(60) {
        from_hours.add_summary(hour[0].slot_ms, HOUR_MS, &Summary::of(hour));
    }
    let mut from_days = Aggregate::default();
    for day in points.chunks(1440) {
        from_days.add_summary(day[0].slot_ms, DAY_MS, &Summary::of(day));
    }
    let want = from_points.bucket(0).unwrap();
    assert_eq!(from_hours.bucket(0).unwrap(), want);
    assert_eq!(from_days.bucket(0).unwrap(), want);
    assert_eq!(want.samples, 2880);
}

#[test]
fn a_bucket_whose_last_point_follows_nobody_has_no_ratio() {
    let mut acc = Aggregate::default();
    acc.add_point(&point(0, 10, 5));
    acc.add_point(&point(60_000, 12, 0));
    let b = acc.bucket(0).unwrap();
    assert_eq!(b.follower_ratio, None);
    assert_eq!(
        b.follower_count,
        Stats {
            avg: 11.0,
            min: 10,
            max: 12,
            last: 12
        }
    );
    acc.add_point(&point(120_000, 9, 3));
    let r = acc.bucket(0).unwrap().follower_ratio.unwrap();
    assert_eq!((r.min, r.max, r.last, r.avg), (2.0, 3.0, 3.0, 2.5));
}

proptest::proptest! {
    /// Points added in runs (as a bucket's run is folded) give the same summary and
    /// bucket, bit for bit, as the same points added one by one; following counts of 0
    /// (no ratio) and hours crossed included.
    #[test]
    fn points_added_in_runs_fold_as_one_by_one(
        steps in proptest::collection::vec(
            (1i64..=180_000, 0i32..=2_000_000, 0i32..=3, 0usize..=4),
            1..300,
        ),
    ) {
        let mut slot = 1_699_918_000_000;
        let mut points = Vec::new();
        let mut cuts = Vec::new();
        for (i, &(gap, followers, following, cut)) in steps.iter().enumerate() {
            slot += gap;
            points.push(point(slot, followers, following * 517));
            if cut == 0 {
                cuts.push(i + 1);
            }
        }
        let mut one_by_one = Aggregate::default();
        points.iter().for_each(|p| one_by_one.add_point(p));
        let mut in_runs = Aggregate::default();
        let mut from = 0;
        for to in cuts.into_iter().chain([points.len()]) {
            in_runs.add_points(&points[from..to]);
            from = to;
        }
        proptest::prop_assert_eq!(in_runs.summary(), one_by_one.summary());
        proptest::prop_assert_eq!(in_runs.bucket(0), one_by_one.bucket(0));
    }
}
