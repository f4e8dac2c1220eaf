//! Compaction's quarantine: a closed hour, a day or the late points whose compaction failed
//! with an error that trying again at once does not fix (a segment that cannot be decoded, a
//! value out of range) is set aside, recorded with its error (`compaction_quarantine`,
//! migration 0007), and tried again later, the wait doubling from [`FIRST_RETRY`] up to
//! [`LAST_RETRY`]; the rest of compaction goes on. Errors of the connection or of the server's
//! state (unreachable, shutting down, out of disk, a lock or statement timeout) are not the
//! work's fault: they end the pass, as before, to be tried again next minute.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The wait before the first retry of quarantined work, doubled after each failure.
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(10 * 60);
/// The longest wait between two retries.
pub(crate) const LAST_RETRY: Duration = Duration::from_secs(6 * 3600);

/// Quarantined work as `compact --status` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Quarantined {
    pub work: String,
    pub error: String,
    pub failures: i32,
    pub first_failed_at: DateTime<Utc>,
    pub retry_at: DateTime<Utc>,
}

/// The quarantine as one pass sees it at its start: each work's next retry.
pub(crate) struct Quarantine {
    retry_at: HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
}

impl Quarantine {
    /// Reads the quarantine.
    pub async fn read(pool: &PgPool) -> sqlx::Result<Self> {
        let rows =
            sqlx::query!(r#"select work, retry_at, now() as "now!" from compaction_quarantine"#)
                .fetch_all(pool)
                .await?;
        let now = rows.first().map_or_else(Utc::now, |row| row.now);
        Ok(Self {
            retry_at: rows
                .into_iter()
                .map(|row| (row.work, row.retry_at))
                .collect(),
            now,
        })
    }

    /// Whether `work` waits for its retry (a pass leaves it alone).
    pub fn holds(&self, work: &str) -> bool {
        self.retry_at.get(work).is_some_and(|at| *at > self.now)
    }

    /// `work` failed with `error`: counts the failure and sets its next retry.
    pub async fn set_aside(
        &mut self,
        pool: &PgPool,
        work: &str,
        error: &anyhow::Error,
    ) -> sqlx::Result<()> {
        let error = format!("{error:#}");
        let counted = sqlx::query!(
            "insert into compaction_quarantine
                 (work, error, failures, first_failed_at, failed_at, retry_at)
             values ($1, $2, 1, now(), now(), now() + make_interval(secs => $3))
             on conflict (work) do update set
                 error = excluded.error,
                 failures = compaction_quarantine.failures + 1,
                 failed_at = now(),
                 retry_at = now() + make_interval(secs => least(
                     $3 * power(2, compaction_quarantine.failures), $4))
             returning failures, retry_at",
            work,
            &error,
            FIRST_RETRY.as_secs_f64(),
            LAST_RETRY.as_secs_f64(),
        )
        .fetch_one(pool)
        .await?;
        let (failures, retry_at) = (counted.failures, counted.retry_at);
        self.retry_at.insert(work.to_string(), retry_at);
        metrics::counter!("compaction_quarantined_total").increment(1);
        tracing::error!(
            work,
            failures,
            %retry_at,
            error,
            "compaction set this work aside; the rest goes on"
        );
        Ok(())
    }

    /// `work` succeeded: out of the quarantine if it was in.
    pub async fn release(&mut self, pool: &PgPool, work: &str) -> sqlx::Result<()> {
        if self.retry_at.remove(work).is_some() {
            sqlx::query!("delete from compaction_quarantine where work = $1", work)
                .execute(pool)
                .await?;
            tracing::info!(work, "quarantined compaction work done");
        }
        Ok(())
    }
}

/// Everything quarantined, oldest first; sets the `compaction_quarantined` gauge.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Quarantined>> {
    let rows = sqlx::query_as!(
        Quarantined,
        "select work, error, failures, first_failed_at, retry_at
         from compaction_quarantine order by first_failed_at, work",
    )
    .fetch_all(pool)
    .await?;
    metrics::gauge!("compaction_quarantined").set(rows.len() as f64);
    Ok(rows)
}

/// SQLSTATE classes that say the server or the connection cannot do it now, not that the
/// work is bad: connection exception (08), transaction rollback (40: serialization, deadlock),
/// insufficient resources (53: out of disk or memory), object not in prerequisite state (55:
/// a lock timeout), operator intervention (57: shutdown, statement timeout), system error (58).
const NOT_THE_WORKS_FAULT: [&str; 6] = ["08", "40", "53", "55", "57", "58"];

/// Whether an error of compacting some work is the work's own (set it aside) rather than the
/// connection's or the server's (end the pass, try again next minute).
pub(crate) fn is_the_works_fault(error: &anyhow::Error) -> bool {
    // Another process took the work over: nothing wrong with the work.
    if error
        .chain()
        .any(|cause| cause.downcast_ref::<crate::db::FenceLost>().is_some())
    {
        return false;
    }
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            return match e {
                sqlx::Error::Database(db) => db
                    .code()
                    .is_none_or(|code| !NOT_THE_WORKS_FAULT.iter().any(|c| code.starts_with(c))),
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => false,
                _ => true,
            };
        }
    }
    // A segment that cannot be decoded or encoded, a summary pack that does not add up.
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_fence_is_not_the_works_fault() {
        let lost = anyhow::Error::new(crate::db::FenceLost {
            key: 1,
            ours: 1,
            current: 2,
        })
        .context("cannot compact chunk _hyper_1_1_chunk");
        assert!(!is_the_works_fault(&lost));
    }

    #[test]
    fn a_damaged_segment_is_the_works_fault_a_lost_connection_is_not() {
        let damaged = anyhow::Error::new(crate::series::codec::CodecError::Truncated)
            .context("cannot compact chunk _hyper_1_1_chunk");
        assert!(is_the_works_fault(&damaged));
        let lost = anyhow::Error::new(sqlx::Error::Io(std::io::Error::other("reset")));
        assert!(!is_the_works_fault(&lost));
        let timed_out = anyhow::Error::new(sqlx::Error::PoolTimedOut).context("reading a chunk");
        assert!(!is_the_works_fault(&timed_out));
    }
}
