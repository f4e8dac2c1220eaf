//! Logs and metrics: set up once per process.
//!
//! Logs go through `tracing`: one sentence plus structured fields, human-readable by default,
//! JSON with `--log-format json` (`LOG_FORMAT`), filtered by `RUST_LOG` (default `info`).
//! Metrics go through the `metrics` facade into a Prometheus recorder that every long-running
//! role renders at `GET /metrics`. Labels have few values: never an influencer id.

use std::sync::OnceLock;

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global log subscriber. Safe to call more than once (later calls do nothing), so
/// tests can call it freely.
pub fn init_tracing(format: LogFormat) {
    // sqlx reports harmless server notices ("relation already exists") at INFO.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a test process); ours still renders.
        let _ = metrics::set_global_recorder(recorder);
        // Histograms keep raw samples until upkeep folds them into buckets: without it, a
        // million samples a minute pile up in memory between scrapes.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .expect("a thread for metrics upkeep");
        handle
    })
}

/// The Prometheus text-format answer of `GET /metrics`.
pub fn metrics_response() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics().render(),
    )
        .into_response()
}

/// `GET /metrics` in the Prometheus text format.
pub fn metrics_router() -> Router {
    Router::new().route("/metrics", get(|| async { metrics_response() }))
}
