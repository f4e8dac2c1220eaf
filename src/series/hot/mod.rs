//! The hot tier as the sink writes it: raw points into `influencer_metrics` (one row a point,
//! in hour chunks) by a binary `COPY`, and points of hours that closed a while ago into
//! `late_points`, which compaction merges into their segments.
//!
//! A point delivered twice (a message redelivered after a crash or an outage) makes the COPY
//! fail on the unique (influencer_id, slot) index; the batch then falls back, inside the same
//! transaction, to `insert ... select from unnest(...) on conflict do nothing`, which stores
//! the new points and skips the stored ones. Redeliveries are rare, so almost every batch
//! takes the fast path.

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::model::Point;
use crate::series::at;

pub mod copy;

/// Stores `points` in the caller's transaction: those of slots before `late_before_ms` as late
/// points (their chunk may be compacting, see [`LATE_AFTER_MS`](crate::series::LATE_AFTER_MS)),
/// the others by COPY. A point already stored is stored once. Returns how many were new.
pub async fn store<'a>(
    tx: &mut PgConnection,
    points: impl Iterator<Item = &'a Point> + Clone,
    late_before_ms: i64,
) -> Result<u64, sqlx::Error> {
    let is_late = |p: &&Point| p.slot_ms < late_before_ms;
    // Almost every batch has no late point.
    if !points.clone().any(|p| is_late(&p)) {
        return store_on_time(tx, points).await;
    }
    let late = Columns::of(points.clone().filter(is_late));
    let on_time: Vec<Point> = points.filter(|p| !is_late(p)).copied().collect();
    let mut stored = store_late(tx, &late).await?;
    if !on_time.is_empty() {
        stored += store_on_time(tx, on_time.iter()).await?;
    }
    Ok(stored)
}

/// Points as columns, for the `unnest` statements.
pub(crate) struct Columns {
    pub ids: Vec<i64>,
    pub slots: Vec<DateTime<Utc>>,
    pub fetched: Vec<DateTime<Utc>>,
    pub followers: Vec<i32>,
    pub following: Vec<i32>,
}

impl Columns {
    pub fn of<'a>(points: impl Iterator<Item = &'a Point> + Clone) -> Self {
        Self {
            ids: points.clone().map(|p| p.pk).collect(),
            slots: points.clone().map(|p| at(p.slot_ms)).collect(),
            fetched: points.clone().map(|p| at(p.fetched_ms)).collect(),
            followers: points.clone().map(|p| p.follower_count).collect(),
            following: points.map(|p| p.following_count).collect(),
        }
    }
}

/// Stores late points (a point delivered again is stored once); returns how many were new.
async fn store_late(tx: &mut PgConnection, c: &Columns) -> Result<u64, sqlx::Error> {
    metrics::counter!("sink_late_points_total").increment(c.ids.len() as u64);
    Ok(sqlx::query!(
"insert into late_points (influencer_id, slot, fetched_at, follower_count, following_count)
         select * from unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::int[], $5::int[])
         on conflict do nothing",
&c.ids,
&c.slots,
&c.fetched,
&c.followers,
&c.following
)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

/// Stores points: COPY, or, if one of them is already stored, the idempotent insert (its
/// columns built only then). Returns how many were newly stored.
async fn store_on_time<'a>(
    tx: &mut PgConnection,
    points: impl Iterator<Item = &'a Point> + Clone,
) -> Result<u64, sqlx::Error> {
    let mut savepoint = tx.begin().await?;
    match copy_in(&mut savepoint, copy::encode(points.clone().copied())).await {
        Ok(stored) => {
            savepoint.commit().await?;
            Ok(stored)
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            savepoint.rollback().await?;
            metrics::counter!("sink_copy_fallbacks_total").increment(1);
            insert_new(tx, &Columns::of(points)).await
        }
        Err(e) => Err(e),
    }
}

/// A binary COPY of `rows` into `influencer_metrics`.
async fn copy_in(tx: &mut PgConnection, rows: Vec<u8>) -> Result<u64, sqlx::Error> {
    let mut sink = tx
        .copy_in_raw(
            "copy influencer_metrics (influencer_id, slot, fetched_at, follower_count, following_count)
             from stdin with (format binary)",
        )
        .await?;
    if let Err(e) = sink.send(rows).await {
        let _ = sink.abort("send failed").await;
        return Err(e);
    }
    sink.finish().await
}

/// The points not stored yet, by an insert that skips the stored ones.
async fn insert_new(tx: &mut PgConnection, c: &Columns) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
"insert into influencer_metrics
             (influencer_id, slot, fetched_at, follower_count, following_count)
         select * from unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::int[], $5::int[])
         on conflict do nothing",
&c.ids,
&c.slots,
&c.fetched,
&c.followers,
&c.following
)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}
