//! Suspicious classification through Mockstagram's `is_suspicious`, one pass at a time.
//!
//! Each answer takes about a second upstream, so a pass keeps many requests in flight
//! (`CLASSIFY_CONCURRENCY`), under the same rate ceiling and retry policy as the fetcher.
//!
//! - **One pass at a time**, even with several processes: a session-level Postgres advisory
//!   lock is held for the whole pass; a second process finds it taken and does nothing.
//! - **Resumable**: verdicts are written in small batches with the pass id; a pass stopped
//!   half-way has no `finished_at`, and the next run resumes it, asking only for influencers
//!   without a verdict in that pass. On shutdown no new request is started, the ones in flight
//!   are awaited and their answers stored, so nobody is asked twice.
//! - Each verdict goes into the `suspicious_classifications` history and `current_verdicts`.

use std::time::Duration;

use anyhow::Context;
use futures_util::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{fetch::MockstagramClient, mockstagram::SuspiciousRequest};

/// Advisory lock key: "classify" in ASCII.
const LOCK_KEY: i64 = 0x636c_6173_7369_6679;

/// Verdicts are written at least this often (and every 1,000).
const WRITE_EVERY: Duration = Duration::from_secs(1);
const WRITE_BATCH: usize = 1000;

/// How long one influencer's question may be retried.
const QUESTION_DEADLINE: Duration = Duration::from_secs(60);

/// What running a pass came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// Another process holds the pass lock.
    AlreadyRunning,
    /// The pass ran to its end (or, when `finished` is false, was stopped and will resume).
    Ran {
        pass_id: i64,
        asked: u64,
        failed: u64,
        finished: bool,
    },
}

struct Candidate {
    pk: i64,
    username: String,
    follower_count: i32,
    following_count: i32,
}

struct Answer {
    pk: i64,
    follower_count: i32,
    following_count: i32,
    suspicious: bool,
}

/// Runs (or resumes) one pass. `lock_connection` is a URL-derived dedicated connection that
/// holds the advisory lock for the pass's duration.
pub async fn run_pass(
    pool: &PgPool,
    client: &MockstagramClient,
    concurrency: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<PassOutcome> {
    let mut lock: PgConnection = pool.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut lock)
        .await?;
    if !locked {
        tracing::info!("another classification pass is running; nothing to do");
        let _ = lock.close().await;
        return Ok(PassOutcome::AlreadyRunning);
    }
    let result = classify_under_lock(pool, client, concurrency, shutdown).await;
    // Closing the session releases the lock, whatever happened.
    let _ = lock.close().await;
    result
}

async fn classify_under_lock(
    pool: &PgPool,
    client: &MockstagramClient,
    concurrency: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<PassOutcome> {
    let resumed: Option<i64> = sqlx::query_scalar(
        "select pass_id from classification_passes where finished_at is null order by pass_id desc limit 1",
    )
    .fetch_optional(pool)
    .await?;
    let pass_id = match resumed {
        Some(pass_id) => {
            tracing::info!(pass_id, "resuming an unfinished classification pass");
            pass_id
        }
        None => {
            sqlx::query_scalar("insert into classification_passes default values returning pass_id")
                .fetch_one(pool)
                .await?
        }
    };
    let pending: Vec<Candidate> = sqlx::query_as::<_, (i64, String, i32, i32)>(
        "select i.influencer_id, i.username, l.follower_count, l.following_count
         from influencers i join influencer_latest l using (influencer_id)
         where i.tracked
           and not exists (select 1 from suspicious_classifications c
                           where c.pass_id = $1 and c.source = 'mockstagram'
                             and c.influencer_id = i.influencer_id)
         order by i.influencer_id",
    )
    .bind(pass_id)
    .fetch_all(pool)
    .await
    .context("cannot list the influencers to classify")?
    .into_iter()
    .map(
        |(pk, username, follower_count, following_count)| Candidate {
            pk,
            username,
            follower_count,
            following_count,
        },
    )
    .collect();
    sqlx::query(
        "update classification_passes p set
             influencers = p.classified + $2,
             skipped = (select count(*) from influencers i where i.tracked
                        and not exists (select 1 from influencer_latest l where l.influencer_id = i.influencer_id))
         where pass_id = $1",
    )
    .bind(pass_id)
    .bind(pending.len() as i64)
    .execute(pool)
    .await?;

    let progress = ProgressBar::new(pending.len() as u64).with_style(
        ProgressStyle::with_template("classifying {wide_bar} {pos}/{len} ({per_sec}, {eta})")
            .expect("static template"),
    );
    let total = pending.len();
    // Stop starting new questions on shutdown; the ones in flight still finish.
    let questions = stream::iter(pending)
        .take_until(shutdown.clone().cancelled_owned())
        .map(|candidate| async move {
            let request = SuspiciousRequest {
                pk: candidate.pk,
                username: candidate.username,
                follower_count: candidate.follower_count as i64,
                following_count: candidate.following_count as i64,
            };
            let verdict = client
                .is_suspicious(&request, Instant::now() + QUESTION_DEADLINE)
                .await;
            (
                candidate.pk,
                candidate.follower_count,
                candidate.following_count,
                verdict,
            )
        })
        .buffer_unordered(concurrency.max(1));
    tokio::pin!(questions);

    let (mut asked, mut failed) = (0u64, 0u64);
    let mut batch: Vec<Answer> = Vec::with_capacity(WRITE_BATCH);
    let mut last_write = Instant::now();
    while let Some((pk, follower_count, following_count, verdict)) = questions.next().await {
        asked += 1;
        progress.inc(1);
        match verdict {
            Ok(suspicious) => batch.push(Answer {
                pk,
                follower_count,
                following_count,
                suspicious,
            }),
            Err(reason) => {
                failed += 1;
                metrics::counter!("classifications_failed_total").increment(1);
                tracing::warn!(pk, %reason, "no verdict for this influencer in this pass");
            }
        }
        if batch.len() >= WRITE_BATCH || last_write.elapsed() >= WRITE_EVERY {
            write_verdicts(pool, pass_id, &batch).await?;
            batch.clear();
            last_write = Instant::now();
        }
    }
    write_verdicts(pool, pass_id, &batch).await?;
    progress.finish_and_clear();
    let finished = !shutdown.is_cancelled() && asked as usize == total && failed == 0;
    if finished {
        sqlx::query("update classification_passes set finished_at = now() where pass_id = $1")
            .bind(pass_id)
            .execute(pool)
            .await?;
    }
    tracing::info!(
        pass_id,
        asked,
        failed,
        finished,
        "classification pass ended"
    );
    Ok(PassOutcome::Ran {
        pass_id,
        asked,
        failed,
        finished,
    })
}

/// Stores verdicts (history and current) and the pass's progress, in one transaction.
async fn write_verdicts(pool: &PgPool, pass_id: i64, answers: &[Answer]) -> anyhow::Result<()> {
    if answers.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = answers.iter().map(|a| a.pk).collect();
    let verdicts: Vec<bool> = answers.iter().map(|a| a.suspicious).collect();
    let followers: Vec<i32> = answers.iter().map(|a| a.follower_count).collect();
    let following: Vec<i32> = answers.iter().map(|a| a.following_count).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into suspicious_classifications
             (influencer_id, decided_at, pass_id, source, suspicious, follower_count, following_count)
         select u.id, now(), $1, 'mockstagram', u.suspicious, u.followers, u.following
         from unnest($2::bigint[], $3::bool[], $4::int[], $5::int[]) as u(id, suspicious, followers, following)",
    )
    .bind(pass_id)
    .bind(&ids)
    .bind(&verdicts)
    .bind(&followers)
    .bind(&following)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into current_verdicts (influencer_id, source, suspicious, decided_at, detail)
         select u.id, 'mockstagram', u.suspicious, now(),
                jsonb_build_object('pass_id', $1::bigint, 'follower_count', u.followers, 'following_count', u.following)
         from unnest($2::bigint[], $3::bool[], $4::int[], $5::int[]) as u(id, suspicious, followers, following)
         on conflict (influencer_id, source) do update set
             suspicious = excluded.suspicious, decided_at = excluded.decided_at, detail = excluded.detail",
    )
    .bind(pass_id)
    .bind(&ids)
    .bind(&verdicts)
    .bind(&followers)
    .bind(&following)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update classification_passes set classified = classified + $2 where pass_id = $1")
        .bind(pass_id)
        .bind(answers.len() as i64)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::counter!("classifications_total").increment(answers.len() as u64);
    Ok(())
}

/// pass_id, started_at, finished_at, influencers, classified, skipped.
type PassRow = (
    i64,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
    i64,
    i64,
    i64,
);

/// The state of the latest pass, for `classify --status`.
pub async fn status(pool: &PgPool) -> anyhow::Result<Option<String>> {
    let row: Option<PassRow> = sqlx::query_as(
        "select pass_id, started_at, finished_at, influencers, classified, skipped
             from classification_passes order by pass_id desc limit 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(pass_id, started, finished, influencers, classified, skipped)| {
        let state = match finished {
            Some(at) => format!("finished at {at}"),
            None => "unfinished (the next `classify` resumes it)".into(),
        };
        format!(
            "pass {pass_id}, started {started}: {classified} of {influencers} classified, {skipped} without data yet; {state}"
        )
    }))
}
