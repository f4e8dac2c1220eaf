//! Scenario 3: RabbitMQ stopped and started again while the pipeline runs.

use influencer_analytics::testing::{
    TestBroker, TestDb, TestSimulator, shared_db_server, simulator_settings,
};
use std::time::Duration;

use chrono::Utc;
use influencer_analytics::mockstagram::FIRST_PK;

use crate::{
    common::{
        FAULTS_AMQP_URL, Pipeline, PipelineSetup, SERIAL, fault_services, fault_services_up, sleep,
    },
    ledger::Ledger,
};

const INFLUENCERS: i64 = 200;
const INTERVAL: Duration = Duration::from_secs(3);
const DOWN: Duration = Duration::from_secs(15);

/// No influencer leaves the schedule: each has a point again within two intervals of the
/// broker's return; the slots that fell while it was down are skipped (counted by the poller),
/// and none is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_keeps_every_influencer_in_the_schedule() {
    let _serial = SERIAL.lock().await;
    fault_services_up();
    let db = TestDb::on(&shared_db_server(), 4).await;
    let queues = TestBroker::on(FAULTS_AMQP_URL).await;
    let sim = TestSimulator::start(simulator_settings(INFLUENCERS as u64, 12)).await;
    let mut pipeline = Pipeline::start(PipelineSetup {
        scenario: "broker_restart",
        database_url: &db.url,
        queues: &queues,
        mockstagram_url: sim.url(""),
        interval: INTERVAL,
        influencers: INFLUENCERS,
        poll_env: vec![],
        sink_env: vec![],
    })
    .await;
    sleep(INTERVAL * 3).await;

    fault_services("stop-broker");
    let stopped = Utc::now();
    sleep(DOWN).await;
    fault_services("start-broker");
    let back = Utc::now();
    let reconciled_before = pipeline
        .poll
        .metric("reconciler_runs_total", "outcome=\"ok\"")
        .await;
    sleep(INTERVAL * 4).await;
    // Issue 18: the reconciler kept its closed connection and failed every turn until the
    // process restarted. It must reconnect and run again (a turn every 5 intervals).
    let deadline = std::time::Instant::now() + INTERVAL * 5 + Duration::from_secs(10);
    let reconciled_after = loop {
        let runs = pipeline
            .poll
            .metric("reconciler_runs_total", "outcome=\"ok\"")
            .await;
        if runs > reconciled_before || std::time::Instant::now() > deadline {
            break runs;
        }
        sleep(Duration::from_millis(500)).await;
    };
    assert!(
        reconciled_after > reconciled_before,
        "no reconciliation succeeded within {:?} of the broker's return",
        INTERVAL * 9 + Duration::from_secs(10)
    );
    pipeline.poll.assert_running();
    pipeline.sink.assert_running();
    let until = Utc::now() - chrono::Duration::from_std(INTERVAL).unwrap();
    let finals = pipeline.drain_and_stop(&queues).await;

    // Back within two intervals: a point fetched in (back, back + 2 intervals] for everyone.
    let deadline = back + chrono::Duration::from_std(INTERVAL * 2).unwrap();
    let late = crate::common::not_polled_between(&db.pool, back, deadline).await;
    let first_back: Option<chrono::DateTime<Utc>> = sqlx::query_scalar(
        "select max(first) from (select min(fetched_at) as first from influencer_metrics
                                 where fetched_at > $1 group by influencer_id) f",
    )
    .bind(back)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let from = pipeline.seeded_at + chrono::Duration::from_std(INTERVAL).unwrap();
    let ledger = Ledger::count(
        &db.pool,
        FIRST_PK..FIRST_PK + INFLUENCERS,
        INTERVAL,
        from,
        until,
    )
    .await;
    ledger.print("broker_restart");
    crate::common::report(
        "broker_restart",
        format!(
            "broker_restart: broker down {:.1} s; the last influencer was back {:.1} s after it \
         returned; poller: {} slots skipped, {} role restarts; sink: {} role restarts",
            (back - stopped).as_seconds_f64(),
            first_back.map_or(f64::NAN, |t| (t - back).as_seconds_f64()),
            finals.poll_skipped,
            finals.poll_restarts,
            finals.sink_restarts
        ),
    );

    assert!(
        late.is_empty(),
        "{} influencers had no point within two intervals of the broker's return: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    assert_eq!(ledger.doubled, 0);
    assert_eq!(ledger.failed, 0);
    assert_eq!(ledger.never_stored, 0);
    // Every slot missing fell while the broker was away (or the interval around it), and the
    // poller counted each of them once. Its count may exceed the ledger's only by slots whose
    // outcomes the broker took but whose confirmation died with the connection (the batch then
    // comes back and is counted skipped although stored): less than one slot per influencer.
    let margin = INTERVAL.as_millis() as i64;
    let (down_ms, back_ms) = (stopped.timestamp_millis(), back.timestamp_millis());
    let outside: Vec<_> = ledger
        .skipped
        .iter()
        .filter(|(_, slot)| *slot < down_ms - margin || *slot > back_ms + 2 * margin)
        .collect();
    assert!(
        outside.is_empty(),
        "slots skipped outside the outage: {outside:?}"
    );
    assert!(
        !ledger.skipped.is_empty(),
        "no slot fell in a {DOWN:?} outage?"
    );
    let missing = ledger.skipped.len() as f64;
    assert!(
        finals.poll_skipped >= missing,
        "{missing} slots missing but the poller skipped only {}",
        finals.poll_skipped
    );
    assert!(
        finals.poll_skipped < missing + INFLUENCERS as f64,
        "{missing} slots missing but the poller counted {} skipped: copies of schedule entries \
         counted twice",
        finals.poll_skipped
    );
}
