use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use super::*;

#[test]
fn a_failing_role_is_retried_sooner_after_it_had_been_working() {
    let quick = Duration::from_millis(50);
    let mut failures = 0;
    let mut pauses = Vec::new();
    for _ in 0..6 {
        failures = failures_in_a_row(failures, quick);
        pauses.push(RESTART_BACKOFF.wait(failures).as_millis());
    }
    assert_eq!(pauses, [250, 500, 1000, 2000, 2000, 2000]);
    // After a long outage the pause is at its maximum; a role that then ran a while and
    // failed again starts from the first pause, not from the outage's.
    let again = failures_in_a_row(failures, RAN_A_WHILE);
    assert_eq!(RESTART_BACKOFF.wait(again), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn a_role_that_panics_is_reported_and_started_again() {
    let shutdown = CancellationToken::new();
    let mut roles = Roles::new(shutdown.clone());
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = attempts.clone();
    roles.spawn("flaky", Restart::OnFailure, move || {
        let (counter, shutdown) = (counter.clone(), shutdown.clone());
        Box::pin(async move {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("first attempt breaks");
            }
            shutdown.cancelled().await;
            Ok(())
        })
    });
    let health = roles.health();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "started again after its panic"
    );
    assert_eq!(health.state("flaky"), RoleState::Running);
    assert_eq!(health.restarts("flaky"), 1);
    roles.shutdown().cancel();
    roles.wait().await.expect("a clean stop after the restart");
    assert_eq!(health.state("flaky"), RoleState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_role_that_always_panics_fails_the_process_and_stops_the_others() {
    let shutdown = CancellationToken::new();
    let mut roles = Roles::new(shutdown.clone());
    roles.spawn("broken", Restart::OnFailure, || {
        Box::pin(async { panic!("cannot start") })
    });
    let other = shutdown.clone();
    roles.spawn("steady", Restart::OnFailure, move || {
        let other = other.clone();
        Box::pin(async move {
            other.cancelled().await;
            Ok(())
        })
    });
    let health = roles.health();
    let error = roles.wait().await.expect_err("the process must fail");
    let message = format!("{error:#}");
    assert!(message.contains("the broken role failed"), "{message}");
    assert!(message.contains("cannot start"), "{message}");
    assert!(shutdown.is_cancelled(), "the other roles were told to stop");
    assert_eq!(health.state("steady"), RoleState::Stopped);
    assert!(!health.is_alive());
    assert!(matches!(health.state("broken"), RoleState::Failed { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_role_that_must_not_restart_fails_on_its_first_error() {
    let mut roles = Roles::new(CancellationToken::new());
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = attempts.clone();
    roles.spawn("server", Restart::Never, move || {
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { anyhow::bail!("listener closed") })
    });
    let error = roles.wait().await.expect_err("fails");
    assert!(format!("{error:#}").contains("listener closed"));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_misconfiguration_ends_a_role_that_restarts_on_other_errors() {
    let mut roles = Roles::new(CancellationToken::new());
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = attempts.clone();
    roles.spawn("sink", Restart::OnFailure, move || {
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Err(
                anyhow::Error::new(Misconfigured("QUEUE_TYPE=quorum".into()))
                    .context("cannot start"),
            )
        })
    });
    let error = roles.wait().await.expect_err("fails");
    assert!(
        format!("{error:#}").contains("QUEUE_TYPE=quorum"),
        "{error:#}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_role_that_ends_by_itself_before_shutdown_is_a_failure() {
    let mut roles = Roles::new(CancellationToken::new());
    roles.spawn("quitter", Restart::OnFailure, || Box::pin(async { Ok(()) }));
    let error = roles.wait().await.expect_err("fails");
    assert!(
        format!("{error:#}").contains("ended before shutdown"),
        "{error:#}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_role_failing_with_errors_is_restarted_until_shutdown() {
    let shutdown = CancellationToken::new();
    let mut roles = Roles::new(shutdown.clone());
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = attempts.clone();
    roles.spawn("broker-bound", Restart::OnFailure, move || {
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { anyhow::bail!("connection refused") })
    });
    let health = roles.health();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        attempts.load(Ordering::SeqCst) > 10,
        "errors never give up (a broker outage)"
    );
    assert!(matches!(
        health.state("broker-bound"),
        RoleState::Restarting { .. }
    ));
    assert!(health.is_alive(), "restarting is not failing");
    shutdown.cancel();
    roles.wait().await.expect("stops cleanly");
}
