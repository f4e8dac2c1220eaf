//! Retention: what is older than `RETENTION` is dropped, whole chunks at a time.
//!
//! The cold tier's segments (28-day chunks), the raw points of hours that were never compacted,
//! the average series, the classification history and the recorded fetch failures, with the
//! bookkeeping rows that go with them. A chunk goes once all of it is older than the cutoff, so
//! nothing younger than `RETENTION` is ever dropped and nothing older stays more than a chunk's
//! span past it.

use std::time::Duration;

use sqlx::PgPool;

/// The hypertables retention drops chunks of.
pub const HYPERTABLES: [&str; 7] = [
    "influencer_segments",
    // On the same 28-day grid: a span's days and its pack go together.
    "influencer_summary_packs",
    "influencer_hour_blocks",
    "influencer_metrics",
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
    // One transaction, so one cutoff (now() is the transaction's start) for every table, and
    // no reader sees a span's day segments gone and its summary pack still there.
    let mut tx = pool.begin().await?;
    let mut dropped_by_table = Vec::new();
    for table in HYPERTABLES {
        let dropped: Vec<String> = sqlx::query_scalar(
            "select drop_chunks($1::regclass, older_than => now() - make_interval(secs => $2))::text",
        )
        .bind(table)
        .bind(secs)
        .fetch_all(&mut *tx)
        .await?;
        dropped_by_table.push((table, dropped.len() as u64));
    }
    tx.commit().await?;
    for (table, dropped) in dropped_by_table {
        if dropped > 0 {
            tracing::info!(table, chunks = dropped, "retention dropped chunks");
            metrics::counter!("retention_chunks_dropped_total", "table" => table)
                .increment(dropped);
        }
        report.chunks += dropped;
    }
    for statement in [
        "delete from late_points where slot < now() - make_interval(secs => $1)",
        "delete from compaction_days where day < now() - make_interval(secs => $1) - interval '1 day'",
        "delete from classification_passes where started_at < now() - make_interval(secs => $1)",
    ] {
        report.rows += sqlx::query(statement)
            .bind(secs)
            .execute(pool)
            .await?
            .rows_affected();
    }
    Ok(report)
}
