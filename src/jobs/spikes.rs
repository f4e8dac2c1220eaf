//! Spikes, decided as the data arrives: the `spikes` role.
//!
//! The sink's upsert of each influencer's newest value runs the cheap screen (migration 0021:
//! a change over five times the influencer's mean absolute change) and notes each candidate
//! in `spike_candidates` in the transaction that stores the point. This role takes the
//! candidates oldest first (`for update skip locked`: any number of processes may run it),
//! reads each one's stored last two hours, decides with the robust rule of the daily detector
//! (median and MAD of its changes, `EVENT_SPIKE_Z`), and logs the spikes in the transaction
//! that deletes the candidates: a candidate is decided once, and a process that stops between
//! the two leaves it for the next.
//!
//! A candidate still undecided [`MAX_AGE`] after it was noted (a flood of them, a long pause)
//! is dropped, counted in `event_candidates_skipped_total` and logged: a spike told that late
//! is old news, and the daily pass still judges the day.

use std::time::Duration;

use anyhow::Context;
use futures_util::{StreamExt, stream};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    classify::spike::{SpikeRule, judge_last},
    events::{self, EventType, NewEvent},
    series,
};

/// How often the role looks for candidates when there were none.
const POLL: Duration = Duration::from_millis(250);

/// Candidates taken at once.
const BATCH: i64 = 64;

/// Candidates decided at once (each one read of two hours of one influencer).
const DECIDING: usize = 8;

/// Candidates older than this are dropped, counted.
pub const MAX_AGE: Duration = Duration::from_secs(120);

/// The window a spike candidate is decided on.
const WINDOW_MS: i64 = 2 * 3600 * 1000;

/// The changes a candidate's window must hold for the rule to judge it.
const MIN_CHANGES: usize = 30;

/// Which count a spike is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Followers,
    Following,
}

/// A change the screen let through.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub influencer_id: i64,
    pub metric: Metric,
    /// The slot of the new value, epoch ms.
    pub slot_ms: i64,
}

/// What one look at the candidates did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    pub candidates: usize,
    pub spikes: usize,
    pub skipped: usize,
}

/// Takes candidates and decides them until `shutdown`.
pub async fn run(pool: PgPool, z: f64, shutdown: CancellationToken) -> anyhow::Result<()> {
    events::register_metrics();
    while !shutdown.is_cancelled() {
        let decided = decide_pending(&pool, z).await?;
        if decided.candidates + decided.skipped < BATCH as usize {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
    Ok(())
}

/// Takes up to [`BATCH`] of the oldest candidates, decides them and logs the spikes, in one
/// transaction.
pub async fn decide_pending(pool: &PgPool, z: f64) -> anyhow::Result<Decided> {
    let mut tx = pool.begin().await?;
    let taken = sqlx::query!(
        r#"delete from spike_candidates c
           using (select influencer_id, slot from spike_candidates
                  order by noted_at limit $1 for update skip locked) t
           where c.influencer_id = t.influencer_id and c.slot = t.slot
           returning c.influencer_id, (extract(epoch from c.slot) * 1000)::bigint as "slot_ms!",
                     c.metrics, (extract(epoch from now() - c.noted_at))::float8 as "age_s!""#,
        BATCH
    )
    .fetch_all(&mut *tx)
    .await
    .context("cannot take spike candidates")?;
    let mut decided = Decided::default();
    let mut candidates = Vec::new();
    for row in &taken {
        if row.age_s > MAX_AGE.as_secs_f64() {
            decided.skipped += 1;
            continue;
        }
        for (bit, metric) in [(1, Metric::Followers), (2, Metric::Following)] {
            if row.metrics & bit != 0 {
                candidates.push(Candidate {
                    influencer_id: row.influencer_id,
                    metric,
                    slot_ms: row.slot_ms,
                });
            }
        }
    }
    if decided.skipped > 0 {
        metrics::counter!("event_candidates_skipped_total").increment(decided.skipped as u64);
        tracing::warn!(
            skipped = decided.skipped,
            max_age_s = MAX_AGE.as_secs(),
            "spike candidates waited too long to be decided and were dropped"
        );
    }
    decided.candidates = candidates.len();
    let spikes = decide(pool, candidates, z).await;
    decided.spikes = spikes.len();
    events::record_in(&mut tx, &spikes).await?;
    tx.commit().await?;
    Ok(decided)
}

/// The candidates that are spikes by the robust rule over their last two hours, as events.
async fn decide(pool: &PgPool, candidates: Vec<Candidate>, z: f64) -> Vec<NewEvent> {
    let rule = SpikeRule {
        z_threshold: z,
        min_changes: MIN_CHANGES,
        min_relative_spread: SpikeRule::default().min_relative_spread,
    };
    stream::iter(candidates)
        .map(|candidate| async move {
            match decide_one(pool, &candidate, &rule).await {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(
                        influencer_id = candidate.influencer_id,
                        error = format!("{e:#}"),
                        "cannot read a spike candidate's last two hours"
                    );
                    None
                }
            }
        })
        .buffer_unordered(DECIDING)
        .filter_map(|event| async move { event })
        .collect()
        .await
}

async fn decide_one(
    pool: &PgPool,
    candidate: &Candidate,
    rule: &SpikeRule,
) -> anyhow::Result<Option<NewEvent>> {
    let end = candidate.slot_ms;
    let points = series::read::points(pool, candidate.influencer_id, end - WINDOW_MS, end).await?;
    let slots: Vec<i64> = points.iter().map(|p| p.slot_ms / 1000).collect();
    let values: Vec<i32> = points
        .iter()
        .map(|p| match candidate.metric {
            Metric::Followers => p.follower_count,
            Metric::Following => p.following_count,
        })
        .collect();
    // The interval: the smallest step between two of its slots.
    let interval = slots
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&d| d > 0)
        .min();
    let Some(finding) = interval.and_then(|i| judge_last(&slots, &values, i, rule)) else {
        return Ok(None);
    };
    if !finding.suspicious || finding.at != end / 1000 {
        return Ok(None);
    }
    Ok(Some(NewEvent {
        kind: EventType::Spike,
        influencer_id: candidate.influencer_id,
        slot_ms: Some(end),
        data: json!({
            "metric": candidate.metric,
            "from": finding.from,
            "to": finding.to,
            "change": i64::from(finding.to) - i64::from(finding.from),
            "z": finding.z,
            "median_change": finding.median_change,
            "spread": finding.spread,
            "changes": finding.changes,
        }),
    }))
}
