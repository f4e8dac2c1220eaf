//! The one backoff policy every retrying loop uses: waits that start at `first` and double
//! with each failed attempt up to `max`, optionally with full jitter (a random wait between
//! zero and that), as AWS's "Exponential Backoff and Jitter" recommends for many clients
//! retrying against one server.
//!
//! Used by the supervisor restarting a role, the sink holding a batch through a database
//! outage and waiting for the database to answer, and the Mockstagram client.

use std::time::Duration;

use rand::Rng;

/// How long to wait after each failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Whether each wait is drawn at random from zero to its exponential value.
    pub full_jitter: bool,
}

impl Backoff {
    /// `first`, doubling up to `max`, without jitter.
    pub const fn exponential(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            full_jitter: false,
        }
    }

    /// The same with full jitter.
    pub const fn with_full_jitter(self) -> Self {
        Self {
            full_jitter: true,
            ..self
        }
    }

    /// The wait after `failures` failed attempts in a row (1 for the first failure).
    pub fn wait(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let ceiling = self.first.saturating_mul(1 << doublings).min(self.max);
        if self.full_jitter {
            rand::rng().random_range(Duration::ZERO..=ceiling)
        } else {
            ceiling
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_the_first_up_to_the_max() {
        let backoff = Backoff::exponential(Duration::from_millis(250), Duration::from_secs(2));
        let waits: Vec<u128> = (1..=6).map(|n| backoff.wait(n).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(
            backoff.wait(u32::MAX),
            Duration::from_secs(2),
            "no overflow"
        );
    }

    #[test]
    fn full_jitter_draws_each_wait_between_zero_and_its_ceiling() {
        let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
            .with_full_jitter();
        let draws: Vec<Duration> = (0..200).map(|_| backoff.wait(3)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(400)));
        assert!(
            draws.iter().any(|d| *d < Duration::from_millis(200)),
            "spread out, not all at the ceiling"
        );
    }
}
