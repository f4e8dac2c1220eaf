//! The upstream stage of a pass: Mockstagram's `is_suspicious` for every tracked influencer.
//!
//! Each answer takes about a second, so the stage keeps `concurrency` questions in flight
//! (under the client's rate ceiling and retry policy, the same as the fetcher's) and writes the
//! verdicts in batches, with the pass's progress in the same transaction.

use std::time::Duration;

use anyhow::Context;
use futures_util::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Pass, VerdictRow, write_verdicts};
use crate::{fetch::MockstagramClient, mockstagram::SuspiciousRequest};

pub(crate) const SOURCE: &str = "mockstagram";

/// Verdicts are written at least this often (and every 1,000).
const WRITE_EVERY: Duration = Duration::from_secs(1);
const WRITE_BATCH: usize = 1000;

/// How long one influencer's question may be retried.
const QUESTION_DEADLINE: Duration = Duration::from_secs(60);

/// What the stage did in this run.
#[derive(Debug, Default)]
pub(crate) struct Asked {
    pub asked: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Every influencer with data has its verdict in this pass.
    pub done: bool,
}

struct Candidate {
    pk: i64,
    username: String,
    follower_count: i32,
    following_count: i32,
}

/// Asks about every tracked influencer that has data and no verdict in this pass yet.
pub(crate) async fn ask(
    pool: &PgPool,
    client: &MockstagramClient,
    pass: &Pass,
    concurrency: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<Asked> {
    if pass.mockstagram_done {
        return Ok(Asked {
            done: true,
            ..Asked::default()
        });
    }
    let pending = candidates(pool, pass).await?;
    let (influencers, skipped) = count_pass(pool, pass, pending.len()).await?;
    let total = pending.len();
    let already = influencers - total as i64;
    metrics::gauge!("classification_pass_total", "source" => SOURCE).set(influencers as f64);
    metrics::gauge!("classification_pass_done", "source" => SOURCE).set(already as f64);

    let mut stage = Asked {
        skipped: skipped as u64,
        ..Asked::default()
    };
    ask_all(
        pool,
        client,
        pass,
        pending,
        concurrency,
        &shutdown,
        &mut stage,
    )
    .await?;
    stage.done = !shutdown.is_cancelled() && stage.asked as usize == total && stage.failed == 0;
    if stage.done {
        sqlx::query!(
            "update classification_passes set mockstagram_finished_at = now() where pass_id = $1",
            pass.id
        )
        .execute(pool)
        .await?;
    }
    Ok(stage)
}

/// The tracked influencers with data and no verdict in this pass yet, with their latest
/// counts.
async fn candidates(pool: &PgPool, pass: &Pass) -> anyhow::Result<Vec<Candidate>> {
    let rows = sqlx::query_as!(
        Candidate,
        "select i.influencer_id as pk, i.username, l.follower_count, l.following_count
         from influencers i join influencer_latest l using (influencer_id)
         where i.tracked
           and not exists (select 1 from suspicious_classifications c
                           where c.pass_id = $1 and c.source = 'mockstagram'
                             and c.influencer_id = i.influencer_id)
         order by i.influencer_id",
        pass.id,
    )
    .fetch_all(pool)
    .await
    .context("cannot list the influencers to classify")?;
    Ok(rows)
}

/// Records the pass's size: those classified so far and the `pending`, and those skipped
/// (tracked without data). Returns (influencers, skipped).
async fn count_pass(pool: &PgPool, pass: &Pass, pending: usize) -> sqlx::Result<(i64, i64)> {
    let counted = sqlx::query!(
        "update classification_passes p set
             influencers = p.classified + $2,
             skipped = (select count(*) from influencers i where i.tracked
                        and not exists (select 1 from influencer_latest l where l.influencer_id = i.influencer_id))
         where pass_id = $1
         returning influencers, skipped",
        pass.id,
        pending as i64,
    )
    .fetch_one(pool)
    .await?;
    Ok((counted.influencers, counted.skipped))
}

/// Asks about every candidate, `concurrency` questions at a time, storing verdicts in batches
/// as they come; counts into `stage`. Stops starting new questions on shutdown (the ones in
/// flight still finish).
async fn ask_all(
    pool: &PgPool,
    client: &MockstagramClient,
    pass: &Pass,
    pending: Vec<Candidate>,
    concurrency: usize,
    shutdown: &CancellationToken,
    stage: &mut Asked,
) -> anyhow::Result<()> {
    let total = pending.len();
    let progress = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("classifying {wide_bar} {pos}/{len} ({per_sec}, {eta})")
            .expect("static template"),
    );
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

    let mut batch: Vec<VerdictRow> = Vec::with_capacity(WRITE_BATCH);
    let mut last_write = Instant::now();
    while let Some((pk, follower_count, following_count, verdict)) = questions.next().await {
        stage.asked += 1;
        progress.inc(1);
        match verdict {
            Ok(suspicious) => batch.push(VerdictRow {
                pk,
                suspicious,
                follower_count: Some(follower_count),
                following_count: Some(following_count),
                detail: serde_json::json!({
                    "follower_count": follower_count,
                    "following_count": following_count,
                })
                .to_string(),
            }),
            Err(error) => {
                stage.failed += 1;
                metrics::counter!("classifications_failed_total").increment(1);
                tracing::warn!(pk, %error, "no verdict for this influencer in this pass");
            }
        }
        if batch.len() >= WRITE_BATCH || last_write.elapsed() >= WRITE_EVERY {
            store(pool, pass.id, &batch).await?;
            batch.clear();
            last_write = Instant::now();
        }
    }
    store(pool, pass.id, &batch).await?;
    progress.finish_and_clear();
    Ok(())
}

/// Stores a batch of verdicts and the pass's progress, in one transaction.
async fn store(pool: &PgPool, pass_id: i64, batch: &[VerdictRow]) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    write_verdicts(&mut tx, pass_id, SOURCE, batch).await?;
    sqlx::query!(
        "update classification_passes set classified = classified + $2 where pass_id = $1",
        pass_id,
        batch.len() as i64
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::gauge!("classification_pass_done", "source" => SOURCE).increment(batch.len() as f64);
    Ok(())
}
