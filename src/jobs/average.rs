//! The average followerCount across tracked influencers, stored once a minute in
//! `average_followers` (what `GET /influencer_analytics/average` serves).

use sqlx::{PgPool, Postgres, Transaction};

use super::{JobOutcome, try_lock};

/// Advisory lock key: "average" in ASCII.
const LOCK_KEY: i64 = 0x61_7665_7261_6765;

/// One minute's average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Average {
    pub follower_count: f64,
    pub influencers: i64,
}

/// Stores this minute's average unless another process is storing it or it is stored already.
pub async fn record_if_due(pool: &PgPool) -> Result<JobOutcome<Option<Average>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !try_lock(&mut tx, LOCK_KEY).await? {
        tx.rollback().await?;
        return Ok(JobOutcome::Busy);
    }
    let stored: bool = sqlx::query_scalar!(
        r#"select exists (select 1 from average_followers where bucket = date_trunc('minute', now()))
            as "stored!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    if stored {
        // Ended here, not when dropped: a dropped transaction keeps its lock until the pool
        // next uses the connection.
        tx.rollback().await?;
        return Ok(JobOutcome::AlreadyDone);
    }
    let average = store(&mut tx).await?;
    tx.commit().await?;
    Ok(JobOutcome::Done(average))
}

/// Stores (or replaces) this minute's average now; `None` when nobody is tracked.
pub async fn record(pool: &PgPool) -> Result<Option<Average>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let average = store(&mut tx).await?;
    tx.commit().await?;
    Ok(average)
}

async fn store(tx: &mut Transaction<'_, Postgres>) -> Result<Option<Average>, sqlx::Error> {
    sqlx::query_as!(
        Average,
        "insert into average_followers (bucket, avg_follower_count, influencer_count)
         select date_trunc('minute', now()), avg(l.follower_count)::float8, count(*)
         from influencer_latest l join influencers i using (influencer_id)
         where i.tracked
         having count(*) > 0
         on conflict (bucket) do update set
             avg_follower_count = excluded.avg_follower_count,
             influencer_count = excluded.influencer_count
         returning avg_follower_count as follower_count, influencer_count as influencers",
    )
    .fetch_optional(&mut **tx)
    .await
}
