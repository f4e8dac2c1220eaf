//! Issue 41, item 3: the API's reads off a streaming replica (`scripts/services replica up`,
//! a hot standby of the tests' TimescaleDB), and back on the primary when it lags or stops.
//! The tests here share the one replica and pause or stop it: they take turns.

use std::time::{Duration, Instant};

use influencer_analytics::{
    api::{ApiState, reads::Reads},
    config::ServiceUrl,
    seed,
    testing::{TestBroker, TestDb, TestSimulator, services, simulator_settings},
};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;

use crate::api::TestApi;
use crate::pipeline::{INTERVAL, pks, run_pipeline};

const MAX_LAG: Duration = Duration::from_secs(3);
const ID: i64 = 4_100_001;

/// One test at a time on the replica.
pub(crate) static REPLICA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts the replica (idempotent) and returns its server's URL, without a database name.
pub(crate) fn replica_server() -> String {
    let out = services(&["replica", "up"]);
    let url = out
        .lines()
        .find_map(|line| line.split("ready: DATABASE_READ_URL=").nth(1))
        .unwrap_or_else(|| {
            panic!("`scripts/services replica up` printed no DATABASE_READ_URL: {out}")
        })
        .trim()
        .to_string();
    url.rsplit_once('/').unwrap().0.to_string()
}

/// Pauses (or resumes) the replica's replay of the primary's WAL, waiting until it took effect.
async fn replay(server: &str, paused: bool) {
    let mut replica = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    let statement = if paused {
        "select pg_wal_replay_pause()"
    } else {
        "select pg_wal_replay_resume()"
    };
    sqlx::query(statement).execute(&mut replica).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state: String = sqlx::query_scalar("select pg_get_wal_replay_pause_state()")
            .fetch_one(&mut replica)
            .await
            .unwrap();
        if (state == "paused") == paused {
            return;
        }
        assert!(Instant::now() < deadline, "replay still {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the replica has replayed everything the primary had written when called.
async fn caught_up(server: &str, primary: &sqlx::PgPool) {
    let position: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
        .fetch_one(primary)
        .await
        .unwrap();
    let mut replica = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (replayed, receiver): (bool, Option<String>) = sqlx::query_as(
            "select pg_last_wal_replay_lsn() >= $1::pg_lsn,
                    (select status from pg_stat_wal_receiver)",
        )
        .bind(&position)
        .fetch_one(&mut replica)
        .await
        .unwrap();
        if replayed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica has not replayed the primary's {position} within 30 s \
             (its WAL receiver: {receiver:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `/readyz` says `words`, and returns what it said.
async fn ready_saying(api: &TestApi, words: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, _, body) = api.get("/readyz").await;
        let said = body.as_str().unwrap_or_default().to_string();
        if status == StatusCode::OK && said.contains(words) {
            return said;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said {words:?} within {within:?}; it says {status} {said:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn latest(api: &TestApi) -> (i64, f64) {
    let (status, _, body): (StatusCode, String, Value) =
        api.get(&format!("/influencer_analytics/{ID}/latest")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["follower_count"].as_i64().unwrap(),
        body["staleness_seconds"].as_f64().unwrap(),
    )
}

/// The API of a new database, reading off the replica (`server`) as `serve` would; with the
/// reads' handle, which tells where a read goes now.
async fn api_on_the_replica(server: &str, interval: Duration) -> (TestApi, Reads) {
    let db = TestDb::new().await;
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let read_url = ServiceUrl::parse(&format!("{server}/{name}"), &["postgres"]).unwrap();
    let replica =
        influencer_analytics::db::open_replica_pool(&read_url, 4, Duration::from_secs(5)).unwrap();
    let reads = Reads::with_replica(db.pool.clone(), replica, MAX_LAG);
    let state = ApiState::new(db.pool.clone(), interval).with_reads(reads.clone());
    (TestApi::serving(db, state).await, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_a_replica_that_keeps_up_and_to_the_primary_when_it_lags_or_stops() {
    let _turn = REPLICA.lock().await;
    let server = replica_server();
    replay(&server, false).await;
    let (api, _) = api_on_the_replica(&server, Duration::from_secs(60)).await;
    api.influencer_with_latest(ID, 1_800_000_000, 1_000, 10)
        .await;

    // The replica keeps up: reads go there, and the answer is the primary's.
    caught_up(&server, &api.db.pool).await;
    let said = ready_saying(&api, "reads on the replica", Duration::from_secs(10)).await;
    assert!(said.starts_with("ready; "), "{said}");
    assert_eq!(latest(&api).await.0, 1_000, "the replica's answer");

    // Replay paused: the primary moves on, the replica does not. Within READ_MAX_LAG the
    // answer is the replica's (the old value), with its staleness.
    replay(&server, true).await;
    sqlx::query("update influencer_latest set follower_count = 2000 where influencer_id = $1")
        .bind(ID)
        .execute(&api.db.pool)
        .await
        .unwrap();
    let (followers, staleness) = latest(&api).await;
    assert_eq!(
        followers, 1_000,
        "answered by the primary while the replica was within READ_MAX_LAG"
    );
    assert!(staleness <= MAX_LAG.as_secs_f64(), "{staleness}");

    // Past READ_MAX_LAG: reads move to the primary, and /readyz says why.
    let said = ready_saying(&api, "reads on the primary: the replica is", MAX_LAG * 4).await;
    assert!(said.contains("READ_MAX_LAG"), "{said}");
    assert_eq!(latest(&api).await, (2_000, 0.0));

    // Replay resumed: back on the replica, which now has the new value.
    replay(&server, false).await;
    ready_saying(&api, "reads on the replica", Duration::from_secs(10)).await;
    let (followers, staleness) = latest(&api).await;
    assert_eq!(followers, 2_000);
    assert!(staleness <= MAX_LAG.as_secs_f64(), "{staleness}");

    // The replica stopped: reads go to the primary, answered as before.
    services(&["replica", "stop"]);
    let said = ready_saying(&api, "does not answer", Duration::from_secs(10)).await;
    assert!(said.contains("reads on the primary"), "{said}");
    assert_eq!(latest(&api).await, (2_000, 0.0));
    let (status, _, _) = api.get(&format!("/influencer_analytics/{ID}/rank")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a read failed with the replica down"
    );

    // And back when it returns.
    services(&["replica", "start"]);
    ready_saying(&api, "reads on the replica", Duration::from_secs(30)).await;
    assert_eq!(latest(&api).await.0, 2_000);
}

/// The replica serves the API's reads while the primary takes the pipeline's writes (seed,
/// poll, sink, at a 2 s interval): the answers follow the points as they are stored, each
/// with its staleness, and once the pipeline stops the replica answers what the primary holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_serves_reads_while_the_primary_takes_the_pipelines_writes() {
    let _turn = REPLICA.lock().await;
    let server = replica_server();
    replay(&server, false).await;
    let (api, reads) = api_on_the_replica(&server, INTERVAL).await;
    let queues = TestBroker::new().await;
    let sim = TestSimulator::start(simulator_settings(1000, 1)).await;
    let ids = pks(200);
    seed::seed(&api.db.pool, &queues.broker, INTERVAL, &ids)
        .await
        .unwrap();
    caught_up(&server, &api.db.pool).await;
    ready_saying(&api, "reads on the replica", Duration::from_secs(10)).await;

    let watched = ids[0];
    let running = INTERVAL * 5;
    let reading = async {
        let mut answers = Vec::new();
        let until = Instant::now() + running;
        while Instant::now() < until {
            let on_replica = reads.target().staleness.is_some();
            let (status, _, body) = api
                .get(&format!("/influencer_analytics/{watched}/latest"))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            answers.push((on_replica, body));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        answers
    };
    let (_, answers) = tokio::join!(
        run_pipeline(&queues, &api.db.pool, &sim, 1, running),
        reading
    );

    let on_replica: Vec<&Value> = answers
        .iter()
        .filter(|(on_replica, _)| *on_replica)
        .map(|(_, body)| body)
        .collect();
    assert!(
        on_replica.len() * 10 >= answers.len() * 8,
        "only {} of {} reads went to the replica while the pipeline wrote",
        on_replica.len(),
        answers.len()
    );
    for body in &on_replica {
        let staleness = body["staleness_seconds"].as_f64().unwrap();
        assert!(staleness <= MAX_LAG.as_secs_f64(), "{body}");
    }
    let times: std::collections::BTreeSet<i64> = on_replica
        .iter()
        .filter_map(|body| body["time"].as_i64())
        .collect();
    assert!(
        times.len() >= 3,
        "the replica's answers did not follow the stored points: latest times {times:?}"
    );

    // The pipeline stopped: once replayed, the replica answers what the primary holds.
    caught_up(&server, &api.db.pool).await;
    ready_saying(&api, "reads on the replica", Duration::from_secs(10)).await;
    let stored: i64 =
        sqlx::query_scalar("select count(*) from influencer_metrics where influencer_id = $1")
            .bind(watched)
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert!(
        stored >= 4,
        "the pipeline stored {stored} points of {watched}"
    );
    let (status, _, range) = api.get(&format!("/influencer_analytics/{watched}")).await;
    assert_eq!(status, StatusCode::OK, "{range}");
    assert!(reads.target().staleness.is_some(), "read on the primary");
    assert_eq!(
        range["points"].as_array().unwrap().len() as i64,
        stored,
        "{range}"
    );
}
