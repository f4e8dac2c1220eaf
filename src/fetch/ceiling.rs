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
//! membership list. Changes of membership:
//! - a poller that joins counts the others before it starts consuming, takes its share, and
//!   sends nothing for one [`SHARE_REFRESH`] and a moment more, by when every other poller has
//!   counted it and shrunk its share: a join never takes the fleet over the ceiling (it delays
//!   the newcomer's first batches by about a second);
//! - a new share replaces the limiter, and the requests waiting on the old one move to the new
//!   one at once;
//! - a poller that leaves gives its share back to the others within a [`SHARE_REFRESH`];
//! - if the broker cannot be asked, a poller keeps its last share (it is consuming from that
//!   broker, so it cannot be without one for long).
//!
//! `bench fleet` measures the combined rate of three pollers against the ceiling.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::{sync::watch, time::Instant};

/// How often each poller counts the pollers it shares the ceiling with.
pub const SHARE_REFRESH: Duration = Duration::from_secs(1);

/// One process's share of the fleet's request-rate ceiling.
pub struct RateCeiling {
    fleet: NonZeroU32,
    /// The current share, watched by every request waiting on it. A new share is a new
    /// limiter, and requests waiting on the old one move to it at once: left to finish on the
    /// old one, they were let through at the old rate while new requests went at the new one
    /// (in `bench fleet`, 2.5 times the ceiling in the second after a join).
    share: watch::Sender<Share>,
}

/// A share: how many processes split the ceiling, the limiter of this one's part, and the
/// moment before which a poller that joins sends nothing.
#[derive(Clone)]
struct Share {
    processes: u32,
    limiter: Arc<DefaultDirectRateLimiter>,
    not_before: Option<Instant>,
}

impl RateCeiling {
    /// The whole of `fleet` requests/s, until [`RateCeiling::share_with`] says otherwise.
    pub fn new(fleet: NonZeroU32) -> Self {
        metrics::gauge!("upstream_rate_share").set(fleet.get() as f64);
        Self {
            fleet,
            share: watch::Sender::new(Share {
                processes: 1,
                limiter: Arc::new(limiter(fleet)),
                not_before: None,
            }),
        }
    }

    /// This process's requests/s.
    pub fn share(&self) -> NonZeroU32 {
        share(self.fleet, self.share.borrow().processes)
    }

    /// A poller joins a fleet of `others`: it takes its share, and sends nothing for one
    /// [`SHARE_REFRESH`] and a moment more, by when every other poller has counted it and
    /// shrunk its own share. So a join never takes the fleet over the ceiling.
    pub fn join(&self, others: u32) {
        self.share_with(others + 1);
        let until = Instant::now() + SHARE_REFRESH + JOIN_MARGIN;
        self.share
            .send_modify(|share| share.not_before = Some(until));
    }

    /// Shares the fleet's ceiling among `processes` (this one included; 0 counts as 1).
    pub fn share_with(&self, processes: u32) {
        let processes = processes.max(1);
        let each = share(self.fleet, processes);
        let changed = self.share.send_if_modified(|current| {
            if current.processes == processes {
                return false;
            }
            current.processes = processes;
            current.limiter = Arc::new(limiter(each));
            true
        });
        if changed {
            metrics::gauge!("upstream_rate_share").set(each.get() as f64);
            tracing::info!(
                pollers = processes,
                requests_per_second = each.get(),
                fleet_ceiling = self.fleet.get(),
                "upstream rate share changed"
            );
        }
    }

    /// Waits until one more request fits under this process's share.
    pub async fn until_ready(&self) {
        let mut current = self.share.subscribe();
        loop {
            let Share {
                limiter,
                not_before,
                ..
            } = current.borrow_and_update().clone();
            let ready = async {
                if let Some(until) = not_before {
                    tokio::time::sleep_until(until).await;
                }
                limiter.until_ready().await;
            };
            tokio::select! {
                () = ready => return,
                // A new share: wait on its limiter instead (no token was taken from this one).
                _ = current.changed() => {}
            }
        }
    }
}

/// How much longer than a [`SHARE_REFRESH`] a joining poller waits: the others' counts take a
/// moment (a passive declare each).
const JOIN_MARGIN: Duration = Duration::from_millis(250);

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
    async fn a_poller_that_joins_waits_until_the_others_have_counted_it() {
        let ceiling = RateCeiling::new(NonZeroU32::new(1000).unwrap());
        ceiling.join(2);
        assert_eq!(ceiling.share().get(), 333);
        let started = std::time::Instant::now();
        ceiling.until_ready().await;
        assert!(
            started.elapsed() >= SHARE_REFRESH,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn requests_waiting_on_an_old_share_move_to_the_new_one() {
        // 1 request/s: after the burst of 1, the next waits a second.
        let ceiling = Arc::new(RateCeiling::new(NonZeroU32::new(10).unwrap()));
        ceiling.share_with(10);
        ceiling.until_ready().await;
        let waiting = tokio::spawn({
            let ceiling = ceiling.clone();
            async move {
                let started = std::time::Instant::now();
                ceiling.until_ready().await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // 10/s now: the waiting request moves to the new limiter (a fresh one, its first token
        // at once) instead of waiting out the old one's second.
        ceiling.share_with(1);
        let waited = waiting.await.unwrap();
        assert!(waited < Duration::from_millis(500), "{waited:?}");
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
