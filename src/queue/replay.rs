//! `replay-dead`: the messages of a dead-letter queue back to the queue they were
//! dead-lettered from (`<p>.points.dead` to `<p>.points`, `<p>.schedule.dead` to
//! `<p>.schedule.due`), once the cause is fixed.
//!
//! Each message is published again (confirmed), then taken off the dead-letter queue: a crash
//! in between leaves it in both, which the sink's idempotent writes and the poller's slot
//! marks take once. At most the messages present when it starts are moved, so a message that
//! is dead-lettered again while it runs (still unreadable) is not moved round for ever; a
//! second run moves only what came since.

use anyhow::Context;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions},
    types::ShortString,
};

use super::Broker;

/// Which dead-letter queue to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DeadLetters {
    /// `<p>.points.dead`: point messages the sink refused, or handed back past the delivery
    /// limit; to `<p>.points`.
    Points,
    /// `<p>.schedule.dead`: schedule batches a poller could not read, or handed back past the
    /// delivery limit; to `<p>.schedule.due`.
    Schedule,
}

/// What a replay moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    pub moved: u64,
    /// Messages in the dead-letter queue when the replay ended (dead-lettered again meanwhile,
    /// or arrived since it started).
    pub left: u32,
}

/// Moves the messages of `which` dead-letter queue back to the queue they came from.
pub(crate) async fn replay_dead(broker: &Broker, which: DeadLetters) -> anyhow::Result<Replayed> {
    let t = &broker.topology;
    let (dead, target) = match which {
        DeadLetters::Points => (&t.points_dead, &t.points),
        DeadLetters::Schedule => (&t.schedule_dead, &t.due),
    };
    let present = broker.ready_count(dead).await?;
    let channel = broker.connection.create_channel().await?;
    let mut moved = 0u64;
    for _ in 0..present {
        let Some(got) = channel
            .basic_get(
                ShortString::from(dead.as_str()),
                BasicGetOptions { no_ack: false },
            )
            .await
            .with_context(|| format!("cannot read {dead}"))?
        else {
            break;
        };
        let delivery = got.delivery;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"));
        if let Err(e) = broker
            .publish_with(target, &delivery.data, properties)
            .await
        {
            // Left where it was.
            delivery
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await?;
            return Err(e.context(format!(
                "moved {moved} messages from {dead} to {target}, then"
            )));
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        moved += 1;
    }
    let _ = channel.close(200, "replayed".into()).await;
    tracing::info!(moved, from = %dead, to = %target, "dead letters replayed");
    Ok(Replayed {
        moved,
        left: broker.ready_count(dead).await?,
    })
}
