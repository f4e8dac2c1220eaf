//! Suspicious classification, one pass a day, with two signals:
//!
//! - [`upstream`]: Mockstagram's own `is_suspicious` (its ratio rule), asked for every tracked
//!   influencer with many questions in flight, since each answer takes about a second;
//! - [`spike`]: this project's detector of sudden follower jumps over the day before the pass.
//!
//! A pass runs both stages at once (one waits on the network, the other on the CPU and the
//! database). Each verdict goes to the `suspicious_classifications` history (with the pass id,
//! the source and the numbers behind it) and to `current_verdicts`, which the API reads.
//!
//! - **One pass at a time**, even with several processes: a session-level Postgres advisory
//!   lock is held for the whole pass; a second process finds it taken and does nothing.
//! - **Resumable**: each stage records its progress in `classification_passes` in the same
//!   transaction as its verdicts. A stopped pass has no `finished_at`; the next run resumes it
//!   and asks only for what is missing. On shutdown no new question starts, the ones in flight
//!   are awaited and stored, so nobody is asked twice.
//! - **Daily**: [`daily`] starts a pass at `CLASSIFY_AT` (UTC) from the long-running process.

pub(crate) mod churn;
pub mod spike;
pub mod upstream;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

use crate::{
    db::SessionLock,
    events::{EventType, NewEvent},
    fetch::MockstagramClient,
};

pub use spike::SpikeRule;

/// Advisory lock key: "classify" in ASCII.
const LOCK_KEY: i64 = 0x636c_6173_7369_6679;

/// How a pass runs.
#[derive(Debug, Clone)]
pub struct PassSettings {
    /// is_suspicious questions in flight at once.
    pub concurrency: usize,
    /// The polling interval, which is the spacing of the points the spike detector reads.
    pub interval: Duration,
    pub spike: SpikeRule,
}

impl PassSettings {
    /// From the command line's settings, for points `interval` apart.
    pub fn new(settings: &crate::config::ClassifySettings, interval: Duration) -> Self {
        Self {
            concurrency: settings.classify_concurrency,
            interval,
            spike: SpikeRule {
                z_threshold: settings.spike_z,
                ..SpikeRule::default()
            },
        }
    }
}

/// Which pass to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassStart {
    /// `classify`: resume the unfinished pass (unless it is more than a day old), else start one.
    Now,
    /// The daily scheduler: the pass of the day that began at `due_since` (today's
    /// CLASSIFY_AT). Nothing to do if it already finished; an unfinished pass that started
    /// earlier is superseded by a new one.
    DueSince(DateTime<Utc>),
}

/// What running a pass came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// Another process holds the pass lock.
    AlreadyRunning,
    /// The pass due since the given time already finished.
    UpToDate,
    /// The pass ran (and, when `finished` is false, was stopped and will resume).
    Ran(PassReport),
}

/// What one run of a pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub pass_id: i64,
    /// is_suspicious questions asked in this run, and those left without a verdict.
    pub asked: u64,
    pub failed: u64,
    /// Influencers without any point yet, so nothing to send upstream.
    pub skipped: u64,
    /// Influencers the spike detector judged in this run, and those it flagged.
    pub judged: u64,
    pub flagged: u64,
    pub finished: bool,
}

impl std::fmt::Display for PassReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pass {}: asked is_suspicious for {} ({} without a verdict, {} without data yet); \
             spike detector judged {} and flagged {}; {}",
            self.pass_id,
            self.asked,
            self.failed,
            self.skipped,
            self.judged,
            self.flagged,
            if self.finished {
                "finished"
            } else {
                "stopped (the next classify resumes it)"
            }
        )
    }
}

/// The pass a run works on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pass {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub mockstagram_done: bool,
    pub spike_done: bool,
    pub spike_cursor: i64,
}

/// Runs (or resumes) one pass while holding the pass lock on a dedicated connection.
pub async fn run_pass(
    pool: &PgPool,
    client: &MockstagramClient,
    settings: &PassSettings,
    start: PassStart,
    shutdown: CancellationToken,
) -> anyhow::Result<PassOutcome> {
    let Some(lock) = SessionLock::try_take(pool, LOCK_KEY).await? else {
        tracing::info!("another classification pass is running; nothing to do");
        return Ok(PassOutcome::AlreadyRunning);
    };
    metrics::gauge!("classification_pass_running").set(1.0);
    let result = run_under_lock(pool, client, settings, start, shutdown).await;
    metrics::gauge!("classification_pass_running").set(0.0);
    lock.release().await;
    result
}

async fn run_under_lock(
    pool: &PgPool,
    client: &MockstagramClient,
    settings: &PassSettings,
    start: PassStart,
    shutdown: CancellationToken,
) -> anyhow::Result<PassOutcome> {
    let Some(pass) = choose_pass(pool, start).await? else {
        return Ok(PassOutcome::UpToDate);
    };
    metrics::gauge!("classification_pass_id").set(pass.id as f64);
    let (questions, scan) = tokio::join!(
        upstream::ask(pool, client, &pass, settings.concurrency, shutdown.clone()),
        spike::scan(
            pool,
            &pass,
            settings.interval,
            &settings.spike,
            shutdown.clone()
        ),
    );
    let questions = questions?;
    let scan = scan?;
    let finished = (pass.mockstagram_done || questions.done) && (pass.spike_done || scan.done);
    if finished {
        sqlx::query!(
            "update classification_passes set finished_at = now() where pass_id = $1",
            pass.id
        )
        .execute(pool)
        .await?;
    }
    let report = PassReport {
        pass_id: pass.id,
        asked: questions.asked,
        failed: questions.failed,
        skipped: questions.skipped,
        judged: scan.judged,
        flagged: scan.flagged,
        finished,
    };
    tracing::info!(?report, "classification pass ended");
    Ok(PassOutcome::Ran(report))
}

/// Picks the pass to work on (under the lock, so two processes cannot both start one).
async fn choose_pass(pool: &PgPool, start: PassStart) -> anyhow::Result<Option<Pass>> {
    struct Latest {
        pass_id: i64,
        started_at: DateTime<Utc>,
        finished_at: Option<DateTime<Utc>>,
        mockstagram_done: bool,
        spike_done: bool,
        spike_cursor: i64,
    }
    let latest = sqlx::query_as!(
        Latest,
        r#"select pass_id, started_at, finished_at,
                mockstagram_finished_at is not null as "mockstagram_done!",
                spike_finished_at is not null as "spike_done!", spike_cursor
         from classification_passes order by pass_id desc limit 1"#,
    )
    .fetch_optional(pool)
    .await?;
    let fresh_since = match start {
        PassStart::Now => Utc::now() - chrono::Duration::days(1),
        PassStart::DueSince(due) => due,
    };
    if let Some(Latest {
        pass_id: id,
        started_at,
        finished_at,
        mockstagram_done,
        spike_done,
        spike_cursor,
    }) = latest
    {
        let current = started_at >= fresh_since;
        match (finished_at, current) {
            (Some(_), true) if matches!(start, PassStart::DueSince(_)) => return Ok(None),
            (None, true) => {
                tracing::info!(pass_id = id, "resuming an unfinished classification pass");
                return Ok(Some(Pass {
                    id,
                    started_at,
                    mockstagram_done,
                    spike_done,
                    spike_cursor,
                }));
            }
            _ => {}
        }
    }
    let mut tx = pool.begin().await?;
    let created = sqlx::query!(
        "insert into classification_passes default values returning pass_id, started_at",
    )
    .fetch_one(&mut *tx)
    .await?;
    let (id, started_at) = (created.pass_id, created.started_at);
    let superseded = sqlx::query!(
        "update classification_passes set superseded_by = $1, finished_at = now()
         where finished_at is null and pass_id < $1",
        id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if superseded > 0 {
        tracing::warn!(
            pass_id = id,
            superseded,
            "an older unfinished pass was superseded by today's"
        );
    }
    Ok(Some(Pass {
        id,
        started_at,
        mockstagram_done: false,
        spike_done: false,
        spike_cursor: 0,
    }))
}

/// One verdict to store.
pub struct VerdictRow {
    pub pk: i64,
    pub suspicious: bool,
    /// The counts the verdict was based on.
    pub follower_count: Option<i32>,
    pub following_count: Option<i32>,
    /// The numbers behind it, as JSON.
    pub detail: String,
}

/// Stores verdicts of one source in the history and as the current verdicts, inside `tx`
/// (the caller records its progress in the same transaction). A verdict that differs from
/// the source's previous one for that influencer, or a first verdict of suspicious, is a
/// `verdict` event, logged in the same transaction.
pub async fn write_verdicts(
    tx: &mut Transaction<'_, Postgres>,
    pass_id: i64,
    source: &str,
    rows: &[VerdictRow],
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.pk).collect();
    let verdicts: Vec<bool> = rows.iter().map(|r| r.suspicious).collect();
    let followers: Vec<Option<i32>> = rows.iter().map(|r| r.follower_count).collect();
    let following: Vec<Option<i32>> = rows.iter().map(|r| r.following_count).collect();
    let details: Vec<&str> = rows.iter().map(|r| r.detail.as_str()).collect();
    let stored = sqlx::query_as!(
        Stored,
        r#"with v as (
             select u.id, u.suspicious, u.followers, u.following, u.detail::jsonb as detail
             from unnest($3::bigint[], $4::bool[], $5::int[], $6::int[], $7::text[])
                  as u(id, suspicious, followers, following, detail)
         ), history as (
             insert into suspicious_classifications
                 (influencer_id, decided_at, pass_id, source, suspicious, follower_count,
                  following_count, detail)
             select id, now(), $1, $2, suspicious, followers, following, detail from v
         ), previous as (
             select c.influencer_id, c.suspicious from current_verdicts c
             where c.source = $2 and c.influencer_id = any($3)
         )
         insert into current_verdicts (influencer_id, source, suspicious, decided_at, detail)
         select id, $2, suspicious, now(), detail || jsonb_build_object('pass_id', $1::bigint)
         from v
         on conflict (influencer_id, source) do update set
             suspicious = excluded.suspicious, decided_at = excluded.decided_at,
             detail = excluded.detail
         returning influencer_id, suspicious, detail,
                   (select p.suspicious from previous p
                    where p.influencer_id = current_verdicts.influencer_id) as "previous?""#,
        pass_id,
        source,
        &ids,
        &verdicts,
        // (unknown counts are nulls in the arrays; the details are JSON text)
        &followers as &[Option<i32>],
        &following as &[Option<i32>],
        &details as &[&str],
    )
    .fetch_all(&mut **tx)
    .await?;
    let changed = verdict_events(source, stored);
    crate::events::record_in(tx, &changed).await?;
    metrics::counter!("classifications_total", "source" => source.to_owned())
        .increment(rows.len() as u64);
    Ok(())
}

/// The events of verdicts just stored: `verdict` for each that changed (or is a first
/// suspicious one), and `following_churn` with its evidence for a churn verdict that turned
/// suspicious.
fn verdict_events(source: &str, stored: Vec<Stored>) -> Vec<NewEvent> {
    let mut changed: Vec<NewEvent> = Vec::new();
    for s in stored {
        let differs = match s.previous {
            Some(previous) => previous != s.suspicious,
            None => s.suspicious,
        };
        if !differs {
            continue;
        }
        // The seesaw found: its own event, with the legs as evidence.
        if source == churn::SOURCE && s.suspicious {
            changed.push(NewEvent {
                kind: EventType::FollowingChurn,
                influencer_id: s.influencer_id,
                slot_ms: None,
                data: s.detail.clone().unwrap_or_default(),
            });
        }
        changed.push(NewEvent {
            kind: EventType::Verdict,
            influencer_id: s.influencer_id,
            slot_ms: None,
            data: serde_json::json!({
                "source": source,
                "suspicious": s.suspicious,
                "previous": s.previous,
                "detail": s.detail,
            }),
        });
    }
    changed
}

/// A verdict as stored, with the source's previous one for that influencer.
struct Stored {
    influencer_id: i64,
    suspicious: bool,
    detail: Option<serde_json::Value>,
    previous: Option<bool>,
}

/// A pass's progress, as `classify --status` prints it.
struct PassRow {
    pass_id: i64,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    influencers: i64,
    classified: i64,
    skipped: i64,
    spike_judged: i64,
    spike_flagged: i64,
    spike_done: bool,
    mockstagram_done: bool,
    superseded_by: Option<i64>,
}

/// The state of the latest pass, for `classify --status`.
pub async fn status(pool: &PgPool) -> anyhow::Result<Option<String>> {
    let row = sqlx::query_as!(
        PassRow,
        r#"select pass_id, started_at, finished_at, influencers, classified, skipped,
                spike_judged, spike_flagged, spike_finished_at is not null as "spike_done!",
                mockstagram_finished_at is not null as "mockstagram_done!", superseded_by
             from classification_passes order by pass_id desc limit 1"#,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |PassRow {
             pass_id,
             started_at: started,
             finished_at: finished,
             influencers,
             classified,
             skipped,
             spike_judged: judged,
             spike_flagged: flagged,
             spike_done,
             mockstagram_done: upstream_done,
             superseded_by,
         }| {
            let state = match (finished, superseded_by) {
                (Some(_), Some(newer)) => format!("superseded by pass {newer}"),
                (Some(at), None) => format!("finished at {at}"),
                (None, _) => "unfinished (the next `classify` resumes it)".into(),
            };
            let stage = |done: bool| if done { "done" } else { "in progress" };
            format!(
                "pass {pass_id}, started {started}: {state}\n  \
                 mockstagram is_suspicious ({}): {classified} of {influencers} classified, \
                 {skipped} without data yet\n  \
                 follower-spike detector ({}): {judged} judged, {flagged} flagged",
                stage(upstream_done),
                stage(spike_done),
            )
        },
    ))
}
