//! `MOCKSTAGRAM_RPS` as the ceiling of the whole fleet, however many pollers run.
//!
//! Every poll process consumes the due queue with one consumer, and pollers share the schedule
//! as competing consumers, so they share the work about equally. RabbitMQ knows how many
//! consumers the due queue has (a passive declare answers it): each poller takes
//! `MOCKSTAGRAM_RPS / consumers` as its own ceiling, kept as the time between two of its
//! requests (rounded up to the nanosecond, so a share may be less than one request a second:
//! 2 requests/s over 5 pollers is one request every 2.5 s each), with a burst of a tenth of a
//! second's worth (at least one request), and reads the count again every [`SHARE_REFRESH`].
//! The shares add up to the ceiling at most, for any ceiling and any number of pollers.
//!
//! No coordinator, no extra dependency: the broker every poller already needs is the
//! membership list. Changes of membership:
//! - a poller that joins counts the others before it starts consuming, takes its share, and
//!   sends nothing for one [`SHARE_REFRESH`] and a moment more, by when every other poller has
//!   counted it and shrunk its share: a join never takes the fleet over the ceiling (it delays
//!   the newcomer's first batches by about a second);
//! - a new share replaces the limiter, and the requests waiting on the old one move to the new
//!   one at once; the new one starts with the requests the old one had left in hand (at most
//!   its own burst), not with a full burst: the tokens just spent are not handed out again;
//! - a poller that leaves gives its share back to the others within a [`SHARE_REFRESH`];
//! - if the broker cannot be asked, a poller keeps its last share (it is consuming from that
//!   broker, so it cannot be without one for long).
//!
//! `bench fleet` measures the combined rate of three pollers against the ceiling.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::{sync::watch, time::Instant};

/// How often each poller counts the pollers it shares the ceiling with.
pub(crate) const SHARE_REFRESH: Duration = Duration::from_secs(1);

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
                limiter: Arc::new(limiter(share_period(fleet, 1), None)),
                not_before: None,
            }),
        }
    }

    /// This process's requests/s (a fraction where pollers outnumber the ceiling's requests).
    pub fn share(&self) -> f64 {
        per_second(share_period(self.fleet, self.share.borrow().processes))
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
    pub(crate) fn share_with(&self, processes: u32) {
        let processes = processes.max(1);
        let period = share_period(self.fleet, processes);
        let changed = self.share.send_if_modified(|current| {
            if current.processes == processes {
                return false;
            }
            current.processes = processes;
            current.limiter = Arc::new(limiter(period, Some(&current.limiter)));
            true
        });
        if changed {
            let each = per_second(period);
            metrics::gauge!("upstream_rate_share").set(each);
            tracing::info!(
                pollers = processes,
                requests_per_second = each,
                fleet_ceiling = self.fleet.get(),
                "upstream rate share changed"
            );
        }
    }

    /// Waits until one more request fits under this process's share.
    pub(crate) async fn until_ready(&self) {
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

/// The time between two requests of one of `processes` pollers sharing `fleet` requests/s:
/// `processes / fleet` seconds, rounded up to the nanosecond, so that the shares add up to the
/// ceiling at most.
fn share_period(fleet: NonZeroU32, processes: u32) -> Duration {
    let nanos = u64::from(processes.max(1)) * 1_000_000_000;
    Duration::from_nanos(nanos.div_ceil(u64::from(fleet.get())))
}

/// Requests a second at one every `period`.
fn per_second(period: Duration) -> f64 {
    1.0 / period.as_secs_f64()
}

/// One request every `period`, with a burst of a tenth of a second's worth (at least one): over
/// any second the upstream sees at most 1.1 × the share (governor's default burst, a whole
/// second's worth, would let 2× through right after a quiet spell, e.g. when 429s paused
/// everyone). A limiter that replaces `previous` starts with what that one had left in hand
/// (at most its own burst) rather than a full burst, so a change of share never lets the
/// requests just sent through again.
fn limiter(
    period: Duration,
    previous: Option<&DefaultDirectRateLimiter>,
) -> DefaultDirectRateLimiter {
    let per_tenth = (Duration::from_millis(100).as_nanos() / period.as_nanos().max(1)) as u32;
    let burst = NonZeroU32::new(per_tenth).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .expect("a share's period is at least a nanosecond")
        .allow_burst(burst);
    let limiter = RateLimiter::direct(quota);
    if let Some(previous) = previous {
        // What the old limiter would still let through now (taking it costs nothing: the old
        // limiter is being replaced), up to the new burst.
        let left = (0..burst.get())
            .take_while(|_| previous.check().is_ok())
            .count() as u32;
        if let Some(spent) = NonZeroU32::new(burst.get() - left) {
            let _ = limiter.check_n(spent);
        }
    }
    limiter
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// For any ceiling and fleet size, the pollers' shares add up to the ceiling at most
        /// (and to nearly all of it), even where pollers outnumber the requests a second.
        #[test]
        fn shares_add_up_to_the_ceiling_at_most(
            fleet in 1u32..=1_000_000,
            processes in 1u32..=10_000,
        ) {
            let period = share_period(NonZeroU32::new(fleet).unwrap(), processes);
            // Requests a second of the whole fleet, counted exactly in nanoseconds.
            let fleet_nanos = u128::from(fleet) * period.as_nanos();
            let used = u128::from(processes) * 1_000_000_000;
            proptest::prop_assert!(used <= fleet_nanos, "{processes} x 1/{period:?} > {fleet}/s");
            // Rounding the period up to the nanosecond gives away less than one part in the
            // period's nanoseconds.
            let total = f64::from(processes) * per_second(period);
            let kept = 1.0 - 1.0 / period.as_nanos() as f64;
            proptest::prop_assert!(total >= f64::from(fleet) * kept, "{total} of {fleet}");
        }
    }

    #[test]
    fn more_pollers_than_requests_a_second_share_the_ceiling_not_one_each() {
        // 2 requests/s over 5 pollers: one request every 2.5 s each (was 1/s each: 5/s).
        let fleet = NonZeroU32::new(2).unwrap();
        assert_eq!(share_period(fleet, 5), Duration::from_millis(2500));
        let ceiling = RateCeiling::new(fleet);
        ceiling.share_with(5);
        assert!((ceiling.share() - 0.4).abs() < 1e-9, "{}", ceiling.share());
        ceiling.share_with(0);
        assert!(
            (ceiling.share() - 2.0).abs() < 1e-9,
            "no consumer counted: the whole"
        );
    }

    #[tokio::test]
    async fn a_new_share_starts_with_the_requests_left_not_a_full_burst() {
        // 10/s alone, burst 1: spent. Shared by two, 5/s: the next request waits a period
        // (200 ms) rather than going at once on a fresh limiter's full burst.
        let ceiling = RateCeiling::new(NonZeroU32::new(10).unwrap());
        ceiling.until_ready().await;
        ceiling.share_with(2);
        let started = std::time::Instant::now();
        ceiling.until_ready().await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
    }

    #[tokio::test]
    async fn a_poller_that_joins_waits_until_the_others_have_counted_it() {
        let ceiling = RateCeiling::new(NonZeroU32::new(1000).unwrap());
        ceiling.join(2);
        assert!(
            (ceiling.share() - 1000.0 / 3.0).abs() < 1e-3,
            "{}",
            ceiling.share()
        );
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
        // 10/s now: the waiting request moves to the new limiter (its first token a tenth of a
        // second later, nothing being left in hand) instead of waiting out the old one's
        // second.
        ceiling.share_with(1);
        let waited = waiting.await.unwrap();
        assert!(waited < Duration::from_millis(500), "{waited:?}");
    }

    #[tokio::test]
    async fn a_new_share_takes_effect_for_the_next_request() {
        let ceiling = RateCeiling::new(NonZeroU32::new(100).unwrap());
        assert!((ceiling.share() - 100.0).abs() < 1e-9);
        ceiling.share_with(4);
        assert!((ceiling.share() - 25.0).abs() < 1e-9);
        // The burst of a tenth of a second's worth of 25/s is 2 requests, then one per 40 ms.
        let started = std::time::Instant::now();
        for _ in 0..6 {
            ceiling.until_ready().await;
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        ceiling.share_with(0);
        assert!((ceiling.share() - 100.0).abs() < 1e-9);
    }
}
