//! Webhooks: endpoints that are sent the events they subscribe to (types, and optionally a
//! watchlist), signed as the Standard Webhooks specification says.
//!
//! - This file: the endpoints' records (`webhooks`, migration 0018) and the attempts'
//!   (`webhook_attempts`), as the API creates, lists and deletes them.
//! - [`deliver`]: the delivering role. Each endpoint reads the event log in id order from its
//!   own cursor, so one slow or dead endpoint never delays another, and one that comes back
//!   is sent its backlog from the log.
//! - [`address`]: which addresses may be delivered to (no loopback, link-local or private
//!   ones unless `WEBHOOK_ALLOW_PRIVATE`).
//! - [`sign`]: secrets and signatures.
//!
//! `docs/webhooks.md` says what a receiver gets and how to check it.

pub(crate) mod address;
pub(crate) mod deliver;
pub(crate) mod sign;

pub use deliver::Deliverer;

use serde::Serialize;
use sqlx::PgPool;

use crate::events::{self, EventType};

/// An endpoint as kept (its secret apart).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    /// The event types sent to it (every type when empty).
    pub events: Vec<EventType>,
    /// Only events about this watchlist's members.
    pub watchlist: Option<String>,
    /// The size of the top whose `top_n` events it is sent.
    pub top_n: i32,
    /// When it was created, epoch seconds.
    pub created_at: i64,
    /// Every event up to this id has been delivered (or did not concern it).
    pub delivered_through: i64,
    /// Attempts in a row that failed.
    pub failures: i32,
    /// When the next attempt is due after a failure, epoch seconds.
    pub next_attempt_at: Option<i64>,
    /// When it was disabled, epoch seconds, and why.
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
}

/// What a new endpoint wants.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<EventType>,
    pub watchlist: Option<String>,
    /// The size of the top whose `top_n` events it is sent (1 to 10,000).
    pub top_n: i32,
}

/// One attempt to deliver an event to an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub id: i64,
    pub event_id: i64,
    /// 1 for the event's first attempt at this endpoint.
    pub attempt: i32,
    /// When, epoch milliseconds.
    pub attempted_at_ms: i64,
    pub delivered: bool,
    /// The receiver's status code, when it answered.
    pub status_code: Option<i32>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// Every webhook metric at 0, so that a rate or an alert sees the first change.
pub(crate) fn register_metrics() {
    for outcome in ["delivered", "failed"] {
        metrics::counter!("webhook_deliveries_total", "outcome" => outcome).increment(0);
    }
    metrics::gauge!("webhook_delivery_lag_seconds").set(0.0);
    metrics::gauge!("webhook_endpoints_disabled").set(0.0);
}

fn types_of(texts: &[String]) -> Vec<EventType> {
    texts.iter().filter_map(|t| EventType::parse(t)).collect()
}

/// Creates an endpoint that is sent the events logged from now on; it and its secret (shown
/// only here). `None`: the watchlist does not exist.
pub async fn create(pool: &PgPool, new: &NewWebhook) -> sqlx::Result<Option<(Webhook, String)>> {
    let secret = sign::new_secret();
    let types: Vec<String> = new.events.iter().map(|t| t.as_str().into()).collect();
    let mut tx = pool.begin().await?;
    if let Some(name) = &new.watchlist {
        // Locked, so that the list cannot be deleted before the endpoint that names it is in.
        let exists = sqlx::query_scalar!(
            "select name from watchlists where name = $1 for share",
            name
        )
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Ok(None);
        }
    }
    let newest = sqlx::query_scalar!(r#"select coalesce(max(id), 0) as "id!" from events"#)
        .fetch_one(&mut *tx)
        .await?;
    let id = sqlx::query_scalar!(
        "insert into webhooks (url, event_types, watchlist, secret, delivered_through, top_n)
         values ($1, $2, $3, $4, $5, $6) returning id",
        new.url,
        &types,
        new.watchlist,
        secret,
        newest,
        new.top_n,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let webhook = get(pool, id).await?.ok_or(sqlx::Error::RowNotFound)?;
    Ok(Some((webhook, secret)))
}

/// Every endpoint, by id.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Webhook>> {
    read(pool, None).await
}

/// One endpoint.
pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Webhook>> {
    Ok(read(pool, Some(id)).await?.pop())
}

async fn read(pool: &PgPool, id: Option<i64>) -> sqlx::Result<Vec<Webhook>> {
    let rows = sqlx::query!(
        r#"select id, url, event_types, watchlist, top_n, delivered_through, failures, disabled_reason,
                  floor(extract(epoch from created_at))::bigint as "created_at!",
                  ceil(extract(epoch from next_attempt_at))::bigint as "next_attempt_at",
                  floor(extract(epoch from disabled_at))::bigint as "disabled_at"
           from webhooks where $1::int8 is null or id = $1 order by id"#,
        id
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Webhook {
            id: r.id,
            url: r.url,
            events: types_of(&r.event_types),
            watchlist: r.watchlist,
            top_n: r.top_n,
            created_at: r.created_at,
            delivered_through: r.delivered_through,
            failures: r.failures,
            next_attempt_at: r.next_attempt_at,
            disabled_at: r.disabled_at,
            disabled_reason: r.disabled_reason,
        })
        .collect())
}

/// Deletes an endpoint and its attempts; whether it existed.
pub async fn delete(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let deleted = sqlx::query!("delete from webhooks where id = $1", id)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

/// Enables a disabled endpoint again: it resumes where it stopped, with an attempt now.
/// `None`: no such endpoint.
pub async fn enable(pool: &PgPool, id: i64) -> sqlx::Result<Option<Webhook>> {
    let updated = sqlx::query!(
        "update webhooks
         set disabled_at = null, disabled_reason = null, failures = 0, failing_since = null,
             next_attempt_at = null
         where id = $1",
        id
    )
    .execute(pool)
    .await?;
    match updated.rows_affected() {
        0 => Ok(None),
        _ => get(pool, id).await,
    }
}

/// Up to `limit` attempts at endpoint `id`, newest first, with an id below `before` when given.
pub async fn attempts(
    pool: &PgPool,
    id: i64,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<Attempt>> {
    sqlx::query_as!(
        Attempt,
        r#"select id, event_id, attempt, delivered, status_code, error, duration_ms,
                  (extract(epoch from attempted_at) * 1000)::bigint as "attempted_at_ms!"
           from webhook_attempts
           where webhook_id = $1 and ($2::int8 is null or id < $2)
           order by id desc limit $3"#,
        id,
        before,
        limit
    )
    .fetch_all(pool)
    .await
}

/// Drops the attempts made longer ago than the event log keeps events; how many.
pub async fn forget_attempts_older_than(
    pool: &PgPool,
    kept: std::time::Duration,
) -> sqlx::Result<u64> {
    let dropped = sqlx::query!(
        "delete from webhook_attempts where attempted_at < now() - make_interval(secs => $1)",
        kept.as_secs_f64(),
    )
    .execute(pool)
    .await?;
    Ok(dropped.rows_affected())
}

/// The filter of the events an endpoint is sent.
pub(crate) fn filter_of(
    events: &[EventType],
    watchlist: Option<&str>,
    top_n: i32,
) -> events::Filter {
    events::Filter {
        types: events.to_vec(),
        watchlist: watchlist.map(str::to_string),
        influencer_id: None,
        top_n: Some(i64::from(top_n)),
    }
}

/// The sizes of the top that webhooks want `top_n` events of.
pub(crate) async fn top_sizes(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar!(r#"select distinct top_n::int8 as "n!" from webhooks order by 1"#)
        .fetch_all(pool)
        .await
}
