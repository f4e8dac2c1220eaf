//! Periodic jobs: work on the stored data that no single point triggers.
//!
//! - [`average`]: the average followerCount across tracked influencers, once a minute.
//! - [`ranking`]: every tracked influencer's rank by followerCount, once a minute.
//! - [`movers`]: a mark of every tracked influencer's latest value, once a minute, which the
//!   movers of the last hour and day start from.
//! - [`events`]: event detection on that mark, in the process that took it.
//! - [`compaction`]: closed hours and days of raw points into compact segments; work that
//!   fails with an error of its own waits in the [`quarantine`] for a later retry.
//! - [`retention`]: drops what is older than `RETENTION`.
//! - [`daily_classification`]: the suspicious-classification pass, once a day.
//!
//! Each job runs in one process at a time however many run it: the minutely ones under a
//! transaction-scoped advisory lock and only when this minute's result is not stored yet, chunk
//! maintenance under a session advisory lock, the daily pass under its pass lock. So any
//! number of `sink`, `run` or `jobs` processes can carry them.

pub mod average;
pub mod compaction;
pub mod daily_classification;
pub mod events;
pub mod movers;
pub mod quarantine;
pub mod ranking;
pub mod retention;
pub mod spikes;

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::StorageSettings;

/// What asking a single-runner job to run came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome<T> {
    /// This process ran it.
    Done(T),
    /// Another process is running it right now.
    Busy,
    /// Its result for this period is already stored.
    AlreadyDone,
}

/// Takes the job's transaction-scoped advisory lock if no other session holds it; it is
/// released when `tx` ends.
pub(crate) async fn try_lock(
    tx: &mut Transaction<'_, Postgres>,
    key: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"select pg_try_advisory_xact_lock($1) as "locked!""#, key)
        .fetch_one(&mut **tx)
        .await
}

/// Runs the minutely jobs until `shutdown`: at the start of each minute the average and the
/// ranking, then compaction and retention in the background (they may take longer than a
/// minute).
pub(crate) async fn run_minutely(
    pool: PgPool,
    storage: StorageSettings,
    shutdown: CancellationToken,
) {
    let (retention, budget) = (storage.retention, compaction::Budget::of(&storage));
    let events_kept = storage.events.events_retention;
    let mut detection = events::Detection::new(storage.events.clone());
    let mut maintenance: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(until_next_minute()) => {}
            () = shutdown.cancelled() => return,
        }
        let started = Instant::now();
        match average::record_if_due(&pool).await {
            Ok(JobOutcome::Done(stored)) => {
                record_run("average", started);
                if let Some(average) = stored {
                    metrics::gauge!("average_follower_count").set(average.follower_count);
                    tracing::debug!(
                        average = average.follower_count,
                        influencers = average.influencers,
                        "average followerCount stored"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot store the average followerCount"),
        }
        let started = Instant::now();
        match ranking::refresh_if_due(&pool).await {
            Ok(JobOutcome::Done(ranked)) => {
                record_run("ranking", started);
                tracing::debug!(ranked, "ranking refreshed");
                if let Err(e) = detection.on_ranking(&pool).await {
                    tracing::warn!(error = format!("{e:#}"), "cannot log the top N's changes");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot refresh the ranking"),
        }
        mark_and_detect(&pool, &mut detection).await;
        if maintenance.as_ref().is_none_or(|task| task.is_finished()) {
            let pool = pool.clone();
            maintenance = Some(tokio::spawn(async move {
                let started = Instant::now();
                match compaction::run(&pool, budget, &mut |_| {}).await {
                    Ok(Some(_)) => record_run("compaction", started),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "cannot compact closed hours")
                    }
                }
                let started = Instant::now();
                match ranking::rank_closed_days(&pool).await {
                    Ok(JobOutcome::Done(days)) => {
                        record_run("rank_days", started);
                        tracing::debug!(days, "closed days ranked");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot rank closed days"),
                }
                let started = Instant::now();
                match retention::apply(&pool, retention).await {
                    Ok(_) => record_run("retention", started),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot apply retention"),
                }
                if let Err(e) = crate::events::forget_older_than(&pool, events_kept).await {
                    tracing::warn!(error = %e, "cannot drop events past EVENTS_RETENTION");
                }
                if let Err(e) =
                    crate::webhooks::forget_attempts_older_than(&pool, events_kept).await
                {
                    tracing::warn!(error = %e, "cannot drop webhook attempts past EVENTS_RETENTION");
                }
            }));
        }
    }
}

/// Takes this minute's movers mark if it is due, and runs event detection on it.
async fn mark_and_detect(pool: &PgPool, detection: &mut events::Detection) {
    let started = Instant::now();
    match movers::take_if_due(pool).await {
        Ok(JobOutcome::Done(mark)) => {
            record_run("movers", started);
            tracing::debug!(marked = mark.len(), "movers mark taken");
            let started = Instant::now();
            match detection.on_mark(pool, mark, chrono::Utc::now()).await {
                Ok(detected) => {
                    record_run("events", started);
                    tracing::debug!(?detected, "events detected");
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cannot detect this minute's events"
                    )
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot take the movers mark"),
    }
}

/// Records one run of a periodic job that did its work, start to end (`job_run_seconds`):
/// the average, the ranking and retention are a few statements each, so nearly all of their
/// time is the database's; a compaction pass's includes the rests its pace takes.
fn record_run(job: &'static str, started: Instant) {
    metrics::histogram!("job_run_seconds", "job" => job).record(started.elapsed().as_secs_f64());
}

/// Half a second past the start of the next minute (so `now()` in SQL is in that minute).
fn until_next_minute() -> Duration {
    let into_minute = chrono::Utc::now().timestamp_millis().rem_euclid(60_000) as u64;
    Duration::from_millis(60_000 - into_minute + 500)
}
