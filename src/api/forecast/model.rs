//! The forecast's model: a random walk with drift on daily closes, the drift and the spread of
//! a day's change estimated from the influencer's own recent days.
//!
//! With `n` daily changes of mean `m` and standard deviation `s`, the followers `h` days after
//! the latest value `x` are expected at `x + m·h`, with a spread of `s·√(h + h²/n)`: the walk's
//! own `s·√h`, and the error of an estimated drift, `h·s/√n`. The intervals are the normal
//! ones around it (±1.2816 and ±1.9600 spreads for 80% and 95%). Followers do not go under 0:
//! where the 95% interval would, the walk is taken as reflected at 0, whose value is
//! distributed as |N(expected, spread²)| (the folded normal), and the expected value and the
//! intervals are that distribution's mean and quantiles.
//! `bench forecast` backtests them on stored walks (plain, with drift, with spikes).
//!
//! A milestone (the next round number past the latest value in the drift's direction) is
//! expected on the first day the expected value reaches it; its 80% interval runs from the
//! first day the optimistic end of the 80% interval reaches it to the first day the pessimistic
//! end does (then reached with 90% likelihood), either end "not within the horizon" when later.

use crate::series::DAY_MS;

/// Changes of consecutive days needed to forecast.
pub const MIN_CHANGES: usize = 7;
/// z of the two-sided 80% and 95% normal intervals.
const Z80: f64 = 1.281_551_565_545;
const Z95: f64 = 1.959_963_984_540;

/// The milestones, in followers: 10K, 50K, 100K, 500K, 1M, 5M, … to 1B.
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

/// The walk as estimated from the history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Walk {
    /// Mean change a day.
    pub drift: f64,
    /// Standard deviation of a day's change.
    pub sd: f64,
    /// Daily changes it was estimated from.
    pub changes: usize,
}

/// A value's distribution at some day ahead: expected value and two intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub expected: f64,
    pub low80: f64,
    pub high80: f64,
    pub low95: f64,
    pub high95: f64,
}

impl Walk {
    /// Estimates the walk from daily closes `(day start ms, followers)` in day order: the
    /// changes between consecutive days (a missing day breaks the chain there). `None` with
    /// fewer than [`MIN_CHANGES`].
    pub fn estimate(closes: &[(i64, i64)]) -> Option<Self> {
        let changes: Vec<f64> = closes
            .windows(2)
            .filter(|w| w[1].0 - w[0].0 == DAY_MS)
            .map(|w| (w[1].1 - w[0].1) as f64)
            .collect();
        if changes.len() < MIN_CHANGES {
            return None;
        }
        let n = changes.len() as f64;
        let drift = changes.iter().sum::<f64>() / n;
        let var = changes.iter().map(|c| (c - drift).powi(2)).sum::<f64>() / (n - 1.0);
        Some(Self {
            drift,
            sd: var.sqrt(),
            changes: changes.len(),
        })
    }

    /// The value `days` (> 0) after one of `from`.
    pub fn band(&self, from: f64, days: f64) -> Band {
        let mean = from + self.drift * days;
        let spread = self.sd * (days + days * days / self.changes as f64).sqrt();
        if spread <= 0.0 || mean - Z95 * spread >= 0.0 {
            return Band {
                expected: mean,
                low80: mean - Z80 * spread,
                high80: mean + Z80 * spread,
                low95: mean - Z95 * spread,
                high95: mean + Z95 * spread,
            };
        }
        // Followers do not go under 0: a walk that reaches it turns back, and a walk reflected
        // at 0 is distributed as |N(mean, spread²)| (the folded normal).
        let folded = Folded { mean, spread };
        Band {
            expected: folded.mean(),
            low80: folded.quantile(0.10),
            high80: folded.quantile(0.90),
            low95: folded.quantile(0.025),
            high95: folded.quantile(0.975),
        }
    }

    /// The next milestone from `from` in the drift's direction: up when the drift is not
    /// negative. `None` past the last (or under the first, going down).
    pub fn next_milestone(&self, from: f64) -> Option<(i64, bool)> {
        if self.drift >= 0.0 {
            MILESTONES
                .iter()
                .find(|&&m| m as f64 > from)
                .map(|&m| (m, true))
        } else {
            MILESTONES
                .iter()
                .rev()
                .find(|&&m| (m as f64) < from)
                .map(|&m| (m, false))
        }
    }

    /// When `milestone` is reached from `from`, within `horizon` days: the first day the
    /// expected value, the optimistic and the pessimistic end of the 80% interval reach it
    /// (days ahead, each `None` when not within the horizon).
    pub fn reaching(&self, from: f64, milestone: (i64, bool), horizon: u32) -> Reaching {
        let (line, up) = (milestone.0 as f64, milestone.1);
        let reached = |v: f64| if up { v >= line } else { v <= line };
        let first = |pick: fn(&Band, bool) -> f64| {
            (1..=horizon).find(|&d| reached(pick(&self.band(from, f64::from(d)), up)))
        };
        Reaching {
            expected: first(|b, _| b.expected),
            earliest: first(|b, up| if up { b.high80 } else { b.low80 }),
            latest: first(|b, up| if up { b.low80 } else { b.high80 }),
        }
    }
}

/// |N(mean, spread²)|: a walk from `mean`'s start reflected at 0.
struct Folded {
    mean: f64,
    spread: f64,
}

impl Folded {
    fn cdf(&self, q: f64) -> f64 {
        if q <= 0.0 {
            return 0.0;
        }
        phi((q - self.mean) / self.spread) - phi((-q - self.mean) / self.spread)
    }

    fn mean(&self) -> f64 {
        let (m, s) = (self.mean, self.spread);
        s * (2.0 / std::f64::consts::PI).sqrt() * (-(m * m) / (2.0 * s * s)).exp()
            + m * (1.0 - 2.0 * phi(-m / s))
    }

    /// The `p` quantile, by bisection (the CDF is increasing).
    fn quantile(&self, p: f64) -> f64 {
        let (mut low, mut high) = (0.0, self.mean.abs() + 10.0 * self.spread);
        for _ in 0..100 {
            let mid = (low + high) / 2.0;
            if self.cdf(mid) < p {
                low = mid;
            } else {
                high = mid;
            }
        }
        (low + high) / 2.0
    }
}

/// The standard normal CDF.
fn phi(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// erfc, to about 1e-7 (Numerical Recipes' Chebyshev fit).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Days ahead at which a milestone is reached (see [`Walk::reaching`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaching {
    pub expected: Option<u32>,
    pub earliest: Option<u32>,
    pub latest: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closes(values: &[i64]) -> Vec<(i64, i64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| (20_000 * DAY_MS + i as i64 * DAY_MS, v))
            .collect()
    }

    #[test]
    fn the_walk_is_the_mean_and_spread_of_consecutive_days_changes() {
        // Changes 10, 20, 30, 40, 50, 60, 70: mean 40, sample sd √(2800/6).
        let walk = Walk::estimate(&closes(&[0, 10, 30, 60, 100, 150, 210, 280])).unwrap();
        assert_eq!(walk.changes, 7);
        assert!((walk.drift - 40.0).abs() < 1e-9);
        assert!((walk.sd - (2_800.0_f64 / 6.0).sqrt()).abs() < 1e-9);
        // Too few changes, and a gap that breaks the chain.
        assert_eq!(Walk::estimate(&closes(&[0, 1, 2, 3, 4, 5, 6])), None);
        let mut gapped = closes(&[0, 10, 30, 60, 100, 150, 210, 280]);
        gapped[4].0 += DAY_MS;
        assert_eq!(Walk::estimate(&gapped), None);
    }

    #[test]
    fn the_band_widens_with_the_walk_and_the_drifts_error() {
        let walk = Walk {
            drift: 100.0,
            sd: 1_000.0,
            changes: 25,
        };
        let b = walk.band(50_000.0, 25.0);
        assert_eq!(b.expected, 52_500.0);
        // √(25 + 625/25) = √50.
        let spread = 1_000.0 * 50.0_f64.sqrt();
        assert!((b.high80 - (52_500.0 + Z80 * spread)).abs() < 1e-6);
        assert!((b.low95 - (52_500.0 - Z95 * spread)).abs() < 1e-6);
        assert!(b.low95 < b.low80 && b.high80 < b.high95);
    }

    #[test]
    fn near_0_the_band_is_the_folded_normals() {
        assert!((phi(0.0) - 0.5).abs() < 1e-7);
        assert!((phi(Z80) - 0.9).abs() < 1e-6);
        assert!((phi(-Z95) - 0.025).abs() < 1e-6);
        let walk = Walk {
            drift: 0.0,
            sd: 1_000.0,
            changes: 1_000_000,
        };
        // From 0 with no drift: |N(0, s²)|, whose p quantile is s·z((1 + p) / 2): z(0.95) and
        // z(0.55).
        let b = walk.band(0.0, 1.0);
        let s = 1_000.0 * (1.0_f64 + 1e-6).sqrt();
        assert!((b.high80 - s * 1.644_853_626_951).abs() < 1.0, "{b:?}");
        assert!((b.low80 - s * 0.125_661_346_855).abs() < 1.0, "{b:?}");
        assert!((b.expected - s * (2.0 / std::f64::consts::PI).sqrt()).abs() < 1.0);
        assert!(b.low95 >= 0.0 && b.low95 < b.low80 && b.high80 < b.high95);
        // Far from 0: the normal band.
        let far = walk.band(1e6, 1.0);
        assert!((far.low80 - (1e6 - Z80 * s)).abs() < 1e-6);
    }

    #[test]
    fn milestones_follow_the_drift_and_are_reached_within_the_horizon_or_not() {
        let up = Walk {
            drift: 1_000.0,
            sd: 100.0,
            changes: 90,
        };
        assert_eq!(up.next_milestone(95_000.0), Some((100_000, true)));
        assert_eq!(up.next_milestone(100_000.0), Some((500_000, true)));
        assert_eq!(up.next_milestone(2e9), None);
        let down = Walk { drift: -1.0, ..up };
        assert_eq!(down.next_milestone(95_000.0), Some((50_000, false)));
        assert_eq!(down.next_milestone(9_000.0), None);
        let r = up.reaching(95_000.0, (100_000, true), 30);
        assert_eq!(r.expected, Some(5));
        assert!(r.earliest.unwrap() <= 5 && r.latest.unwrap() >= 5);
        assert_eq!(up.reaching(95_000.0, (500_000, true), 30).expected, None);
        let r = down.reaching(95_000.0, (50_000, false), 30);
        assert_eq!(r.expected, None);
    }
}
