//! The event log over HTTP: `GET /events`. As JSON, a page of events in id order (the newest
//! page, or the events after `after`); asked with `Accept: text/event-stream`, a live stream
//! of Server-Sent Events (`id`, `event` = the type, `data` = the event as JSON) that resumes
//! after `Last-Event-ID` (or `after`; `0`: from the oldest kept), with a comment as heartbeat
//! every [`HEARTBEAT`], at most [`MAX_STREAMS`] streams a process.

use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, header},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState,
    error::{ApiError, Problem},
    params::{Limit, Query},
    watchlists::check_name,
};
use crate::events::{self, Event, EventType, Filter};

/// Streams one API process serves at once; one more is answered 503.
pub(crate) const MAX_STREAMS: usize = 256;

/// A stream sends a comment line when it has had nothing to send for this long.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(15);

/// How often a stream looks for new events in the log.
const POLL: Duration = Duration::from_millis(500);

/// Events a JSON page holds when `limit` is not given.
const DEFAULT_PAGE: i64 = 100;

/// The streams a process serves ([`MAX_STREAMS`]).
#[derive(Clone)]
pub struct Streams(Arc<Semaphore>);

impl Default for Streams {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_STREAMS)))
    }
}

/// Which events, from where.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only these types, comma-separated: spike, following_churn, milestone, top_n, stale,
    /// recovered, verdict, untracked. All when absent.
    #[serde(rename = "type")]
    #[param(
        pattern = r"^(spike|following_churn|milestone|top_n|stale|recovered|verdict|untracked)(,(spike|following_churn|milestone|top_n|stale|recovered|verdict|untracked))*$"
    )]
    pub kind: Option<String>,
    /// Only events about members of this watchlist (as they were when it was detected).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
    pub watchlist: Option<String>,
    /// Only events about this influencer.
    #[param(minimum = 1)]
    pub influencer_id: Option<i64>,
    /// Of `top_n` events, only those about this size of the top (10, 100, 1000, or a
    /// webhook's own); all sizes when absent.
    #[param(minimum = 1, maximum = 10000)]
    pub top_n: Option<i64>,
    /// Only events with an id above this (`0`: from the oldest kept). JSON without it: the
    /// newest page; a stream without it (nor `Last-Event-ID`): events from now on.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Events per JSON page, 1 to 1000; default 100.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<Limit>,
}

/// A page of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// In id order.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Event>,
    /// Ask again with `after` this to get what came since.
    pub next_after: i64,
}

/// The log's events as a page of JSON, or as a live stream of Server-Sent Events.
#[utoipa::path(get, path = "/events", tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, body = EventPage, description = "a page; with `Accept: text/event-stream`, a stream of `id`, `event` and `data` lines"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let filter = filter_of(&query)?;
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        let resume = last_event_id(&headers)?.or(query.after);
        return stream_events(state, filter, resume).await;
    }
    let limit = query.limit.map_or(DEFAULT_PAGE, |Limit(n)| n);
    let items = match query.after {
        Some(after) => events::after(&state.pool, after, &filter, limit).await?,
        None => events::newest(&state.pool, &filter, limit).await?,
    };
    let next_after = items
        .last()
        .map_or(query.after.unwrap_or(0), |event| event.id);
    Ok(Json(EventPage { items, next_after }).into_response())
}

fn filter_of(query: &EventsQuery) -> Result<Filter, ApiError> {
    let mut types = Vec::new();
    for name in query.kind.iter().flat_map(|k| k.split(',')) {
        let kind = EventType::parse(name.trim()).ok_or_else(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::bad_request(
                "Invalid event type",
                format!(
                    "unknown event type {:?}; expected {}",
                    name.chars().take(40).collect::<String>(),
                    known.join(", ")
                ),
            )
        })?;
        types.push(kind);
    }
    if query.influencer_id.is_some_and(|id| id < 1) {
        return Err(ApiError::bad_request(
            "Invalid influencer_id",
            "influencer_id is an influencer's pk, 1 or more",
        ));
    }
    if query.after.is_some_and(|a| a < 0) {
        return Err(ApiError::bad_request(
            "Invalid after",
            "after is an event id, 0 or more",
        ));
    }
    if query.top_n.is_some_and(|n| !(1..=10_000).contains(&n)) {
        return Err(ApiError::bad_request(
            "Invalid top_n",
            "top_n is a size of the top, 1 to 10000",
        ));
    }
    Ok(Filter {
        types,
        watchlist: query.watchlist.as_deref().map(check_name).transpose()?,
        influencer_id: query.influencer_id,
        top_n: query.top_n,
    })
}

/// `Last-Event-ID`, which a browser's EventSource sends when it reconnects.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(raw) = headers.get("last-event-id") else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&id| id >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "Invalid Last-Event-ID",
                "Last-Event-ID is an event id, 0 or more",
            )
        })
}

/// Where a stream is, what it has read and not sent yet.
struct Tail {
    pool: PgPool,
    filter: Filter,
    after: i64,
    pending: VecDeque<Event>,
    _permit: OwnedSemaphorePermit,
}

async fn stream_events(
    state: ApiState,
    filter: Filter,
    resume: Option<i64>,
) -> Result<Response, ApiError> {
    let permit = state.event_streams.0.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(format!(
            "this process serves {MAX_STREAMS} event streams already; try again later or another API process"
        ))
    })?;
    let after = match resume {
        Some(after) => after,
        None => events::newest_id(&state.pool).await?,
    };
    let tail = Tail {
        pool: state.pool.clone(),
        filter,
        after,
        pending: VecDeque::new(),
        _permit: permit,
    };
    metrics::gauge!("event_streams").increment(1.0);
    let stream = stream::unfold(tail, next_event);
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"));
    Ok(sse.into_response())
}

/// The next event of a stream, reading the log as needed.
async fn next_event(mut tail: Tail) -> Option<(Result<SseEvent, Infallible>, Tail)> {
    loop {
        if let Some(event) = tail.pending.pop_front() {
            let sse = SseEvent::default()
                .id(event.id.to_string())
                .event(event.kind.as_str())
                .json_data(&event)
                .expect("an event serializes");
            return Some((Ok(sse), tail));
        }
        match events::after(&tail.pool, tail.after, &tail.filter, 500).await {
            Ok(read) if !read.is_empty() => {
                tail.after = read.last().expect("not empty").id;
                tail.pending.extend(read);
            }
            Ok(_) => tokio::time::sleep(POLL).await,
            Err(e) => {
                tracing::warn!(error = %e, "an event stream cannot read the log; it tries again");
                tokio::time::sleep(POLL * 4).await;
            }
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        metrics::gauge!("event_streams").decrement(1.0);
    }
}
