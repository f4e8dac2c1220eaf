//! RabbitMQ: the queues, publishing with confirms, and consumers.
//!
//! ## Topology (every name starts with `QUEUE_PREFIX`)
//! - `<p>.schedule.due`: schedule batches whose slot has come; pollers consume it (competing
//!   consumers).
//! - `<p>.schedule.wait`: the steady re-enqueue. A poller publishes each batch it polls on time
//!   here with a per-message TTL (`expiration`) of "time until the next slot, less a small
//!   lead"; when it expires the broker dead-letters it into `due`. RabbitMQ only expires the
//!   message at the head of a queue, so a long delay blocks shorter ones behind it: only delays
//!   of about one interval, published in slot order, go here, so their expiries come in order.
//! - `<p>.schedule.delay.<ttl>`: any other delay (seed, reconciler, a batch that arrived late
//!   and moved on to its next slots). One queue per fixed TTL (`x-message-ttl`: 250 ms, 500 ms,
//!   1 s, ... 4096 s, doubling), so each queue expires in the order it was filled and no delay
//!   blocks another. A delay goes through the longest of them that fits; the batch then comes
//!   out of `due` early by the rest, and the poller publishes it again for the rest (at most one
//!   hop per level; the rest under 250 ms is held in the poller). Releases before these had one
//!   `<p>.schedule.enter` queue instead, with per-message TTLs; a broker that has it keeps
//!   moving its messages to `due`, and it may be deleted once empty.
//! - `<p>.points`: fetch outcomes (points, failures, gone influencers) for the sink.
//!   Rejected messages dead-letter into `<p>.points.dead`; unreadable schedule messages into
//!   `<p>.schedule.dead`. Nothing consumes those two; `replay-dead` ([`replay`]) moves their
//!   messages back once the cause is fixed.
//!
//! Queues are durable and classic by default (one node: classic queues are the fastest).
//! `QUEUE_TYPE=quorum` declares quorum queues instead, replicated over a cluster's nodes; their
//! dead-lettering is at-least-once, and a message handed back more than
//! `QUEUE_DELIVERY_LIMIT` times (a poison message that crashes its consumer each time) is
//! dead-lettered rather than delivered forever. Messages are persistent, and every publish is confirmed by
//! the broker before the message it came from is acked.

pub mod points;
pub mod replay;

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, bail};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer,
    options::{
        BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueuePurgeOptions,
    },
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable, ShortString},
};

use crate::config::{BrokerSettings, Misconfigured, QueueType, ServiceUrl};

/// The names of our queues under one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    pub due: String,
    pub wait: String,
    /// The fixed-delay queues, shortest first ([`DELAY_LEVELS`]).
    pub delays: Vec<DelayQueue>,
    pub points: String,
    pub points_dead: String,
    pub schedule_dead: String,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Self {
            due: format!("{prefix}.schedule.due"),
            wait: format!("{prefix}.schedule.wait"),
            delays: DELAY_LEVELS
                .map(|ttl| DelayQueue {
                    name: format!("{prefix}.schedule.delay.{}", delay_name(ttl)),
                    ttl,
                })
                .to_vec(),
            points: format!("{prefix}.points"),
            points_dead: format!("{prefix}.points.dead"),
            schedule_dead: format!("{prefix}.schedule.dead"),
        }
    }

    /// Every queue, for tests and tools that purge or delete them.
    pub fn all(&self) -> Vec<&str> {
        let mut all = vec![
            self.due.as_str(),
            &self.wait,
            &self.points,
            &self.points_dead,
            &self.schedule_dead,
        ];
        all.extend(self.delays.iter().map(|d| d.name.as_str()));
        all
    }

    /// The longest delay queue whose TTL fits in `delay`, if any does.
    #[cfg(test)]
    pub(crate) fn delay_queue_within(&self, delay: Duration) -> Option<&DelayQueue> {
        self.delays.iter().rev().find(|d| d.ttl <= delay)
    }

    /// The queues a batch due after `delay` may take, best first: the delay queues whose TTL
    /// fits, longest first; `due` itself when none does. (Never `due` for a longer delay: a
    /// batch there would come back at once, early, again and again.)
    pub(crate) fn queues_within(&self, delay: Duration) -> Vec<&str> {
        let fitting: Vec<&str> = self
            .delays
            .iter()
            .rev()
            .filter(|d| d.ttl <= delay)
            .map(|d| d.name.as_str())
            .collect();
        if fitting.is_empty() {
            vec![self.due.as_str()]
        } else {
            fitting
        }
    }
}

/// A publish the broker refused (a nack): the queue is full with `reject-publish`, or a quorum
/// queue cannot take it (no leader elected).
#[derive(Debug, thiserror::Error)]
#[error("the broker refused (nacked) a publish to {0}")]
pub(crate) struct Refused(pub(crate) String);

/// The TTLs of the delay queues: 250 ms doubling up to 4096 s (68 minutes). A delay is the sum
/// of at most one of each (its binary digits), so an interval of up to two hours is reached in
/// at most 15 hops; longer ones take the longest queue more than once.
pub(crate) const DELAY_LEVELS: [Duration; 15] = {
    let mut levels = [Duration::ZERO; 15];
    let mut i = 0;
    while i < levels.len() {
        levels[i] = Duration::from_millis(250 << i);
        i += 1;
    }
    levels
};

/// Below this, a batch that comes out of a delay queue early is held by its poller rather than
/// published again.
pub(crate) const SHORTEST_DELAY: Duration = DELAY_LEVELS[0];

/// One fixed-delay queue: every message in it waits `ttl`, then moves to `due`.
#[derive(Debug, Clone)]
pub struct DelayQueue {
    pub name: String,
    pub ttl: Duration,
}

/// `250ms`, `1s`, `4096s`: the TTL in a queue's name.
fn delay_name(ttl: Duration) -> String {
    if ttl.subsec_millis() == 0 {
        format!("{}s", ttl.as_secs())
    } else {
        format!("{}ms", ttl.as_millis())
    }
}

/// What one queue of the topology is declared with.
struct QueueSpec<'a> {
    name: &'a str,
    /// Where its rejected or expired messages go (through the default exchange, which routes
    /// by queue name, so no exchange of our own is needed).
    dead_letter_to: Option<&'a str>,
    /// Whether our roles consume it (the delivery limit applies to those only: the dead-letter
    /// queues are an operator's, the wait and delay queues are never consumed).
    consumed: bool,
    /// How long every message waits in it (`x-message-ttl`): the delay queues.
    ttl: Option<Duration>,
}

impl QueueSpec<'_> {
    fn arguments(&self, settings: &BrokerSettings) -> FieldTable {
        let mut args = BTreeMap::new();
        let mut set = |key: &str, value: AMQPValue| args.insert(ShortString::from(key), value);
        if let Some(queue) = self.dead_letter_to {
            set("x-dead-letter-exchange", AMQPValue::LongString("".into()));
            set(
                "x-dead-letter-routing-key",
                AMQPValue::LongString(queue.into()),
            );
        }
        if let Some(ttl) = self.ttl {
            set(
                "x-message-ttl",
                AMQPValue::LongLongInt(ttl.as_millis() as i64),
            );
        }
        // Classic queues are declared without `x-queue-type`, as before the setting existed,
        // so that queues declared by an earlier version still match.
        if settings.queue_type == QueueType::Quorum {
            set("x-queue-type", AMQPValue::LongString("quorum".into()));
            if self.dead_letter_to.is_some() {
                // A quorum queue dead-letters at most once unless told otherwise: a message
                // lost between the two queues would be an influencer never polled again (until
                // the reconciler) or points never stored. At-least-once needs reject-publish.
                set(
                    "x-dead-letter-strategy",
                    AMQPValue::LongString("at-least-once".into()),
                );
                set("x-overflow", AMQPValue::LongString("reject-publish".into()));
            }
            if self.consumed {
                set(
                    "x-delivery-limit",
                    AMQPValue::LongUInt(settings.queue_delivery_limit),
                );
            }
        }
        FieldTable::from(args)
    }
}

/// A connection to the broker with one channel in confirm mode for publishing.
#[derive(Clone)]
pub struct Broker {
    connection: std::sync::Arc<Connection>,
    publisher: Channel,
    /// Held while a publish takes its delivery tag and hands its frames to the connection:
    /// see [`Broker::publish_with`].
    sending: std::sync::Arc<tokio::sync::Mutex<()>>,
    pub topology: Topology,
}

impl Broker {
    /// Connects and declares the topology (idempotent).
    pub async fn connect(settings: &BrokerSettings) -> anyhow::Result<Self> {
        let connection = connect(settings).await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let topology = Topology::new(&settings.queue_prefix);
        declare(&publisher, &topology, settings).await?;
        Ok(Self {
            connection: std::sync::Arc::new(connection),
            publisher,
            sending: Default::default(),
            topology,
        })
    }

    /// Whether the connection and its publishing channel are still open (a broker restart or
    /// a channel error closes them for good: a role that finds them closed must reconnect).
    pub fn is_open(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }

    /// Publishes a persistent message to `queue` and waits for the broker's confirm.
    pub async fn publish(&self, queue: &str, payload: &[u8]) -> anyhow::Result<()> {
        self.publish_with(queue, payload, persistent()).await
    }

    /// Publishes a schedule batch re-enqueued for its next slot, due after `delay`, through
    /// the wait queue. Only for delays of about one interval published in slot order (the
    /// steady flow): any other delay would block, or be blocked by, the batches around it.
    pub(crate) async fn publish_in_order(
        &self,
        payload: &[u8],
        delay: Duration,
    ) -> anyhow::Result<()> {
        let delay_ms = delay.as_millis();
        if delay_ms == 0 {
            return self.publish(&self.topology.due, payload).await;
        }
        let properties = persistent().with_expiration(ShortString::from(delay_ms.to_string()));
        self.publish_with(&self.topology.wait, payload, properties)
            .await
    }

    /// Publishes a schedule batch to become due after any `delay`: through the longest delay
    /// queue that fits (straight to `due` when none does). It comes out early by the rest of
    /// `delay`, which its poller publishes again (see [`crate::schedule::on_arrival`]).
    ///
    /// A queue that refuses the publish (a nack: a quorum queue left without a leader after a
    /// node's loss, which RabbitMQ does not always elect again) is passed over for the next
    /// shorter one, down to `due`: the batch takes more hops but keeps its slots.
    pub(crate) async fn publish_after(
        &self,
        payload: &[u8],
        delay: Duration,
    ) -> anyhow::Result<()> {
        let mut refused = Vec::new();
        for queue in self.topology.queues_within(delay) {
            match self.publish(queue, payload).await {
                Ok(()) => {
                    if !refused.is_empty() {
                        metrics::counter!("schedule_publishes_rerouted_total").increment(1);
                        tracing::warn!(
                            refused = ?refused,
                            through = queue,
                            "a delay queue refused a schedule batch; it went through a shorter one"
                        );
                    }
                    return Ok(());
                }
                Err(e) if e.is::<Refused>() => refused.push(queue),
                Err(e) => return Err(e),
            }
        }
        bail!(
            "the broker refused (nacked) a schedule batch in every queue it could take: {refused:?}"
        )
    }

    pub(crate) async fn publish_with(
        &self,
        queue: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> anyhow::Result<()> {
        // lapin numbers a publish (the delivery tag its confirm will carry) before it queues
        // the frames, without one lock over both: two publishes from two threads can take tags
        // 1 and 2 and reach the broker as 2 and 1, and the broker's nack of one is then read as
        // the other's (a refused batch taken as stored: lost). One publish at a time up to the
        // frames being written keeps the two orders the same; the confirms are awaited outside.
        let sending = self.sending.lock().await;
        let confirm = self
            .publisher
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                BasicPublishOptions::default(),
                payload,
                properties,
            )
            .await
            .with_context(|| format!("cannot publish to {queue}"))?;
        drop(sending);
        let confirmation = confirm
            .await
            .with_context(|| format!("no confirm for a publish to {queue}"))?;
        if !confirmation.is_ack() {
            return Err(Refused(queue.to_string()).into());
        }
        Ok(())
    }

    /// A consumer of `queue` on its own channel with `prefetch` unacked deliveries at most.
    pub async fn consume(
        &self,
        queue: &str,
        prefetch: u16,
        tag: &str,
    ) -> anyhow::Result<(Channel, Consumer)> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                ShortString::from(queue),
                ShortString::from(tag),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("cannot consume {queue}"))?;
        Ok((channel, consumer))
    }

    /// Messages ready in `queue` (not counting those delivered and unacked).
    pub async fn ready_count(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(self.counts(queue).await?.message_count())
    }

    /// Consumers of `queue`, across every connection to the broker.
    pub(crate) async fn consumer_count(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(self.counts(queue).await?.consumer_count())
    }

    /// What a passive declare of `queue` answers: its ready messages and its consumers.
    pub async fn counts(&self, queue: &str) -> anyhow::Result<lapin::Queue> {
        let channel = self.connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "done".into()).await;
        Ok(declared)
    }

    /// Empties every queue of this topology (tests; an operator's reset).
    pub async fn purge_all(&self) -> anyhow::Result<()> {
        for queue in self.topology.all() {
            self.publisher
                .queue_purge(ShortString::from(queue), QueuePurgeOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Deletes every queue of this topology (tests clean up after themselves).
    pub async fn delete_all(&self) -> anyhow::Result<()> {
        for queue in self.topology.all() {
            self.publisher
                .queue_delete(
                    ShortString::from(queue),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
}

/// A connection to the first node of AMQP_URL that answers (a cluster's nodes in order; a role
/// whose node went reconnects through here, so it lands on the next one that answers).
async fn connect(settings: &BrokerSettings) -> anyhow::Result<Connection> {
    let tls = tls_config(settings)?;
    let nodes = settings.amqp_url.nodes();
    let mut refusals = Vec::with_capacity(nodes.len());
    for url in nodes {
        match connect_to(url, tls.clone()).await {
            Ok(connection) => {
                if nodes.len() > 1 {
                    tracing::info!(node = %url, "connected to RabbitMQ");
                }
                return Ok(connection);
            }
            Err(refusal) => {
                if nodes.len() > 1 {
                    tracing::warn!(node = %url, error = %refusal, "a RabbitMQ node did not answer; trying the next");
                }
                refusals.push(refusal);
            }
        }
    }
    let hint = if refusals.iter().any(|r| r.certificate) {
        "if a CA of your own signed the broker's certificate, name its PEM file with AMQP_CA_FILE"
    } else {
        "start it with `scripts/services up`, or set AMQP_URL"
    };
    let said = refusals
        .iter()
        .map(|r| format!("{} ({})", r.url, r.reason))
        .collect::<Vec<_>>()
        .join("; ");
    bail!("cannot reach RabbitMQ at {said}; {hint}")
}

/// Why one node did not take a connection.
struct Refusal {
    url: String,
    reason: String,
    certificate: bool,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

async fn connect_to(url: &ServiceUrl, tls: OwnedTLSConfig) -> Result<Connection, Refusal> {
    let connecting = async {
        Connection::connect_with_config(
            url.expose(),
            ConnectionProperties::default(),
            tls,
            lapin::runtime::default_runtime()?,
        )
        .await
    };
    let refusal = |reason: String, certificate: bool| Refusal {
        url: url.to_string(),
        reason,
        certificate,
    };
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(refusal(
            e.to_string(),
            crate::tls::is_refused_certificate(&e),
        )),
        Err(_) => Err(refusal("no answer within 10 s".into(), false)),
    }
}

/// The TLS settings of an `amqps://` connection: the system's roots, and AMQP_CA_FILE's CA.
fn tls_config(settings: &BrokerSettings) -> anyhow::Result<OwnedTLSConfig> {
    let Some(ca) = settings.ca_file()? else {
        return Ok(OwnedTLSConfig::default());
    };
    Ok(OwnedTLSConfig {
        identity: None,
        cert_chain: Some(ca.pem().to_string()),
    })
}

/// AMQP's reply code 406, PRECONDITION_FAILED: what a queue declared again with other
/// arguments (another type, another delivery limit) is answered.
pub(crate) fn is_precondition_failed(error: &lapin::Error) -> bool {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => amqp.get_id() == PRECONDITION_FAILED,
        _ => false,
    }
}

const PRECONDITION_FAILED: u16 = 406;

async fn declare(
    channel: &Channel,
    names: &Topology,
    settings: &BrokerSettings,
) -> anyhow::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let spec = |name, dead_letter_to, consumed| QueueSpec {
        name,
        dead_letter_to,
        consumed,
        ttl: None,
    };
    let mut queues = vec![
        // A schedule message a poller cannot read is kept for an operator, never dropped.
        spec(&names.due, Some(&names.schedule_dead), true),
        spec(&names.schedule_dead, None, false),
        // Expired messages of the wait and delay queues move to `due`.
        spec(&names.wait, Some(&names.due), false),
        // A message the sink rejects (undecodable, unwritable) moves to the dead-letter queue.
        spec(&names.points, Some(&names.points_dead), true),
        spec(&names.points_dead, None, false),
    ];
    queues.extend(names.delays.iter().map(|d| QueueSpec {
        ttl: Some(d.ttl),
        ..spec(&d.name, Some(&names.due), false)
    }));
    for queue in queues {
        let declared = channel
            .queue_declare(
                ShortString::from(queue.name),
                durable,
                queue.arguments(settings),
            )
            .await;
        if let Err(e) = declared {
            let reason = e.to_string();
            if is_precondition_failed(&e) {
                return Err(Misconfigured(format!(
                    "queue {} exists with other arguments than QUEUE_TYPE={} and QUEUE_DELIVERY_LIMIT={} give ({reason}); \
                     a queue's type and arguments cannot change: drain and delete the queues of QUEUE_PREFIX={}, \
                     or set another QUEUE_PREFIX",
                    queue.name,
                    settings.queue_type.name(),
                    settings.queue_delivery_limit,
                    settings.queue_prefix,
                ))
                .into());
            }
            return Err(e).with_context(|| format!("cannot declare {}", queue.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
