//! Micro-benchmarks of the pure hot paths (no I/O): `cargo bench --bench hot_paths`.
//!
//! Per influencer and minute the pipeline computes a slot, decodes one Mockstagram answer,
//! encodes and decodes its point in a point message, and puts it in a COPY buffer. At
//! 1,000,000 influencers a minute (16,700 a second), each of these must stay in the
//! microseconds to leave the cores to the network and the database.

use std::time::Duration;

use divan::{Bencher, black_box};
use influencer_analytics::{
    classify::spike::{SpikeRule, judge},
    fetch::parse_profile,
    model::Point,
    queue::points::Outcomes,
    schedule::SlotGrid,
    series::hot::copy,
};

fn main() {
    divan::main();
}

const NOW_MS: i64 = 1_795_000_000_000;

/// Slot arithmetic for one influencer: its next slot at or after now, and the one after.
#[divan::bench]
fn slot_of_one_influencer(bencher: Bencher) {
    let grid = SlotGrid::new(Duration::from_secs(60));
    let mut pk = 1_000_000i64;
    bencher.bench_local(|| {
        pk += 1;
        let slot = grid.slot_at_or_after(black_box(pk), black_box(NOW_MS));
        grid.next_slot(pk, slot)
    });
}

/// One profile answer from Mockstagram, as the fetcher parses it.
#[divan::bench]
fn decode_one_mockstagram_answer() -> (i32, i32) {
    let body = br#"{"pk":1000001,"username":"influencer-1000001","followerCount":57166,"followingCount":1328}"#;
    parse_profile(1_000_001, black_box(body)).expect("valid answer")
}

fn points(n: usize) -> Vec<Point> {
    (0..n as i64)
        .map(|i| Point {
            pk: 1_000_000 + i,
            slot_ms: NOW_MS + i * 120,
            fetched_ms: NOW_MS + i * 120 + 150,
            follower_count: 100_000 + i as i32,
            following_count: 1_000 + i as i32,
        })
        .collect()
}

/// A point message of 500 points (one schedule batch), encoded by the poller...
#[divan::bench]
fn encode_point_message_500(bencher: Bencher) {
    let message = Outcomes {
        points: points(500),
        ..Outcomes::default()
    };
    bencher.bench_local(|| black_box(&message).encode());
}

/// ...and decoded by the sink.
#[divan::bench]
fn decode_point_message_500(bencher: Bencher) {
    let bytes = Outcomes {
        points: points(500),
        ..Outcomes::default()
    }
    .encode();
    bencher.bench_local(|| Outcomes::decode(black_box(&bytes)).expect("valid message"));
}

/// A sink batch of 5,000 points in PostgreSQL's binary COPY format.
#[divan::bench]
fn copy_buffer_5000(bencher: Bencher) {
    let batch = points(5000);
    bencher.bench_local(|| copy::encode(black_box(&batch).iter().copied()));
}

/// Compaction's read: 5,000 rows of a closed chunk out of PostgreSQL's binary COPY, a row per
/// protocol message as sqlx hands them over (an hour of 1,000,000 influencers is 12,000 of
/// these).
#[divan::bench]
fn copy_decode_5000(bencher: Bencher) {
    let bytes = copy::encode(points(5000).into_iter());
    let (header, rows) = bytes.split_at(19);
    let messages: Vec<&[u8]> = std::iter::once(header).chain(rows.chunks(54)).collect();
    bencher.bench_local(|| {
        let mut decoder = copy::Decoder::default();
        let mut out = Vec::with_capacity(5000);
        for message in black_box(&messages) {
            decoder.feed(message, &mut out).expect("valid rows");
        }
        decoder.finish().expect("a trailer");
        out
    });
}

fn day_answer() -> influencer_analytics::api::influencers::RangeAnswer {
    use influencer_analytics::{
        api::influencers::{Points, RangeAnswer, RawPoint},
        series::SeriesPoint,
    };
    let day: Vec<RawPoint> = (0..1440)
        .map(|i| {
            RawPoint::from(SeriesPoint {
                slot_ms: NOW_MS + i * 60_000,
                follower_count: 5_000_000 + (i as i32 * 7919) % 20_000,
                following_count: 1_000 + (i as i32 * 31) % 200,
            })
        })
        .collect();
    RangeAnswer {
        influencer_id: 1_000_001,
        username: "influencer-1000001".into(),
        start_time: NOW_MS / 1000,
        end_time: NOW_MS / 1000 + 86_340,
        step: None,
        points: Points::Raw(day),
    }
}

/// The API's answer to one influencer's day of raw points (1,440), as JSON: as the API writes
/// it (`RangeAnswer::to_json`), and through serde_json (the same bytes), for the ratio.
#[divan::bench]
fn range_answer_json_one_day(bencher: Bencher) {
    let answer = day_answer();
    bencher.bench_local(|| black_box(&answer).to_json());
}

#[divan::bench]
fn range_answer_json_one_day_through_serde(bencher: Bencher) {
    let answer = day_answer();
    bencher.bench_local(|| serde_json::to_vec(black_box(&answer)).expect("serializable"));
}

/// The spike detector on one influencer's day (1,440 points).
#[divan::bench]
fn spike_judge_one_day(bencher: Bencher) {
    let slots: Vec<i64> = (0..1440).map(|i| 1_795_000_000 + i * 60).collect();
    let followers: Vec<i32> = (0..1440)
        .map(|i: i32| 100_000 + (i.wrapping_mul(7919) % 20_000) - 10_000)
        .collect();
    let rule = SpikeRule::default();
    bencher.bench_local(|| judge(black_box(&slots), black_box(&followers), 60, &rule));
}

/// Thirty days of one influencer (43,200 points a minute) in the cold tier's segments.
fn thirty_days() -> (Vec<influencer_analytics::series::SeriesPoint>, Vec<Vec<u8>>) {
    use influencer_analytics::{
        series::{DAY_MS, SeriesPoint, codec},
        simulator::Simulator,
        testing::simulator_settings,
    };
    let start = NOW_MS - NOW_MS.rem_euclid(DAY_MS);
    // The simulator's own walk for one influencer, from a fixed seed (as `bench storage` takes
    // it): a sawtooth made every comparison of the fold predictable, as real data does not.
    let simulator = Simulator::new(&simulator_settings(1, 17));
    let pk = influencer_analytics::mockstagram::FIRST_PK;
    let points: Vec<SeriesPoint> = (0..30 * 1440)
        .map(|i| {
            let (followers, following) = simulator.step(pk).expect("pk in the population");
            SeriesPoint {
                slot_ms: start + i * 60_000,
                follower_count: followers as i32,
                following_count: following as i32,
            }
        })
        .collect();
    let segments = points
        .chunks(1440)
        .map(|day| codec::encode(day).expect("a day of points"))
        .collect();
    (points, segments)
}

/// A month at step=1h reads thirty day segments: decoding them into one list...
#[divan::bench]
fn decode_thirty_day_segments(bencher: Bencher) {
    let (_, segments) = thirty_days();
    bencher.bench_local(|| {
        let mut points = Vec::with_capacity(30 * 1440);
        for segment in black_box(&segments) {
            influencer_analytics::series::codec::decode_into(segment, &mut points)
                .expect("valid segment");
        }
        points
    });
}

/// ...and folding their 43,200 points into 720 hour buckets.
#[divan::bench]
fn fold_thirty_days_into_hours(bencher: Bencher) {
    use influencer_analytics::series::{HOUR_MS, read::fold_buckets};
    let (points, _) = thirty_days();
    let (start, end) = (points[0].slot_ms, points[points.len() - 1].slot_ms);
    bencher
        .with_inputs(|| points.clone())
        .bench_local_values(|points| fold_buckets(points, Vec::new(), &[], start, end, HOUR_MS));
}

/// What a month at step=1h does with its thirty day segments: each decoded into columns and
/// folded into its 24 hour buckets as they are (the two benchmarks above, as the read path
/// does them now).
#[divan::bench]
fn decode_and_fold_thirty_day_segments_into_hours(bencher: Bencher) {
    use influencer_analytics::series::{HOUR_MS, read::fold_tiers};
    let (points, segments) = thirty_days();
    let (start, end) = (points[0].slot_ms, points[points.len() - 1].slot_ms);
    bencher
        .with_inputs(|| segments.clone())
        .bench_local_values(|segments| {
            fold_tiers(segments, Vec::new(), start, end, HOUR_MS).expect("valid segments")
        });
}

/// ...and the API's answer of those 720 buckets as JSON (`RangeAnswer::to_json`): seven floats
/// and nine integers a bucket.
#[divan::bench]
fn range_answer_json_thirty_days_at_one_hour(bencher: Bencher) {
    use influencer_analytics::{
        api::influencers::{Bucket, Points, RangeAnswer},
        series::{HOUR_MS, read::fold_tiers},
    };
    let (points, segments) = thirty_days();
    let (start, end) = (points[0].slot_ms, points[points.len() - 1].slot_ms);
    let buckets = fold_tiers(segments, Vec::new(), start, end, HOUR_MS).expect("valid segments");
    let answer = RangeAnswer {
        influencer_id: 1_000_001,
        username: "influencer-1000001".into(),
        start_time: start / 1000,
        end_time: end / 1000,
        step: Some(3600),
        points: Points::Buckets(buckets.into_iter().map(Bucket::from).collect()),
    };
    bencher.bench_local(|| black_box(&answer).to_json());
}
