//! The broker connection's publishes and their confirms, against the real RabbitMQ.

use std::sync::Arc;

use influencer_analytics::testing::TestBroker;

/// Runs `rabbitmqctl` against the tests' broker (the one `scripts/services up` starts).
pub(crate) fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the broker of scripts/services up)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A policy that makes the broker refuse (nack) every publish to the queues `pattern` matches.
pub(crate) struct Refusing(String);

impl Refusing {
    pub(crate) async fn queues(name: &str, pattern: &str) -> Self {
        rabbitmqctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            "--priority",
            "100",
            name,
            pattern,
            r#"{"max-length":0,"overflow":"reject-publish"}"#,
        ]);
        // The queues take the policy a moment after the command returns.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        Self(name.to_string())
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        rabbitmqctl(&["clear_policy", &self.0]);
    }
}

/// Publishes from many tasks at once on one connection, half to a queue that refuses them:
/// each publish is told its own fate. (lapin numbers a publish before it sends it; unguarded,
/// two threads' publishes reached the broker in the other order and a nack was read as the
/// other publish's: 878 of 2,000 publishes were told the wrong answer, refused batches
/// taken as stored.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_are_each_told_their_own_confirm() {
    let queues = TestBroker::new().await;
    let prefix = queues.settings.queue_prefix.clone();
    let refused_queue = format!("{prefix}.schedule.delay.1s");
    let _policy = Refusing::queues(
        &format!("refuse_{prefix}"),
        &format!("^{}$", refused_queue.replace('.', "\\.")),
    )
    .await;
    let broker = Arc::new(queues.broker.clone());
    let tasks: Vec<_> = (0..2_000)
        .map(|k| {
            let broker = broker.clone();
            let refused_queue = refused_queue.clone();
            tokio::spawn(async move {
                let to_refused = k % 2 == 0;
                let queue = if to_refused {
                    refused_queue
                } else {
                    broker.topology.points.clone()
                };
                let result = broker.publish(&queue, format!("{k}").as_bytes()).await;
                (to_refused, result.is_ok())
            })
        })
        .collect();
    let mut wrong = 0;
    for task in tasks {
        let (to_refused, accepted) = task.await.unwrap();
        if to_refused == accepted {
            wrong += 1;
        }
    }
    assert_eq!(wrong, 0, "publishes told another publish's confirm");
    let stored = queues
        .broker
        .ready_count(&queues.broker.topology.points)
        .await
        .unwrap();
    assert_eq!(stored, 1_000, "the accepted publishes are in the queue");
}
