//! The unit tests of `schedule`.

use super::*;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn slots_are_offset_plus_whole_intervals() {
    let grid = SlotGrid::new(MINUTE);
    let pk = 1_000_123;
    let offset = grid.offset_ms(pk);
    assert!((0..60_000).contains(&offset));
    let t = 1_763_800_000_000;
    let slot = grid.slot_at_or_after(pk, t);
    assert!(slot >= t && slot < t + 60_000);
    assert_eq!((slot - offset).rem_euclid(60_000), 0);
    assert_eq!(
        grid.slot_at_or_after(pk, slot),
        slot,
        "a slot is at-or-after itself"
    );
    assert_eq!(grid.next_slot(pk, slot), slot + 60_000, "no drift");
}

#[test]
fn a_changed_interval_realigns_to_the_new_grid() {
    let old = SlotGrid::new(MINUTE);
    let new = SlotGrid::new(Duration::from_secs(30));
    let pk = 1_000_007;
    let slot = old.slot_at_or_after(pk, 1_763_800_000_000);
    let next = new.next_slot(pk, slot);
    assert!(next > slot && next <= slot + 30_000);
    assert_eq!((next - new.offset_ms(pk)).rem_euclid(30_000), 0);
}

#[test]
fn offsets_spread_evenly_across_the_interval() {
    let grid = SlotGrid::new(MINUTE);
    let mut per_second = [0u32; 60];
    for pk in 1_000_000..1_060_000 {
        per_second[(grid.offset_ms(pk) / 1000) as usize] += 1;
    }
    // 1,000 expected per second; a hash this good stays well within ±15%.
    assert!(
        per_second.iter().all(|&n| (850..1150).contains(&n)),
        "{per_second:?}"
    );
}

#[test]
fn batches_group_slots_of_one_window_in_slot_order() {
    let grid = SlotGrid::new(MINUTE);
    let pks: Vec<i64> = (1_000_000..1_020_000).collect();
    let now = 1_763_800_000_000;
    let batches = plan_batches(&pks, &grid, now);
    let total: usize = batches.iter().map(|b| b.entries.len()).sum();
    assert_eq!(total, pks.len());
    let mut previous = i64::MIN;
    for batch in &batches {
        assert!(!batch.entries.is_empty() && batch.entries.len() <= MAX_BATCH_ENTRIES);
        let window = grid.window_of(batch.entries[0].slot_ms);
        for e in &batch.entries {
            assert_eq!(grid.window_of(e.slot_ms), window);
            assert!(e.slot_ms >= previous && e.slot_ms >= now);
            previous = e.slot_ms;
        }
    }
    // 20,000 influencers over 600 windows of 100 ms.
    assert!((590..=620).contains(&batches.len()), "{}", batches.len());
}

#[test]
fn a_batch_round_trips_through_its_compact_encoding() {
    let batch = ScheduleBatch {
        entries: vec![Entry {
            pk: 1_000_001,
            slot_ms: 1_763_800_000_017,
        }],
    };
    let bytes = batch.encode();
    assert_eq!(bytes, b"{\"entries\":[[1000001,1763800000017]]}");
    assert_eq!(ScheduleBatch::decode(&bytes).unwrap(), batch);
    assert!(ScheduleBatch::decode(b"{\"entries\":[[1]]}").is_err());
}

#[test]
fn a_slightly_late_batch_is_polled_and_a_very_late_one_skips_ahead() {
    let grid = SlotGrid::new(MINUTE);
    let batch = ScheduleBatch {
        entries: vec![
            Entry {
                pk: 1,
                slot_ms: 100_000,
            },
            Entry {
                pk: 2,
                slot_ms: 100_050,
            },
        ],
    };
    assert_eq!(
        on_arrival(batch.clone(), &grid, 125_000, LEAD, HOLD),
        Arrival::Poll(batch.clone())
    );
    // 10.5 minutes late: 11 intervals pass by, for each of 2 members.
    match on_arrival(batch, &grid, 730_000, LEAD, HOLD) {
        Arrival::Skip { batch, intervals } => {
            assert_eq!(intervals, 11);
            assert_eq!(batch.entries[0].slot_ms, 100_000 + 11 * 60_000);
            assert_eq!(batch.entries[1].slot_ms, 100_050 + 11 * 60_000);
            assert!(batch.entries[0].slot_ms >= 730_000);
        }
        other => panic!("{other:?}"),
    }
}

/// A minute's lead, and the shortest delay queue's TTL.
const LEAD: i64 = 1_000;
const HOLD: i64 = 250;

#[test]
fn a_batch_out_of_a_delay_queue_early_waits_again_and_one_within_the_hold_is_polled() {
    let grid = SlotGrid::new(MINUTE);
    let batch = one(1, 100_000);
    // Released at its slot less the lead, or a little before: held, then polled.
    for now in [99_000, 98_751, 99_800, 100_000] {
        assert_eq!(
            on_arrival(batch.clone(), &grid, now, LEAD, HOLD),
            Arrival::Poll(batch.clone()),
            "arrived at {now}"
        );
    }
    // Out of the 32 s queue with 27 s still to wait (a seed's 59 s delay).
    assert_eq!(
        on_arrival(batch.clone(), &grid, 72_000, LEAD, HOLD),
        Arrival::Early {
            batch: batch.clone(),
            wait_ms: 27_000
        }
    );
    assert_eq!(
        on_arrival(batch.clone(), &grid, 98_750, LEAD, HOLD),
        Arrival::Early {
            batch,
            wait_ms: 250
        }
    );
}

#[test]
fn only_delays_of_about_one_interval_go_through_the_wait_queue() {
    let grid = SlotGrid::new(MINUTE);
    let in_order = |delay| keeps_wait_order(delay, &grid, LEAD, HOLD);
    // Released on time (its slot less the lead) for the next slot: one interval.
    assert!(in_order(60_000));
    // Released up to a lead late, or out of a delay queue up to the hold early.
    assert!(in_order(59_000));
    assert!(in_order(60_249));
    assert!(in_order(60_250));
    // Polled more than a lead late, moved on to its next slots, or entering the schedule;
    // or held back longer than any batch out of a delay queue is.
    assert!(!in_order(58_999));
    assert!(!in_order(30_000));
    assert!(!in_order(0));
    assert!(!in_order(60_251));
}

fn one(pk: i64, slot_ms: i64) -> ScheduleBatch {
    ScheduleBatch {
        entries: vec![Entry { pk, slot_ms }],
    }
}

/// A late batch, as `on_arrival` moves it on when it arrives at `now_ms`.
fn arrive_late(
    handled: &mut SlotsHandled,
    grid: &SlotGrid,
    batch: ScheduleBatch,
    now_ms: i64,
) -> (ScheduleBatch, u64) {
    match on_arrival(batch, grid, now_ms, LEAD, HOLD) {
        Arrival::Skip { batch, intervals } => {
            let (batch, skipped, _marks) = handled.pass_over(batch, intervals);
            (batch, skipped)
        }
        other => panic!("expected a skip, got {other:?}"),
    }
}

#[test]
fn each_passed_over_slot_is_counted_once_whichever_copy_of_an_entry_comes_first() {
    let grid = SlotGrid::new(MINUTE);
    let s = 120_000;
    let now = s + 2 * 60_000 + 40_000; // the next future slot is s + 3 intervals
    // The entry first, then its copy one slot on (already published before a lost ack).
    let mut handled = SlotsHandled::new(&grid);
    let (moved, skipped) = arrive_late(&mut handled, &grid, one(7, s), now);
    assert_eq!((moved.entries[0].slot_ms, skipped), (s + 180_000, 3));
    let (copy, skipped) = arrive_late(&mut handled, &grid, one(7, s + 60_000), now);
    assert_eq!((copy.entries.len(), skipped), (0, 0), "a copy is dropped");
    // The copy first: it counts its two slots, the entry adds its own one.
    let mut handled = SlotsHandled::new(&grid);
    let (_, first) = arrive_late(&mut handled, &grid, one(7, s + 60_000), now);
    let (moved, second) = arrive_late(&mut handled, &grid, one(7, s), now);
    assert_eq!((first, second), (2, 1));
    // Both now wait for s + 3 intervals; the one that comes second is dropped.
    let (kept, _marks) = handled.claim(moved.clone());
    assert_eq!(kept.entries.len(), 1);
    let (kept, _marks) = handled.claim(moved);
    assert!(kept.entries.is_empty());
}

#[test]
fn a_skip_after_polling_counts_only_the_slots_since_and_a_long_outage_counts_them_all() {
    let grid = SlotGrid::new(Duration::from_secs(1));
    let mut handled = SlotsHandled::new(&grid);
    let (_, _marks) = handled.claim(one(9, 10_000));
    // Down for 1000 intervals: 1000 slots skipped, in a bounded number of steps.
    let (moved, skipped) = arrive_late(&mut handled, &grid, one(9, 11_000), 1_010_900);
    assert_eq!(skipped, 1000);
    assert_eq!(moved.entries[0].slot_ms, 1_011_000);
    // A stale copy from long before is dropped, not counted.
    let (copy, skipped) = arrive_late(&mut handled, &grid, one(9, 12_000), 1_010_900);
    assert_eq!((copy.entries.len(), skipped), (0, 0));
}

#[test]
fn unmarked_slots_are_polled_again_when_their_batch_comes_back() {
    let grid = SlotGrid::new(MINUTE);
    let mut handled = SlotsHandled::new(&grid);
    let batch = one(3, 60_000);
    let (kept, marks) = handled.claim(batch.clone());
    assert_eq!(kept, batch);
    assert!(handled.claim(batch.clone()).0.entries.is_empty());
    handled.unmark(marks);
    let (kept, _marks) = handled.claim(batch.clone());
    assert_eq!(kept, batch, "the work was not confirmed: poll it again");
    // Unmarking a passed-over batch lets its slots be counted again.
    let (moved, skipped, marks) = handled.pass_over(one(3, 240_000), 2);
    assert_eq!((moved.entries.len(), skipped), (1, 2));
    handled.unmark(marks);
    let (_, skipped, _marks) = handled.pass_over(one(3, 240_000), 2);
    assert_eq!(skipped, 2);
}
