use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

use super::*;

#[test]
fn a_delay_goes_through_the_longest_delay_queue_that_fits() {
    let t = Topology::new("p");
    let via = |ms| {
        t.delay_queue_within(Duration::from_millis(ms))
            .map(|d| d.name.as_str())
    };
    assert_eq!(via(0), None, "no wait: straight to due");
    assert_eq!(via(249), None, "under the shortest: held by the poller");
    assert_eq!(via(250), Some("p.schedule.delay.250ms"));
    assert_eq!(via(999), Some("p.schedule.delay.500ms"));
    assert_eq!(via(59_000), Some("p.schedule.delay.32s"));
    assert_eq!(via(10_000_000), Some("p.schedule.delay.4096s"));
    // Each queue's TTL is in its name, and they double.
    assert_eq!(t.delays.len(), 15);
    for pair in t.delays.windows(2) {
        assert_eq!(pair[1].ttl, pair[0].ttl * 2);
    }
    assert!(t.all().contains(&"p.schedule.delay.1s"));
    // Hop by hop, what is left falls under the shortest delay, one hop per binary digit.
    let mut left = Duration::from_millis(59_000);
    let mut hops = 0;
    while let Some(d) = t.delay_queue_within(left) {
        left -= d.ttl;
        hops += 1;
    }
    assert!(left < SHORTEST_DELAY);
    assert_eq!(hops, 5, "59 s = 32 + 16 + 8 + 2 + 1");
}

#[test]
fn a_refused_delay_queue_leaves_the_shorter_ones() {
    let t = Topology::new("p");
    assert_eq!(
        t.queues_within(Duration::from_millis(2_600)),
        [
            "p.schedule.delay.2s",
            "p.schedule.delay.1s",
            "p.schedule.delay.500ms",
            "p.schedule.delay.250ms",
        ]
    );
    assert_eq!(
        t.queues_within(Duration::from_millis(100)),
        ["p.schedule.due"]
    );
}

#[test]
fn a_queue_declared_with_other_arguments_is_known_by_its_reply_code() {
    let refused = |kind, text: &str| {
        lapin::Error::from(lapin::ErrorKind::ProtocolError(AMQPError::new(
            kind,
            ShortString::from(text.to_string()),
        )))
    };
    // The reply code decides, whatever words the broker's version uses.
    let mismatch = refused(
        AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED),
        "PRECONDITION_FAILED - worded otherwise",
    );
    assert!(is_precondition_failed(&mismatch));
    let other = refused(
        AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED),
        "inequivalent arg 'x-queue-type'",
    );
    assert!(!is_precondition_failed(&other));
    assert!(!is_precondition_failed(&lapin::Error::from(
        lapin::ErrorKind::ChannelsLimitReached
    )));
}
