//! Classification passes through the simulator's is_suspicious (delay scaled down).

use std::time::Duration;

use influencer_analytics::{
    classify::{PassOutcome, PassReport, PassSettings, PassStart, SpikeRule, run_pass},
    config::{ServiceUrl, UpstreamSettings},
    fetch::MockstagramClient,
    mockstagram,
};
use tokio_util::sync::CancellationToken;

use influencer_analytics::testing::{TestDb, TestSimulator, simulator_settings};

fn client(sim: &TestSimulator, concurrency: u64) -> MockstagramClient {
    MockstagramClient::new(&UpstreamSettings {
        mockstagram_url: ServiceUrl::parse(&format!("http://{}", sim.addr), &["http"]).unwrap(),
        mockstagram_rps: None,
        mockstagram_timeout: Duration::from_secs(10),
        mockstagram_concurrency: concurrency,
        mockstagram_ca_file: None,
    })
    .unwrap()
}

fn settings(concurrency: usize) -> PassSettings {
    PassSettings {
        concurrency,
        interval: Duration::from_secs(60),
        spike: SpikeRule::default(),
    }
}

/// Runs a pass the way `classify` does.
async fn classify_now(
    db: &TestDb,
    client: &MockstagramClient,
    concurrency: usize,
    stop: CancellationToken,
) -> PassOutcome {
    run_pass(
        &db.pool,
        client,
        &settings(concurrency),
        PassStart::Now,
        stop,
    )
    .await
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
    let outcome = classify_now(&db, &client(&sim, 50), 50, CancellationToken::new()).await;
    let PassOutcome::Ran(PassReport {
        pass_id,
        asked,
        failed,
        finished,
        ..
    }) = outcome
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
    // A first verdict of suspicious is a `verdict` event; a first of not suspicious is not.
    let verdict_events: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("select influencer_id, data from events where type = 'verdict' order by id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        verdict_events.len(),
        flagged,
        "one for each influencer flagged"
    );
    assert!(verdict_events.iter().all(|(_, d)| d["suspicious"] == true
        && d["previous"].is_null()
        && d["source"] == "mockstagram"));
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
    // A verdict that changes is an event; one that stays is not.
    let (first, _) = verdict_events[0];
    let mut tx = db.pool.begin().await.unwrap();
    let rows = [influencer_analytics::classify::VerdictRow {
        pk: first,
        suspicious: false,
        follower_count: None,
        following_count: None,
        detail: "{}".into(),
    }];
    influencer_analytics::classify::write_verdicts(&mut tx, pass_id, "mockstagram", &rows)
        .await
        .unwrap();
    influencer_analytics::classify::write_verdicts(&mut tx, pass_id, "mockstagram", &rows)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let newest: (i64, serde_json::Value, i64) = sqlx::query_as(
        "select influencer_id, data, (select count(*) from events where type = 'verdict')
         from events where type = 'verdict' order by id desc limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(newest.0, first);
    assert_eq!(
        (&newest.1["suspicious"], &newest.1["previous"]),
        (&serde_json::json!(false), &serde_json::json!(true))
    );
    assert_eq!(
        newest.2 as usize,
        flagged + 1,
        "the second, unchanged, is not an event"
    );
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
    let first = classify_now(&db, &client(&sim, 10), 10, stop).await;
    let PassOutcome::Ran(PassReport {
        pass_id,
        asked: asked_first,
        finished: false,
        ..
    }) = first
    else {
        panic!("the first run should stop half-way: {first:?}");
    };
    assert!(asked_first > 0 && asked_first < 300, "{asked_first}");
    assert_eq!(
        sim.simulator.questions(),
        asked_first,
        "answers in flight were kept"
    );

    let second = classify_now(&db, &client(&sim, 50), 50, CancellationToken::new()).await;
    let PassOutcome::Ran(PassReport {
        pass_id: resumed,
        asked,
        finished: true,
        ..
    }) = second
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
        classify_now(&db, &a, 20, CancellationToken::new()),
        classify_now(&db, &b, 20, CancellationToken::new()),
    );
    let outcomes = [first, second];
    let ran = outcomes
        .iter()
        .filter(|o| matches!(o, PassOutcome::Ran(_)))
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

/// Stores (almost) a day of 1-minute points for influencers 1000000.., walked by the simulator (one
/// step a minute, as polling does), ending at the current minute. `jump` adds followers to one
/// influencer from one minute on. Returns the slots (epoch seconds).
async fn a_day_of_walk(
    db: &TestDb,
    sim: &TestSimulator,
    influencers: i64,
    jump: (i64, usize, i32),
) -> Vec<i64> {
    // A day less ten minutes, so that the whole series lies in the pass's window (the day
    // before it starts) however long storing it takes.
    const MINUTES: i64 = 1430;
    let now = chrono::Utc::now().timestamp();
    let slots: Vec<i64> = (0..MINUTES)
        .map(|i| now - now % 60 - (MINUTES - 1 - i) * 60)
        .collect();
    for first in (0..influencers).step_by(100) {
        let (mut ids, mut at, mut followers, mut following) = (vec![], vec![], vec![], vec![]);
        for pk in (first..(first + 100).min(influencers)).map(|i| 1_000_000 + i) {
            for (minute, slot) in slots.iter().enumerate() {
                let (f, g) = sim.simulator.step_at(pk, slot * 1000).unwrap();
                let extra = if pk == jump.0 && minute >= jump.1 {
                    jump.2
                } else {
                    0
                };
                ids.push(pk);
                at.push(*slot as f64);
                followers.push(f as i32 + extra);
                following.push(g as i32);
            }
            sqlx::query(
                "insert into influencers (influencer_id, username) values ($1, 'influencer-' || $1)",
            )
            .bind(pk)
            .execute(&db.pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "insert into influencer_metrics
             select id, to_timestamp(at), to_timestamp(at), f, g
             from unnest($1::bigint[], $2::float8[], $3::int[], $4::int[]) as u(id, at, f, g)",
        )
        .bind(&ids)
        .bind(&at)
        .bind(&followers)
        .bind(&following)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "insert into influencer_latest
         select distinct on (influencer_id) influencer_id, slot, fetched_at, follower_count, following_count
         from influencer_metrics order by influencer_id, slot desc",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    slots
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spike_detector_flags_an_injected_jump_and_not_the_random_walk() {
    let db = TestDb::new().await;
    // About 2% of them stage the follow/unfollow seesaw, which the churn rule finds.
    let mut settings = simulator_settings(500, 11);
    settings.churn_share = 0.02;
    let sim = TestSimulator::start(settings).await;
    let jumper = 1_000_007;
    let slots = a_day_of_walk(&db, &sim, 500, (jumper, 900, 300_000)).await;

    let outcome = classify_now(&db, &client(&sim, 100), 100, CancellationToken::new()).await;
    let PassOutcome::Ran(report) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(report.finished, "{report:?}");
    assert_eq!((report.judged, report.flagged), (500, 1), "{report:?}");
    let flagged: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "select influencer_id, detail from current_verdicts where source = 'spike' and suspicious",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    let (pk, detail) = &flagged[0];
    assert_eq!(*pk, jumper);
    assert_eq!(detail["at"].as_i64(), Some(slots[900]), "{detail}");
    assert!(detail["z"].as_f64().unwrap() >= 10.0, "{detail}");
    assert_eq!(detail["changes"].as_i64(), Some(1429), "{detail}");
    assert_eq!(detail["pass_id"].as_i64(), Some(report.pass_id));
    // The other 499 walked as the simulator walks: none flagged (false positives 0 of 499,
    // 713,071 minute changes). Their largest score, for the record:
    let largest: f64 = sqlx::query_scalar(
        "select max(abs((detail->>'z')::float8)) from current_verdicts
         where source = 'spike' and influencer_id <> $1",
    )
    .bind(jumper)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    println!(
        "spike detector: 1 of 1 jump flagged; 0 of 499 walks flagged, largest |z| {largest:.2}"
    );
    assert!(largest < 10.0);
    // Both stages wrote one verdict per influencer into the pass's history.
    let per_source: Vec<(String, i64, i64)> = sqlx::query_as(
        "select source, count(*), count(distinct influencer_id) from suspicious_classifications
         where pass_id = $1 group by 1 order by 1",
    )
    .bind(report.pass_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        per_source,
        [
            ("churn".into(), 500, 500),
            ("mockstagram".into(), 500, 500),
            ("spike".into(), 500, 500)
        ]
    );
    // The churn rule, on the same day: exactly the staged churners, each a `following_churn`
    // event with its legs, and a `verdict` event of the source `churn`.
    let staged: Vec<i64> = (1_000_000..1_000_500)
        .filter(|&pk| sim.simulator.churns(pk))
        .collect();
    assert!(!staged.is_empty());
    let churners: Vec<i64> = sqlx::query_scalar(
        "select influencer_id from current_verdicts where source = 'churn' and suspicious order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        churners, staged,
        "found and false alarms against the staged truth"
    );
    let events: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "select influencer_id, data from events where type = 'following_churn' order by influencer_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), staged);
    let legs = events[0].1["legs"].as_i64().unwrap();
    assert!(legs >= 6, "{}", events[0].1);
    assert!(events[0].1["evidence"].as_array().unwrap().len() >= 6);
    let churn_verdicts: i64 = sqlx::query_scalar(
        "select count(*) from events where type = 'verdict' and data->>'source' = 'churn'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(churn_verdicts as usize, staged.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_pass_runs_once_per_day_and_supersedes_an_unfinished_older_one() {
    let db = TestDb::new().await;
    let sim = TestSimulator::start(simulator_settings(10, 4)).await;
    population(&db, &counts(8)).await;
    let client = client(&sim, 10);
    let now = chrono::Utc::now();
    // Yesterday's pass was stopped before its end.
    let stale: i64 = sqlx::query_scalar(
        "insert into classification_passes (started_at) values ($1) returning pass_id",
    )
    .bind(now - chrono::Duration::hours(20))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let today = now - chrono::Duration::hours(1);
    let pass = settings(10);
    let daily = |due| {
        run_pass(
            &db.pool,
            &client,
            &pass,
            PassStart::DueSince(due),
            CancellationToken::new(),
        )
    };

    let first = daily(today).await.unwrap();
    let PassOutcome::Ran(report) = &first else {
        panic!("{first:?}");
    };
    assert!(report.finished && report.pass_id != stale, "{first:?}");
    assert_eq!(report.asked, 10);
    let superseded: Option<i64> =
        sqlx::query_scalar("select superseded_by from classification_passes where pass_id = $1")
            .bind(stale)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(superseded, Some(report.pass_id));
    // Later the same day: nothing to do, nobody asked again.
    assert_eq!(daily(today).await.unwrap(), PassOutcome::UpToDate);
    assert_eq!(sim.simulator.questions(), 10);
    // The next day: a new pass.
    let next = daily(now + chrono::Duration::seconds(1)).await.unwrap();
    assert!(
        matches!(
            next,
            PassOutcome::Ran(PassReport {
                asked: 10,
                finished: true,
                ..
            })
        ),
        "{next:?}"
    );
    let status = influencer_analytics::classify::status(&db.pool)
        .await
        .unwrap()
        .unwrap();
    assert!(status.contains("10 of 10 classified"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_starts_the_pass_missed_since_classify_at_on_start() {
    let db = TestDb::new().await;
    let sim = TestSimulator::start(simulator_settings(10, 5)).await;
    population(&db, &counts(3)).await;
    let stop = CancellationToken::new();
    // CLASSIFY_AT was a minute ago and no pass ran since: the scheduler runs one at once.
    let at = (chrono::Utc::now() - chrono::Duration::minutes(1)).time();
    let scheduler = tokio::spawn(influencer_analytics::jobs::daily_classification::run(
        db.pool.clone(),
        client(&sim, 10),
        settings(10),
        at,
        Duration::ZERO,
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let finished: i64 = sqlx::query_scalar(
            "select count(*) from classification_passes where finished_at is not null",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if finished == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no pass ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), scheduler)
        .await
        .expect("the scheduler stops on shutdown")
        .unwrap();
    assert_eq!(sim.simulator.questions(), 5);
}
