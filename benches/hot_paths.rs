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
    db::copy,
    fetch::parse_profile,
    model::Point,
    queue::points::Outcomes,
    schedule::SlotGrid,
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
