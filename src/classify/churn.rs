//! The follow/unfollow "seesaw": an account that follows thousands of others to be followed
//! back, then unfollows them, again and again. Its following count goes up and down by large
//! amounts, repeatedly, within a day, while a real account's following count wanders slowly.
//!
//! The rule, on the day the daily pass reads (the spike detector's read, so it costs no more
//! reading): the following count's minute changes give its usual spread `s` (MAD × 1.4826 of
//! the per-slot changes, as the spike detector scales them, never below 1). A **leg** is a
//! move of at least the threshold `T = max(8 · s · √60, 5% of the median following, 100)`
//! between two turning points (a zigzag: the series turns when it comes back `T` from its
//! extreme since the last turn); a random walk with that spread makes a leg of `T` about
//! every three days. Six legs or more in the day (three ups and three downs) is churn.
//!
//! The finding carries its evidence: the legs (when, from, to), the threshold and the spread.

use serde::Serialize;

pub(crate) const SOURCE: &str = "churn";

/// Legs in the day that make an influencer a churner.
pub(crate) const MIN_LEGS: usize = 6;
/// The threshold in hours of the usual spread: a leg is `T = 8 s √60` at least.
const SPREADS: f64 = 8.0;
/// ... and at least this share of the median following count, and at least [`MIN_MOVE`].
const MIN_SHARE: f64 = 0.05;
const MIN_MOVE: f64 = 100.0;
/// Fewer changes than this in the day: no verdict.
const MIN_CHANGES: usize = 60;
/// Legs kept as evidence.
const LEGS_SHOWN: usize = 12;

/// One large move of the following count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Leg {
    /// Where it started and ended, epoch seconds.
    pub from_time: i64,
    pub to_time: i64,
    pub from: i32,
    pub to: i32,
}

/// What the rule found for one influencer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChurnFinding {
    pub suspicious: bool,
    /// Legs of at least `threshold` in the day.
    pub legs: usize,
    pub threshold: f64,
    /// The usual spread of the following count's minute changes.
    pub spread: f64,
    /// The first legs (at most 12), in time order.
    pub evidence: Vec<Leg>,
}

/// Judges one day of an influencer's following count: `slots` (epoch seconds, ascending)
/// and the count at each, polled every `interval` seconds. `None` with too few changes.
pub fn judge(slots: &[i64], following: &[i32], interval: i64) -> Option<ChurnFinding> {
    let n = slots.len().min(following.len());
    if n < 2 || n - 1 < MIN_CHANGES {
        return None;
    }
    let interval = interval.max(1) as f64;
    let mut changes: Vec<f64> = (1..n)
        .map(|i| {
            let elapsed = ((slots[i] - slots[i - 1]) as f64 / interval).max(1.0);
            (following[i] as f64 - following[i - 1] as f64) / elapsed.sqrt()
        })
        .collect();
    let median_change = median(&mut changes);
    let mut deviations: Vec<f64> = changes.iter().map(|c| (c - median_change).abs()).collect();
    let spread = (median(&mut deviations) * 1.482_6).max(1.0);
    let mut levels: Vec<f64> = following[..n].iter().map(|&f| f as f64).collect();
    let typical = median(&mut levels);
    let per_hour = (3600.0 / interval).max(1.0).sqrt();
    let threshold = (SPREADS * spread * per_hour)
        .max(MIN_SHARE * typical)
        .max(MIN_MOVE);
    let legs = zigzag(&slots[..n], &following[..n], threshold);
    Some(ChurnFinding {
        suspicious: legs.len() >= MIN_LEGS,
        legs: legs.len(),
        threshold: (threshold * 10.0).round() / 10.0,
        spread: (spread * 10.0).round() / 10.0,
        evidence: legs.into_iter().take(LEGS_SHOWN).collect(),
    })
}

/// The legs of at least `threshold`: the series turns when it has come back `threshold`
/// from its extreme since the last turn.
fn zigzag(slots: &[i64], values: &[i32], threshold: f64) -> Vec<Leg> {
    let mut legs = Vec::new();
    let (mut turn, mut extreme) = (0usize, 0usize);
    // +1 rising, -1 falling, 0 not yet known.
    let mut direction = 0i8;
    for i in 1..values.len() {
        let (v, at_extreme) = (values[i] as f64, values[extreme] as f64);
        let further = match direction {
            1 => v > at_extreme,
            -1 => v < at_extreme,
            _ => (v - values[turn] as f64).abs() > (at_extreme - values[turn] as f64).abs(),
        };
        if further {
            extreme = i;
            if direction == 0 && (v - values[turn] as f64).abs() >= threshold {
                direction = if v > values[turn] as f64 { 1 } else { -1 };
            }
            continue;
        }
        if direction != 0 && (v - at_extreme).abs() >= threshold {
            legs.push(leg(slots, values, turn, extreme));
            turn = extreme;
            extreme = i;
            direction = -direction;
        }
    }
    if direction != 0 && (values[extreme] as f64 - values[turn] as f64).abs() >= threshold {
        legs.push(leg(slots, values, turn, extreme));
    }
    legs
}

fn leg(slots: &[i64], values: &[i32], from: usize, to: usize) -> Leg {
    Leg {
        from_time: slots[from],
        to_time: slots[to],
        from: values[from],
        to: values[to],
    }
}

/// The median of `values` (reordered in place); 0 when empty.
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mid = values.len() / 2;
    let (_, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if values.len() % 2 == 1 {
        return upper;
    }
    let lower = values[..mid].iter().copied().fold(f64::MIN, f64::max);
    (lower + upper) / 2.0
}

#[cfg(test)]
mod tests;
