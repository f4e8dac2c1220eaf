//! `MOCKSTAGRAM_RPS` as the ceiling of the whole fleet, however many pollers run.
//!
//! Every poll process consumes the due queue with one consumer, and pollers share the schedule
//! as competing consumers, so they share the work about equally. RabbitMQ knows how many
//! consumers the due queue has (a passive declare answers it): each poller takes
//! `MOCKSTAGRAM_RPS / consumers` (rounded down, at least 1 request/s) as its own ceiling, with
//! a burst of a tenth of a second's worth, and reads the count again every
//! [`SHARE_REFRESH`]. The shares add up to the ceiling at most.
//!
//! No coordinator, no extra dependency: the broker every poller already needs is the
//! membership list. What it does not cover:
//! - for up to one [`SHARE_REFRESH`] after a poller joins, the others still use their larger
//!   share: the fleet may exceed the ceiling by the newcomer's share for that long (a poller
//!   counts the consumers before it starts consuming, so it never starts with more than its
//!   share);
//! - a poller that leaves gives its share back to the others within a [`SHARE_REFRESH`];
//! - if the broker cannot be asked, a poller keeps its last share (it is consuming from that
//!   broker, so it cannot be without one for long).
//!
//! `bench fleet` measures the combined rate of three pollers against the ceiling.

use std::{
    num::NonZeroU32,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// How often each poller counts the pollers it shares the ceiling with.
pub const SHARE_REFRESH: Duration = Duration::from_secs(1);

/// One process's share of the fleet's request-rate ceiling.
pub struct RateCeiling {
    fleet: NonZeroU32,
    sharers: AtomicU32,
    limiter: RwLock<Arc<DefaultDirectRateLimiter>>,
}

impl RateCeiling {
    /// The whole of `fleet` requests/s, until [`RateCeiling::share_with`] says otherwise.
    pub fn new(fleet: NonZeroU32) -> Self {
        metrics::gauge!("upstream_rate_share").set(fleet.get() as f64);
        Self {
            fleet,
            sharers: AtomicU32::new(1),
            limiter: RwLock::new(Arc::new(limiter(fleet))),
        }
    }

    /// This process's requests/s.
    pub fn share(&self) -> NonZeroU32 {
        share(self.fleet, self.sharers.load(Ordering::Relaxed))
    }

    /// Shares the fleet's ceiling among `processes` (this one included; 0 counts as 1).
    pub fn share_with(&self, processes: u32) {
        let processes = processes.max(1);
        if self.sharers.swap(processes, Ordering::Relaxed) == processes {
            return;
        }
        let share = share(self.fleet, processes);
        *self.limiter.write().expect("never poisoned") = Arc::new(limiter(share));
        metrics::gauge!("upstream_rate_share").set(share.get() as f64);
        tracing::info!(
            pollers = processes,
            requests_per_second = share.get(),
            fleet_ceiling = self.fleet.get(),
            "upstream rate share changed"
        );
    }

    /// Waits until one more request fits under this process's share.
    pub async fn until_ready(&self) {
        let limiter = self.limiter.read().expect("never poisoned").clone();
        limiter.until_ready().await;
    }
}

fn share(fleet: NonZeroU32, processes: u32) -> NonZeroU32 {
    NonZeroU32::new(fleet.get() / processes.max(1)).unwrap_or(NonZeroU32::MIN)
}

/// `rps` with a burst of a tenth of a second's worth: over any second the upstream sees at
/// most 1.1 × the ceiling (governor's default burst, a whole second's worth, would let 2×
/// through right after a quiet spell, e.g. when 429s paused everyone).
fn limiter(rps: NonZeroU32) -> DefaultDirectRateLimiter {
    let burst = NonZeroU32::new(rps.get() / 10).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rps).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_ceiling_at_most_and_never_to_zero() {
        let fleet = NonZeroU32::new(1000).unwrap();
        for processes in 1..=7u32 {
            let each = share(fleet, processes).get();
            assert!(each * processes <= 1000, "{processes}: {each}");
            assert!(each * processes > 1000 - processes, "{processes}: {each}");
        }
        assert_eq!(
            share(fleet, 0).get(),
            1000,
            "no consumer counted: the whole"
        );
        assert_eq!(
            share(NonZeroU32::new(2).unwrap(), 5).get(),
            1,
            "at least 1/s"
        );
    }

    #[tokio::test]
    async fn a_new_share_takes_effect_for_the_next_request() {
        let ceiling = RateCeiling::new(NonZeroU32::new(100).unwrap());
        assert_eq!(ceiling.share().get(), 100);
        ceiling.share_with(4);
        assert_eq!(ceiling.share().get(), 25);
        // The burst of a tenth of a second's worth of 25/s is 2 requests, then one per 40 ms.
        let started = std::time::Instant::now();
        for _ in 0..6 {
            ceiling.until_ready().await;
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        ceiling.share_with(0);
        assert_eq!(ceiling.share().get(), 100);
    }
}
