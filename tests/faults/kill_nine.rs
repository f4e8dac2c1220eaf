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
const SEED: u64 = 13;

/// The stored points against the answers the simulator gave: a second simulator with the same
/// seed, stepped as many times per pk as the first answered, replays every answer (the n-th
/// answer for a pk depends only on the seed, the pk and n).
struct Answers {
    /// Answers the simulator gave, over every pk.
    fetched: u64,
    /// Points stored.
    stored: u64,
    /// Stored (followers, following) that the simulator never answered for that pk.
    unknown: u64,
    /// Answers stored under more than one slot.
    reused: u64,
}

impl Answers {
    async fn check(pool: &sqlx::PgPool, sim: &TestSimulator, seed: u64) -> Self {
        let rows: Vec<(i64, i32, i32)> = sqlx::query_as(
            "select influencer_id, follower_count, following_count from influencer_metrics",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let replay = influencer_analytics::simulator::Simulator::new(&simulator_settings(
            INFLUENCERS as u64,
            seed,
        ));
        let mut given: std::collections::HashMap<i64, Vec<(i64, i64)>> = Default::default();
        let mut fetched = 0;
        for pk in FIRST_PK..FIRST_PK + INFLUENCERS {
            let calls = sim.simulator.calls(pk).unwrap();
            fetched += calls;
            given.insert(pk, (0..calls).map(|_| replay.step(pk).unwrap()).collect());
        }
        let (mut unknown, mut reused) = (0, 0);
        let mut used: std::collections::HashSet<(i64, usize)> = Default::default();
        for (pk, followers, following) in &rows {
            let answer = (i64::from(*followers), i64::from(*following));
            let positions: Vec<usize> = given[pk]
                .iter()
                .enumerate()
                .filter(|(_, a)| **a == answer)
                .map(|(i, _)| i)
                .collect();
            match positions.iter().find(|i| !used.contains(&(*pk, **i))) {
                Some(i) => {
                    used.insert((*pk, *i));
                }
                None if positions.is_empty() => unknown += 1,
                None => reused += 1,
            }
        }
        Self {
            fetched,
            stored: rows.len() as u64,
            unknown,
            reused,
        }
    }
}

/// Unacked schedule and point messages go back to their queues when a process dies; the
/// restarted process takes them again: nothing is lost, and what was done twice (a fetch whose
/// ack died with the poller, a batch committed just before the sink died) is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_of_the_poller_and_the_sink_loses_nothing_and_stores_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::on(&shared_db_server(), 4).await;
    let queues = TestBroker::on(&shared_amqp_url()).await;
    let sim = TestSimulator::start(simulator_settings(INFLUENCERS as u64, SEED)).await;
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
    let answers = Answers::check(&db.pool, &sim, SEED).await;
    crate::common::report(
        "kill_nine",
        format!(
            "kill_nine: {kills} kills; poller skipped {} slots; {dead} point messages dead-lettered; \
             {} upstream answers for {} stored points ({} fetched again after a kill); \
             {} stored values not among the answers, {} answers stored twice",
            finals.poll_skipped,
            answers.fetched,
            answers.stored,
            answers.fetched - answers.stored,
            answers.unknown,
            answers.reused
        ),
    );
    assert_eq!(dead, 0);
    assert_eq!(
        answers.unknown, 0,
        "every stored value is an answer the upstream gave"
    );
    assert_eq!(
        answers.reused, 0,
        "no upstream answer is stored under two slots"
    );
    assert!(answers.fetched >= answers.stored);
    ledger.assert_every_slot_stored_once();
}
