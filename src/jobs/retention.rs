//! Retention: what is older than `RETENTION` is dropped, whole chunks at a time.
//!
//! The cold tier's segments (28-day chunks), the raw points of hours that were never compacted,
//! the average series, the classification history and the recorded fetch failures, with the
//! bookkeeping rows that go with them. A chunk goes once all of it is older than the cutoff, so
//! nothing younger than `RETENTION` is ever dropped and nothing older stays more than a chunk's
//! span past it.

use std::time::Duration;

use sqlx::PgPool;

use crate::{db, series};

/// The hypertables besides the tiers' ([`series::retention`]) whose chunks retention drops.
const HYPERTABLES: [&str; 3] = [
    "average_followers",
    "suspicious_classifications",
    "fetch_failures",
];

/// What one application dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    pub chunks: u64,
    pub rows: u64,
}

/// Drops everything older than `retention`.
pub async fn apply(pool: &PgPool, retention: Duration) -> anyhow::Result<RetentionReport> {
    let secs = retention.as_secs_f64();
    let mut report = RetentionReport::default();
    // One transaction, so one cutoff (now() is the transaction's start) for every table and
    // row, and no reader sees a span's day segments gone and its summary pack still there.
    let mut tx = pool.begin().await?;
    let mut dropped_by_table = series::retention::drop_chunks(&mut tx, secs).await?;
    for table in HYPERTABLES {
        dropped_by_table.push((table, db::drop_chunks_older(&mut tx, table, secs).await?));
    }
    report.rows += series::retention::delete_rows(&mut tx, secs).await?;
    report.rows += sqlx::query!(
        "delete from classification_passes where started_at < now() - make_interval(secs => $1)",
        secs
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    for (table, dropped) in dropped_by_table {
        if dropped > 0 {
            tracing::info!(table, chunks = dropped, "retention dropped chunks");
            metrics::counter!("retention_chunks_dropped_total", "table" => table)
                .increment(dropped);
        }
        report.chunks += dropped;
    }
    Ok(report)
}
