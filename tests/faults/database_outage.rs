//! Scenarios 1 and 2: the database server stopped for real while polling goes on.

use influencer_analytics::testing::{
    TestBroker, TestDb, TestSimulator, shared_amqp_url, simulator_settings,
};
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use influencer_analytics::mockstagram::FIRST_PK;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    types::FieldTable,
};

use crate::{
    common::{
        FAULTS_AMQP_URL, FAULTS_CONSUMER_TIMEOUT, FAULTS_DB_SERVER, Finals, Pipeline,
        PipelineSetup, SERIAL, fault_services, fault_services_up, sleep,
    },
    ledger::Ledger,
};

const INFLUENCERS: i64 = 200;
const INTERVAL: Duration = Duration::from_secs(2);

/// How long the database stays down in scenario 1 (FAULTS_DB_OUTAGE_SECS, default 60).
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("FAULTS_DB_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}

/// Runs the pipeline, stops the suite's database for `down`, starts it again, and returns the
/// ledger of every slot from before the outage until after the queue drained.
async fn run_through_an_outage(
    scenario: &'static str,
    amqp_url: &str,
    down: Duration,
    sink_env: Vec<(&'static str, String)>,
) -> (Ledger, Finals) {
    fault_services_up();
    let db = TestDb::on(FAULTS_DB_SERVER, 4).await;
    let queues = TestBroker::on(amqp_url).await;
    let sim = TestSimulator::start(simulator_settings(INFLUENCERS as u64, 11)).await;
    let mut pipeline = Pipeline::start(PipelineSetup {
        scenario,
        database_url: &db.url,
        queues: &queues,
        mockstagram_url: sim.url(""),
        interval: INTERVAL,
        influencers: INFLUENCERS,
        poll_env: vec![],
        sink_env,
    })
    .await;
    sleep(INTERVAL * 3).await;
    let sink_pid = pipeline.sink.pid();

    fault_services("stop-db");
    let stopped = Utc::now();
    sleep(down).await;
    pipeline.sink.assert_running();
    pipeline.poll.assert_running();
    let errors_during = pipeline.sink.metric("sink_write_errors_total", "").await;
    fault_services("start-db");
    let started = Utc::now();
    sleep(INTERVAL * 4).await;
    let until = Utc::now() - chrono::Duration::from_std(INTERVAL).unwrap();
    let finals = pipeline.drain_and_stop(&queues).await;
    assert_eq!(finals.sink_pid, sink_pid, "the sink process was restarted");
    assert!(
        errors_during > 0.0,
        "the sink never saw the database go away (sink_write_errors_total = 0)"
    );
    crate::common::report(
        scenario,
        format!(
            "{scenario}: database down {:.0} s ({stopped} to {started}); sink write errors {errors_during}",
            (started - stopped).as_seconds_f64()
        ),
    );

    let from = pipeline.seeded_at + chrono::Duration::from_std(INTERVAL).unwrap();
    let ledger = Ledger::count(
        &db.pool,
        FIRST_PK..FIRST_PK + INFLUENCERS,
        INTERVAL,
        from,
        until,
    )
    .await;
    ledger.print(scenario);
    (ledger, finals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_stopped_for_a_minute_loses_no_point_and_stores_none_twice() {
    let _serial = SERIAL.lock().await;
    let (ledger, finals) =
        run_through_an_outage("database_outage", &shared_amqp_url(), outage(), vec![]).await;
    assert!(ledger.expected >= INFLUENCERS as u64 * 30, "{ledger:?}");
    ledger.assert_every_slot_stored_once();
    assert_eq!(
        finals.sink_restarts, 0.0,
        "the sink role restarted inside its process"
    );
}

/// RabbitMQ closes a channel that holds a delivery unacked past consumer_timeout. The faults
/// broker has a short one: first show that it does, then that the sink, holding its batch
/// through a database outage several times as long, keeps its channel by handing deliveries
/// back in time (SINK_MAX_HOLD), and stores everything once the database returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_consumer_timeout_keeps_the_sinks_channel() {
    let _serial = SERIAL.lock().await;
    fault_services_up();
    assert!(
        the_broker_closes_a_channel_that_holds_a_delivery_too_long().await,
        "the faults broker did not enforce its consumer_timeout"
    );

    let down = FAULTS_CONSUMER_TIMEOUT * 4;
    let (ledger, finals) = run_through_an_outage(
        "consumer_timeout",
        FAULTS_AMQP_URL,
        down,
        vec![("SINK_MAX_HOLD", "3s".into())],
    )
    .await;
    assert_eq!(
        ledger.stored,
        ledger.expected,
        "{:?}",
        &ledger.skipped[..ledger.skipped.len().min(10)]
    );
    assert_eq!(ledger.doubled, 0);
    assert_eq!(
        finals.sink_restarts, 0.0,
        "the sink lost its channel (role restarted)"
    );
    assert!(
        finals.sink_requeued > 0.0,
        "the sink never handed its held deliveries back"
    );
    crate::common::report(
        "consumer_timeout",
        format!(
            "consumer_timeout: the sink handed back {} deliveries during a {} s outage",
            finals.sink_requeued,
            down.as_secs()
        ),
    );
}

/// A plain consumer that never acks: is its channel closed within consumer_timeout + a margin?
async fn the_broker_closes_a_channel_that_holds_a_delivery_too_long() -> bool {
    let connection = Connection::connect(FAULTS_AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("ia_fault_probe_{:016x}", rand::random::<u64>());
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"held",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "probe".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _held = consumer.next().await.expect("a delivery").unwrap();
    let closed = tokio::time::timeout(FAULTS_CONSUMER_TIMEOUT * 3, async {
        while channel.status().connected() {
            sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .is_ok();
    let _ = connection.close(200, "probe done".into()).await;
    closed
}
