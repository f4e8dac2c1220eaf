//! The daily pass: the long-running process (`run`, or `classify --daily` on its own) starts
//! a classification pass every day at `CLASSIFY_AT` (UTC).
//!
//! - A process that starts after today's `CLASSIFY_AT` and finds no pass since then runs one
//!   (after giving the pipeline time to store everyone's first point), so a restart or a late
//!   deployment never skips a day.
//! - With several processes, the pass lock lets one run it; the others see it running and
//!   look again a minute later (and take over if its process dies).
//! - An unfinished pass (stopped, or with influencers left without an answer) is resumed a
//!   minute later; at the next `CLASSIFY_AT` a new pass supersedes it.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    classify::{PassOutcome, PassSettings, PassStart, run_pass},
    fetch::MockstagramClient,
};

/// How soon to look again when the pass could not finish (another process runs it, an
/// error, influencers left without an answer).
const RETRY: Duration = Duration::from_secs(60);

/// The latest `at` (UTC time of day) at or before `now`: the start of the current "day".
pub(crate) fn due_since(now: DateTime<Utc>, at: NaiveTime) -> DateTime<Utc> {
    let today = now.date_naive().and_time(at).and_utc();
    if today <= now {
        today
    } else {
        today - TimeDelta::days(1)
    }
}

/// The next `at` after `now`.
pub(crate) fn next_due(now: DateTime<Utc>, at: NaiveTime) -> DateTime<Utc> {
    due_since(now, at) + TimeDelta::days(1)
}

/// Runs the daily pass until `shutdown`. The first look is `first_look` after start.
pub async fn run(
    pool: PgPool,
    client: MockstagramClient,
    settings: PassSettings,
    at: NaiveTime,
    first_look: Duration,
    shutdown: CancellationToken,
) {
    tracing::info!(classify_at = %at, next = %next_due(Utc::now(), at), "daily classification scheduled");
    let mut wait = first_look;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let now = Utc::now();
        let due = due_since(now, at);
        let outcome = run_pass(
            &pool,
            &client,
            &settings,
            PassStart::DueSince(due),
            shutdown.clone(),
        )
        .await;
        if shutdown.is_cancelled() {
            return;
        }
        let until_next = (next_due(Utc::now(), at) - Utc::now())
            .to_std()
            .unwrap_or(RETRY);
        metrics::gauge!("classification_next_pass_timestamp_seconds")
            .set(next_due(Utc::now(), at).timestamp() as f64);
        wait = match outcome {
            Ok(PassOutcome::UpToDate) => until_next,
            Ok(PassOutcome::Ran(report)) if report.finished => {
                tracing::info!(?report, "daily classification pass finished");
                until_next
            }
            Ok(PassOutcome::Ran(report)) => {
                tracing::warn!(
                    ?report,
                    "daily classification pass unfinished; resuming soon"
                );
                RETRY
            }
            Ok(PassOutcome::AlreadyRunning) => RETRY,
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "daily classification pass failed"
                );
                RETRY
            }
        }
        .min(until_next.max(Duration::from_secs(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_current_day_starts_at_the_latest_classify_at() {
        let midnight = at(0, 0);
        assert_eq!(
            due_since(utc("2026-11-22T10:00:00Z"), midnight),
            utc("2026-11-22T00:00:00Z")
        );
        assert_eq!(
            due_since(utc("2026-11-22T00:00:00Z"), midnight),
            utc("2026-11-22T00:00:00Z"),
            "exactly at CLASSIFY_AT the new day has begun"
        );
        assert_eq!(
            due_since(utc("2026-11-22T02:59:59Z"), at(3, 0)),
            utc("2026-11-21T03:00:00Z"),
            "before today's time, yesterday's pass is the current one"
        );
        assert_eq!(
            next_due(utc("2026-11-22T02:59:59Z"), at(3, 0)),
            utc("2026-11-22T03:00:00Z")
        );
        assert_eq!(
            next_due(utc("2026-12-31T23:30:00Z"), at(23, 15)),
            utc("2027-01-01T23:15:00Z")
        );
    }
}
