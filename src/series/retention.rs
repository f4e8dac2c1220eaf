//! What retention drops of the tiers: chunks of the hypertables whose every row is older than
//! the cutoff, and the late points and compaction bookkeeping rows older than it.

use sqlx::PgConnection;

/// The tiers' hypertables, whose chunks retention drops.
const TIER_HYPERTABLES: [&str; 4] = [
    "influencer_segments",
    // On the same 28-day grid: a span's days and its pack go together.
    "influencer_summary_packs",
    "influencer_hour_blocks",
    "influencer_metrics",
];

/// Drops the tiers' chunks older than `secs` before the transaction's start (so one cutoff with
/// whatever else the caller's transaction drops). Returns the chunks dropped by table.
pub(crate) async fn drop_chunks(
    tx: &mut PgConnection,
    secs: f64,
) -> sqlx::Result<Vec<(&'static str, u64)>> {
    let mut dropped = Vec::new();
    for table in TIER_HYPERTABLES {
        dropped.push((table, crate::db::drop_chunks_older(tx, table, secs).await?));
    }
    Ok(dropped)
}

/// Deletes the late points, the compaction days, the day closes and the days' ranks older than
/// `secs`; returns how many rows.
pub(crate) async fn delete_rows(tx: &mut PgConnection, secs: f64) -> sqlx::Result<u64> {
    let late = sqlx::query!(
        "delete from late_points where slot < now() - make_interval(secs => $1)",
        secs,
    )
    .execute(&mut *tx)
    .await?;
    let days = sqlx::query!(
        "delete from compaction_days
         where day < now() - make_interval(secs => $1) - interval '1 day'",
        secs,
    )
    .execute(&mut *tx)
    .await?;
    let closes = sqlx::query!(
        "delete from influencer_day_closes
         where day < now() - make_interval(secs => $1) - interval '1 day'",
        secs,
    )
    .execute(&mut *tx)
    .await?;
    // A day's ranks go with its closes (their blocks by cascade).
    let ranks = sqlx::query!(
        "delete from rank_moments
         where kind = 'day' and at < now() - make_interval(secs => $1) - interval '1 day'",
        secs,
    )
    .execute(&mut *tx)
    .await?;
    Ok(
        late.rows_affected()
            + days.rows_affected()
            + closes.rows_affected()
            + ranks.rows_affected(),
    )
}
