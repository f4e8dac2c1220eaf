//! The reconciler (anti-entropy): finds tracked influencers that fell out of the schedule and
//! puts them back.
//!
//! "Fell out" means: scheduled more than `3 × interval` ago, yet neither a point nor a recorded
//! failure for any slot in the last `3 × interval`. It only looks when the point queue is
//! nearly drained (a sink that is behind would make everyone look lost). Runs under a
//! transaction-scoped advisory lock and stamps `scheduled_at` on whoever it repairs, so two
//! pollers reconciling one after the other repair nobody twice.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{queue::Broker, registry::enter_schedule};

/// Advisory lock key: "reconcile" in ASCII.
const LOCK_KEY: i64 = 0x7265_636f_6e63_696c;

/// Point messages waiting above which the reconciler does not judge (the sink is behind).
const MAX_POINT_BACKLOG: u32 = 1000;

/// One reconciliation: the number of influencers put back into the schedule.
pub async fn reconcile_once(
    pool: &PgPool,
    broker: &Broker,
    interval: Duration,
) -> anyhow::Result<u64> {
    let backlog = broker.ready_count(&broker.topology.points).await?;
    if backlog > MAX_POINT_BACKLOG {
        tracing::info!(backlog, "reconciler waits: the sink is behind");
        return Ok(0);
    }
    let quiet = interval * 3;
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar!(
        r#"select pg_try_advisory_xact_lock($1) as "locked!""#,
        LOCK_KEY
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(0);
    }
    let lost: Vec<i64> = sqlx::query_scalar!(
"update influencers i set scheduled_at = now()
         where i.tracked
           and i.scheduled_at < now() - $1::interval
           and not exists (select 1 from influencer_latest l
                           where l.influencer_id = i.influencer_id and l.slot > now() - $1::interval)
           and not exists (select 1 from fetch_failures f
                           where f.influencer_id = i.influencer_id and f.slot > now() - $1::interval)
         returning i.influencer_id",
sqlx::postgres::types::PgInterval::try_from(quiet).expect("interval fits")
)
    .fetch_all(&mut *tx)
    .await
    .context("cannot look for influencers missing from the schedule")?;
    if !lost.is_empty() {
        enter_schedule(broker, interval, &lost).await?;
    }
    tx.commit().await?;
    if !lost.is_empty() {
        metrics::counter!("reconciler_repairs_total").increment(lost.len() as u64);
        tracing::warn!(
            influencers = lost.len(),
            "reconciler put influencers back into the schedule"
        );
    }
    Ok(lost.len() as u64)
}

/// Reconciles every `every` until `shutdown`. A failure is logged and tried again at the next
/// turn, unless the broker connection is closed (a broker restart): then it ends with an error,
/// so that its supervisor reconnects instead of failing every turn until the process restarts.
pub async fn run(
    pool: PgPool,
    broker: Broker,
    interval: Duration,
    every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        let result = reconcile_once(&pool, &broker, interval).await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!("reconciler_runs_total", "outcome" => outcome).increment(1);
        if let Err(e) = result {
            if !broker.is_open() {
                return Err(e.context("the reconciler's broker connection is closed"));
            }
            tracing::warn!(
                error = format!("{e:#}"),
                "reconciliation failed; trying again later"
            );
        }
    }
}
