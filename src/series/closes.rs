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

/// Influencers a transaction of [`backfill`] reads the packs of.
const BACKFILL_BATCH: i64 = 20_000;

/// Writes the closes of days merged before the closes were kept (migration 0013), from the
/// day summaries in the packs (each day's last point, its counts and slot): every merged day
/// of `compaction_days` without closes, a span of packs at a time and [`BACKFILL_BATCH`]
/// influencers a transaction, each transaction writing its rows of every such day of the span.
/// Returns the days filled. Runs beside compaction (`influencer-analytics compact`): days it
/// merges later get their closes from the merge.
pub async fn backfill(
    pool: &PgPool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Vec<i64>> {
    let days: Vec<i64> = sqlx::query_scalar!(
        r#"select (extract(epoch from d.day) * 1000)::bigint as "day_ms!"
         from compaction_days d
         where d.merged_at is not null
           and not exists (select 1 from influencer_day_closes c where c.day = d.day)
         order by d.day"#
    )
    .fetch_all(pool)
    .await?;
    let mut spans: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for &day in &days {
        spans
            .entry(super::pack::start_of(day))
            .or_default()
            .push(day);
    }
    for (span, span_days) in spans {
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query!(
                "select influencer_id, days from influencer_summary_packs
                 where period_start = $1 and influencer_id > $2
                 order by influencer_id limit $3",
                at(span),
                after,
                BACKFILL_BATCH
            )
            .fetch_all(pool)
            .await?;
            let Some(last) = rows.last().map(|r| r.influencer_id) else {
                break;
            };
            let mut closes: Vec<Snapshot> = vec![Snapshot::default(); span_days.len()];
            for row in &rows {
                for ((start, _), s) in super::pack::decode(span, &row.days)? {
                    if let Some(i) = span_days.iter().position(|&d| d == start) {
                        let (followers, following) = (s.follower_last, s.following_last);
                        closes[i].push(row.influencer_id, followers, following, s.last_slot_ms);
                    }
                }
            }
            let mut tx = pool.begin().await?;
            for (&day, part) in span_days.iter().zip(&closes) {
                write(&mut tx, day, part).await?;
            }
            tx.commit().await?;
            progress(&format!(
                "day closes of the span from {}: up to influencer {last}",
                at(span).date_naive()
            ));
            after = last;
        }
    }
    Ok(days)
}
