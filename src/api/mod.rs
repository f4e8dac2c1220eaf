//! The HTTP API (`serve`): range queries, latest values and rank, health, metrics.
//!
//! Every answer that is not a success has one shape ([`error::ApiError`], RFC 9457), including
//! unknown routes and malformed parameters: parameters are parsed by hand ([`params`]), so no
//! framework rejection answers in another shape.

pub mod compare;
pub mod csv;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod forecast;
pub mod gaps;
pub mod growth;
pub mod influencers;
pub mod limits;
pub mod movers;
pub mod params;
pub mod population;
pub mod rank;
pub mod reads;
pub mod search;
pub mod tracking;
pub mod watchlists;
pub mod webhooks;

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    config::{BrokerUrls, ServiceUrl},
    health::RoleHealth,
};
use error::{ApiError, Problem};

/// The OpenAPI document, generated from the handlers' annotations; served at `/openapi.json`
/// and browsable at `/docs`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "influencer-analytics",
        description = "Follower metrics of influencers as time series. Times are epoch seconds; errors are RFC 9457 problem+json."
    ),
    paths(
        influencers::range,
        influencers::latest,
        gaps::gaps,
        growth::growth,
        rank::rank,
        forecast::forecast,
        compare::compare,
        movers::movers,
        search::search,
        population::average,
        population::top,
        population::suspicious,
        tracking::track,
        tracking::record,
        tracking::untrack,
        watchlists::create,
        watchlists::list,
        watchlists::view,
        watchlists::series::series,
        watchlists::delete,
        watchlists::add_members,
        watchlists::remove_members,
        events::events,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::delete,
        webhooks::enable,
        webhooks::deliveries,
        health,
        ready,
        metrics,
    ),
    components(schemas(
        Problem,
        influencers::RawPoint,
        influencers::Bucket,
        compare::Normalize,
        csv::Format,
        forecast::Horizon,
        movers::Window,
        movers::board::Metric,
        movers::board::By,
        movers::board::Direction,
        tracking::TrackRequest,
        tracking::Pk,
        tracking::TrackAnswer,
        tracking::RegistryRecord,
        watchlists::CreateWatchlist,
        watchlists::MembersRequest,
        webhooks::CreateWebhook,
        webhooks::EventTypeName,
    ))
)]
pub(crate) struct ApiDoc;

/// What every handler may use.
#[derive(Clone)]
pub struct ApiState {
    /// The primary: writes, and reads without a replica.
    pub pool: PgPool,
    /// Where reads go: the primary, or a streaming replica that keeps up ([`reads`]).
    pub reads: reads::Reads,
    /// The poll interval: the spacing of raw points.
    pub interval: Duration,
    /// The broker (a cluster's nodes), for `/readyz`.
    pub amqp_url: Option<BrokerUrls>,
    /// The process's roles, for `/healthz`.
    pub health: RoleHealth,
    /// API keys, the in-flight cap and the time limit ([`limits`]).
    pub limits: limits::Limits,
    /// Whether `/metrics` is served with the API; false when it listens on an address of its
    /// own (`serve`'s `METRICS_ADDR`).
    pub metrics_with_api: bool,
    /// The broker `POST /influencers` schedules through; `None`: that endpoint answers 503.
    pub scheduler: Option<tracking::Scheduler>,
    /// The latest ranking, read once each time a newer one is stored.
    pub ranking: crate::jobs::ranking::RankingCache,
    /// The movers' snapshots and boards, the newest few.
    pub movers: movers::Boards,
    /// Usernames of registered influencers, kept once read ([`USERNAMES_KEPT`]).
    pub usernames: moka::sync::Cache<i64, Arc<str>>,
    /// The event streams served ([`events::MAX_STREAMS`]).
    pub event_streams: events::Streams,
    /// Whether webhook URLs may name private addresses (`WEBHOOK_ALLOW_PRIVATE`).
    pub webhook_allow_private: bool,
}

/// How many usernames the API keeps, so that a range costs one statement fewer: an influencer
/// is never renamed nor removed from the registry, so a name once read stays true. An id not
/// registered is looked up again every time (a seed may register it at any moment). About
/// 100 bytes a name: 10 MB.
pub(crate) const USERNAMES_KEPT: u64 = 100_000;

impl ApiState {
    /// The state of an API reading `pool`, whose points are `interval` apart.
    pub fn new(pool: PgPool, interval: Duration) -> Self {
        Self {
            reads: reads::Reads::primary(pool.clone()),
            pool,
            interval,
            amqp_url: None,
            health: RoleHealth::default(),
            limits: limits::Limits::default(),
            metrics_with_api: true,
            scheduler: None,
            ranking: Default::default(),
            movers: Default::default(),
            usernames: moka::sync::Cache::new(USERNAMES_KEPT),
            event_streams: Default::default(),
            webhook_allow_private: false,
        }
    }

    /// Reads go as `reads` says (a replica that keeps up, else the primary).
    pub fn with_reads(mut self, reads: reads::Reads) -> Self {
        self.reads = reads;
        self
    }

    /// `/metrics` is served elsewhere, not with the API (a 404 here).
    pub(crate) fn without_metrics(mut self) -> Self {
        self.metrics_with_api = false;
        self
    }

    /// Guards and bounds the requests as `settings` say.
    pub fn with_limits(mut self, settings: crate::config::ApiSettings) -> Self {
        self.limits = limits::Limits::new(settings);
        self
    }

    /// Webhook URLs are checked as `settings` say.
    pub fn with_webhooks(mut self, settings: &crate::config::WebhookSettings) -> Self {
        self.webhook_allow_private = settings.webhook_allow_private;
        self
    }

    /// `/readyz` also checks the broker at `amqp_url` (one of a cluster's nodes answering is
    /// enough: the roles connect to whichever does).
    pub fn with_broker(mut self, amqp_url: impl Into<BrokerUrls>) -> Self {
        self.amqp_url = Some(amqp_url.into());
        self
    }

    /// `POST /influencers` schedules through the broker `settings` name (connected when first
    /// needed).
    pub fn with_scheduler(mut self, settings: crate::config::BrokerSettings) -> Self {
        self.scheduler = Some(tracking::Scheduler::new(settings));
        self
    }

    /// `/healthz` reports these roles.
    pub(crate) fn with_health(mut self, health: RoleHealth) -> Self {
        self.health = health;
        self
    }

    pub(crate) fn interval_seconds(&self) -> i64 {
        (self.interval.as_secs() as i64).max(1)
    }
}

pub fn router(state: ApiState) -> Router {
    let cors = limits::cors(state.limits.settings());
    let mut router = Router::new()
        .route("/influencer_analytics/average", get(population::average))
        .route("/influencer_analytics/top", get(population::top))
        .route("/influencer_analytics/compare", get(compare::compare))
        .route("/influencer_analytics/movers", get(movers::movers))
        .route("/influencer_analytics/search", get(search::search))
        .route(
            "/influencer_analytics/suspicious",
            get(population::suspicious),
        )
        .route("/influencer_analytics/{id}", get(influencers::range))
        .route(
            "/influencer_analytics/{id}/latest",
            get(influencers::latest),
        )
        .route("/influencer_analytics/{id}/gaps", get(gaps::gaps))
        .route("/influencer_analytics/{id}/growth", get(growth::growth))
        .route("/influencer_analytics/{id}/rank", get(rank::rank))
        .route(
            "/influencer_analytics/{id}/forecast",
            get(forecast::forecast),
        )
        .route("/influencers", axum::routing::post(tracking::track))
        .route(
            "/influencers/{id}",
            get(tracking::record).delete(tracking::untrack),
        )
        .route(
            "/watchlists",
            get(watchlists::list).post(watchlists::create),
        )
        .route(
            "/watchlists/{name}",
            get(watchlists::view).delete(watchlists::delete),
        )
        .route("/watchlists/{name}/series", get(watchlists::series::series))
        .route(
            "/watchlists/{name}/members",
            axum::routing::put(watchlists::add_members).delete(watchlists::remove_members),
        )
        .route("/events", get(events::events))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/webhooks/{id}",
            get(webhooks::get).delete(webhooks::delete),
        )
        .route(
            "/webhooks/{id}/enable",
            axum::routing::post(webhooks::enable),
        )
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .merge(dashboard::router())
        .route("/healthz", get(health))
        .route("/readyz", get(ready));
    if state.metrics_with_api {
        router = router.route("/metrics", get(metrics));
    }
    router = router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.limits.clone(),
            limits::limit,
        ));
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router.with_state(state)
}

/// The process is up: each role's state and restarts; 503 once a role has failed for good
/// (the process is then stopping). A failing role's error is in the log, and in the answer to
/// a request with one of `API_KEYS` (never in an open probe's: it can name the database).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, body = Object, description = "`{\"status\":\"ok\",\"roles\":{\"serve\":{\"state\":\"running\",\"restarts\":0},...}}`"),
    (status = 503, body = Object, description = "a role failed for good"),
))]
async fn health(
    State(state): State<ApiState>,
    key_holder: Option<axum::Extension<limits::KeyHolder>>,
) -> axum::response::Response {
    state.health.response(match key_holder {
        Some(_) => crate::health::Detail::Full,
        None => crate::health::Detail::States,
    })
}

/// Prometheus metrics in the text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, body = String, content_type = "text/plain")))]
async fn metrics() -> impl IntoResponse {
    crate::telemetry::metrics_response()
}

/// The broker's host and port: the URL's port, else the scheme's (AMQP 5672, AMQPS 5671).
fn broker_address(url: &ServiceUrl) -> (String, u16) {
    let url = url.url();
    let default = if url.scheme() == "amqps" { 5671 } else { 5672 };
    (
        url.host_str().unwrap_or("127.0.0.1").to_string(),
        url.port().unwrap_or(default),
    )
}

/// Whether a TCP connection to one of the broker's nodes opens within 2 s (tried together).
async fn any_node_answers(urls: &BrokerUrls) -> bool {
    let mut probes = tokio::task::JoinSet::new();
    for url in urls.nodes() {
        let address = broker_address(url);
        probes.spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(address),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        });
    }
    while let Some(answered) = probes.join_next().await {
        if answered.unwrap_or(false) {
            return true;
        }
    }
    false
}

/// 200 when the database and the broker answer, 503 (saying which does not) until then.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = String),
    (status = 503, body = Problem, content_type = "application/problem+json"),
))]
async fn ready(State(state): State<ApiState>) -> impl IntoResponse {
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar!("select 1 as ready").fetch_one(&state.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let broker = match &state.amqp_url {
        None => true,
        Some(urls) => any_node_answers(urls).await,
    };
    if database && broker {
        // With a replica: where reads go, and why (the primary when it is down or lags).
        match state.reads.describe() {
            Some(reads) => (StatusCode::OK, format!("ready; {reads}")).into_response(),
            None => (StatusCode::OK, "ready").into_response(),
        }
    } else {
        let missing = [(database, "database"), (broker, "broker")]
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(" and ");
        ApiError::Unavailable(format!("not ready: the {missing} cannot be reached")).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: `/readyz` probed port 5672 for `amqps://` URLs, whose default is 5671.
    #[test]
    fn the_broker_probe_uses_the_schemes_default_port() {
        let address =
            |raw: &str| broker_address(&ServiceUrl::parse(raw, &["amqp", "amqps"]).unwrap());
        assert_eq!(address("amqp://u:p@rabbit/%2f"), ("rabbit".into(), 5672));
        assert_eq!(address("amqps://u:p@rabbit/%2f"), ("rabbit".into(), 5671));
        assert_eq!(
            address("amqps://u:p@rabbit:5999/%2f"),
            ("rabbit".into(), 5999)
        );
        assert_eq!(address("amqp://10.0.0.7:5673"), ("10.0.0.7".into(), 5673));
    }
}
