//! The rules applied to each minute's values of every tracked influencer (the movers mark,
//! [`Snapshot`]), and what they remember between minutes: about 24 bytes an influencer.
//! (Spikes are found as the data arrives, not here: [`super::spikes`].)
//!
//! - **Milestone**: followers reached a line of [`MILESTONES`] from below (`up`), or fell
//!   more than [`MILESTONE_BAND`] under a line passed upward (`down`): a value hovering at a
//!   line is one event, not one a minute.
//! - **Stale** and **recovered**: no new slot for `EVENT_STALE_SLOTS` slots of the
//!   influencer's own interval (learned from its slots; a minute until two are seen), then a
//!   new one.
//!
//! An influencer seen for the first time raises nothing: its state is taken from its value.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::{EventType, NewEvent};
use crate::series::Snapshot;

/// Round numbers of followers whose crossing is an event.
pub const MILESTONES: [i64; 11] = [
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
];

/// A line passed upward is left (a `down` event) only under `line × (1 − band)`.
pub const MILESTONE_BAND: f64 = 0.05;

/// Until an influencer's interval is seen, it is taken as a minute.
const DEFAULT_STEP_MS: i64 = 60_000;

/// How the detector decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Slots without a stored point before an influencer is stale (`EVENT_STALE_SLOTS`).
    pub stale_slots: u32,
}

/// What the log says, read when a process takes detection over ([`super::remembered`]).
#[derive(Debug, Default)]
pub struct Remembered {
    /// Milestones passed upward and not left, by influencer ([`level_after`]).
    pub levels: HashMap<i64, u8>,
    /// Influencers whose last staleness event says stale.
    pub stale: HashSet<i64>,
}

/// What one influencer's detection remembers.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    followers: i32,
    following: i32,
    time_ms: i64,
    /// The smallest step between two of its slots seen, ms (0: not seen yet).
    step_ms: i64,
    /// How many of [`MILESTONES`] it has passed upward and not left.
    level: u8,
    stale: bool,
}

/// What one minute's values raised.
#[derive(Debug, Default)]
pub struct Observed {
    pub events: Vec<NewEvent>,
}

/// Everyone's detection state, by influencer id (ascending).
#[derive(Debug)]
pub struct Detector {
    rules: Rules,
    ids: Vec<i64>,
    seen: Vec<Seen>,
    /// The log's word for influencers not seen yet, used at their first sight.
    remembered: Remembered,
}

/// The level after a milestone event at `line`: passed it (up), or back under it (down).
pub fn level_after(line: i64, up: bool) -> u8 {
    let index = MILESTONES.iter().position(|&l| l == line).unwrap_or(0) as u8;
    if up { index + 1 } else { index }
}

/// How many milestones `followers` is at or above.
fn level_of(followers: i32) -> u8 {
    MILESTONES
        .iter()
        .take_while(|&&l| i64::from(followers) >= l)
        .count() as u8
}

impl Detector {
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            ids: Vec::new(),
            seen: Vec::new(),
            remembered: Remembered::default(),
        }
    }

    /// Takes the log's word for milestone levels and staleness (after warming on marks): for
    /// the influencers it knows now, and for the others when it first sees them.
    pub fn remember(&mut self, remembered: Remembered) {
        for (id, seen) in self.ids.iter().zip(self.seen.iter_mut()) {
            if let Some(&level) = remembered.levels.get(id) {
                seen.level = level;
            }
            seen.stale = remembered.stale.contains(id);
        }
        self.remembered = remembered;
    }

    /// Applies the rules to `mark`, taken at `now_ms`. With `quiet`, only learns (a process
    /// warming on older marks). Influencers not in `mark` are forgotten.
    pub fn observe(&mut self, mark: &Snapshot, now_ms: i64, quiet: bool) -> Observed {
        let mut observed = Observed::default();
        let mut ids = Vec::with_capacity(mark.len());
        let mut seen = Vec::with_capacity(mark.len());
        let mut before = 0;
        for i in 0..mark.len() {
            let id = mark.ids[i];
            while before < self.ids.len() && self.ids[before] < id {
                before += 1;
            }
            let now = Seen {
                followers: mark.followers[i],
                following: mark.following[i],
                time_ms: mark.times_ms[i],
                ..Seen::default()
            };
            let next = match self.ids.get(before) {
                Some(&known) if known == id => {
                    let sink = if quiet { None } else { Some(&mut observed) };
                    self.rules.step(id, self.seen[before], now, now_ms, sink)
                }
                _ => self.first_sight(id, now),
            };
            ids.push(id);
            seen.push(next);
        }
        self.ids = ids;
        self.seen = seen;
        if !quiet {
            // Everyone tracked has been seen: the log's word is taken.
            self.remembered = Remembered::default();
        }
        observed
    }

    /// An influencer's state from its first value: the milestones it is at (or the log's
    /// word), nothing to compare.
    fn first_sight(&self, id: i64, now: Seen) -> Seen {
        Seen {
            level: (self.remembered.levels.get(&id).copied())
                .unwrap_or_else(|| level_of(now.followers)),
            stale: self.remembered.stale.contains(&id),
            ..now
        }
    }
}

impl Rules {
    /// One influencer from `was` to its value `now` (whose time may be unchanged).
    fn step(
        &self,
        id: i64,
        was: Seen,
        now: Seen,
        now_ms: i64,
        mut out: Option<&mut Observed>,
    ) -> Seen {
        let mut next = was;
        if now.time_ms > was.time_ms {
            let step = now.time_ms - was.time_ms;
            next.step_ms = if was.step_ms == 0 {
                step
            } else {
                was.step_ms.min(step)
            };
            next.followers = now.followers;
            next.following = now.following;
            next.time_ms = now.time_ms;
            self.milestones(id, &mut next, out.as_deref_mut());
        }
        self.staleness(id, &mut next, was.time_ms, now_ms, out);
        next
    }

    /// Milestones crossed since the last value, each an event, with the band on the way down.
    fn milestones(&self, id: i64, seen: &mut Seen, mut out: Option<&mut Observed>) {
        let (followers, slot_ms) = (i64::from(seen.followers), seen.time_ms);
        let mut crossed = |line: i64, direction: &str| {
            if let Some(out) = out.as_deref_mut() {
                out.events.push(NewEvent {
                    kind: EventType::Milestone,
                    influencer_id: id,
                    slot_ms: Some(slot_ms),
                    data: json!({"milestone": line, "direction": direction, "followers": followers}),
                });
            }
        };
        while usize::from(seen.level) < MILESTONES.len()
            && followers >= MILESTONES[usize::from(seen.level)]
        {
            crossed(MILESTONES[usize::from(seen.level)], "up");
            seen.level += 1;
        }
        while seen.level > 0 {
            let line = MILESTONES[usize::from(seen.level) - 1];
            if (followers as f64) >= line as f64 * (1.0 - MILESTONE_BAND) {
                break;
            }
            crossed(line, "down");
            seen.level -= 1;
        }
    }

    /// Stale when no new slot came for `stale_slots` slots after the last one (and the one
    /// being fetched); recovered at the first new slot after.
    fn staleness(
        &self,
        id: i64,
        seen: &mut Seen,
        previous_ms: i64,
        now_ms: i64,
        out: Option<&mut Observed>,
    ) {
        let step = if seen.step_ms > 0 {
            seen.step_ms
        } else {
            DEFAULT_STEP_MS
        };
        let silent_ms = now_ms - seen.time_ms;
        let stale = silent_ms > i64::from(self.stale_slots + 1) * step;
        if stale == seen.stale {
            return;
        }
        seen.stale = stale;
        let Some(out) = out else { return };
        let (kind, data) = if stale {
            let missed = silent_ms / step;
            (
                EventType::Stale,
                json!({"last_slot_ms": seen.time_ms, "slots_missed": missed}),
            )
        } else {
            let data = json!({
                "followers": seen.followers,
                "following": seen.following,
                "previous_slot_ms": previous_ms,
            });
            (EventType::Recovered, data)
        };
        out.events.push(NewEvent {
            kind,
            influencer_id: id,
            slot_ms: Some(seen.time_ms),
            data,
        });
    }
}

#[cfg(test)]
mod tests;
