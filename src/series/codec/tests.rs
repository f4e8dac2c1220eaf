//! The unit tests of `codec`.

use super::*;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rand_distr::{Distribution, Normal};

/// The simulator's walk: followers step N(0, 10,000), following N(0, 100) a minute.
pub(crate) fn walk(n: usize, seed: u64) -> Vec<SeriesPoint> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (big, small) = (
        Normal::new(0.0, 10_000.0).unwrap(),
        Normal::new(0.0, 100.0).unwrap(),
    );
    let (mut followers, mut following) = (rng.random_range(1_000_000..50_000_000i64), 5_000i64);
    (0..n as i64)
        .map(|i| {
            followers = (followers + big.sample(&mut rng) as i64).max(0);
            following = (following + small.sample(&mut rng) as i64).max(0);
            SeriesPoint {
                slot_ms: 1_700_000_017_000 + i * 60_000,
                follower_count: followers as i32,
                following_count: following as i32,
            }
        })
        .collect()
}

#[test]
fn columns_find_the_first_point_at_or_after_a_time_on_a_grid_and_in_a_list() {
    let on_grid: Vec<SeriesPoint> = (0..5)
        .map(|i| SeriesPoint {
            slot_ms: 1_000 + i * 60_000,
            follower_count: i as i32,
            following_count: 1,
        })
        .collect();
    let mut gapped = on_grid.clone();
    gapped.remove(2);
    for points in [on_grid, gapped] {
        let columns = decode_columns(&encode(&points).unwrap()).unwrap();
        assert_eq!(columns.len(), points.len());
        for (i, p) in points.iter().enumerate() {
            assert_eq!(columns.point(i), *p);
            assert_eq!(columns.first_at_or_after(p.slot_ms), i);
            assert_eq!(columns.first_at_or_after(p.slot_ms - 1), i);
            assert_eq!(columns.first_at_or_after(p.slot_ms + 1), i + 1);
        }
        assert_eq!(columns.first_at_or_after(i64::MIN), 0);
        assert_eq!(columns.first_at_or_after(i64::MAX), points.len());
        let (followers, following) = columns.counts(1..3);
        assert_eq!(
            followers,
            [points[1].follower_count, points[2].follower_count]
        );
        assert_eq!(following, [1, 1]);
    }
}

#[test]
fn a_day_and_an_hour_round_trip() {
    for n in [1, 2, 60, 1440] {
        let points = walk(n, n as u64);
        assert_eq!(
            decode(&encode(&points).unwrap()).unwrap(),
            points,
            "{n} points"
        );
    }
}

#[test]
fn a_grid_with_a_gap_is_stored_as_listed_slots() {
    let mut points = walk(60, 3);
    points.remove(17);
    let bytes = encode(&points).unwrap();
    assert_eq!(bytes[1], LISTED);
    assert_eq!(decode(&bytes).unwrap(), points);
    assert_eq!(encode(&walk(60, 3)).unwrap()[1], GRID);
}

/// Irregular slots and the counts' extremes.
fn extremes() -> Vec<SeriesPoint> {
    vec![
        SeriesPoint {
            slot_ms: 0,
            follower_count: 0,
            following_count: i32::MAX,
        },
        SeriesPoint {
            slot_ms: 1,
            follower_count: i32::MAX,
            following_count: 0,
        },
        SeriesPoint {
            slot_ms: 86_399_999,
            follower_count: 7,
            following_count: 7,
        },
    ]
}

#[test]
fn irregular_slots_and_extreme_counts_round_trip() {
    let points = extremes();
    assert_eq!(decode(&encode(&points).unwrap()).unwrap(), points);
}

#[test]
fn a_day_of_the_walk_costs_near_its_entropy() {
    let (mut day, mut hour) = (0usize, 0usize);
    for seed in 0..20 {
        let points = walk(1440, seed);
        day += encode(&points).unwrap().len();
        hour += points
            .chunks(60)
            .map(|h| encode(h).unwrap().len())
            .sum::<usize>();
    }
    let (day, hour) = (day as f64 / 28_800.0, hour as f64 / 28_800.0);
    eprintln!("bytes per point: day {day:.2}, hour {hour:.2}");
    assert!(day < 3.3, "a day costs {day:.2} bytes a point");
    assert!(hour < 3.8, "an hour costs {hour:.2} bytes a point");
}

/// Five points on a grid as the format-1 encoder wrote them.
const GRID_FORMAT_ONE: &str = "010068c635d79a010000e0d40370636f2103004201040103040000100201\
    000bfcff3f0040420f80fa1a00000304000010010180feffff3f008813008000";

/// Segments written in format 1 (pco's standalone form) before format 2, byte for byte as
/// that encoder wrote them: a grid and listed slots.
#[test]
fn format_one_segments_still_decode() {
    let grid = hex(GRID_FORMAT_ONE);
    let expected: Vec<SeriesPoint> = [
        (1_000_000, 5_000),
        (1_006_906, 4_997),
        (1_011_786, 4_994),
        (1_014_640, 4_991),
        (1_015_468, 4_988),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(f, g))| SeriesPoint {
        slot_ms: 1_764_547_217_000 + i as i64 * 60_000,
        follower_count: f,
        following_count: g,
    })
    .collect();
    assert_eq!(decode(&grid).unwrap(), expected);
    let listed = hex(
        "010170636f210300c104010402000010020180fe2d93020000004000000000000000008001\
        000000000000000302000010020180040000400000000080ffffff7f030200001002010003000000\
        00ffffffff0100008000",
    );
    let expected = extremes();
    assert_eq!(decode(&listed).unwrap(), expected);
    // What is written now is format 2, and smaller.
    assert_eq!(encode(&expected).unwrap()[0], FORMAT);
    assert!(encode(&expected).unwrap().len() < listed.len());
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// Format 2 does not store pco's header: it assumes the version pco wrote when the format
/// was made. A pco that writes another needs a new format byte.
#[test]
fn pco_still_writes_the_format_version_format_two_assumes() {
    let header = wrapped::FileCompressor::default()
        .write_header(Vec::new())
        .unwrap();
    assert_eq!(header, PCO_HEADER);
}

#[test]
fn grids_before_1970_and_at_any_step_round_trip() {
    for (first, step) in [(-86_400_000i64, 60_000i64), (0, 1), (-1, 3_600_000), (5, 0)] {
        let n = if step == 0 { 1 } else { 61 };
        let points: Vec<SeriesPoint> = walk(n, 4)
            .into_iter()
            .enumerate()
            .map(|(i, p)| SeriesPoint {
                slot_ms: first + i as i64 * step,
                ..p
            })
            .collect();
        let bytes = encode(&points).unwrap();
        assert_eq!(bytes[1], GRID, "{first} {step}");
        assert_eq!(decode(&bytes).unwrap(), points, "{first} {step}");
    }
}

/// Random damage anywhere in a segment (either format, either layout) is an error or other
/// numbers, never a panic.
#[test]
fn random_damage_never_panics() {
    let mut gap = walk(60, 8);
    gap.remove(30);
    let grid_v1 = hex(GRID_FORMAT_ONE);
    let mut rng = SmallRng::seed_from_u64(11);
    for original in [
        encode(&walk(60, 7)).unwrap(),
        encode(&gap).unwrap(),
        encode(&walk(1440, 9)).unwrap(),
        grid_v1,
    ] {
        for _ in 0..500 {
            let mut bytes = original.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            if rng.random_bool(0.2) {
                bytes.truncate(rng.random_range(0..bytes.len()));
            }
            let _ = decode(&bytes);
        }
    }
}

#[test]
fn a_damaged_point_count_is_an_error() {
    let mut bytes = encode(&walk(60, 2)).unwrap();
    assert_eq!(bytes[2], 60);
    bytes[2] = 0;
    assert!(matches!(decode(&bytes), Err(CodecError::Corrupt(_))));
    for claimed in [1u8, 59, 61, 127] {
        bytes[2] = claimed;
        let _ = decode(&bytes); // may misread the columns, must not panic
    }
    // A count beyond any segment is refused before anything is allocated for it.
    let mut huge = vec![FORMAT, GRID];
    varint(&mut huge, u64::MAX >> 1);
    assert!(matches!(decode(&huge), Err(CodecError::Corrupt(_))));
    let mut trailing = encode(&walk(60, 2)).unwrap();
    trailing.push(0);
    assert!(matches!(decode(&trailing), Err(CodecError::Corrupt(_))));
}

#[test]
fn the_delta_order_follows_the_shape_of_the_series() {
    let walk: Vec<i64> = walk(1440, 5)
        .iter()
        .map(|p| i64::from(p.follower_count))
        .collect();
    assert_eq!(delta_order(walk.iter().copied()), 1, "a random walk");
    let mut rng = SmallRng::seed_from_u64(9);
    let noise: Vec<i64> = (0..1440)
        .map(|_| 5_000 + rng.random_range(-50..50))
        .collect();
    assert_eq!(delta_order(noise.iter().copied()), 0, "noise about a level");
    let curve: Vec<i64> = (0..1440i64).map(|i| 1_000_000 + i * i * 3).collect();
    assert_eq!(
        delta_order(curve.iter().copied()),
        2,
        "a steady acceleration"
    );
    assert_eq!(delta_order([7i64].into_iter()), 0, "one value");
    assert_eq!(delta_order(std::iter::empty()), 0);
    // Each shape round-trips at its order.
    for values in [&walk, &noise, &curve] {
        let points: Vec<SeriesPoint> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| SeriesPoint {
                slot_ms: i as i64 * 60_000,
                follower_count: v as i32,
                following_count: (v / 1000) as i32,
            })
            .collect();
        assert_eq!(decode(&encode(&points).unwrap()).unwrap(), points);
    }
}

#[test]
fn damaged_bytes_are_an_error_not_a_panic() {
    let bytes = encode(&walk(60, 1)).unwrap();
    assert!(matches!(decode(&[]), Err(CodecError::Truncated)));
    assert!(matches!(decode(&[9, 0]), Err(CodecError::UnknownFormat(9))));
    for cut in [1, 2, bytes.len() / 2, bytes.len() - 1] {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut flipped = bytes.clone();
    for i in (3..flipped.len()).step_by(7) {
        flipped[i] ^= 0x5a;
        let _ = decode(&flipped); // may decode to other numbers, must not panic
    }
}

#[test]
fn a_day_at_the_shortest_poll_interval_fits_one_segment() {
    let slots_in_a_day = |interval_ms: u64| (super::super::DAY_MS as u64).div_ceil(interval_ms);
    let shortest = crate::config::MIN_POLL_INTERVAL.as_millis() as u64;
    assert!(slots_in_a_day(shortest) <= MAX_POINTS);
    assert!(
        slots_in_a_day(shortest - 1) > MAX_POINTS,
        "the bound is the tightest"
    );
}

#[test]
fn encode_refuses_what_decode_would_refuse() {
    // A day of slots 82 ms apart (a POLL_INTERVAL under 83 ms) is more than a segment
    // holds: refused when written, not found unreadable when read.
    let day: Vec<SeriesPoint> = (0..=MAX_POINTS as i64)
        .map(|i| SeriesPoint {
            slot_ms: i * 82,
            follower_count: 1,
            following_count: 1,
        })
        .collect();
    assert!(matches!(
        encode(&day),
        Err(CodecError::Unencodable(n)) if n as u64 == MAX_POINTS + 1
    ));
    assert!(matches!(encode(&[]), Err(CodecError::Unencodable(0))));
    // The most a segment holds goes both ways.
    let most = &day[..MAX_POINTS as usize];
    assert_eq!(decode(&encode(most).unwrap()).unwrap().len(), most.len());
}
