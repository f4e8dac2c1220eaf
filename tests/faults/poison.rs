//! Scenario 6: poison messages in the point queue.

use influencer_analytics::testing::{TestBroker, TestDb, shared_amqp_url, shared_db_server};
use std::time::{Duration, Instant};

use influencer_analytics::{
    model::{Failure, Point},
    queue::points::Outcomes,
};

use crate::common::{Role, SERIAL, sleep};

/// Garbage bytes, an empty body, a truncated message and one the database refuses (a NUL in a
/// text column) are each dead-lettered after one delivery, with the reason counted; the valid
/// messages around them are stored, and the sink keeps going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_sink_goes_on() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::on(&shared_db_server(), 4).await;
    let queues = TestBroker::on(&shared_amqp_url()).await;
    sqlx::query(
        "insert into influencers (influencer_id, username)
         select pk, 'influencer-' || pk from generate_series(1000001, 1000005) pk",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let broker = queues.connect().await;
    let points = broker.topology.points.clone();
    let now = chrono::Utc::now().timestamp_millis() / 60_000 * 60_000;
    let valid = |pk: i64| Outcomes {
        points: vec![Point {
            pk,
            slot_ms: now,
            fetched_ms: now + 5,
            follower_count: 1000,
            following_count: 10,
        }],
        ..Outcomes::default()
    };
    let refused = Outcomes {
        failures: vec![Failure {
            pk: 1_000_003,
            slot_ms: now,
            failed_ms: now,
            reason: "a NUL \u{0} no text column takes".into(),
        }],
        ..Outcomes::default()
    };
    let garbage: Vec<u8> = (0..2048).map(|_| rand::random::<u8>()).collect();
    let truncated = valid(1_000_004).encode()[..20].to_vec();
    let messages: [(&str, Vec<u8>); 6] = [
        ("valid", valid(1_000_001).encode()),
        ("garbage", garbage),
        ("empty", Vec::new()),
        ("truncated", truncated),
        ("refused", refused.encode()),
        ("valid", valid(1_000_002).encode()),
    ];
    // The valid ones alone in their batch would hide nothing: all six arrive together.
    for (_, body) in &messages {
        broker.publish(&points, body).await.unwrap();
    }

    let env = vec![
        ("DATABASE_URL".to_string(), db.url.clone()),
        (
            "AMQP_URL".into(),
            queues.settings.amqp_url.expose().to_string(),
        ),
        ("QUEUE_PREFIX".into(), queues.settings.queue_prefix.clone()),
    ];
    let mut sink = Role::start("poison", "sink", &["sink"], &env);
    sink.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ready, dead) = loop {
        let (ready, dead) = queues.points_ready().await;
        if ready == 0 && dead == 4 || Instant::now() > deadline {
            break (ready, dead);
        }
        sleep(Duration::from_millis(200)).await;
    };
    // More work after the poison: the sink is still consuming.
    broker
        .publish(&points, &valid(1_000_005).encode())
        .await
        .unwrap();
    sleep(Duration::from_secs(2)).await;
    sink.assert_running();
    let undecodable = sink
        .metric("points_dead_lettered_total", "reason=\"undecodable\"")
        .await;
    let refused_count = sink
        .metric("points_dead_lettered_total", "reason=\"refused\"")
        .await;
    let restarts = sink.metric("role_restarts_total", "").await;
    sink.interrupt();
    broker.close().await;

    let stored: Vec<i64> =
        sqlx::query_scalar("select influencer_id from influencer_metrics order by 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    crate::common::report(
        "poison",
        format!(
            "poison: {} messages published; dead-lettered {dead} (undecodable {undecodable}, refused \
         {refused_count}); stored points of {stored:?}",
            messages.len() + 1
        ),
    );
    assert_eq!((ready, dead), (0, 4), "point queue and dead-letter queue");
    assert_eq!((undecodable, refused_count), (3.0, 1.0));
    assert_eq!(stored, [1_000_001, 1_000_002, 1_000_005]);
    assert_eq!(restarts, 0.0);
}
