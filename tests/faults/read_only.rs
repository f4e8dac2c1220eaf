//! Issue 37, item 5: a database that answers reads but refuses writes (read-only after a
//! failover: SQLSTATE 25006) under quorum queues, for longer than SINK_MAX_HOLD ×
//! QUEUE_DELIVERY_LIMIT. The sink used to probe with `select 1`, which such a database passes:
//! it consumed again at once, held each batch SINK_MAX_HOLD, handed it back by a requeue that
//! counted toward the delivery limit, and past the limit every held point went to points.dead.

use std::time::Duration;

use chrono::Utc;
use influencer_analytics::{
    mockstagram::FIRST_PK,
    testing::{TestBroker, TestDb, TestSimulator, simulator_settings},
};
use sqlx::Connection;

use crate::{
    common::{FAULTS_DB_SERVER, Pipeline, PipelineSetup, SERIAL, fault_services_up, sleep},
    ledger::Ledger,
};

const INFLUENCERS: i64 = 200;
const INTERVAL: Duration = Duration::from_secs(2);
const DELIVERY_LIMIT: u32 = 2;
const MAX_HOLD: Duration = Duration::from_secs(2);

/// Makes every session of the faults database server read-only (`on`) or writable again, as
/// the server's own setting, reloaded: sessions already open see it from their next
/// transaction, as after a failover that keeps the connections.
async fn read_only(on: bool) {
    let mut admin = sqlx::PgConnection::connect(&format!("{FAULTS_DB_SERVER}/postgres"))
        .await
        .unwrap();
    // This session's own value, so that it can always write the setting back.
    sqlx::query("set default_transaction_read_only = off")
        .execute(&mut admin)
        .await
        .unwrap();
    let statement = if on {
        "alter system set default_transaction_read_only = on"
    } else {
        "alter system reset default_transaction_read_only"
    };
    sqlx::query(statement).execute(&mut admin).await.unwrap();
    sqlx::query("select pg_reload_conf()")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_under_quorum_queues_dead_letters_nothing() {
    let _serial = SERIAL.lock().await;
    fault_services_up();
    read_only(false).await;
    let db = TestDb::on(FAULTS_DB_SERVER, 4).await;
    let queues = TestBroker::quorum(DELIVERY_LIMIT).await;
    let sim = TestSimulator::start(simulator_settings(INFLUENCERS as u64, 13)).await;
    let scenario = "read_only_database";
    let mut pipeline = Pipeline::start(PipelineSetup {
        scenario,
        database_url: &db.url,
        queues: &queues,
        mockstagram_url: sim.url(""),
        interval: INTERVAL,
        influencers: INFLUENCERS,
        poll_env: vec![],
        sink_env: vec![("SINK_MAX_HOLD", format!("{}ms", MAX_HOLD.as_millis()))],
    })
    .await;
    sleep(INTERVAL * 3).await;

    // Read-only for three times SINK_MAX_HOLD × QUEUE_DELIVERY_LIMIT.
    let down = MAX_HOLD * DELIVERY_LIMIT * 3;
    read_only(true).await;
    let from = Utc::now();
    sleep(down).await;
    pipeline.sink.assert_running();
    let errors_during = pipeline.sink.metric("sink_write_errors_total", "").await;
    let (_, dead_during) = queues.points_ready().await;
    read_only(false).await;
    let to = Utc::now();
    sleep(INTERVAL * 4).await;
    let until = Utc::now() - chrono::Duration::from_std(INTERVAL).unwrap();
    let finals = pipeline.drain_and_stop(&queues).await;
    let (_, dead) = queues.points_ready().await;

    let ledger = Ledger::count(
        &db.pool,
        FIRST_PK..FIRST_PK + INFLUENCERS,
        INTERVAL,
        pipeline.seeded_at + chrono::Duration::from_std(INTERVAL).unwrap(),
        until,
    )
    .await;
    ledger.print(scenario);
    crate::common::report(
        scenario,
        format!(
            "{scenario}: read-only {:.0} s (SINK_MAX_HOLD {} s, QUEUE_DELIVERY_LIMIT {DELIVERY_LIMIT}, quorum); \
             sink write errors {errors_during}, deliveries handed back {}, dead-lettered {dead}",
            (to - from).as_seconds_f64(),
            MAX_HOLD.as_secs(),
            finals.sink_requeued,
        ),
    );
    assert!(
        errors_during > 0.0,
        "the sink never met the read-only database (sink_write_errors_total = 0)"
    );
    assert_eq!((dead_during, dead), (0, 0), "point messages dead-lettered");
    assert!(ledger.expected >= INFLUENCERS as u64 * 10, "{ledger:?}");
    ledger.assert_every_slot_stored_once();
    assert_eq!(finals.sink_restarts, 0.0, "the sink role restarted");
}
