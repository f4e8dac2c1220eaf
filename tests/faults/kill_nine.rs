//! Scenario 4: `kill -9` of the poller and of the sink, each restarted at once.

use influencer_analytics::testing::{
    TestBroker, TestDb, TestSimulator, shared_amqp_url, shared_db_server, simulator_settings,
};
use std::time::Duration;

use chrono::Utc;
use influencer_analytics::mockstagram::FIRST_PK;

use crate::{
    common::{Pipeline, PipelineSetup, SERIAL, sleep},
    ledger::Ledger,
};

const INFLUENCERS: i64 = 1000;
const INTERVAL: Duration = Duration::from_secs(4);

/// Unacked schedule and point messages go back to their queues when a process dies; the
/// restarted process takes them again: nothing is lost, and what was done twice (a fetch whose
/// ack died with the poller, a batch committed just before the sink died) is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_of_the_poller_and_the_sink_loses_nothing_and_stores_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::on(&shared_db_server(), 4).await;
    let queues = TestBroker::on(&shared_amqp_url()).await;
    let sim = TestSimulator::start(simulator_settings(INFLUENCERS as u64, 13)).await;
    let mut pipeline = Pipeline::start(PipelineSetup {
        scenario: "kill_nine",
        database_url: &db.url,
        queues: &queues,
        mockstagram_url: sim.url(""),
        interval: INTERVAL,
        influencers: INFLUENCERS,
        poll_env: vec![],
        // Small batches written often, so a kill lands in or near a transaction.
        sink_env: vec![
            ("SINK_BATCH_ROWS", "100".into()),
            ("SINK_BATCH_WAIT", "50ms".into()),
        ],
    })
    .await;
    sleep(INTERVAL * 2).await;

    let mut kills = 0;
    for round in 0..3u64 {
        // At different points of the interval, so different parts of a batch are in flight.
        sleep(Duration::from_millis(1300 + 700 * round)).await;
        pipeline.poll.kill_nine();
        pipeline.poll.restart();
        sleep(Duration::from_millis(900 + 500 * round)).await;
        pipeline.sink.kill_nine();
        pipeline.sink.restart();
        kills += 2;
    }
    sleep(Duration::from_millis(1700)).await;
    pipeline.poll.kill_nine();
    pipeline.sink.kill_nine();
    pipeline.sink.restart();
    pipeline.poll.restart();
    kills += 2;
    pipeline.poll.wait_ready().await;
    pipeline.sink.wait_ready().await;
    sleep(INTERVAL * 3).await;
    let until = Utc::now() - chrono::Duration::from_std(INTERVAL).unwrap();
    let finals = pipeline.drain_and_stop(&queues).await;

    let from = pipeline.seeded_at + chrono::Duration::from_std(INTERVAL).unwrap();
    let ledger = Ledger::count(
        &db.pool,
        FIRST_PK..FIRST_PK + INFLUENCERS,
        INTERVAL,
        from,
        until,
    )
    .await;
    ledger.print("kill_nine");
    let (_, dead) = queues.points_ready().await;
    crate::common::report(
        "kill_nine",
        format!(
            "kill_nine: {kills} kills; poller skipped {} slots; {dead} point messages dead-lettered",
            finals.poll_skipped
        ),
    );
    assert_eq!(dead, 0);
    assert_eq!(ledger.doubled, 0);
    assert_eq!(ledger.failed, 0);
    assert_eq!(
        ledger.stored,
        ledger.expected,
        "lost slots: {:?}",
        &ledger.skipped[..ledger.skipped.len().min(10)]
    );
}
