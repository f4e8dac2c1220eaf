//! `bench classify`: one classification pass against a simulator process with the real
//! is_suspicious delay (about 1 s ± 1 s), with `CLASSIFY_CONCURRENCY` questions in flight.
//! Goal: 1,000,000 influencers classified in under an hour (`--quick`: 20,000, and the time
//! for 1,000,000 extrapolated from the rate).

use std::time::{Duration, Instant};

use anyhow::bail;
use tokio_util::sync::CancellationToken;

use super::{
    Goal, Report, Scenario, bench_database,
    procs::{Roles, free_port},
};
use crate::{
    classify::{PassOutcome, PassSettings, PassStart, SpikeRule, run_pass},
    config::{DatabaseSettings, ServiceUrl, UpstreamSettings},
    fetch::MockstagramClient,
};

const TARGET: f64 = 1_000_000.0;

pub async fn run(
    database: &DatabaseSettings,
    concurrency: usize,
    quick: bool,
) -> anyhow::Result<Report> {
    let influencers: i64 = if quick { 20_000 } else { 1_000_000 };
    let (pool, _) = bench_database(database, "classify", true).await?;
    super::register_with_latest(&pool, influencers).await?;

    let port = free_port()?;
    let mut simulator = Roles::default();
    simulator.spawn(
        "simulator",
        &["simulate", "--seed", "1"],
        &[
            ("SIMULATOR_LISTEN", format!("127.0.0.1:{port}")),
            ("SIMULATOR_POPULATION", influencers.to_string()),
            ("SIMULATOR_DELAY_SCALE", "1".into()),
        ],
    )?;
    let base = format!("http://127.0.0.1:{port}");
    simulator
        .wait_ready(&format!("{base}/api/v1/influencers/1000000"))
        .await?;
    let client = MockstagramClient::new(&UpstreamSettings {
        mockstagram_url: ServiceUrl::parse(&base, &["http"]).map_err(anyhow::Error::msg)?,
        mockstagram_rps: None,
        mockstagram_timeout: Duration::from_secs(10),
        mockstagram_concurrency: concurrency as u64,
        mockstagram_ca_file: None,
    })?;
    let settings = PassSettings {
        concurrency,
        interval: Duration::from_secs(60),
        spike: SpikeRule::default(),
    };
    let started = Instant::now();
    let outcome = run_pass(
        &pool,
        &client,
        &settings,
        PassStart::Now,
        CancellationToken::new(),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    simulator.stop();
    pool.close().await;
    let PassOutcome::Ran(report) = outcome else {
        bail!("no pass ran: {outcome:?}");
    };
    if !report.finished || report.asked != influencers as u64 {
        bail!("the pass did not classify everyone: {report:?}");
    }
    let rate = influencers as f64 / seconds;
    let mut out = Report::new(
        Scenario::Classify,
        quick,
        format!(
            "{influencers} influencers, one pass, {concurrency} is_suspicious questions in flight against a simulator process with the real delay (1 s ± 1 s); the pass's client, the simulator and PostgreSQL share the 2 cores."
        ),
    );
    out.goal(
        "time to classify 1,000,000 (from the rate)",
        TARGET / rate / 60.0,
        "min",
        Goal::AtMost(60.0),
    )
    .info("verdicts per second", rate, "verdicts/s")
    .info("questions in flight", concurrency as f64, "requests")
    .info(
        "verdicts without an answer",
        report.failed as f64,
        "influencers",
    )
    .info("pass duration", seconds, "s");
    Ok(out)
}
