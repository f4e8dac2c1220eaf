//! What bounds and guards every request to the API, as one axum middleware stack:
//!
//! - a request id: `x-request-id` as the client sent it (up to 128 visible ASCII characters),
//!   else a new one; in the request's log span and returned on the answer;
//! - request metrics: `http_requests_total{route,status}` and
//!   `http_request_duration_seconds{route}`, labelled with the route's template
//!   (`/influencer_analytics/{id}`), never a raw path;
//! - API keys (`API_KEYS`, off when empty): the data endpoints (`/influencer_analytics/...`)
//!   want `Authorization: Bearer <key>`, else 401 problem+json; health, metrics, the OpenAPI
//!   document and the dashboard's page stay open (`/healthz` tells a key holder each failing
//!   role's error, [`KeyHolder`]). A key is checked by comparing SHA-256 digests, equal in
//!   length, with every key, so neither the time taken nor anything else says how long a key
//!   is or which one matched;
//! - a cap on requests in flight (`API_MAX_IN_FLIGHT`): one more is answered at once with 503
//!   problem+json and `Retry-After`, never queued without bound. The probes (`/healthz`,
//!   `/readyz`) are not counted: a busy API is not an unready one;
//! - a time limit per request (`API_REQUEST_TIMEOUT`): past it, 503 problem+json. The database
//!   cancels the API's statements at `API_STATEMENT_TIMEOUT` on its own (the API's pool).
//!
//! CORS ([`cors`], `API_CORS_ORIGINS`) wraps this stack, so a browser's preflight is answered
//! without a key, as browsers send none with it.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::error::ApiError;
use crate::config::{ApiSettings, CorsOrigin};

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The limits of one API, shared by its requests.
#[derive(Clone)]
pub struct Limits {
    settings: Arc<ApiSettings>,
    /// The SHA-256 digest of each of `API_KEYS`.
    key_digests: Arc<[Digest]>,
    in_flight: Arc<Semaphore>,
}

/// A SHA-256 digest.
type Digest = [u8; 32];

fn digest(bytes: &[u8]) -> Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Marks a request that carried one of `API_KEYS` (set by [`limit`] for the handlers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHolder;

impl Limits {
    pub fn new(settings: ApiSettings) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(settings.api_max_in_flight)),
            key_digests: settings
                .api_keys
                .iter()
                .map(|key| digest(key.expose().as_bytes()))
                .collect(),
            settings: Arc::new(settings),
        }
    }

    pub fn settings(&self) -> &ApiSettings {
        &self.settings
    }

    /// Whether `authorization` (the header's value) carries one of the keys.
    fn authorized(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(token) = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        matches_any(&self.key_digests, &digest(token.trim().as_bytes()))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(ApiSettings::default())
    }
}

/// Whether `token` is one of `keys` (digests both): every key compared whole, none skipped, so
/// the time taken says nothing about how much of a key was right, how long it is, or which key
/// matched.
fn matches_any(keys: &[Digest], token: &Digest) -> bool {
    keys.iter().fold(false, |found, key| {
        let differences = key.iter().zip(token).fold(0u8, |acc, (x, y)| acc | (x ^ y));
        found | (differences == 0)
    })
}

/// Whether `path` is a probe (`/healthz`, `/readyz`), which the in-flight cap does not count.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// The id a request is known by: the client's `x-request-id` when it is usable, else new.
fn request_id(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&format!("{:016x}", rand::random::<u64>()))
                .expect("hex is a valid header value")
        })
}

/// Whether `path` is one of the endpoints API keys guard: the data (`/influencer_analytics`),
/// the registry (`/influencers`), the watchlists (`/watchlists`), the events (`/events`) and
/// the webhooks (`/webhooks`).
fn guarded(path: &str) -> bool {
    [
        "/influencer_analytics",
        "/influencers",
        "/watchlists",
        "/events",
        "/webhooks",
    ]
    .iter()
    .any(|root| {
        path == *root
            || path
                .strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// What lets pages of the `API_CORS_ORIGINS` origins read the API from a browser; `None` when
/// the setting is empty (no cross-origin access).
pub(crate) fn cors(settings: &ApiSettings) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = &settings.api_cors_origins;
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.contains(&CorsOrigin::Any) {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|origin| match origin {
            CorsOrigin::Exact(origin) => HeaderValue::from_str(origin).ok(),
            CorsOrigin::Any => None,
        }))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([axum::http::Method::GET, axum::http::Method::HEAD])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
            .expose_headers([REQUEST_ID, header::RETRY_AFTER, header::WWW_AUTHENTICATE])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

/// The middleware: see the module docs.
pub async fn limit(State(limits): State<Limits>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&request);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
        route = %route,
    );
    let mut response = async {
        let key_holder = !limits.settings.api_keys.is_empty()
            && limits.authorized(request.headers().get(header::AUTHORIZATION));
        if key_holder {
            request.extensions_mut().insert(KeyHolder);
        }
        if !limits.settings.api_keys.is_empty() && guarded(request.uri().path()) && !key_holder {
            return ApiError::Unauthorized(
                "this endpoint wants an API key: send `Authorization: Bearer <key>` with one of API_KEYS"
                    .into(),
            )
            .into_response();
        }
        let permit = limits.in_flight.clone().try_acquire_owned();
        if permit.is_err() && !is_probe(request.uri().path()) {
            metrics::counter!("http_requests_shed_total").increment(1);
            let mut response = ApiError::Unavailable(format!(
                "the API is answering {} requests already (API_MAX_IN_FLIGHT); try again shortly",
                limits.settings.api_max_in_flight
            ))
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        // Held until the answer is made (a probe may go without one).
        let _permit = permit.ok();
        let timeout = limits.settings.api_request_timeout;
        match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(?timeout, "request took longer than API_REQUEST_TIMEOUT");
                ApiError::Unavailable(format!(
                    "the request took longer than {} (API_REQUEST_TIMEOUT); try a shorter range or a coarser step",
                    humantime::format_duration(timeout)
                ))
                .into_response()
            }
        }
    }
    .instrument(span)
    .await;
    response.headers_mut().insert(REQUEST_ID, id);
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_only_whole_and_any_of_the_keys_may_match() {
        let keys = [digest(b"secret"), digest(b"other-key-of-another-length")];
        assert!(matches_any(&keys, &digest(b"secret")));
        assert!(matches_any(&keys, &digest(b"other-key-of-another-length")));
        for wrong in [&b"secreT"[..], b"secret2", b"secre", b"", b"x"] {
            assert!(!matches_any(&keys, &digest(wrong)), "{wrong:?}");
        }
        assert!(!matches_any(&[], &digest(b"")), "no keys: nothing matches");
    }

    #[test]
    fn the_probes_are_not_counted_by_the_in_flight_cap() {
        assert!(is_probe("/healthz") && is_probe("/readyz"));
        assert!(!is_probe("/metrics") && !is_probe("/influencer_analytics/1"));
    }

    #[test]
    fn only_the_data_endpoints_are_guarded() {
        assert!(guarded("/influencer_analytics/1000001"));
        assert!(guarded("/influencer_analytics/average"));
        for open in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/",
            "/dashboard",
        ] {
            assert!(!guarded(open), "{open}");
        }
        assert!(!guarded("/influencer_analyticsX"));
        assert!(guarded("/influencers"));
        assert!(guarded("/influencers/1000001"));
        assert!(guarded("/watchlists"));
        assert!(guarded("/watchlists/campaign/members"));
        assert!(!guarded("/watchlistsX"));
        assert!(guarded("/webhooks"));
        assert!(guarded("/webhooks/3/deliveries"));
        assert!(!guarded("/influencersX"));
    }
}
