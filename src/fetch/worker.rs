//! The poll role: consume due schedule batches, poll each member at its slot, hand the
//! outcomes to the sink and put the batch back into the schedule for its next slot.
//!
//! A delivery is acked only after both its outcomes and its re-enqueue are confirmed by the
//! broker, so a crash at any point re-delivers the batch rather than losing an influencer.
//! A re-delivered batch may fetch a slot twice; the sink stores it once. Duplicated schedule
//! entries (a crash or a lost connection between confirm and ack) are dropped when they meet
//! in one process: each poller remembers which recent slots of every pk it polled or passed
//! over ([`SlotsHandled`]), and forgets a batch's marks when its work was not confirmed, so
//! the re-delivered batch is polled, or counted as skipped, once. An influencer the upstream does not
//! know, or one untracked, is dropped from the schedule when its next entry comes back: the
//! registry is the truth ([`Registry`]), each poller keeps a view of its changes and asks it
//! again before dropping anyone, so an influencer tracked again is polled by every poller.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use futures_util::{StreamExt, stream};
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions},
};
use tokio::{task::JoinSet, time::Instant};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

use crate::{
    fetch::{
        FetchOutcome, MockstagramClient,
        ceiling::{RateCeiling, SHARE_REFRESH},
    },
    mockstagram::NOT_FOUND_ERROR,
    model::{Failure, Gone, Point},
    queue::{Broker, SHORTEST_DELAY, points::Outcomes},
    registry::Registry,
    schedule::{
        Arrival, Marks, ScheduleBatch, SlotGrid, SlotsHandled, keeps_wait_order, lead_for, now_ms,
        on_arrival,
    },
};

/// Schedule batches a poller holds at once (each up to 500 influencers).
const PREFETCH: u16 = 128;

/// On shutdown, how long batches in hand may take to finish before they are handed back.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// While the poller runs, every [`SHARE_REFRESH`]: the messages ready in the due and point
/// queues (`queue_messages_ready`: a due queue that grows means the pollers fall behind, a point
/// queue that grows means the sinks do), and `ceiling` shared with the due queue's consumers,
/// the fleet's pollers ([`super::ceiling`]). A count that fails keeps the last figures.
async fn watch_queues(broker: Broker, ceiling: Option<Arc<RateCeiling>>) {
    let mut every = tokio::time::interval(SHARE_REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let t = broker.topology.clone();
    loop {
        every.tick().await;
        let counted = tokio::time::timeout(SHARE_REFRESH, async {
            anyhow::Ok((
                broker.counts(&t.due).await?,
                broker.counts(&t.points).await?,
            ))
        })
        .await;
        match counted {
            Ok(Ok((due, points))) => {
                metrics::gauge!("queue_messages_ready", "queue" => "due")
                    .set(due.message_count() as f64);
                metrics::gauge!("queue_messages_ready", "queue" => "points")
                    .set(points.message_count() as f64);
                if let Some(ceiling) = &ceiling {
                    ceiling.share_with(due.consumer_count());
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(
                    error = format!("{e:#}"),
                    "cannot count the queues; figures stay"
                )
            }
            Err(_) => tracing::debug!("counting the queues timed out; figures stay"),
        }
    }
}

/// The `Instant` matching an epoch-milliseconds time (past times map to now).
fn instant_at(epoch_ms: i64) -> Instant {
    let ahead = epoch_ms - now_ms();
    Instant::now() + Duration::from_millis(ahead.max(0) as u64)
}

/// What handling one delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Polled: this many points, failures and gone influencers.
    Polled {
        points: usize,
        failures: usize,
        gone: usize,
    },
    /// Too late to poll: moved on to the next future slots.
    Skipped { slots: u64 },
    /// Every member was a duplicate of a slot this process already polled.
    Duplicate,
    /// Out of a delay queue early (one hop of a longer delay): published again to wait the rest.
    WaitsAgain { wait_ms: i64 },
}

#[derive(Clone)]
pub struct Poller {
    broker: Broker,
    client: MockstagramClient,
    grid: SlotGrid,
    /// How early a batch is released from the wait queue, in ms; it is then held until its slot.
    lead_ms: i64,
    /// The longest wait a batch is held for in the poller rather than sent back to a delay
    /// queue: the shortest delay queue's TTL, in ms.
    hold_ms: i64,
    memory: PollerMemory,
}

/// What a poll process remembers across its broker connections (copies of schedule entries
/// appear exactly when a connection is lost, so a reconnected poller must still know them).
#[derive(Clone)]
pub struct PollerMemory {
    handled: Arc<Mutex<SlotsHandled>>,
    /// Who is tracked: the registry's changes, and the influencers this process found the
    /// upstream does not know (their schedule entry, already re-enqueued when the answer
    /// came, is dropped when it comes back).
    registry: Registry,
    batches_polled: Arc<std::sync::atomic::AtomicU64>,
}

impl PollerMemory {
    pub fn new(interval: Duration, registry: Registry) -> Self {
        Self {
            handled: Arc::new(Mutex::new(SlotsHandled::new(&SlotGrid::new(interval)))),
            registry,
            batches_polled: Arc::default(),
        }
    }

    /// Schedule batches the process's pollers polled so far.
    pub fn batches_polled(&self) -> u64 {
        self.batches_polled
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Poller {
    /// A poller on a new connection that keeps what an earlier one of the process knew.
    pub fn remembering(
        broker: Broker,
        client: MockstagramClient,
        interval: Duration,
        memory: PollerMemory,
    ) -> Self {
        Self {
            broker,
            client,
            grid: SlotGrid::new(interval),
            lead_ms: lead_for(interval).as_millis() as i64,
            hold_ms: SHORTEST_DELAY.as_millis() as i64,
            memory,
        }
    }

    /// Schedule batches this poller (and its clones, and the pollers before it in this
    /// process) polled so far.
    pub fn batches_polled(&self) -> u64 {
        self.memory.batches_polled()
    }

    /// Consumes the due queue until `shutdown`, then finishes the batches in hand.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let due = self.broker.topology.due.clone();
        super::client::register_metrics();
        // Counted before consuming, so as never to start with more than this poller's share.
        if let Some(ceiling) = self.client.ceiling() {
            ceiling.join(self.broker.consumer_count(&due).await?);
        }
        let _watching = AbortOnDropHandle::new(tokio::spawn(watch_queues(
            self.broker.clone(),
            self.client.ceiling().cloned(),
        )));
        let _reading_registry = AbortOnDropHandle::new(tokio::spawn(
            self.memory
                .registry
                .clone()
                .watch(registry_refresh(self.grid.interval_ms())),
        ));
        let (channel, mut consumer) = self.broker.consume(&due, PREFETCH, "poll").await?;
        let mut in_hand = JoinSet::new();
        loop {
            tokio::select! {
                delivery = consumer.next() => {
                    let Some(delivery) = delivery else {
                        anyhow::bail!("the broker closed the schedule consumer");
                    };
                    let delivery = delivery.context("schedule consumer failed")?;
                    let poller = self.clone();
                    in_hand.spawn(async move { poller.handle(delivery).await });
                }
                Some(done) = in_hand.join_next(), if !in_hand.is_empty() => {
                    if let Ok(Err(e)) = done {
                        tracing::error!(error = format!("{e:#}"), "a schedule batch was not completed; it went back to the queue");
                        if !self.broker.is_open() {
                            // Publishing cannot work again on this connection: reconnect.
                            return Err(e.context("the poller's broker connection is closed"));
                        }
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
        // Stop taking new batches; give the ones in hand a short grace to finish, then let the
        // rest go back to the queue unacked (closing the channel requeues them; the sink
        // stores a slot fetched twice once).
        let _ = channel
            .basic_cancel("poll".into(), lapin::options::BasicCancelOptions::default())
            .await;
        let in_hand_at_stop = in_hand.len();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while in_hand.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::info!(
                batches = in_hand.len(),
                of = in_hand_at_stop,
                "shutdown grace over; unfinished batches go back to the queue"
            );
            in_hand.abort_all();
            while in_hand.join_next().await.is_some() {}
        }
        let _ = channel.close(200, "shutdown".into()).await;
        Ok(())
    }

    async fn handle(&self, delivery: Delivery) -> anyhow::Result<()> {
        let batch = match ScheduleBatch::decode(&delivery.data) {
            Ok(batch) => batch,
            Err(e) => {
                metrics::counter!("schedule_messages_dead_lettered_total").increment(1);
                tracing::error!(error = %e, bytes = delivery.data.len(), "unreadable schedule message dead-lettered");
                delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
                return Ok(());
            }
        };
        let outcome = match self.poll_batch(batch).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // Hand the batch back: held unacked, it would wait for the broker's
                // consumer_timeout (30 minutes by default) and take a prefetch place meanwhile.
                // After a pause, so that a broker refusing every publish is not met with a
                // loop of fetches. If the channel is gone, the broker has requeued it already.
                tokio::time::sleep(return_pause(self.grid.interval_ms())).await;
                let _ = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await;
                metrics::counter!("schedule_batches_returned_total").increment(1);
                return Err(e);
            }
        };
        tracing::debug!(?outcome, "schedule batch done");
        delivery.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// One unit of work: publish the batch's next schedule, poll it, publish its outcomes (both
    /// confirmed). The caller acks the delivery when this returns Ok.
    ///
    /// The next schedule goes out first, as the batch arrives, not when its slowest member is
    /// fetched: RabbitMQ expires messages only at the head of the wait queue, so re-enqueues
    /// must be published in slot order. Published after fetching, a batch slowed by retries
    /// would sit behind later batches with longer delays and come back too late to poll (fault
    /// suite: `upstream_faults`). A batch polled late, or moved on to its next slots, goes
    /// through the delay queues instead ([`keeps_wait_order`]; fault suite: `poller_stop`).
    pub async fn poll_batch(&self, batch: ScheduleBatch) -> anyhow::Result<BatchOutcome> {
        let batch = self.drop_untracked(batch).await;
        match on_arrival(batch, &self.grid, now_ms(), self.lead_ms, self.hold_ms) {
            Arrival::Early { batch, wait_ms } => {
                self.broker
                    .publish_after(&batch.encode(), Duration::from_millis(wait_ms as u64))
                    .await
                    .context("cannot put an early schedule batch back to wait")?;
                metrics::counter!("schedule_batches_waiting_again_total").increment(1);
                Ok(BatchOutcome::WaitsAgain { wait_ms })
            }
            Arrival::Poll(batch) => {
                let arrived = batch.entries.len();
                let (batch, marks) = self.handled().claim(batch);
                let dropped = (arrived - batch.entries.len()) as u64;
                if dropped > 0 {
                    metrics::counter!("schedule_duplicates_dropped_total").increment(dropped);
                }
                if batch.entries.is_empty() {
                    return Ok(BatchOutcome::Duplicate);
                }
                self.unmark_on_error(marks, self.poll_claimed(batch)).await
            }
            Arrival::Skip { batch, intervals } => {
                let (batch, skipped, marks) = self.handled().pass_over(batch, intervals);
                if batch.entries.is_empty() {
                    return Ok(BatchOutcome::Duplicate);
                }
                self.unmark_on_error(marks, self.reenqueue(&batch)).await?;
                metrics::counter!("schedule_slots_skipped_total").increment(skipped);
                tracing::warn!(
                    influencers = batch.entries.len(),
                    skipped,
                    "schedule batch arrived too late to poll; moved on to its next slots"
                );
                Ok(BatchOutcome::Skipped { slots: skipped })
            }
        }
    }

    fn handled(&self) -> std::sync::MutexGuard<'_, SlotsHandled> {
        self.memory.handled.lock().expect("handled-slots lock")
    }

    /// Runs a batch's work; unless it succeeds (it failed, or its task was aborted: nothing
    /// confirmed, the batch will be delivered again), forgets that its slots were handled.
    async fn unmark_on_error<T>(
        &self,
        marks: Marks,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let mut pending = Unconfirmed {
            memory: &self.memory,
            marks: Some(marks),
        };
        let result = work.await;
        if result.is_ok() {
            pending.marks = None;
        }
        result
    }

    /// Re-enqueues the batch's next slots, polls it and publishes the outcomes.
    async fn poll_claimed(&self, batch: ScheduleBatch) -> anyhow::Result<BatchOutcome> {
        self.reenqueue(&batch.advanced(&self.grid)).await?;

        let interval_ms = self.grid.interval_ms();
        let client = self.client.clone();
        let fetches = batch.entries.clone().into_iter().map(move |entry| {
            let client = client.clone();
            async move {
                tokio::time::sleep_until(instant_at(entry.slot_ms)).await;
                // Retries may run until 90% of the interval past the slot.
                let deadline = instant_at(entry.slot_ms + interval_ms * 9 / 10);
                let outcome = client.fetch(entry.pk, deadline).await;
                (entry, outcome, now_ms())
            }
        });
        let results: Vec<_> = stream::iter(fetches)
            .buffer_unordered(batch.entries.len())
            .collect()
            .await;

        let mut outcomes = Outcomes::default();
        for (entry, outcome, at_ms) in results {
            match outcome {
                FetchOutcome::Fetched {
                    follower_count,
                    following_count,
                } => {
                    metrics::histogram!("slot_lateness_seconds")
                        .record((at_ms - entry.slot_ms).max(0) as f64 / 1000.0);
                    outcomes.points.push(Point {
                        pk: entry.pk,
                        slot_ms: entry.slot_ms,
                        fetched_ms: at_ms,
                        follower_count,
                        following_count,
                    });
                }
                FetchOutcome::Gone => {
                    tracing::info!(
                        pk = entry.pk,
                        "upstream does not know this influencer; it leaves the schedule"
                    );
                    outcomes.gone.push(Gone {
                        pk: entry.pk,
                        reason: format!("Mockstagram answered {NOT_FOUND_ERROR}"),
                        decided_ms: Some(at_ms),
                    });
                }
                FetchOutcome::Failed(error) => outcomes.failures.push(Failure {
                    pk: entry.pk,
                    slot_ms: entry.slot_ms,
                    failed_ms: at_ms,
                    reason: error.to_string(),
                }),
            }
        }
        self.memory
            .batches_polled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let report = BatchOutcome::Polled {
            points: outcomes.points.len(),
            failures: outcomes.failures.len(),
            gone: outcomes.gone.len(),
        };
        if !outcomes.is_empty() {
            self.broker
                .publish(&self.broker.topology.points, &outcomes.encode())
                .await
                .context("cannot hand the outcomes to the point queue")?;
        }
        for gone in &outcomes.gone {
            self.memory
                .registry
                .learn_gone(gone.pk, gone.decided_ms.unwrap_or_else(now_ms));
        }
        Ok(report)
    }

    /// Publishes `next` (already at its next slots) to become due a little before them: through
    /// the wait queue if it keeps that queue's order, else through the delay queues.
    async fn reenqueue(&self, next: &ScheduleBatch) -> anyhow::Result<()> {
        let earliest = next.earliest_slot_ms().unwrap_or_else(now_ms);
        let delay_ms = (earliest - now_ms() - self.lead_ms).max(0);
        let delay = Duration::from_millis(delay_ms as u64);
        let in_wait_order = keeps_wait_order(delay_ms, &self.grid, self.lead_ms, self.hold_ms);
        if in_wait_order {
            self.broker.publish_in_order(&next.encode(), delay).await
        } else {
            self.broker.publish_after(&next.encode(), delay).await
        }
        .context("cannot re-enqueue a schedule batch")?;
        // Counted once confirmed: a refused publish hands the batch back, to be counted when
        // it is re-enqueued again.
        if !in_wait_order {
            metrics::counter!("schedule_reenqueues_delayed_total").increment(1);
        }
        Ok(())
    }

    /// Removes the influencers that are not tracked: the ones this process found the upstream
    /// does not know and the registry's untracked, asked again of the registry first (the
    /// later decision wins: an influencer tracked again is polled).
    async fn drop_untracked(&self, mut batch: ScheduleBatch) -> ScheduleBatch {
        let untracked = self
            .memory
            .registry
            .untracked_of(batch.entries.iter().map(|e| e.pk))
            .await;
        if !untracked.is_empty() {
            batch.entries.retain(|e| !untracked.contains(&e.pk));
            metrics::counter!("schedule_untracked_dropped_total").increment(untracked.len() as u64);
        }
        batch
    }
}

/// How often a poller reads the registry's changes: twice an interval, between 100 ms and 5 s
/// (an untracked influencer is polled at most about one interval more).
fn registry_refresh(interval_ms: i64) -> Duration {
    Duration::from_millis((interval_ms / 2).clamp(100, 5_000) as u64)
}

/// How long a batch whose work failed is held before it goes back to the due queue: a quarter
/// of the interval, at most 5 s (a retry may still make the slot's deadline).
fn return_pause(interval_ms: i64) -> Duration {
    Duration::from_millis((interval_ms / 4).clamp(0, 5_000) as u64)
}

/// Marks of a batch whose work is not confirmed yet: unmarked when dropped (on failure, and
/// when the task is aborted because its connection was lost).
struct Unconfirmed<'a> {
    memory: &'a PollerMemory,
    marks: Option<Marks>,
}

impl Drop for Unconfirmed<'_> {
    fn drop(&mut self) {
        if let Some(marks) = self.marks.take()
            && let Ok(mut handled) = self.memory.handled.lock()
        {
            handled.unmark(marks);
        }
    }
}
