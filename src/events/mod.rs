//! Events: what happened to an influencer that someone may want to be told about, kept in a
//! durable log (`events`, migration 0017) that the live stream and webhooks read in id order.
//!
//! - [`detect`]: the rules applied to each minute's values of everyone (milestones,
//!   staleness), with what they remember between minutes.
//! - [`tail`]: the `events tail` command, a client of the API's live stream.
//! - This file: the event types, the log's writes (in id order, under a lock, so that a reader
//!   resuming after an id never misses a smaller one), its reads and its retention.
//!
//! `docs/events.md` says what each event means and the numbers it carries.

pub(crate) mod detect;
pub mod tail;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// Advisory lock key of the log's writers: "events" in ASCII.
const WRITE_LOCK: i64 = 0x6576_656e_7473;

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// Followers (or following) moved far beyond what the influencer's recent minute changes
    /// make likely.
    Spike,
    /// The following count went up and down by large amounts repeatedly (follow/unfollow).
    FollowingChurn,
    /// Followers crossed a round number, up or down.
    Milestone,
    /// Entered or left the top N by followers.
    TopN,
    /// No point stored for `EVENT_STALE_SLOTS` slots.
    Stale,
    /// A point stored again after `stale`.
    Recovered,
    /// A classifier's verdict changed.
    Verdict,
    /// The upstream says the influencer is gone.
    Untracked,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::Spike,
        EventType::FollowingChurn,
        EventType::Milestone,
        EventType::TopN,
        EventType::Stale,
        EventType::Recovered,
        EventType::Verdict,
        EventType::Untracked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Spike => "spike",
            EventType::FollowingChurn => "following_churn",
            EventType::Milestone => "milestone",
            EventType::TopN => "top_n",
            EventType::Stale => "stale",
            EventType::Recovered => "recovered",
            EventType::Verdict => "verdict",
            EventType::Untracked => "untracked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// An event to be logged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewEvent {
    pub kind: EventType,
    pub influencer_id: i64,
    /// The slot of the point it is about, epoch ms.
    pub slot_ms: Option<i64>,
    /// The numbers behind it.
    pub data: serde_json::Value,
}

/// An event as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub influencer_id: i64,
    /// The second of the slot it is about, epoch seconds (as every time the API answers).
    pub slot: Option<i64>,
    /// When it was detected, epoch seconds.
    pub detected_at: i64,
    pub data: serde_json::Value,
    /// The watchlists the influencer was on when it was detected.
    pub watchlists: Vec<String>,
}

/// Every `events_total` type, at 0, so that a rate sees the first event.
pub(crate) fn register_metrics() {
    for kind in EventType::ALL {
        metrics::counter!("events_total", "type" => kind.as_str()).increment(0);
    }
}

/// Logs `events` (with the watchlists each influencer is on) in one transaction under the
/// writers' lock; their ids, in the order given.
pub async fn record(pool: &PgPool, events: &[NewEvent]) -> sqlx::Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    let logged = record_in(&mut tx, events).await?;
    tx.commit().await?;
    Ok(logged)
}

/// [`record`] inside the caller's transaction (events that belong with its writes: an
/// influencer untracked, a verdict stored). The writers' lock is held until it commits, so
/// the caller commits soon after.
pub(crate) async fn record_in(
    tx: &mut sqlx::PgConnection,
    events: &[NewEvent],
) -> sqlx::Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let kinds: Vec<String> = events.iter().map(|e| e.kind.as_str().into()).collect();
    let ids: Vec<i64> = events.iter().map(|e| e.influencer_id).collect();
    let slots: Vec<Option<DateTime<Utc>>> = events
        .iter()
        .map(|e| e.slot_ms.and_then(DateTime::from_timestamp_millis))
        .collect();
    let data: Vec<serde_json::Value> = events.iter().map(|e| e.data.clone()).collect();
    sqlx::query!("select pg_advisory_xact_lock($1)", WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    let logged = sqlx::query_scalar!(
        r#"insert into events (type, influencer_id, slot, data, watchlists)
           select e.type, e.influencer_id, e.slot, e.data,
                  coalesce((select array_agg(m.watchlist order by m.watchlist)
                            from watchlist_members m
                            where m.influencer_id = e.influencer_id), '{}')
           from unnest($1::text[], $2::int8[], $3::timestamptz[], $4::jsonb[]) with ordinality
                as e(type, influencer_id, slot, data, n)
           order by e.n
           returning id"#,
        &kinds,
        &ids,
        &slots as &[Option<DateTime<Utc>>],
        &data,
    )
    .fetch_all(&mut *tx)
    .await?;
    for event in events {
        metrics::counter!("events_total", "type" => event.kind.as_str()).increment(1);
    }
    let mut logged = logged;
    logged.sort_unstable();
    Ok(logged)
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these types (all when empty).
    pub types: Vec<EventType>,
    /// Only events about members of this watchlist.
    pub watchlist: Option<String>,
    /// Only events about this influencer.
    pub influencer_id: Option<i64>,
    /// Of `top_n` events, only those about this size of the top (all sizes when `None`).
    pub top_n: Option<i64>,
}

/// Up to `limit` events with an id above `after` that pass `filter`, in id order.
pub async fn after(
    pool: &PgPool,
    after: i64,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<Event>> {
    let types: Vec<String> = filter.types.iter().map(|t| t.as_str().into()).collect();
    let rows = sqlx::query!(
        r#"select id, type as "kind", influencer_id,
                  floor(extract(epoch from slot))::bigint as "slot",
                  floor(extract(epoch from detected_at))::bigint as "detected_at!",
                  data, watchlists
           from events
           where id > $1
             and (cardinality($2::text[]) = 0 or type = any($2))
             and ($3::text is null or $3 = any(watchlists))
             and ($4::int8 is null or influencer_id = $4)
             and ($6::int8 is null or type <> 'top_n' or (data->>'n')::int8 = $6)
           order by id
           limit $5"#,
        after,
        &types,
        filter.watchlist.as_deref(),
        filter.influencer_id,
        limit,
        filter.top_n,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(Event {
                id: r.id,
                kind: EventType::parse(&r.kind)?,
                influencer_id: r.influencer_id,
                slot: r.slot,
                detected_at: r.detected_at,
                data: r.data,
                watchlists: r.watchlists,
            })
        })
        .collect())
}

/// The newest `limit` events that pass `filter`, in id order.
pub async fn newest(pool: &PgPool, filter: &Filter, limit: i64) -> sqlx::Result<Vec<Event>> {
    let types: Vec<String> = filter.types.iter().map(|t| t.as_str().into()).collect();
    let rows = sqlx::query!(
        r#"select id from events
           where (cardinality($1::text[]) = 0 or type = any($1))
             and ($2::text is null or $2 = any(watchlists))
             and ($3::int8 is null or influencer_id = $3)
             and ($5::int8 is null or type <> 'top_n' or (data->>'n')::int8 = $5)
           order by id desc
           limit $4"#,
        &types,
        filter.watchlist.as_deref(),
        filter.influencer_id,
        limit,
        filter.top_n,
    )
    .fetch_all(pool)
    .await?;
    let Some(oldest) = rows.last() else {
        return Ok(Vec::new());
    };
    after(pool, oldest.id - 1, filter, limit).await
}

/// The newest event's id (0 when the log is empty).
pub async fn newest_id(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"select coalesce(max(id), 0) as "id!" from events"#)
        .fetch_one(pool)
        .await
}

/// Drops events detected longer than `kept` ago; how many.
pub async fn forget_older_than(pool: &PgPool, kept: Duration) -> sqlx::Result<u64> {
    let dropped = sqlx::query!(
        "delete from events where detected_at < now() - make_interval(secs => $1)",
        kept.as_secs_f64(),
    )
    .execute(pool)
    .await?;
    Ok(dropped.rows_affected())
}

/// What the log says of each influencer's state that the detector keeps (read when a process
/// takes detection over): the last milestone passed upward and not left since, and whether
/// its last staleness event was `stale`.
pub(crate) async fn remembered(pool: &PgPool) -> sqlx::Result<detect::Remembered> {
    let rows = sqlx::query!(
        r#"select distinct on (influencer_id, type in ('stale', 'recovered'))
                  influencer_id, type as "kind", data
           from events
           where type in ('milestone', 'stale', 'recovered')
           order by influencer_id, type in ('stale', 'recovered'), id desc"#,
    )
    .fetch_all(pool)
    .await?;
    let mut remembered = detect::Remembered::default();
    for row in rows {
        match row.kind.as_str() {
            "stale" => {
                remembered.stale.insert(row.influencer_id);
            }
            "milestone" => {
                let line = row.data["milestone"].as_i64().unwrap_or(0);
                let up = row.data["direction"].as_str() == Some("up");
                remembered
                    .levels
                    .insert(row.influencer_id, detect::level_after(line, up));
            }
            _ => {}
        }
    }
    Ok(remembered)
}
