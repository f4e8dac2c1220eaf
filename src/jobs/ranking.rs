//! The ranking by followerCount of tracked influencers, rebuilt once a minute in
//! `influencer_ranks` (what `/latest`'s rank and `/top` read).

use sqlx::{PgPool, Postgres, Transaction};

use super::{JobOutcome, try_lock};

/// Advisory lock key: "ranking" in ASCII.
const LOCK_KEY: i64 = 0x72_616e_6b69_6e67;

/// Rebuilds the ranking unless another process is rebuilding it or this minute's is done.
pub async fn refresh_if_due(pool: &PgPool) -> Result<JobOutcome<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !try_lock(&mut tx, LOCK_KEY).await? {
        tx.rollback().await?;
        return Ok(JobOutcome::Busy);
    }
    let done: bool = sqlx::query_scalar(
        "select coalesce((select ranked_at >= date_trunc('minute', now()) from ranking_runs), false)",
    )
    .fetch_one(&mut *tx)
    .await?;
    if done {
        // Ended here, not when dropped: a dropped transaction keeps its lock until the pool
        // next uses the connection.
        tx.rollback().await?;
        return Ok(JobOutcome::AlreadyDone);
    }
    let ranked = rank(&mut tx).await?;
    tx.commit().await?;
    Ok(JobOutcome::Done(ranked))
}

/// Rebuilds the ranking now; returns how many influencers it ranked.
pub async fn refresh(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ranked = rank(&mut tx).await?;
    tx.commit().await?;
    Ok(ranked)
}

/// One transaction: readers see the old ranking or the new one, never half of each.
async fn rank(tx: &mut Transaction<'_, Postgres>) -> Result<i64, sqlx::Error> {
    sqlx::query("delete from influencer_ranks")
        .execute(&mut **tx)
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
    .execute(&mut **tx)
    .await?
    .rows_affected() as i64;
    sqlx::query(
        "insert into ranking_runs (id, ranked_at, influencers) values (true, now(), $1)
         on conflict (id) do update set ranked_at = excluded.ranked_at, influencers = excluded.influencers",
    )
    .bind(ranked)
    .execute(&mut **tx)
    .await?;
    Ok(ranked)
}
