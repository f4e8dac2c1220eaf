//! The unit tests of `store`.

use super::*;

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

/// Segments of every member of block 2 but 1, 2 and 3, for one hour: about 13 kB, more than
/// a TOAST chunk.
fn block_segments() -> Vec<Segment> {
    (0..BLOCK_MEMBERS)
        .filter(|m| !(1..=3).contains(m))
        .map(|member| {
            let points: Vec<SeriesPoint> = (0..60 - member as i64 / 5)
                .map(|i| SeriesPoint {
                    slot_ms: 7 * HOUR_MS + i * 60_000,
                    follower_count: 1_000 * member as i32 + (i as i32 * 7_919) % 3_000,
                    following_count: 3,
                })
                .collect();
            Segment::new(
                member_of(2, member),
                (7 * HOUR_MS, 8 * HOUR_MS),
                &points,
                member as i32 * 10,
                member as i32,
            )
            .unwrap()
        })
        .collect()
}

/// The row `HourBlockColumns` writes for `segments` (all of one block and hour).
fn block_row(segments: &[Segment]) -> HourBlockRow {
    let mut members = [None; BLOCK_MEMBERS];
    for s in segments {
        members[block_of(s.influencer_id).1] = Some(s);
    }
    let mut columns = HourBlockColumns::default();
    columns.push((2, 7 * HOUR_MS), &members);
    HourBlockRow {
        block: columns.blocks[0],
        period_start: columns.starts[0],
        points: columns.points,
        lateness_max_ms: columns.lateness_max_ms,
        lateness_p99_ms: columns.lateness_p99_ms,
        offsets: columns.offsets,
        data_head: columns.data_heads.remove(0),
        data_tail: columns.data_tails.remove(0),
    }
}

#[test]
fn a_block_row_gives_back_its_members_segments() {
    let segments = block_segments();
    let row = block_row(&segments);
    assert_eq!(row.points.len(), BLOCK_MEMBERS);
    assert_eq!(row.offsets.len(), BLOCK_MEMBERS + 1);
    assert!(!row.data_head.is_empty() && row.data_head.len().is_multiple_of(TOAST_CHUNK_BYTES));
    assert!(row.data_tail.len() < TOAST_CHUNK_BYTES);
    let read = row.segments().unwrap();
    assert_eq!(read.len(), segments.len());
    for (read, written) in read.iter().zip(&segments) {
        assert_eq!(read.influencer_id, written.influencer_id);
        assert_eq!(
            (read.period_start_ms, read.period_end_ms),
            (written.period_start_ms, written.period_end_ms)
        );
        assert_eq!(read.points, written.points);
        assert_eq!(
            (read.lateness_max_ms, read.lateness_p99_ms),
            (written.lateness_max_ms, written.lateness_p99_ms)
        );
        assert_eq!(read.data, written.data);
    }
}

#[test]
fn a_block_row_whose_arrays_do_not_describe_its_bytes_is_corrupt() {
    let segments = block_segments();
    let damaged: [fn(&mut HourBlockRow); 5] = [
        |row| row.points.truncate(63),
        |row| row.offsets.push(0),
        |row| row.offsets[64] += 1,
        |row| row.offsets[1] = -1,
        // Member 1 has no points but claims bytes.
        |row| row.offsets[1] = 1,
    ];
    for (i, damage) in damaged.iter().enumerate() {
        let mut row = block_row(&segments);
        damage(&mut row);
        assert!(
            matches!(row.segments(), Err(codec::CodecError::Corrupt(_))),
            "damage {i}"
        );
    }
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
