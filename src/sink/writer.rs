//! Writes outcomes to TimescaleDB in one transaction.
//!
//! `insert ... select from unnest(...)`: one statement per table whatever the batch size, no
//! parameter limit, and `on conflict do nothing` on (influencer_id, slot) makes a redelivered
//! point a no-op. influencer_latest only moves forward: an older slot never replaces a newer
//! one, so batches may arrive in any order.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::Outcomes;

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Points newly stored (duplicates of stored ones are not counted).
    pub points_stored: u64,
    pub failures_stored: u64,
    pub influencers_gone: u64,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Writes a batch of messages in one transaction. The messages are read in place: their rows
/// go straight into the statements' column arrays, without merging them first.
pub async fn write(pool: &PgPool, batch: &[&Outcomes]) -> Result<WriteReport, sqlx::Error> {
    let points = || batch.iter().flat_map(|o| &o.points);
    let failures = || batch.iter().flat_map(|o| &o.failures);
    let gone = || batch.iter().flat_map(|o| &o.gone);
    let mut tx = pool.begin().await?;
    let mut report = WriteReport::default();
    let n = points().count();
    if n > 0 {
        let (mut ids, mut slots, mut fetched, mut followers, mut following) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for p in points() {
            ids.push(p.pk);
            slots.push(at(p.slot_ms));
            fetched.push(at(p.fetched_ms));
            followers.push(p.follower_count);
            following.push(p.following_count);
        }
        report.points_stored = sqlx::query(
            "insert into influencer_metrics
                 (influencer_id, slot, fetched_at, follower_count, following_count)
             select * from unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::int[], $5::int[])
             on conflict do nothing",
        )
        .bind(&ids)
        .bind(&slots)
        .bind(&fetched)
        .bind(&followers)
        .bind(&following)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Latest per influencer: the newest slot of the batch, if newer than what is stored.
        // Points of influencers not in the registry are stored but have no latest row.
        sqlx::query(
            "insert into influencer_latest
                 (influencer_id, slot, fetched_at, follower_count, following_count)
             select distinct on (u.id) u.id, u.slot, u.fetched_at, u.followers, u.following
             from unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::int[], $5::int[])
                  as u(id, slot, fetched_at, followers, following)
             join influencers i on i.influencer_id = u.id
             order by u.id, u.slot desc
             on conflict (influencer_id) do update set
                 slot = excluded.slot,
                 fetched_at = excluded.fetched_at,
                 follower_count = excluded.follower_count,
                 following_count = excluded.following_count
             where influencer_latest.slot < excluded.slot",
        )
        .bind(&ids)
        .bind(&slots)
        .bind(&fetched)
        .bind(&followers)
        .bind(&following)
        .execute(&mut *tx)
        .await?;
    }
    if failures().next().is_some() {
        let ids: Vec<i64> = failures().map(|f| f.pk).collect();
        let slots: Vec<_> = failures().map(|f| at(f.slot_ms)).collect();
        let failed: Vec<_> = failures().map(|f| at(f.failed_ms)).collect();
        let reasons: Vec<&str> = failures().map(|f| f.reason.as_str()).collect();
        report.failures_stored = sqlx::query(
            "insert into fetch_failures (influencer_id, slot, failed_at, reason)
             select * from unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::text[])
             on conflict do nothing",
        )
        .bind(&ids)
        .bind(&slots)
        .bind(&failed)
        .bind(&reasons)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if gone().next().is_some() {
        let ids: Vec<i64> = gone().map(|g| g.pk).collect();
        let reasons: Vec<&str> = gone().map(|g| g.reason.as_str()).collect();
        report.influencers_gone = sqlx::query(
            "update influencers i set tracked = false, untracked_reason = u.reason, untracked_at = now()
             from unnest($1::bigint[], $2::text[]) as u(id, reason)
             where i.influencer_id = u.id and i.tracked",
        )
        .bind(&ids)
        .bind(&reasons)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(report)
}

/// Stores the current average followerCount across tracked influencers for this minute.
pub async fn record_average(pool: &PgPool) -> Result<Option<(f64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "insert into average_followers (bucket, avg_follower_count, influencer_count)
         select date_trunc('minute', now()), avg(l.follower_count)::float8, count(*)
         from influencer_latest l join influencers i using (influencer_id)
         where i.tracked
         having count(*) > 0
         on conflict (bucket) do update set
             avg_follower_count = excluded.avg_follower_count,
             influencer_count = excluded.influencer_count
         returning avg_follower_count, influencer_count",
    )
    .fetch_optional(pool)
    .await
}

/// Whether a write error is about the data (retrying the same rows cannot help) rather than
/// the database being unreachable or busy.
pub fn is_data_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("42")),
        sqlx::Error::Encode(_) | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => true,
        _ => false,
    }
}

/// Recomputes the ranking by followerCount of tracked influencers (one transaction: readers
/// see the old ranking or the new one, never half of each).
pub async fn refresh_ranking(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("delete from influencer_ranks")
        .execute(&mut *tx)
        .await?;
    let ranked = sqlx::query(
        "insert into influencer_ranks (influencer_id, rank, fewer, follower_count, ranked_at)
         select l.influencer_id,
                rank() over (order by l.follower_count desc),
                rank() over (order by l.follower_count) - 1,
                l.follower_count, now()
         from influencer_latest l join influencers i using (influencer_id)
         where i.tracked",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    sqlx::query(
        "insert into ranking_runs (id, ranked_at, influencers) values (true, now(), $1)
         on conflict (id) do update set ranked_at = excluded.ranked_at, influencers = excluded.influencers",
    )
    .bind(ranked)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ranked)
}
