//! The HTTP API (`serve`): range queries, latest values and rank, health, metrics.
//!
//! Every answer that is not a success has one shape ([`error::ApiError`], RFC 9457), including
//! unknown routes and malformed parameters: parameters are parsed by hand ([`params`]), so no
//! framework rejection answers in another shape.

pub mod dashboard;
pub mod error;
pub mod influencers;
pub mod params;
pub mod population;

use std::time::Duration;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use sqlx::PgPool;

use crate::config::ServiceUrl;
use error::ApiError;

/// What every handler may use.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    /// The poll interval: the spacing of raw points.
    pub interval: Duration,
    /// The broker, for `/readyz`.
    pub amqp_url: Option<ServiceUrl>,
}

impl ApiState {
    pub fn interval_seconds(&self) -> i64 {
        (self.interval.as_secs() as i64).max(1)
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/influencer_analytics/average", get(population::average))
        .route("/influencer_analytics/top", get(population::top))
        .route(
            "/influencer_analytics/suspicious",
            get(population::suspicious),
        )
        .route("/influencer_analytics/{id}", get(influencers::range))
        .route(
            "/influencer_analytics/{id}/latest",
            get(influencers::latest),
        )
        .merge(dashboard::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state)
        .merge(crate::telemetry::metrics_router())
}

/// 200 when the database and the broker answer, 503 (saying which does not) until then.
async fn ready(State(state): State<ApiState>) -> impl IntoResponse {
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("select 1").execute(&state.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let broker = match &state.amqp_url {
        None => true,
        Some(url) => {
            let host = url.url().host_str().unwrap_or("127.0.0.1").to_string();
            let port = url.url().port().unwrap_or(5672);
            tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect((host, port)),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        }
    };
    if database && broker {
        (StatusCode::OK, "ready").into_response()
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
