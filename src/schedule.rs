//! The schedule: when each influencer is polled, and the message that carries it.
//!
//! Each influencer owns the slots `offset(pk) + k·interval` (epoch milliseconds). The offset is
//! a stable hash of the pk within the interval, as Prometheus spreads its scrapes, so a million
//! influencers arrive evenly across the minute instead of all at :00. The next slot is always
//! the previous slot plus the interval, never "now plus the interval": no drift.
//!
//! A [`ScheduleBatch`] carries many influencers whose slots fall in the same short window
//! (1/600 of the interval: 100 ms at 60 s), so the broker moves a few dozen messages a second
//! at a million influencers a minute rather than tens of thousands. A batch keeps its members
//! from one interval to the next; each member keeps its own slot.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::splitmix;

/// The wall clock in epoch milliseconds: slots are on this clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// How early a batch leaves the wait queue: enough to absorb the broker's expiry order and a
/// poller's queueing, small next to the interval.
pub fn lead_for(interval: Duration) -> Duration {
    (interval / 4).min(Duration::from_secs(1))
}

/// How many influencers one schedule message carries at most.
pub const MAX_BATCH_ENTRIES: usize = 500;

/// The slot grid of one interval length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotGrid {
    interval_ms: i64,
}

impl SlotGrid {
    pub fn new(interval: Duration) -> Self {
        let interval_ms = interval.as_millis().clamp(1, i64::MAX as u128) as i64;
        Self { interval_ms }
    }

    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    /// The pk's place within the interval: a stable hash, evenly spread.
    pub fn offset_ms(&self, pk: i64) -> i64 {
        (splitmix(pk as u64) % self.interval_ms as u64) as i64
    }

    /// The first slot of `pk` at or after `t_ms`.
    pub fn slot_at_or_after(&self, pk: i64, t_ms: i64) -> i64 {
        let offset = self.offset_ms(pk);
        let k = (t_ms - offset).div_euclid(self.interval_ms);
        let slot = offset + k * self.interval_ms;
        if slot >= t_ms {
            slot
        } else {
            slot + self.interval_ms
        }
    }

    /// The slot after `slot` on the pk's grid. With an unchanged interval this is
    /// `slot + interval`; after the interval was changed, it realigns to the new grid.
    pub fn next_slot(&self, pk: i64, slot_ms: i64) -> i64 {
        self.slot_at_or_after(pk, slot_ms + 1)
    }

    /// The window (1/600 of the interval, at least 1 ms) a slot falls in: slots of one window
    /// travel in one message.
    pub fn window_of(&self, slot_ms: i64) -> i64 {
        let width = (self.interval_ms / 600).max(1);
        slot_ms.div_euclid(width)
    }
}

/// One influencer in a schedule message: poll `pk` at `slot_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub pk: i64,
    pub slot_ms: i64,
}

/// A schedule message: influencers whose slots are due at about the same time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleBatch {
    /// `[[pk, slot_ms], ...]`, sorted by slot.
    #[serde(with = "entries_as_pairs")]
    pub entries: Vec<Entry>,
}

mod entries_as_pairs {
    use super::Entry;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(entries: &[Entry], s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(i64, i64)> = entries.iter().map(|e| (e.pk, e.slot_ms)).collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Entry>, D::Error> {
        let pairs = Vec::<(i64, i64)>::deserialize(d)?;
        Ok(pairs
            .into_iter()
            .map(|(pk, slot_ms)| Entry { pk, slot_ms })
            .collect())
    }
}

impl ScheduleBatch {
    pub fn earliest_slot_ms(&self) -> Option<i64> {
        self.entries.iter().map(|e| e.slot_ms).min()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a schedule batch serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The same members at their next slots.
    pub fn advanced(&self, grid: &SlotGrid) -> Self {
        Self {
            entries: self
                .entries
                .iter()
                .map(|e| Entry {
                    pk: e.pk,
                    slot_ms: grid.next_slot(e.pk, e.slot_ms),
                })
                .collect(),
        }
    }
}

/// What to do with a batch that arrived at `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Out of a delay queue before its time (one hop of a longer delay): to be published
    /// again to wait `wait_ms` more.
    Early { batch: ScheduleBatch, wait_ms: i64 },
    /// Due (or due within the hold): poll these slots, waiting until each is reached.
    Poll(ScheduleBatch),
    /// Arrived so late that its slots are gone: every member moved on by `intervals` whole
    /// intervals to its first slot at or after now; the slots passed over are never polled.
    Skip {
        batch: ScheduleBatch,
        intervals: i64,
    },
}

/// Decides what a batch that arrived at `now_ms` becomes. A batch is released `lead_ms` before
/// its earliest slot; one that arrives earlier than that by `hold_ms` or more goes back to wait
/// for the rest. A batch more than half an interval late is not polled to catch up: every
/// member moves on by the same whole number of intervals to its first slot at or after now, and
/// the slots passed over are counted.
pub fn on_arrival(
    batch: ScheduleBatch,
    grid: &SlotGrid,
    now_ms: i64,
    lead_ms: i64,
    hold_ms: i64,
) -> Arrival {
    let Some(earliest) = batch.earliest_slot_ms() else {
        return Arrival::Poll(batch);
    };
    let wait_ms = earliest - lead_ms - now_ms;
    if wait_ms >= hold_ms {
        return Arrival::Early { batch, wait_ms };
    }
    let late = now_ms - earliest;
    if late <= grid.interval_ms / 2 {
        return Arrival::Poll(batch);
    }
    let k = (late + grid.interval_ms - 1) / grid.interval_ms;
    let shift = k * grid.interval_ms;
    let entries = batch
        .entries
        .into_iter()
        .map(|e| Entry {
            pk: e.pk,
            slot_ms: e.slot_ms + shift,
        })
        .collect();
    Arrival::Skip {
        batch: ScheduleBatch { entries },
        intervals: k,
    }
}

/// Whether a re-enqueue that waits `delay_ms` may go through the wait queue, where messages
/// expire only in the order they were published. The steady flow publishes each batch as it is
/// released, `lead_ms` before its slot, for its next slot: a delay of one interval, so every
/// batch queued before it expires no later than it does. A batch released up to a lead late
/// waits less (down to `interval - lead`): the batches before it hold it back by at most that,
/// so it still comes out by its slot. A batch released a little early (out of a delay queue,
/// by less than `hold_ms`, the shortest delay queue's TTL) waits that much longer and holds
/// back the batches after it by at most that. Any other delay (a batch polled more than a lead
/// late, moved on to its next slots, or entering the schedule) would be held back, or hold
/// others back, by more, interval after interval: those go through the delay queues.
pub fn keeps_wait_order(delay_ms: i64, grid: &SlotGrid, lead_ms: i64, hold_ms: i64) -> bool {
    (grid.interval_ms - lead_ms..=grid.interval_ms + hold_ms).contains(&delay_ms)
}

/// Which slots this process polled or passed over, per influencer: the latest one and the 63
/// before it on the pk's grid (a bit each). It tells a copy of a schedule entry from the entry
/// itself (copies appear when a batch is delivered again after its next schedule was already
/// published: a crash, a lost connection), so each slot is polled once and each slot passed
/// over is counted once, whichever copy comes first. Slots older than the window count as
/// handled: an entry that old is a stale copy.
#[derive(Debug)]
pub struct SlotsHandled {
    interval_ms: i64,
    by_pk: std::collections::HashMap<i64, Window>,
}

/// `latest`, and bit `d` of `mask` for the slot `latest - d·interval`.
#[derive(Debug, Clone, Copy)]
struct Window {
    latest: i64,
    mask: u64,
}

/// Slots one batch marked handled, unmarked if its work does not reach the broker (the batch
/// comes back and must be polled or counted again).
#[derive(Debug, Default)]
#[must_use = "unmark the slots if the batch's work is not confirmed"]
pub struct Marks(Vec<Entry>);

impl SlotsHandled {
    pub fn new(grid: &SlotGrid) -> Self {
        Self {
            interval_ms: grid.interval_ms,
            by_pk: std::collections::HashMap::new(),
        }
    }

    /// How many intervals `slot_ms` lies before the pk's latest handled slot, if on its grid.
    fn steps_back(&self, window: &Window, slot_ms: i64) -> Option<i64> {
        let behind = window.latest - slot_ms;
        (behind >= 0 && behind % self.interval_ms == 0).then_some(behind / self.interval_ms)
    }

    pub fn is_handled(&self, pk: i64, slot_ms: i64) -> bool {
        let Some(window) = self.by_pk.get(&pk) else {
            return false;
        };
        match self.steps_back(window, slot_ms) {
            Some(d) if d >= 64 => true,
            Some(d) => window.mask & (1 << d) != 0,
            None => false,
        }
    }

    fn mark(&mut self, pk: i64, slot_ms: i64, marks: &mut Marks) {
        let interval_ms = self.interval_ms;
        let window = self.by_pk.entry(pk).or_insert(Window {
            latest: slot_ms,
            mask: 0,
        });
        let ahead = slot_ms - window.latest;
        if ahead > 0 {
            let d = ahead / interval_ms;
            window.mask = if ahead % interval_ms != 0 || d >= 64 {
                0
            } else {
                window.mask << d
            };
            window.latest = slot_ms;
        }
        let behind = window.latest - slot_ms;
        if behind % interval_ms == 0 && behind / interval_ms < 64 {
            window.mask |= 1 << (behind / interval_ms);
            marks.0.push(Entry { pk, slot_ms });
        }
    }

    /// Keeps the entries whose slot was not handled yet and marks them handled.
    pub fn claim(&mut self, mut batch: ScheduleBatch) -> (ScheduleBatch, Marks) {
        let mut marks = Marks::default();
        batch.entries.retain(|e| {
            if self.is_handled(e.pk, e.slot_ms) {
                return false;
            }
            self.mark(e.pk, e.slot_ms, &mut marks);
            true
        });
        (batch, marks)
    }

    /// A late batch that [`on_arrival`] moved on by `intervals`: drops the members that are a
    /// copy (their original slot was already handled); for the rest, counts and marks the slots
    /// passed over (from the original slot up to the new one) not handled before. Returns the
    /// members to re-enqueue and the count.
    pub fn pass_over(
        &mut self,
        mut moved: ScheduleBatch,
        intervals: i64,
    ) -> (ScheduleBatch, u64, Marks) {
        let mut marks = Marks::default();
        let mut skipped = 0u64;
        moved.entries.retain(|e| {
            let original = e.slot_ms - intervals * self.interval_ms;
            if self.is_handled(e.pk, original) {
                return false;
            }
            skipped += self.pass_over_one(e.pk, original, e.slot_ms, &mut marks);
            true
        });
        (moved, skipped, marks)
    }

    /// Counts and marks the slots of `pk` from `from_ms` up to (not including) `to_ms` that
    /// were not handled, looking at no more than the 64 slots of the window.
    fn pass_over_one(&mut self, pk: i64, from_ms: i64, to_ms: i64, marks: &mut Marks) -> u64 {
        let interval_ms = self.interval_ms;
        let mut skipped = 0;
        let mut slot_ms = from_ms;
        // Slots up to the latest handled one: looked up (older than the window: handled).
        if let Some(latest) = self.by_pk.get(&pk).map(|w| w.latest) {
            slot_ms = from_ms.max(latest - 63 * interval_ms);
            while slot_ms <= latest && slot_ms < to_ms {
                if !self.is_handled(pk, slot_ms) {
                    skipped += 1;
                    self.mark(pk, slot_ms, marks);
                }
                slot_ms += interval_ms;
            }
            slot_ms = slot_ms.max(from_ms);
        }
        // Slots after it: none was handled; only the last 64 need marking.
        if slot_ms < to_ms {
            skipped += ((to_ms - slot_ms + interval_ms - 1) / interval_ms) as u64;
            let mut marked = slot_ms.max(to_ms - 64 * interval_ms);
            while marked < to_ms {
                self.mark(pk, marked, marks);
                marked += interval_ms;
            }
        }
        skipped
    }

    /// Unmarks what one batch marked.
    pub fn unmark(&mut self, marks: Marks) {
        for Entry { pk, slot_ms } in marks.0 {
            if let Some(window) = self.by_pk.get_mut(&pk) {
                let behind = window.latest - slot_ms;
                if behind >= 0 && behind % self.interval_ms == 0 && behind / self.interval_ms < 64 {
                    window.mask &= !(1 << (behind / self.interval_ms));
                }
            }
        }
    }
}

/// Groups influencers into schedule messages by the window of their next slot at or after
/// `now_ms`, in order of slot.
pub fn plan_batches(pks: &[i64], grid: &SlotGrid, now_ms: i64) -> Vec<ScheduleBatch> {
    let mut entries: Vec<Entry> = pks
        .iter()
        .map(|&pk| Entry {
            pk,
            slot_ms: grid.slot_at_or_after(pk, now_ms),
        })
        .collect();
    entries.sort_unstable_by_key(|e| (e.slot_ms, e.pk));
    let mut batches: Vec<ScheduleBatch> = Vec::new();
    let mut current_window = None;
    for entry in entries {
        let window = grid.window_of(entry.slot_ms);
        let start_new = match (current_window, batches.last()) {
            (Some(w), Some(last)) => w != window || last.entries.len() >= MAX_BATCH_ENTRIES,
            _ => true,
        };
        if start_new {
            batches.push(ScheduleBatch {
                entries: Vec::new(),
            });
            current_window = Some(window);
        }
        batches.last_mut().expect("just pushed").entries.push(entry);
    }
    batches
}

#[cfg(test)]
mod tests {
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
}
