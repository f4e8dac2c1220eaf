//! Webhooks over HTTP: `POST /webhooks` (the answer holds the signing secret, shown once),
//! `GET /webhooks`, `GET`/`DELETE /webhooks/{id}`, `POST /webhooks/{id}/enable` (a disabled
//! endpoint resumes where it stopped) and `GET /webhooks/{id}/deliveries` (each attempt,
//! newest first). With `API_KEYS` set, every one wants a key ([`super::limits`]). Delivery
//! itself is the `webhooks` role's ([`crate::webhooks::deliver`]).

use axum::{
    Json,
    extract::{FromRequestParts, RawPathParams, State},
    http::{StatusCode, request::Parts},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState,
    error::{ApiError, Problem},
    params::{Limit, Query},
    tracking::JsonBody,
    watchlists::check_name,
};
use crate::{
    events::EventType,
    webhooks::{self, Attempt, NewWebhook, Webhook},
};

/// The longest webhook URL.
const MAX_URL: usize = 2048;
/// Attempts a page of deliveries holds when `limit` is not given.
const DEFAULT_PAGE: i64 = 100;

/// The `{id}` of a webhook's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookId {
    /// The webhook's id.
    #[param(minimum = 1, maximum = 9_007_199_254_740_991_i64)]
    pub id: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for WebhookId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state).await;
        let raw = params
            .ok()
            .and_then(|p| {
                p.iter()
                    .find(|(n, _)| *n == "id")
                    .map(|(_, v)| v.to_string())
            })
            .unwrap_or_default();
        match raw.parse::<i64>() {
            Ok(id) if id >= 1 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(WebhookId { id }),
            _ => Err(ApiError::bad_request(
                "Invalid webhook id",
                format!(
                    "a webhook id is a whole number, 1 or more; got {:?}",
                    raw.chars().take(40).collect::<String>()
                ),
            )),
        }
    }
}

/// An event type, as webhooks name them.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum EventTypeName {
    Spike,
    FollowingChurn,
    Milestone,
    TopN,
    Stale,
    Recovered,
    Verdict,
    Untracked,
}

/// `POST /webhooks`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWebhook {
    /// Where events are POSTed: http or https, a public address unless
    /// `WEBHOOK_ALLOW_PRIVATE`.
    #[schema(pattern = r"^https?://[A-Za-z0-9]", max_length = 2048)]
    pub url: String,
    /// The event types it is sent; every type when absent or empty.
    #[schema(value_type = Option<Vec<EventTypeName>>)]
    pub events: Option<Vec<EventType>>,
    /// Only events about this watchlist's members (as they were when each was detected).
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
    pub watchlist: Option<String>,
    /// The size of the top whose `top_n` events it is sent (entered or left the top N); 100
    /// when absent.
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 10000)]
    pub top_n: Option<serde_json::Number>,
}

/// A webhook endpoint and where its deliveries stand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub id: i64,
    pub url: String,
    /// The event types it is sent (every type when empty).
    #[schema(value_type = Vec<EventTypeName>)]
    pub events: Vec<EventType>,
    pub watchlist: Option<String>,
    /// The size of the top whose `top_n` events it is sent.
    pub top_n: i32,
    /// Epoch seconds.
    pub created_at: i64,
    /// `active`, `failing` (retrying after failed attempts) or `disabled`.
    pub status: String,
    /// Every event up to this id has been delivered (or did not concern it).
    pub delivered_through: i64,
    /// Attempts in a row that failed.
    pub failures: i32,
    /// When the next attempt is due, epoch seconds, while failing.
    pub next_attempt_at: Option<i64>,
    /// When it was disabled, epoch seconds, and why.
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        let status = match (w.disabled_at, w.failures) {
            (Some(_), _) => "disabled",
            (None, 0) => "active",
            (None, _) => "failing",
        };
        Self {
            id: w.id,
            url: w.url,
            events: w.events,
            watchlist: w.watchlist,
            top_n: w.top_n,
            created_at: w.created_at,
            status: status.into(),
            delivered_through: w.delivered_through,
            failures: w.failures,
            next_attempt_at: w.next_attempt_at,
            disabled_at: w.disabled_at,
            disabled_reason: w.disabled_reason,
        }
    }
}

/// A new webhook, with its secret: shown only in this answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The signing secret (`whsec_…`, Standard Webhooks): keep it; it is not shown again.
    pub secret: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    /// Every webhook, by id.
    pub webhooks: Vec<WebhookView>,
}

/// One attempt to deliver an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event_id: i64,
    /// 1 for the event's first attempt at this endpoint.
    pub attempt: i32,
    /// When, epoch seconds (with milliseconds).
    pub attempted_at: f64,
    pub delivered: bool,
    /// The receiver's status code, when it answered.
    pub status_code: Option<i32>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub duration_ms: i32,
}

impl From<Attempt> for Delivery {
    fn from(a: Attempt) -> Self {
        Self {
            id: a.id,
            event_id: a.event_id,
            attempt: a.attempt,
            attempted_at: a.attempted_at_ms as f64 / 1000.0,
            delivered: a.delivered,
            status_code: a.status_code,
            error: a.error,
            duration_ms: a.duration_ms,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub deliveries: Vec<Delivery>,
    /// Ask again with `before` this for older attempts; absent at the oldest.
    pub next_before: Option<i64>,
}

/// Which attempts.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only attempts with an id below this.
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// Attempts per page, 1 to 1000; default 100.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<Limit>,
}

/// Creates a webhook that is sent the events logged from now on, signed with the secret in
/// the answer (shown only here). The URL's host must be a public address (a 400 otherwise),
/// unless the service runs with WEBHOOK_ALLOW_PRIVATE; a watchlist that does not exist is a 404.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, body = CreatedWebhook),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create(
    State(state): State<ApiState>,
    JsonBody(request): JsonBody<CreateWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    if request.url.len() > MAX_URL {
        return Err(ApiError::bad_request(
            "Invalid webhook URL",
            format!("the URL is longer than {MAX_URL} bytes"),
        ));
    }
    if let Some(reason) = webhooks::address::refused(&request.url, state.webhook_allow_private) {
        return Err(ApiError::bad_request("Invalid webhook URL", reason));
    }
    let mut events = request.events.unwrap_or_default();
    events.sort();
    events.dedup();
    let top_n = match &request.top_n {
        None => 100,
        Some(n) => size_of_top(n)?,
    };
    let new = NewWebhook {
        url: request.url,
        events,
        watchlist: request.watchlist.as_deref().map(check_name).transpose()?,
        top_n,
    };
    let (webhook, secret) = webhooks::create(&state.pool, &new).await?.ok_or_else(|| {
        super::watchlists::no_such_watchlist(new.watchlist.as_deref().unwrap_or_default())
    })?;
    let created = CreatedWebhook {
        webhook: webhook.into(),
        secret,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// Every webhook (without secrets).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList)))]
pub(crate) async fn list(State(state): State<ApiState>) -> Result<Json<WebhookList>, ApiError> {
    let webhooks = webhooks::list(&state.pool).await?;
    Ok(Json(WebhookList {
        webhooks: webhooks.into_iter().map(Into::into).collect(),
    }))
}

/// One webhook and where its deliveries stand.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks",
    params(WebhookId),
    responses(
        (status = 200, body = WebhookView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get(
    State(state): State<ApiState>,
    WebhookId { id }: WebhookId,
) -> Result<Json<WebhookView>, ApiError> {
    let webhook = webhooks::get(&state.pool, id).await?;
    Ok(Json(webhook.ok_or_else(|| no_such_webhook(id))?.into()))
}

/// Deletes a webhook and its record of deliveries; nothing more is sent to it.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks",
    params(WebhookId),
    responses(
        (status = 204),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    WebhookId { id }: WebhookId,
) -> Result<StatusCode, ApiError> {
    match webhooks::delete(&state.pool, id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(no_such_webhook(id)),
    }
}

/// Enables a disabled webhook: it resumes with the first event it was not sent, now.
#[utoipa::path(post, path = "/webhooks/{id}/enable", tag = "webhooks",
    params(WebhookId),
    responses(
        (status = 200, body = WebhookView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn enable(
    State(state): State<ApiState>,
    WebhookId { id }: WebhookId,
) -> Result<Json<WebhookView>, ApiError> {
    let webhook = webhooks::enable(&state.pool, id).await?;
    Ok(Json(webhook.ok_or_else(|| no_such_webhook(id))?.into()))
}

/// Each attempt to deliver to a webhook, newest first.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks",
    params(WebhookId, DeliveriesQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn deliveries(
    State(state): State<ApiState>,
    WebhookId { id }: WebhookId,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    if query.before.is_some_and(|b| b < 1) {
        return Err(ApiError::bad_request(
            "Invalid before",
            "before is an attempt's id, 1 or more",
        ));
    }
    if webhooks::get(&state.pool, id).await?.is_none() {
        return Err(no_such_webhook(id));
    }
    let limit = query.limit.map_or(DEFAULT_PAGE, |Limit(n)| n);
    let attempts = webhooks::attempts(&state.pool, id, query.before, limit).await?;
    let full = attempts.len() as i64 == limit;
    let next_before = attempts.last().filter(|_| full).map(|a| a.id);
    Ok(Json(DeliveryPage {
        deliveries: attempts.into_iter().map(Into::into).collect(),
        next_before,
    }))
}

/// `top_n` as a whole number from 1 to 10,000 (JSON's `50` or `50.0`).
fn size_of_top(n: &serde_json::Number) -> Result<i32, ApiError> {
    let whole = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e9)
            .map(|f| f as i64)
    });
    match whole {
        Some(n) if (1..=10_000).contains(&n) => Ok(n as i32),
        _ => Err(ApiError::bad_request(
            "Invalid top_n",
            format!("top_n is a size of the top, a whole number from 1 to 10000; got {n}"),
        )),
    }
}

fn no_such_webhook(id: i64) -> ApiError {
    ApiError::NotFound(format!("there is no webhook {id}"))
}
