use rand::{Rng, SeedableRng, rngs::SmallRng};
use rand_distr::StandardNormal;

use super::*;

/// A day of minutes from epoch 0.
fn minutes(n: usize) -> Vec<i64> {
    (0..n as i64).map(|m| m * 60).collect()
}

/// The simulator's following walk: += 100·N(0,1) a minute, floor 100.
fn walk(seed: u64, n: usize) -> Vec<i32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut value = 1_000.0f64;
    (0..n)
        .map(|_| {
            let step: f64 = rng.sample(StandardNormal);
            value = (value + 100.0 * step).round().max(100.0);
            value as i32
        })
        .collect()
}

#[test]
fn too_few_points_give_no_verdict() {
    assert_eq!(judge(&minutes(30), &walk(1, 30), 60), None);
}

#[test]
fn the_simulators_walk_is_not_churn() {
    let mut flagged = 0;
    let mut most = 0;
    for seed in 0..2_000 {
        let finding = judge(&minutes(1440), &walk(seed, 1440), 60).unwrap();
        flagged += usize::from(finding.suspicious);
        most = most.max(finding.legs);
        assert!(finding.threshold > 5_000.0, "{finding:?}");
    }
    assert_eq!(flagged, 0, "at most {most} legs in a day of the walk");
}

#[test]
fn a_seesaw_of_ten_thousand_every_three_hours_is_churn_with_its_legs() {
    let n = 1440;
    let mut following = walk(7, n);
    for (i, value) in following.iter_mut().enumerate() {
        // Up 10,000 for three hours, back down for three: eight legs in the day.
        if (i / 180) % 2 == 1 {
            *value += 10_000;
        }
    }
    let finding = judge(&minutes(n), &following, 60).unwrap();
    assert!(finding.suspicious, "{finding:?}");
    assert!((7..=8).contains(&finding.legs), "{finding:?}");
    let first = finding.evidence[0];
    assert!(first.to - first.from > 8_000, "{first:?}");
    // A leg runs from turning point to turning point: the jump at 03:00 is inside the first.
    assert!(
        first.from_time < 180 * 60 && first.to_time >= 180 * 60,
        "{first:?}"
    );
    let second = finding.evidence[1];
    assert!(second.from - second.to > 8_000, "then a fall: {second:?}");
}

#[test]
fn one_large_follow_spree_is_not_churn() {
    let n = 1440;
    let mut following = walk(9, n);
    for value in following.iter_mut().skip(600) {
        *value += 20_000;
    }
    let finding = judge(&minutes(n), &following, 60).unwrap();
    assert!(!finding.suspicious && finding.legs <= 2, "{finding:?}");
}

/// Checked against staged truth: a day of the simulator's answers, a minute apart, for 3,000
/// influencers of which about 10% stage the seesaw (`SIMULATOR_CHURN_SHARE`): every churner is
/// found, and none of the others.
#[cfg(feature = "tools")]
#[test]
fn the_simulators_staged_churners_are_found_and_no_one_else() {
    use crate::{config::SimulatorSettings, mockstagram::FIRST_PK, simulator::Simulator};
    let population = 3_000;
    let sim = Simulator::new(&SimulatorSettings {
        churn_share: 0.1,
        spike_share: 0.0,
        spike_every: std::time::Duration::from_secs(3 * 3600),
        ..crate::testing::simulator_settings(population, 11)
    });
    let n = 1440;
    let (mut found, mut missed, mut false_alarms, mut churners) = (0, 0, 0, 0);
    for pk in FIRST_PK..FIRST_PK + population as i64 {
        let following: Vec<i32> = (0..n as i64)
            .map(|m| sim.step_at(pk, m * 60_000).unwrap().1 as i32)
            .collect();
        let finding = judge(&minutes(n), &following, 60).unwrap();
        match (sim.churns(pk), finding.suspicious) {
            (true, true) => found += 1,
            (true, false) => missed += 1,
            (false, true) => false_alarms += 1,
            (false, false) => {}
        }
        churners += usize::from(sim.churns(pk));
    }
    println!("staged churners found: {found} of {churners}; false alarms: {false_alarms}");
    assert!(churners > 200, "{churners}");
    assert_eq!(
        (missed, false_alarms),
        (0, 0),
        "found {found} of {churners}"
    );
}
