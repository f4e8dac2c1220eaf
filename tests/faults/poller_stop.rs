//! Scenario: the poller stopped for several intervals, then started again on the same queues
//! (a deploy, a host down for maintenance). Its schedule waited in the broker meanwhile: every
//! batch comes back late, is skipped to its member's next slots, and must then be polled on
//! time again, interval after interval.

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
const STOPPED: Duration = Duration::from_secs(22);

/// What the poller counted: slots skipped, re-enqueues through the delay queues, hops.
async fn schedule_counts(poll: &crate::common::Role) -> [f64; 3] {
    [
        poll.metric("schedule_slots_skipped_total", "").await,
        poll.metric("schedule_reenqueues_delayed_total", "").await,
        poll.metric("schedule_batches_waiting_again_total", "")
            .await,
    ]
}

/// Every influencer is polled again within two intervals of the restart, every slot after that
/// is stored, and the poller stops skipping: the late batches do not keep arriving late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_stopped_for_minutes_polls_everyone_on_time_after_its_restart() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::on(&shared_db_server(), 4).await;
    let queues = TestBroker::on(&shared_amqp_url()).await;
    let sim = TestSimulator::start(simulator_settings(INFLUENCERS as u64, 21)).await;
    let mut pipeline = Pipeline::start(PipelineSetup {
        scenario: "poller_stop",
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

    pipeline.poll.interrupt();
    let stopped = Utc::now();
    sleep(STOPPED).await;
    pipeline.poll.restart();
    pipeline.poll.wait_ready().await;
    let back = Utc::now();
    let interval = chrono::Duration::from_std(INTERVAL).unwrap();
    let settled = back + interval * 2;

    sleep(INTERVAL * 3).await;
    let settled_counts = schedule_counts(&pipeline.poll).await;
    sleep(INTERVAL * 4).await;
    let end_counts = schedule_counts(&pipeline.poll).await;
    pipeline.poll.assert_running();
    let until = Utc::now() - interval;
    let finals = pipeline.drain_and_stop(&queues).await;

    let late = crate::common::not_polled_between(&db.pool, back, settled).await;
    let after = Ledger::count(
        &db.pool,
        FIRST_PK..FIRST_PK + INFLUENCERS,
        INTERVAL,
        settled,
        until,
    )
    .await;
    after.print("poller_stop");
    crate::common::report(
        "poller_stop",
        format!(
            "poller_stop: poller stopped {:.1} s; {} influencers without a point within two \
             intervals of its restart; poller skipped {} slots in all, {} of them from two \
             intervals after the restart on",
            (back - stopped).as_seconds_f64(),
            late.len(),
            finals.poll_skipped,
            end_counts[0] - settled_counts[0]
        ),
    );

    assert!(
        late.is_empty(),
        "{} influencers had no point within two intervals of the poller's restart: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    let [skipped, delayed, waiting_again] = [0, 1, 2].map(|i| end_counts[i] - settled_counts[i]);
    assert_eq!(
        skipped, 0.0,
        "the poller still skips slots intervals after its restart: batches keep arriving late"
    );
    // Once polled on time again, every batch goes back to the steady wait queue: none keeps
    // taking the delay queues' hops interval after interval.
    assert_eq!(
        (delayed, waiting_again),
        (0.0, 0.0),
        "batches still re-enqueued through the delay queues intervals after the restart"
    );
    assert!(
        finals.poll_skipped > 0.0,
        "a poller stopped {STOPPED:?} skipped no slot: the scenario did not stage a late schedule"
    );
    after.assert_every_slot_stored_once();
}
