//! Staged behaviour for detection's tests: the follow/unfollow seesaw
//! (`SIMULATOR_CHURN_SHARE`) and follower spikes (`SIMULATOR_SPIKE_SHARE`), each for a share of
//! the pks chosen by the seed and the pk alone, so a test knows the truth.

use super::Simulator;
use crate::model::splitmix;

/// The seesaw a churner stages: this many more accounts followed, every other three hours.
pub const CHURN_AMOUNT: i64 = 10_000;
pub const CHURN_HALF_PERIOD_MS: i64 = 3 * 3_600_000;
const CHURN_SALT: u64 = 0x6368_7572_6e00_0000;
/// The jump a spiker stages: 15 standard deviations of the walk's minute.
pub const SPIKE_AMOUNT: i64 = 150_000;
const SPIKE_SALT: u64 = 0x7370_696b_6500_0000;

impl Simulator {
    /// Whether `pk` stages the follow/unfollow seesaw (`SIMULATOR_CHURN_SHARE`): decided by
    /// the seed and the pk alone, so a test knows the truth.
    pub fn churns(&self, pk: i64) -> bool {
        self.staged(pk, CHURN_SALT, self.inner.churn_share)
    }

    /// Whether `pk` stages follower spikes (`SIMULATOR_SPIKE_SHARE`): [`SPIKE_AMOUNT`] more
    /// followers at once, and as many fewer `SIMULATOR_SPIKE_EVERY` later, back and forth.
    pub fn spikes(&self, pk: i64) -> bool {
        self.staged(pk, SPIKE_SALT, self.inner.spike_share)
    }

    /// When a spiker's staged jumps happen in `[from_ms, to_ms)`, epoch ms: its first `GET`
    /// at or after each is the jump (the truth detection is measured against).
    pub fn spike_times(&self, pk: i64, from_ms: i64, to_ms: i64) -> Vec<i64> {
        if !self.spikes(pk) {
            return Vec::new();
        }
        let every = self.inner.spike_every_ms;
        let offset = self.spike_offset(pk);
        let mut phase = (from_ms + offset).div_euclid(every);
        let mut times = Vec::new();
        loop {
            let start = phase * every - offset;
            if start >= to_ms {
                return times;
            }
            if start >= from_ms {
                times.push(start);
            }
            phase += 1;
        }
    }

    fn spike_offset(&self, pk: i64) -> i64 {
        (splitmix(pk as u64 ^ SPIKE_SALT) % self.inner.spike_every_ms as u64) as i64
    }

    /// What a spiker's followers have on top of its walk at `now_ms`.
    pub(super) fn spiked(&self, pk: i64, now_ms: i64) -> i64 {
        let phase = (now_ms + self.spike_offset(pk)).div_euclid(self.inner.spike_every_ms);
        if self.spikes(pk) && phase % 2 == 1 {
            SPIKE_AMOUNT
        } else {
            0
        }
    }

    /// Whether the seed's draw for `pk` under `salt` falls in `share`.
    fn staged(&self, pk: i64, salt: u64, share: f64) -> bool {
        if share <= 0.0 {
            return false;
        }
        let draw = splitmix(self.inner.seed ^ splitmix(pk as u64 ^ salt));
        let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
        unit < share
    }

    /// What a churner's following count has on top of its walk at `now_ms`: [`CHURN_AMOUNT`]
    /// every other [`CHURN_HALF_PERIOD_MS`], its phase set by its pk.
    pub(super) fn churned(&self, pk: i64, now_ms: i64) -> i64 {
        let phase = (now_ms + pk * 600_000).div_euclid(CHURN_HALF_PERIOD_MS);
        if self.churns(pk) && phase % 2 == 1 {
            CHURN_AMOUNT
        } else {
            0
        }
    }
}
