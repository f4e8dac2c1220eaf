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
pub(crate) const MAX_BATCH_ENTRIES: usize = 500;

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

    pub(crate) fn interval_ms(&self) -> i64 {
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
    pub(crate) fn window_of(&self, slot_ms: i64) -> i64 {
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

    pub(crate) fn serialize<S: Serializer>(entries: &[Entry], s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(i64, i64)> = entries.iter().map(|e| (e.pk, e.slot_ms)).collect();
        pairs.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Entry>, D::Error> {
        let pairs = Vec::<(i64, i64)>::deserialize(d)?;
        Ok(pairs
            .into_iter()
            .map(|(pk, slot_ms)| Entry { pk, slot_ms })
            .collect())
    }
}

impl ScheduleBatch {
    pub(crate) fn earliest_slot_ms(&self) -> Option<i64> {
        self.entries.iter().map(|e| e.slot_ms).min()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a schedule batch serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The same members at their next slots.
    pub(crate) fn advanced(&self, grid: &SlotGrid) -> Self {
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
pub(crate) enum Arrival {
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
pub(crate) fn on_arrival(
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
pub(crate) fn keeps_wait_order(delay_ms: i64, grid: &SlotGrid, lead_ms: i64, hold_ms: i64) -> bool {
    (grid.interval_ms - lead_ms..=grid.interval_ms + hold_ms).contains(&delay_ms)
}

/// Which slots this process polled or passed over, per influencer: the latest one and the 63
/// before it on the pk's grid (a bit each). It tells a copy of a schedule entry from the entry
/// itself (copies appear when a batch is delivered again after its next schedule was already
/// published: a crash, a lost connection), so each slot is polled once and each slot passed
/// over is counted once, whichever copy comes first. Slots older than the window count as
/// handled: an entry that old is a stale copy.
#[derive(Debug)]
pub(crate) struct SlotsHandled {
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
pub(crate) struct Marks(Vec<Entry>);

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

    pub(crate) fn is_handled(&self, pk: i64, slot_ms: i64) -> bool {
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
    pub(crate) fn claim(&mut self, mut batch: ScheduleBatch) -> (ScheduleBatch, Marks) {
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
    pub(crate) fn pass_over(
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
    pub(crate) fn unmark(&mut self, marks: Marks) {
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
pub(crate) fn plan_batches(pks: &[i64], grid: &SlotGrid, now_ms: i64) -> Vec<ScheduleBatch> {
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
mod tests;
