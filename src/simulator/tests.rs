//! The unit tests of `simulator`.

use super::*;

fn settings(population: u64, seed: u64) -> SimulatorSettings {
    SimulatorSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        population,
        seed: Some(seed),
        delay_scale: 0.0,
        churn_share: 0.0,
        spike_share: 0.0,
        spike_every: std::time::Duration::from_secs(3 * 3600),
        capacity: None,
        tls_cert_file: None,
        tls_key_file: None,
        faults: FaultSettings::default(),
    }
}

#[test]
fn same_seed_gives_the_same_walk_whatever_the_interleaving() {
    let a = Simulator::new(&settings(100, 7));
    let b = Simulator::new(&settings(100, 7));
    // a: pk 1000000 twice then 1000001; b: the other order.
    let a1 = a.step(1_000_000);
    let a2 = a.step(1_000_000);
    let a3 = a.step(1_000_001);
    let b3 = b.step(1_000_001);
    let b1 = b.step(1_000_000);
    let b2 = b.step(1_000_000);
    assert_eq!((a1, a2, a3), (b1, b2, b3));
    let c = Simulator::new(&settings(100, 8));
    assert_ne!(c.step(1_000_000), a1, "another seed, another walk");
}

#[test]
fn the_walk_never_goes_below_its_floors() {
    let sim = Simulator::new(&settings(50, 1));
    for _ in 0..2_000 {
        for pk in FIRST_PK..FIRST_PK + 50 {
            let (followers, following) = sim.step(pk).unwrap();
            assert!(followers >= FOLLOWER_FLOOR && following >= FOLLOWING_FLOOR);
        }
    }
}

#[test]
fn initial_population_follows_the_documented_distribution() {
    let sim = Simulator::new(&settings(20_000, 3));
    let firsts: Vec<(i64, i64)> = (FIRST_PK..FIRST_PK + 20_000)
        .map(|pk| {
            let w = sim.walker(pk).unwrap().lock().unwrap();
            (w.follower_count, w.following_count)
        })
        .collect();
    let mean =
        |f: fn(&(i64, i64)) -> i64| firsts.iter().map(f).sum::<i64>() as f64 / firsts.len() as f64;
    // max(100000·(1+N), 5000) = 100000·(1 + N + (-0.95 - N)⁺): the floor adds
    // E[(Y)⁺] for Y ~ N(-0.95, 1), which is μΦ(μ) + φ(μ) = 0.0915, so the mean is 109,150.
    let followers = mean(|p| p.0);
    assert!((107_650.0..110_650.0).contains(&followers), "{followers}");
    let following = mean(|p| p.1);
    assert!((1_076.5..1_106.5).contains(&following), "{following}");
    assert!(
        firsts
            .iter()
            .all(|p| p.0 >= FOLLOWER_FLOOR && p.1 >= FOLLOWING_FLOOR)
    );
    // about 16% of N(0,1) draws fall below -0.95, which the floor catches
    let floored = firsts.iter().filter(|p| p.0 == FOLLOWER_FLOOR).count() as f64;
    assert!((0.14..0.19).contains(&(floored / 20_000.0)), "{floored}");
}

#[test]
fn steps_move_by_about_ten_thousand_followers() {
    let sim = Simulator::new(&settings(1, 5));
    // Start far above the floor so it does not bias the spread.
    sim.walker(FIRST_PK).unwrap().lock().unwrap().follower_count = 10_000_000;
    let mut previous = 10_000_000;
    let mut squares = 0.0;
    for _ in 0..10_000 {
        let (followers, _) = sim.step(FIRST_PK).unwrap();
        squares += ((followers - previous) as f64).powi(2);
        previous = followers;
    }
    let sd = (squares / 10_000.0).sqrt();
    assert!((9_500.0..10_500.0).contains(&sd), "{sd}");
}

#[test]
fn unknown_pks_have_no_walker() {
    let sim = Simulator::new(&settings(10, 1));
    assert!(sim.step(FIRST_PK - 1).is_none());
    assert!(sim.step(FIRST_PK + 10).is_none());
    assert!(sim.step(FIRST_PK + 9).is_some());
}

#[test]
fn fault_shares_are_honoured() {
    let faults = Faults::default();
    faults.set(&FaultSettings {
        fault_error: 0.1,
        fault_malformed: 0.2,
        ..FaultSettings::default()
    });
    let draws: Vec<_> = (0..20_000).map(|_| faults.draw()).collect();
    let share = |f| draws.iter().filter(|d| **d == Some(f)).count() as f64 / 20_000.0;
    assert!((0.08..0.12).contains(&share(Fault::Error)));
    assert!((0.18..0.22).contains(&share(Fault::Malformed)));
    assert_eq!(share(Fault::Throttle), 0.0);
}

#[tokio::test]
async fn a_capacity_holds_answers_to_that_many_a_second() {
    use tower::ServiceExt;
    let sim = Simulator::new(&SimulatorSettings {
        capacity: Some(100),
        ..settings(10, 1)
    });
    let router = sim.router();
    let started = std::time::Instant::now();
    let answers = futures_util::future::join_all((0..60).map(|i| {
        let request =
            axum::http::Request::get(format!("/api/v1/influencers/{}", FIRST_PK + i % 10))
                .body(axum::body::Body::empty())
                .unwrap();
        router.clone().oneshot(request)
    }))
    .await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().unwrap().status() == StatusCode::OK)
    );
    // 60 answers at 100/s with a burst of 1: the last one no sooner than 0.59 s in.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(580), "60 answers in {took:?}");
    assert_eq!(sim.requests(), 60);
}

#[test]
fn a_share_of_the_influencers_stage_the_follow_unfollow_seesaw() {
    let sim = Simulator::new(&SimulatorSettings {
        churn_share: 0.2,
        spike_share: 0.0,
        spike_every: std::time::Duration::from_secs(3 * 3600),
        ..settings(10_000, 3)
    });
    let churners: Vec<i64> = (FIRST_PK..FIRST_PK + 10_000)
        .filter(|&pk| sim.churns(pk))
        .collect();
    assert!(
        (1_800..2_200).contains(&churners.len()),
        "{}",
        churners.len()
    );
    // A churner follows 10,000 more every other three hours; the others never.
    let pk = churners[0];
    let offsets: Vec<i64> = (0..4)
        .map(|half| sim.churned(pk, half * CHURN_HALF_PERIOD_MS - pk * 600_000))
        .collect();
    assert_eq!(offsets, [0, CHURN_AMOUNT, 0, CHURN_AMOUNT]);
    let calm = (FIRST_PK..).find(|&pk| !sim.churns(pk)).unwrap();
    assert!((0..8).all(|half| sim.churned(calm, half * CHURN_HALF_PERIOD_MS) == 0));
    // Without a share, nobody.
    let plain = Simulator::new(&settings(1_000, 3));
    assert!((FIRST_PK..FIRST_PK + 1_000).all(|pk| !plain.churns(pk)));
}

#[test]
fn a_share_of_the_influencers_stage_follower_spikes_at_known_times() {
    let every = Duration::from_secs(60);
    let sim = Simulator::new(&SimulatorSettings {
        spike_share: 0.1,
        spike_every: every,
        ..settings(10_000, 3)
    });
    let spikers: Vec<i64> = (FIRST_PK..FIRST_PK + 10_000)
        .filter(|&pk| sim.spikes(pk))
        .collect();
    assert!((900..1_100).contains(&spikers.len()), "{}", spikers.len());
    assert!(spikers.iter().all(|&pk| !sim.churns(pk)), "no churn share");
    // Its followers are SPIKE_AMOUNT higher from one staged time to the next, every other.
    let pk = spikers[0];
    let times = sim.spike_times(pk, 0, 4 * 60_000);
    assert_eq!(times.len(), 4, "{times:?}");
    assert!(times.windows(2).all(|w| w[1] - w[0] == 60_000), "{times:?}");
    let levels: Vec<i64> = times
        .iter()
        .flat_map(|&t| [sim.spiked(pk, t - 1), sim.spiked(pk, t)])
        .collect();
    let jumps: Vec<i64> = levels.chunks(2).map(|c| c[1] - c[0]).collect();
    assert!(
        jumps.iter().all(|j| j.abs() == SPIKE_AMOUNT),
        "each staged time is a jump: {jumps:?}"
    );
    assert!(
        jumps.windows(2).all(|w| w[0] == -w[1]),
        "back and forth: {jumps:?}"
    );
    let calm = (FIRST_PK..).find(|&pk| !sim.spikes(pk)).unwrap();
    assert!(sim.spike_times(calm, 0, 3_600_000).is_empty());
    assert!((0..60).all(|m| sim.spiked(calm, m * 60_000) == 0));
}
