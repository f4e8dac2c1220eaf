//! The sink: point-queue messages into TimescaleDB, in batches.
//!
//! Deliveries accumulate until `SINK_BATCH_ROWS` rows or `SINK_BATCH_WAIT` since the first,
//! then go in one transaction ([`writer::write`]) and are acked only after the commit.
//!
//! When the database is unreachable, or answers but refuses writes (read-only after a
//! failover, out of disk), the sink keeps what it holds and retries with backoff; it reads no
//! new deliveries meanwhile, so everything else waits in RabbitMQ. RabbitMQ closes a channel
//! that holds a delivery unacked past its `consumer_timeout` (30 min by default), and that
//! counts the deliveries prefetched but not read yet too. So once a batch has waited
//! `SINK_MAX_HOLD` (each write attempt is cut off then, even one stuck connecting), the sink
//! hands it back, cancels its consumer, hands back the prefetched deliveries too, and consumes
//! again only when the database takes a write (a probe writes one row, `sink_probe`: a
//! database that answers reads but refuses writes is still down for the sink). During a long
//! outage the points wait in the queue as ready messages, which no timeout touches. Nothing is
//! lost, and the sink never loses a channel to the broker (fault suite: `consumer_timeout`).
//!
//! A delivery is handed back by publishing its message again (confirmed) and acking it, not by
//! a requeue: on quorum queues every requeue counts toward `QUEUE_DELIVERY_LIMIT`, and a
//! database outage is not the message's fault (fault suite: `read_only_database`). The limit
//! is left to count what it is for, a consumer that died holding the message.
//!
//! A message that can never be written (undecodable, or rows the database refuses) is rejected
//! and dead-lettered to `<prefix>.points.dead`, with a metric and a log line.

pub mod writer;

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::{
    Acker,
    options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions},
};
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    config::SinkSettings,
    queue::{Broker, points::Outcomes},
    retry::Backoff,
};

/// Between attempts to write a held batch: 200 ms doubling up to 5 s.
const WRITE_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(200), Duration::from_secs(5));

/// Between probes of a database that stopped answering: 250 ms doubling up to 2 s, so the
/// sink is back within about 2 s of the database's return.
const PROBE_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(250), Duration::from_secs(2));

/// One held delivery.
struct Held {
    acker: Acker,
    outcomes: Outcomes,
}

pub(crate) struct Sink {
    pool: PgPool,
    broker: Broker,
    settings: SinkSettings,
}

/// Why a consumer session ended.
enum SessionEnd {
    Shutdown,
    /// A batch could not be written within `SINK_MAX_HOLD`: consuming pauses until the
    /// database answers.
    DatabaseDown,
}

/// What a flush came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlushOutcome {
    Written {
        messages: usize,
        points: u64,
    },
    /// The database stayed unreachable past the hold limit (or shutdown came): the messages
    /// went back to the queue.
    Requeued {
        messages: usize,
    },
}

impl Sink {
    pub fn new(pool: PgPool, broker: Broker, settings: SinkSettings) -> Self {
        Self {
            pool,
            broker,
            settings,
        }
    }

    /// Consumes the point queue until `shutdown`, then flushes what it holds. While the
    /// database is unreachable past `SINK_MAX_HOLD`, it stops consuming (see the module docs).
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Present at 0 from the start, so that an alert on their increase sees the first one.
        for reason in ["undecodable", "refused"] {
            metrics::counter!("points_dead_lettered_total", "reason" => reason).increment(0);
        }
        metrics::gauge!("sink_paused").set(0.0);
        loop {
            match self.consume_until_stopped(&shutdown).await? {
                SessionEnd::Shutdown => return Ok(()),
                SessionEnd::DatabaseDown => {
                    metrics::gauge!("sink_paused").set(1.0);
                    self.wait_for_database(&shutdown).await;
                    metrics::gauge!("sink_paused").set(0.0);
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    tracing::info!("database reachable again; consuming the point queue");
                }
            }
        }
    }

    /// One consumer on the point queue, until shutdown or until a batch could not be written
    /// within `SINK_MAX_HOLD`. Closing the channel in the latter case hands back every
    /// delivery it holds, including the ones prefetched and not read yet.
    async fn consume_until_stopped(
        &self,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<SessionEnd> {
        let queue = self.broker.topology.points.clone();
        let (channel, mut consumer) = self
            .broker
            .consume(&queue, self.settings.sink_prefetch, "sink")
            .await?;
        let mut held: Vec<Held> = Vec::new();
        let mut rows = 0usize;
        let mut first_at: Option<Instant> = None;
        let end = loop {
            let flush_at = first_at.map(|t| t + self.settings.sink_batch_wait);
            let flush_now = tokio::select! {
                delivery = consumer.next() => {
                    let Some(delivery) = delivery else {
                        anyhow::bail!("the broker closed the point consumer");
                    };
                    let delivery = delivery.context("point consumer failed")?;
                    match Outcomes::decode(&delivery.data) {
                        Ok(outcomes) => {
                            rows += outcomes.len();
                            first_at.get_or_insert_with(Instant::now);
                            held.push(Held { acker: delivery.acker, outcomes });
                        }
                        Err(e) => {
                            metrics::counter!("points_dead_lettered_total", "reason" => "undecodable").increment(1);
                            tracing::error!(error = %e, bytes = delivery.data.len(), "undecodable point message dead-lettered");
                            delivery.acker.reject(BasicRejectOptions { requeue: false }).await?;
                        }
                    }
                    rows >= self.settings.sink_batch_rows
                }
                () = sleep_until_opt(flush_at) => true,
                () = shutdown.cancelled() => break SessionEnd::Shutdown,
            };
            if flush_now {
                let since = first_at.take().unwrap_or_else(Instant::now);
                rows = 0;
                if let FlushOutcome::Requeued { .. } = self
                    .flush(std::mem::take(&mut held), since, shutdown)
                    .await?
                {
                    break if shutdown.is_cancelled() {
                        SessionEnd::Shutdown
                    } else {
                        SessionEnd::DatabaseDown
                    };
                }
            }
        };
        let _ = channel
            .basic_cancel("sink".into(), lapin::options::BasicCancelOptions::default())
            .await;
        if !held.is_empty() {
            let since = first_at.unwrap_or_else(Instant::now);
            self.flush(held, since, shutdown).await?;
        }
        if let SessionEnd::DatabaseDown = end {
            // The deliveries prefetched but not read yet: handed back without counting toward
            // the delivery limit, before the channel's close would requeue them.
            let mut prefetched = Vec::new();
            while let Ok(Some(Ok(delivery))) =
                tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
            {
                prefetched.push(delivery);
            }
            for delivery in prefetched {
                self.hand_back_one(&delivery.data, &delivery.acker).await?;
            }
        }
        let _ = channel.close(200, "sink stops consuming".into()).await;
        Ok(end)
    }

    /// Hands held deliveries back to the point queue: each message published again, then all
    /// acked. A requeue would count toward a quorum queue's delivery limit, and a database
    /// that cannot take them is not the messages' fault. If the broker refuses the publishes,
    /// they are requeued after all.
    async fn hand_back(&self, held: &[Held]) -> anyhow::Result<()> {
        let queue = &self.broker.topology.points;
        let mut republished = true;
        for h in held {
            if let Err(e) = self.broker.publish(queue, &h.outcomes.encode()).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot publish held messages again; requeueing them"
                );
                republished = false;
                break;
            }
        }
        let last = &held.last().expect("not empty").acker;
        if republished {
            last.ack(BasicAckOptions { multiple: true }).await?;
        } else {
            last.nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await?;
        }
        Ok(())
    }

    /// [`Self::hand_back`] for one delivery not read yet (its message as it came).
    async fn hand_back_one(&self, data: &[u8], acker: &Acker) -> anyhow::Result<()> {
        metrics::counter!("sink_requeued_messages_total").increment(1);
        match self
            .broker
            .publish(&self.broker.topology.points, data)
            .await
        {
            Ok(()) => {
                acker.ack(BasicAckOptions::default()).await?;
            }
            Err(_) => {
                acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Waits until the database takes a write again (or shutdown).
    async fn wait_for_database(&self, shutdown: &CancellationToken) {
        tracing::warn!(
            "database unreachable or refusing writes: stopped consuming; points wait in the queue"
        );
        let mut failures = 0;
        loop {
            failures += 1;
            let probe = tokio::time::timeout(
                Duration::from_secs(5),
                // The probe of a database the sink could not write to: a write, as the sink needs.
                sqlx::query!(
                    "insert into sink_probe (only_row, probed_at) values (true, now())
                     on conflict (only_row) do update set probed_at = excluded.probed_at"
                )
                .execute(&self.pool),
            );
            match probe.await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) if failures == 1 || failures % 20 == 0 => {
                    tracing::warn!(error = %e, failures, "the database does not take a write yet");
                }
                _ => {}
            }
            tokio::select! {
                () = tokio::time::sleep(PROBE_BACKOFF.wait(failures)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Writes the held deliveries in one transaction and acks them; retries while the database
    /// is unreachable (see the module docs).
    async fn flush(
        &self,
        held: Vec<Held>,
        held_since: Instant,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<FlushOutcome> {
        let messages = held.len();
        if held.is_empty() {
            return Ok(FlushOutcome::Written {
                messages,
                points: 0,
            });
        }
        let batch: Vec<&Outcomes> = held.iter().map(|h| &h.outcomes).collect();
        let rows: usize = batch.iter().map(|o| o.len()).sum();
        // Every attempt ends by then, even one stuck connecting to a server that is gone.
        let give_back_at = held_since + self.settings.sink_max_hold;
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let written = tokio::time::timeout_at(give_back_at, writer::write(&self.pool, &batch))
                .await
                .unwrap_or_else(|_| {
                    Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no answer from the database within SINK_MAX_HOLD",
                    )))
                });
            match written {
                Ok(report) => {
                    metrics::histogram!("sink_flush_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("sink_batch_rows").record(rows as f64);
                    metrics::counter!("points_written_total").increment(report.points_stored);
                    metrics::counter!("influencers_gone_total").increment(report.influencers_gone);
                    metrics::counter!("fetch_failures_recorded_total")
                        .increment(report.failures_stored);
                    if attempt > 0 {
                        tracing::info!(
                            attempts = attempt + 1,
                            "database is back; held points written"
                        );
                    }
                    let last = &held.last().expect("not empty").acker;
                    last.ack(BasicAckOptions { multiple: true }).await?;
                    return Ok(FlushOutcome::Written {
                        messages,
                        points: report.points_stored,
                    });
                }
                Err(e) if writer::is_data_error(&e) => {
                    tracing::warn!(error = %e, messages, "a batch was refused; writing its messages one by one");
                    return self.flush_one_by_one(held).await;
                }
                Err(e) => {
                    attempt += 1;
                    metrics::counter!("sink_write_errors_total").increment(1);
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        tracing::warn!(error = %e, attempt, messages, "cannot write to the database; holding the batch and retrying");
                    }
                    if Instant::now() >= give_back_at || shutdown.is_cancelled() {
                        tracing::warn!(messages, "handing held messages back to the queue");
                        metrics::counter!("sink_requeued_messages_total")
                            .increment(messages as u64);
                        self.hand_back(&held).await?;
                        return Ok(FlushOutcome::Requeued { messages });
                    }
                    let backoff = WRITE_BACKOFF.wait(attempt);
                    tokio::select! {
                        () = tokio::time::sleep_until((Instant::now() + backoff).min(give_back_at)) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    /// After a data error: each message alone; the ones the database refuses are dead-lettered.
    async fn flush_one_by_one(&self, held: Vec<Held>) -> anyhow::Result<FlushOutcome> {
        let messages = held.len();
        let mut points = 0;
        for h in held {
            match writer::write(&self.pool, &[&h.outcomes]).await {
                Ok(report) => {
                    points += report.points_stored;
                    metrics::counter!("points_written_total").increment(report.points_stored);
                    h.acker.ack(BasicAckOptions::default()).await?;
                }
                Err(e) if writer::is_data_error(&e) => {
                    metrics::counter!("points_dead_lettered_total", "reason" => "refused")
                        .increment(1);
                    tracing::error!(error = %e, "point message refused by the database; dead-lettered");
                    h.acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await?;
                }
                Err(e) => {
                    // Unreachable again: let the broker deliver it once more.
                    tracing::warn!(error = %e, "cannot write a message; handing it back");
                    h.acker
                        .nack(BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        })
                        .await?;
                }
            }
        }
        Ok(FlushOutcome::Written { messages, points })
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
