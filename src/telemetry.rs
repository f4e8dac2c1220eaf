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
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
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

/// The recorder's configuration: seconds' buckets for every histogram, except those that
/// measure something else.
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
        ])
        .expect("static buckets are valid")
        // A count, not seconds: batches of up to SINK_BATCH_ROWS (5,000 by default), which
        // the seconds' buckets would all put in +Inf.
        .set_buckets_for_metric(
            Matcher::Full("sink_batch_rows".into()),
            &[
                1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0,
            ],
        )
        .expect("static buckets are valid")
        // Jobs of up to minutes.
        .set_buckets_for_metric(
            Matcher::Full("job_run_seconds".into()),
            &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0],
        )
        .expect("static buckets are valid")
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = builder().build_recorder();
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
pub(crate) fn metrics_response() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics().render(),
    )
        .into_response()
}

/// `GET /metrics` in the Prometheus text format.
pub(crate) fn metrics_router() -> Router {
    Router::new().route("/metrics", get(|| async { metrics_response() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: `sink_batch_rows` (up to 5,000 rows) shared the seconds' buckets, so every
    /// batch landed in +Inf.
    #[test]
    fn batch_sizes_are_bucketed_in_rows_and_durations_in_seconds() {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("sink_batch_rows").record(3000.0);
            metrics::histogram!("sink_flush_seconds").record(0.02);
        });
        handle.run_upkeep();
        let text = handle.render();
        assert!(
            text.contains(r#"sink_batch_rows_bucket{le="2500"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sink_batch_rows_bucket{le="5000"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"sink_batch_rows_bucket{le="0.001"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sink_flush_seconds_bucket{le="0.025"} 1"#),
            "{text}"
        );
    }
}
