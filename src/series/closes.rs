//! Day closes: each influencer's last point of each closed UTC day, as [`Snapshot`]s in
//! `influencer_day_closes` (migration 0013). Compaction writes them with the day segments they
//! come from, one row per batch of influencers it merges ([`write`], in its transaction: a day
//! merged is a day closed, a merge undone leaves no close); the movers of long windows and of
//! past days read a day whole ([`day`]). Retention deletes them with the segments.
//!
//! A point that reaches a day segment more than a day late (merged from `late_points` after
//! the day was) does not move the day's close.

use sqlx::{PgConnection, PgPool};

use super::{Snapshot, at, codec::CodecError};

/// Stores the closes of one batch of a day's influencers (ids after every earlier batch's).
pub(crate) async fn write(
    tx: &mut PgConnection,
    day_ms: i64,
    closes: &Snapshot,
) -> sqlx::Result<()> {
    let Some(&first_id) = closes.ids.first() else {
        return Ok(());
    };
    sqlx::query!(
        "insert into influencer_day_closes (day, first_id, influencers, data)
         values ($1, $2, $3, $4)
         on conflict (day, first_id) do update
             set influencers = excluded.influencers, data = excluded.data",
        at(day_ms),
        first_id,
        closes.len() as i32,
        closes.encode(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Why a day's closes cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ClosesError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the day closes of {day} cannot be decoded: {source}")]
    Damaged {
        day: chrono::DateTime<chrono::Utc>,
        source: CodecError,
    },
}

/// Every influencer's close of the UTC day starting at `day_ms`; `None` if the day has none
/// (not merged yet, before the day closes were kept, or past the retention).
pub async fn day(pool: &PgPool, day_ms: i64) -> Result<Option<Snapshot>, ClosesError> {
    let rows = sqlx::query_scalar!(
        "select data from influencer_day_closes where day = $1 order by first_id",
        at(day_ms)
    )
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    tokio::task::spawn_blocking(move || {
        let mut all = Snapshot::default();
        for bytes in rows {
            let part = Snapshot::decode(&bytes).map_err(|source| ClosesError::Damaged {
                day: at(day_ms),
                source,
            })?;
            all.extend(part);
        }
        Ok(Some(all))
    })
    .await
    .expect("decoding day closes does not panic")
}

/// The latest UTC day (start, epoch ms) with closes at or before `day_ms`, if any.
pub async fn latest_day_at_or_before(pool: &PgPool, day_ms: i64) -> sqlx::Result<Option<i64>> {
    let day = sqlx::query_scalar!(
        "select max(day) from influencer_day_closes where day <= $1",
        at(day_ms)
    )
    .fetch_one(pool)
    .await?;
    Ok(day.map(|d| d.timestamp_millis()))
}
