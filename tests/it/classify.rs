//! Classification passes through the simulator's is_suspicious (delay scaled down).

use std::time::Duration;

use influencer_analytics::{
    classify::{PassOutcome, run_pass},
    config::{ServiceUrl, UpstreamSettings},
    fetch::MockstagramClient,
    mockstagram,
};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestDb, TestSimulator, simulator_settings};

fn client(sim: &TestSimulator, concurrency: u64) -> MockstagramClient {
    MockstagramClient::new(&UpstreamSettings {
        mockstagram_url: ServiceUrl::parse(&format!("http://{}", sim.addr), &["http"]).unwrap(),
        mockstagram_rps: None,
        mockstagram_timeout: Duration::from_secs(10),
        mockstagram_concurrency: concurrency,
    })
    .unwrap()
}

/// Registers influencers 1000000.. with the given latest counts.
async fn population(db: &TestDb, counts: &[(i32, i32)]) {
    for (i, (followers, following)) in counts.iter().enumerate() {
        let pk = 1_000_000 + i as i64;
        sqlx::query(
            "insert into influencers (influencer_id, username) values ($1, 'influencer-' || $1)",
        )
        .bind(pk)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query("insert into influencer_latest values ($1, now(), now(), $2, $3)")
            .bind(pk)
            .bind(followers)
            .bind(following)
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

fn counts(n: usize) -> Vec<(i32, i32)> {
    let mut counts: Vec<(i32, i32)> = (0..n as i32)
        .map(|i| (5000 + i * 397 % 20_000, 400 + i * 13 % 2000))
        .collect();
    counts.extend([(564, 100), (565, 100)]); // the boundary of the rule
    counts
}

async fn verdicts_in_pass(db: &TestDb, pass_id: i64) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "select influencer_id, count(*) from suspicious_classifications
         where pass_id = $1 group by 1 order by 1",
    )
    .bind(pass_id)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_agrees_with_the_ratio_rule_for_every_influencer() {
    let db = TestDb::new().await;
    let sim = TestSimulator::start(simulator_settings(10, 1)).await;
    let counts = counts(200);
    population(&db, &counts).await;
    let outcome = run_pass(&db.pool, &client(&sim, 50), 50, CancellationToken::new())
        .await
        .unwrap();
    let PassOutcome::Ran {
        pass_id,
        asked,
        failed,
        finished,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!((asked, failed, finished), (202, 0, true));
    let current: Vec<(i64, bool)> = sqlx::query_as(
        "select influencer_id, suspicious from current_verdicts where source = 'mockstagram' order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(current.len(), 202);
    let mut flagged = 0;
    for (pk, suspicious) in current {
        let (f, g) = counts[(pk - 1_000_000) as usize];
        assert_eq!(
            suspicious,
            mockstagram::is_suspicious(f as i64, g as i64),
            "pk {pk}: {f}/{g}"
        );
        flagged += suspicious as usize;
    }
    assert!(
        flagged > 10 && flagged < 190,
        "the population mixes both verdicts ({flagged})"
    );
    assert!(
        verdicts_in_pass(&db, pass_id)
            .await
            .iter()
            .all(|(_, n)| *n == 1)
    );
    let state: (i64, i64, bool) = sqlx::query_as(
        "select influencers, classified, finished_at is not null from classification_passes where pass_id = $1",
    )
    .bind(pass_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(state, (202, 202, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_pass_resumes_asking_only_for_the_rest() {
    let db = TestDb::new().await;
    let mut settings = simulator_settings(10, 2);
    settings.delay_scale = 0.05; // about 50 ms ± 50 ms an answer
    let sim = TestSimulator::start(settings).await;
    population(&db, &counts(298)).await;

    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stopper.cancel();
    });
    let first = run_pass(&db.pool, &client(&sim, 10), 10, stop)
        .await
        .unwrap();
    let PassOutcome::Ran {
        pass_id,
        asked: asked_first,
        finished: false,
        ..
    } = first
    else {
        panic!("the first run should stop half-way: {first:?}");
    };
    assert!(asked_first > 0 && asked_first < 300, "{asked_first}");
    assert_eq!(
        sim.simulator.questions(),
        asked_first,
        "answers in flight were kept"
    );

    let second = run_pass(&db.pool, &client(&sim, 50), 50, CancellationToken::new())
        .await
        .unwrap();
    let PassOutcome::Ran {
        pass_id: resumed,
        asked,
        finished: true,
        ..
    } = second
    else {
        panic!("{second:?}");
    };
    assert_eq!(resumed, pass_id, "the same pass goes on");
    assert_eq!(asked, 300 - asked_first, "only the rest is asked");
    assert_eq!(sim.simulator.questions(), 300, "nobody was asked twice");
    let verdicts = verdicts_in_pass(&db, pass_id).await;
    assert_eq!(verdicts.len(), 300);
    assert!(
        verdicts.iter().all(|(_, n)| *n == 1),
        "every influencer classified once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_starting_a_pass_at_once_run_one_pass() {
    let db = TestDb::new().await;
    let mut settings = simulator_settings(10, 3);
    settings.delay_scale = 0.05;
    let sim = TestSimulator::start(settings).await;
    population(&db, &counts(98)).await;
    let (a, b) = (client(&sim, 20), client(&sim, 20));
    let (first, second) = tokio::join!(
        run_pass(&db.pool, &a, 20, CancellationToken::new()),
        run_pass(&db.pool, &b, 20, CancellationToken::new()),
    );
    let outcomes = [first.unwrap(), second.unwrap()];
    let ran = outcomes
        .iter()
        .filter(|o| matches!(o, PassOutcome::Ran { .. }))
        .count();
    let waited = outcomes
        .iter()
        .filter(|o| **o == PassOutcome::AlreadyRunning)
        .count();
    assert_eq!((ran, waited), (1, 1), "{outcomes:?}");
    assert_eq!(sim.simulator.questions(), 100);
    let passes: i64 = sqlx::query_scalar("select count(*) from classification_passes")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(passes, 1);
}
