use super::*;

const MINUTE: i64 = 60_000;

fn rules() -> Rules {
    Rules { stale_slots: 5 }
}

/// A mark of `(id, followers, following, slot minute)`.
fn mark(rows: &[(i64, i32, i32, i64)]) -> Snapshot {
    let mut s = Snapshot::with_capacity(rows.len());
    for &(id, followers, following, minute) in rows {
        s.push(id, followers, following, minute * MINUTE + 1_234);
    }
    s
}

/// Feeds minute after minute of `followers(minute)` for influencer 1 (following 500 ± 3),
/// each mark taken 30 s after its slot; all that was raised.
fn run(
    detector: &mut Detector,
    minutes: std::ops::Range<i64>,
    followers: impl Fn(i64) -> i32,
) -> Observed {
    let mut all = Observed::default();
    for m in minutes {
        let following = 500 + (m % 3) as i32;
        let observed = detector.observe(
            &mark(&[(1, followers(m), following, m)]),
            m * MINUTE + 30_000,
            false,
        );
        all.events.extend(observed.events);
    }
    all
}

/// Around 200,000, each minute's value drawn anew from ±1,000 (no milestone near).
fn walk(m: i64) -> i32 {
    let drawn = ((m as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 2_001;
    200_000 + drawn as i32 - 1_000
}

#[test]
fn a_milestone_hovered_at_is_one_event_until_the_value_leaves_the_band() {
    let mut detector = Detector::new(rules());
    // Up at 1,000,000; 999,000 and 960,000 stay in the band; 940,000 leaves it; up again.
    let values = [
        990_000, 1_000_500, 999_000, 1_001_000, 960_000, 940_000, 1_000_000,
    ];
    let observed = run(&mut detector, 0..values.len() as i64, |m| {
        values[m as usize]
    });
    let milestones: Vec<(i64, String)> = observed
        .events
        .iter()
        .filter(|e| e.kind == EventType::Milestone)
        .map(|e| {
            (
                e.data["milestone"].as_i64().unwrap(),
                e.data["direction"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        milestones,
        vec![
            (1_000_000, "up".to_string()),
            (1_000_000, "down".to_string()),
            (1_000_000, "up".to_string())
        ]
    );
}

#[test]
fn a_value_that_jumps_over_several_lines_raises_each_in_order() {
    let mut detector = Detector::new(rules());
    let values = [40_000, 120_000, 8_000];
    let observed = run(&mut detector, 0..3, |m| values[m as usize]);
    let lines: Vec<(i64, &str)> = observed
        .events
        .iter()
        .map(|e| {
            (
                e.data["milestone"].as_i64().unwrap(),
                e.data["direction"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (50_000, "up"),
            (100_000, "up"),
            (100_000, "down"),
            (50_000, "down"),
            (10_000, "down")
        ]
    );
}

#[test]
fn an_influencer_without_new_slots_goes_stale_once_and_recovers_once() {
    let mut detector = Detector::new(rules());
    run(&mut detector, 0..5, walk);
    let last = mark(&[(1, walk(4), 500, 4)]);
    let mut events = Vec::new();
    // Marks each minute after, the slot stuck at minute 4: stale once 6 slots have passed.
    for minute in 5..15 {
        let observed = detector.observe(&last, minute * MINUTE + 30_000, false);
        events.extend(observed.events.into_iter().map(|e| (minute, e.kind)));
    }
    assert_eq!(events, vec![(10, EventType::Stale)]);
    let back = detector.observe(
        &mark(&[(1, walk(15), 500, 15)]),
        15 * MINUTE + 30_000,
        false,
    );
    assert_eq!(back.events.len(), 1);
    assert_eq!(back.events[0].kind, EventType::Recovered);
    assert_eq!(back.events[0].data["previous_slot_ms"], 4 * MINUTE + 1_234);
}

#[test]
fn the_stale_rule_follows_the_influencers_own_interval() {
    let mut detector = Detector::new(rules());
    // Slots every 5 minutes: 30 minutes without one is not yet 5 missed slots + the current.
    for slot in [0, 5, 10] {
        detector.observe(
            &mark(&[(1, walk(slot), 500, slot)]),
            slot * MINUTE + 30_000,
            false,
        );
    }
    let stuck = mark(&[(1, walk(10), 500, 10)]);
    assert!(
        detector
            .observe(&stuck, 40 * MINUTE, false)
            .events
            .is_empty()
    );
    let stale = detector.observe(&stuck, 41 * MINUTE, false);
    assert_eq!(stale.events[0].kind, EventType::Stale);
}

#[test]
fn a_quiet_warm_up_learns_without_raising_and_the_log_has_the_last_word() {
    let mut detector = Detector::new(rules());
    for m in 0..3 {
        let observed = detector.observe(
            &mark(&[(1, 40_000 + m as i32 * 10_000, 500, m), (2, 9_000, 10, m)]),
            m * MINUTE,
            true,
        );
        assert!(observed.events.is_empty());
    }
    // The log says influencer 2 was stale and had passed 10,000 (a down event never logged).
    let mut remembered = Remembered::default();
    remembered.stale.insert(2);
    remembered.levels.insert(2, level_after(10_000, true));
    detector.remember(remembered);
    let observed = detector.observe(
        &mark(&[(1, 60_000, 500, 3), (2, 9_000, 10, 3)]),
        3 * MINUTE,
        false,
    );
    let kinds: Vec<(i64, EventType)> = observed
        .events
        .iter()
        .map(|e| (e.influencer_id, e.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![(2, EventType::Milestone), (2, EventType::Recovered)]
    );
    assert_eq!(observed.events[0].data["direction"], "down");
    assert_eq!(detector.ids.len(), 2);
}

#[test]
fn influencers_leave_and_join_with_the_marks() {
    let mut detector = Detector::new(rules());
    detector.observe(&mark(&[(1, 1, 1, 0), (3, 1, 1, 0)]), 0, false);
    // 2 is new at 20,000,000 followers: first sight raises no milestone; 3 is gone.
    let observed = detector.observe(&mark(&[(1, 1, 1, 1), (2, 20_000_000, 1, 1)]), MINUTE, false);
    assert!(observed.events.is_empty());
    assert_eq!(detector.ids, vec![1, 2]);
    assert_eq!(detector.seen[1].level, level_of(20_000_000));
}
