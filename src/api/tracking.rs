//! Starting and stopping tracking through the API: `POST /influencers` (register and schedule
//! as `seed` does), `GET /influencers/{id}` (the registry's record and its stretches of
//! tracking), `DELETE /influencers/{id}` (stop tracking, history kept). With `API_KEYS` set,
//! all three want a key ([`super::limits`]).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request, State},
};

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState,
    error::{ApiError, Problem},
    params::{InfluencerId, Query},
};
use crate::{config::BrokerSettings, model::MAX_PK, queue::Broker, registry};

/// The most ids one `POST /influencers` takes (a bigger population: `seed --file`).
pub(crate) const MAX_IDS_PER_REQUEST: usize = 100_000;

/// The longest reason `DELETE /influencers/{id}` keeps.
pub(crate) const MAX_REASON_CHARS: usize = 200;

/// The broker `POST /influencers` schedules through: connected when first needed, and again
/// after its connection is lost (an API that only reads never connects).
#[derive(Clone)]
pub struct Scheduler {
    settings: BrokerSettings,
    broker: Arc<tokio::sync::Mutex<Option<Broker>>>,
}

/// How long `POST /influencers` waits for the broker to answer before a 503.
const BROKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Scheduler {
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            broker: Arc::default(),
        }
    }

    async fn broker(&self) -> Result<Broker, ApiError> {
        let mut held = self.broker.lock().await;
        if let Some(broker) = held.as_ref().filter(|b| b.is_open()) {
            return Ok(broker.clone());
        }
        let connected =
            tokio::time::timeout(BROKER_CONNECT_TIMEOUT, Broker::connect(&self.settings)).await;
        match connected {
            Ok(Ok(broker)) => Ok(held.insert(broker).clone()),
            Ok(Err(e)) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot reach the broker to schedule"
                );
                Err(broker_unavailable())
            }
            Err(_) => Err(broker_unavailable()),
        }
    }
}

fn broker_unavailable() -> ApiError {
    ApiError::Unavailable(
        "the broker (AMQP_URL) cannot be reached to schedule; nothing was registered, try again shortly"
            .into(),
    )
}

/// A JSON body, read whole (at most `MAX_BODY_BYTES`) and parsed by hand, so that every
/// refusal is a problem+json with what was wrong.
pub(crate) struct JsonBody<T>(pub T);

/// The largest body the API reads: 100,000 ids of 16 digits with separators.
pub(crate) const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        let bytes: Bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::bad_request(
                    "Body too large",
                    format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                )
            })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request(
                "Invalid body",
                format!("the body is not the JSON expected: {e}"),
            )
        })
    }
}

/// `POST /influencers`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrackRequest {
    /// Influencer pks, 1 to 2^53-1; at most 100,000 (an id given twice counts once).
    #[schema(value_type = Vec<Pk>, min_items = 1, max_items = 100_000)]
    pub ids: Vec<serde_json::Number>,
}

/// An influencer's pk, as the OpenAPI document states it.
pub(crate) struct Pk;

impl utoipa::PartialSchema for Pk {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(MAX_PK))
            .into()
    }
}

impl ToSchema for Pk {}

/// Which of the ids asked for were new, tracked again, or tracked already.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub(crate) struct TrackAnswer {
    /// Registered now, and scheduled from their next slot.
    pub new: Vec<i64>,
    /// Registered before but not tracked (untracked, or the upstream did not know them);
    /// tracked again from their next slot, in a new stretch of tracking.
    pub tracked_again: Vec<i64>,
    /// Tracked already: nothing changed.
    pub already_tracked: Vec<i64>,
}

/// Registers influencers and puts the ones not tracked into the schedule, as `seed` does: the
/// first point of each comes at its next slot. Idempotent: ids tracked already change nothing.
#[utoipa::path(post, path = "/influencers", tag = "tracking",
    request_body = TrackRequest,
    responses(
        (status = 200, body = TrackAnswer),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn track(
    State(state): State<ApiState>,
    JsonBody(request): JsonBody<TrackRequest>,
) -> Result<Json<TrackAnswer>, ApiError> {
    let ids = checked_ids(request.ids)?;
    let Some(scheduler) = &state.scheduler else {
        return Err(ApiError::Unavailable(
            "this API has no broker to schedule with".into(),
        ));
    };
    let broker = scheduler.broker().await?;
    let tracked = registry::track(&state.pool, &broker, state.interval, &ids, &|_| {})
        .await
        .map_err(|e| {
            tracing::warn!(error = format!("{e:#}"), "tracking through the API failed");
            ApiError::Unavailable(
                "the influencers could not all be registered and scheduled; the ones registered are scheduled by the reconciler within a few intervals, and asking again is safe"
                    .into(),
            )
        })?;
    metrics::counter!("influencers_tracked_total", "by" => "api")
        .increment((tracked.new.len() + tracked.retracked.len()) as u64);
    Ok(Json(TrackAnswer {
        new: tracked.new,
        tracked_again: tracked.retracked,
        already_tracked: tracked.already_tracked,
    }))
}

/// The ids of a request, checked, each once, in the order asked. A whole number written with
/// a fraction (`1000001.0`) is that number, as JSON Schema counts it.
pub(crate) fn checked_ids(ids: Vec<serde_json::Number>) -> Result<Vec<i64>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::bad_request("No ids", "`ids` is empty"));
    }
    if ids.len() > MAX_IDS_PER_REQUEST {
        return Err(ApiError::bad_request(
            "Too many ids",
            format!(
                "{} ids; one request takes at most {MAX_IDS_PER_REQUEST} (more: `influencer-analytics seed --file`)",
                ids.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut checked = Vec::with_capacity(ids.len());
    for number in ids {
        let id = number.as_i64().or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_PK as f64)
                .map(|f| f as i64)
        });
        match id {
            Some(id) if (1..=MAX_PK).contains(&id) => {
                if seen.insert(id) {
                    checked.push(id);
                }
            }
            _ => {
                return Err(ApiError::bad_request(
                    "Invalid influencer id",
                    format!("every id must be a whole number from 1 to {MAX_PK}, got {number}"),
                ));
            }
        }
    }
    Ok(checked)
}

/// A stretch of tracking, epoch seconds.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Stretch {
    /// When the first slot of the stretch was planned from.
    pub from: i64,
    /// When tracking stopped; absent while it goes on.
    pub to: Option<i64>,
    pub stop_reason: Option<String>,
}

/// An influencer as the registry knows it.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct RegistryRecord {
    pub influencer_id: i64,
    pub username: String,
    pub tracked: bool,
    /// When it was first registered, epoch seconds.
    pub added_at: i64,
    /// When and why tracking last stopped, while it is not tracked.
    pub untracked_at: Option<i64>,
    pub untracked_reason: Option<String>,
    /// Its stretches of tracking, oldest first.
    pub stretches: Vec<Stretch>,
}

/// Whether an influencer is tracked, since when, and each stretch it was tracked.
#[utoipa::path(get, path = "/influencers/{id}", tag = "tracking",
    params(InfluencerId),
    responses(
        (status = 200, body = RegistryRecord),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn record(
    State(state): State<ApiState>,
    InfluencerId { id }: InfluencerId,
) -> Result<Json<RegistryRecord>, ApiError> {
    Ok(Json(read_record(&state, id).await?))
}

async fn read_record(state: &ApiState, id: i64) -> Result<RegistryRecord, ApiError> {
    let row = sqlx::query!(
        "select username, tracked, added_at, untracked_at, untracked_reason
         from influencers where influencer_id = $1",
        id,
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| ApiError::never_tracked(id))?;
    let stretches = sqlx::query!(
        "select expected_from, stopped_at, stop_reason from tracking_periods
         where influencer_id = $1 order by expected_from",
        id,
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(RegistryRecord {
        influencer_id: id,
        username: row.username,
        tracked: row.tracked,
        added_at: row.added_at.timestamp(),
        untracked_at: row.untracked_at.map(|t| t.timestamp()),
        untracked_reason: row.untracked_reason,
        stretches: stretches
            .into_iter()
            .map(|stretch| Stretch {
                from: stretch.expected_from.timestamp(),
                to: stretch.stopped_at.map(|t| t.timestamp()),
                stop_reason: stretch.stop_reason,
            })
            .collect(),
    })
}

/// `DELETE /influencers/{id}`'s parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UntrackQuery {
    /// Why tracking stops, kept with its stretch (at most 200 characters); default
    /// "untracked through the API".
    #[param(max_length = 200)]
    pub reason: Option<String>,
}

/// Stops tracking an influencer: it leaves the schedule at its next slot and the ranking and
/// the average at their next run; its points stay, and `POST /influencers` tracks it again.
/// Idempotent: an influencer not tracked is answered as it is.
#[utoipa::path(delete, path = "/influencers/{id}", tag = "tracking",
    params(InfluencerId, UntrackQuery),
    responses(
        (status = 200, body = RegistryRecord),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn untrack(
    State(state): State<ApiState>,
    InfluencerId { id }: InfluencerId,
    Query(query): Query<UntrackQuery>,
) -> Result<Json<RegistryRecord>, ApiError> {
    let reason = query
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "untracked through the API".to_string());
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::bad_request(
            "Reason too long",
            format!("`reason` is longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    let untracked = registry::untrack(&state.pool, &[id], &reason)
        .await
        .map_err(|e| match e.downcast::<sqlx::Error>() {
            Ok(e) => ApiError::from(e),
            Err(e) => ApiError::Internal(e),
        })?;
    if !untracked.unknown.is_empty() {
        return Err(ApiError::never_tracked(id));
    }
    if !untracked.untracked.is_empty() {
        metrics::counter!("influencers_untracked_total", "by" => "api").increment(1);
    }
    Ok(Json(read_record(&state, id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_kept_once_in_the_order_asked() {
        let ids = |json: &str| checked_ids(serde_json::from_str(json).unwrap());
        assert_eq!(ids("[5, 3, 5, 9]").unwrap(), vec![5, 3, 9]);
        assert_eq!(ids("[104629.0, 7]").unwrap(), vec![104_629, 7]);
        assert!(ids("[]").is_err());
        assert!(ids("[1, 0]").is_err());
        assert!(ids("[1.5]").is_err());
        assert!(ids("[-3]").is_err());
        assert!(ids(&format!("[{}]", MAX_PK + 1)).is_err());
        assert!(ids("[9007199254740992.0]").is_err());
        assert_eq!(ids(&format!("[{MAX_PK}]")).unwrap(), vec![MAX_PK]);
        let too_many = format!("[{}]", vec!["7"; MAX_IDS_PER_REQUEST + 1].join(","));
        assert!(ids(&too_many).is_err());
    }
}
