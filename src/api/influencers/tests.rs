use super::*;
use proptest::prelude::*;

fn ratio() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        Just(Some(f64::NAN)),
        Just(Some(f64::INFINITY)),
        Just(Some(-0.0)),
        Just(Some(0.005)),
        (0i32..i32::MAX, 1i32..100_000).prop_map(|(f, g)| follower_ratio(f, g)),
        any::<f64>().prop_map(Some),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    ratio().prop_map(|r| r.unwrap_or(1.5))
}

fn stats<T: std::fmt::Debug + Copy, S: Strategy<Value = T>>(
    value: fn() -> S,
) -> impl Strategy<Value = Stats<T>> {
    (float(), value(), value(), value()).prop_map(|(avg, min, max, last)| Stats {
        avg,
        min,
        max,
        last,
    })
}

fn bucket() -> impl Strategy<Value = Bucket> {
    (
        any::<i64>(),
        any::<i64>(),
        stats(any::<i32>),
        stats(any::<i32>),
        proptest::option::of(stats(float)),
    )
        .prop_map(
            |(time, samples, follower_count, following_count, follower_ratio)| Bucket {
                time,
                samples,
                follower_count,
                following_count,
                follower_ratio,
            },
        )
}

fn raw_point() -> impl Strategy<Value = RawPoint> {
    (any::<i64>(), any::<i32>(), any::<i32>(), ratio()).prop_map(
        |(time, follower_count, following_count, follower_ratio)| RawPoint {
            time,
            follower_count,
            following_count,
            follower_ratio,
        },
    )
}

proptest! {
    #[test]
    fn answers_are_written_as_serde_json_writes_them(
        influencer_id in any::<i64>(),
        username in any::<String>(),
        (start_time, end_time) in (any::<i64>(), any::<i64>()),
        step in proptest::option::of(any::<i64>()),
        points in prop_oneof![
            proptest::collection::vec(raw_point(), 0..20).prop_map(Points::Raw),
            proptest::collection::vec(bucket(), 0..20).prop_map(Points::Buckets),
        ],
    ) {
        let answer = RangeAnswer {
            influencer_id,
            username,
            start_time,
            end_time,
            step,
            points,
        };
        let written = answer.to_json();
        let by_serde = serde_json::to_vec(&answer).unwrap();
        prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(by_serde).unwrap());
    }
}
