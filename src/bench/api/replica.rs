//! `bench api` on a streaming replica: with DATABASE_READ_URL (or `--replica`), a second
//! `serve` reads off the replica of the benchmark's database, and the day range at full speed,
//! rank (`/latest`) and `/average` are measured through it, reported beside the primary's.
//!
//! The replica must be one of DATABASE_URL's server (`scripts/services replica up`): the
//! benchmark's database is on it under the same name once replayed. Before measuring, the
//! benchmark waits until that `serve` says its reads are on the replica.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{POINT_CLIENTS, RANGE_CLIENTS, Setup, day_url, point_reads, range_id};
use crate::bench::{
    Report, load, ms,
    procs::{Roles, free_port},
    quantile,
};
use crate::config::ServiceUrl;

/// How long the replica may take to replay the benchmark's database before the run gives up.
const CATCH_UP: Duration = Duration::from_secs(1_800);

/// The loads measured through the `serve` reading off the replica.
pub(super) struct OnReplica {
    range: load::Load,
    latest: load::Load,
    average: load::Load,
    /// The replica's lag as `/readyz` told it after the loads.
    said: String,
}

/// `read_server`'s URL with the benchmark database's name.
fn replica_of(read_server: &ServiceUrl, bench: &ServiceUrl) -> anyhow::Result<ServiceUrl> {
    let mut url = read_server.url().clone();
    url.set_path(bench.url().path());
    ServiceUrl::parse(url.as_str(), &["postgres", "postgresql"]).map_err(anyhow::Error::msg)
}

/// With a replica: starts `serve` on it, waits until its reads are there, and runs the loads.
pub(super) async fn measure(
    setup: &mut Setup,
    read_server: Option<&ServiceUrl>,
) -> anyhow::Result<Option<OnReplica>> {
    match read_server {
        Some(read_server) => Ok(Some(measure_on(setup, read_server).await?)),
        None => Ok(None),
    }
}

async fn measure_on(setup: &mut Setup, read_server: &ServiceUrl) -> anyhow::Result<OnReplica> {
    let replica = replica_of(read_server, &setup.database_url)?;
    let port = free_port()?;
    let mut server = Roles::default();
    server.spawn(
        "serve on the replica",
        &["serve"],
        &[
            ("DATABASE_URL", setup.database_url.expose().to_string()),
            ("DATABASE_READ_URL", replica.expose().to_string()),
            ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("DATABASE_POOL_SIZE", setup.connections.to_string()),
        ],
    )?;
    let base = format!("http://127.0.0.1:{port}");
    server.wait_ready(&format!("{base}/healthz")).await?;
    let waited = Instant::now();
    let said = reads_on_the_replica(&base, CATCH_UP).await?;
    eprintln!(
        "bench api: {said} (after {:.0} s); measuring the reads there",
        waited.elapsed().as_secs_f64()
    );

    let primary_base = std::mem::replace(&mut setup.server_base, base.clone());
    let with_points = setup.with_points;
    let range_base = base.clone();
    let range = load::run(
        RANGE_CLIENTS,
        setup.duration,
        move |client, i| day_url(&range_base, range_id(99, client, i, with_points)),
        load::success,
    )
    .await;
    let points = point_reads(setup).await;
    setup.server_base = primary_base;
    let said = reads_on_the_replica(&base, Duration::from_secs(1))
        .await
        .context("the reads left the replica during the run: its figures would be the primary's")?;
    server.stop();
    let (latest, average) = points?;
    Ok(OnReplica {
        range: range?,
        latest,
        average,
        said,
    })
}

/// Waits until `/readyz` of the `serve` at `base` says its reads are on the replica.
async fn reads_on_the_replica(base: &str, within: Duration) -> anyhow::Result<String> {
    let http = crate::tls::http_client();
    let deadline = Instant::now() + within;
    let mut said = String::new();
    let mut told = Instant::now();
    while Instant::now() < deadline {
        said = http
            .get(format!("{base}/readyz"))
            .send()
            .await?
            .text()
            .await?;
        if said.contains("reads on the replica") {
            return Ok(said);
        }
        if told.elapsed() >= Duration::from_secs(30) {
            eprintln!("bench api: waiting for the replica: {said}");
            told = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the replica did not take the reads within {within:?}: /readyz says {said:?}")
}

/// The replica's figures, if it was measured, beside the primary's.
pub(super) fn report(on_replica: Option<OnReplica>, report: &mut Report, primary_range_rate: f64) {
    if let Some(on_replica) = on_replica {
        on_replica.report(report, primary_range_rate);
    }
}

impl OnReplica {
    /// The replica's figures, each beside the primary's (`primary_range_rate`, full speed).
    fn report(mut self, report: &mut Report, primary_range_rate: f64) {
        let errors = self.range.errors + self.latest.errors + self.average.errors;
        let range_rate = self.range.rate();
        report
            .info("on the replica: requests failed", errors as f64, "requests")
            .info(
                &format!(
                    "on the replica: range at full speed, requests/s ({RANGE_CLIENTS} clients)"
                ),
                range_rate,
                "req/s",
            )
            .info(
                "on the replica: range at full speed ÷ on the primary",
                range_rate / primary_range_rate,
                "ratio",
            )
            .info(
                "on the replica: range at full speed, p99",
                ms(quantile(&mut self.range.latencies, 0.99)),
                "ms",
            )
            .info(
                &format!("on the replica: rank (/latest) p99 ({POINT_CLIENTS} clients)"),
                ms(quantile(&mut self.latest.latencies, 0.99)),
                "ms",
            )
            .info(
                "on the replica: /average p99",
                ms(quantile(&mut self.average.latencies, 0.99)),
                "ms",
            );
        eprintln!("bench api: after the loads, /readyz said {:?}", self.said);
    }
}
