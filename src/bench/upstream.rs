//! `bench upstream`: against an external Mockstagram at MOCKSTAGRAM_URL (the real server, or
//! `influencer-analytics simulate` run apart), the pipeline's fetch rate divided by the rate a
//! load generator reaches on the same server in the same run. Goal ≥ 0.9: the pipeline must be
//! limited by the upstream, not by itself.
//!
//! 1. The ceiling: 64 keep-alive clients GET random pks as fast as the server answers.
//! 2. The pipeline: `poll` and `sink` processes with N influencers at an interval short enough
//!    that demand is 1.5 × the ceiling; the fetch rate is read from poll's `/metrics`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{
    Goal, Report, Scenario, bench_database, bench_queues, load,
    procs::{MetricsPage, Roles, counter_sum, free_port},
};
use crate::{
    config::{BrokerSettings, DatabaseSettings, UpstreamSettings},
    mockstagram::FIRST_PK,
    model::splitmix,
    queue::Broker,
};

/// Pks the upstream knows (the real server: 1000000..=1999999).
const POPULATION: u64 = 1_000_000;
const LOAD_CLIENTS: usize = 64;

pub async fn run(
    database: &DatabaseSettings,
    broker: &BrokerSettings,
    upstream: &UpstreamSettings,
    quick: bool,
) -> anyhow::Result<Report> {
    let seconds = if quick { 10 } else { 30 };
    let base = upstream
        .mockstagram_url
        .expose()
        .trim_end_matches('/')
        .to_string();

    // 1. The ceiling.
    let ceiling = ceiling(&base, seconds).await?;
    let ceiling_rate = ceiling.rate();

    // 2. The pipeline, asked for 1.5 × the ceiling.
    let interval_s = 10u64;
    let influencers =
        ((ceiling_rate * 1.5 * interval_s as f64) as i64).clamp(1000, POPULATION as i64);
    let (pool, bench_db) = bench_database(database, "upstream", true).await?;
    let (queues, publisher) = bench_queues(broker, "upstream").await?;
    let ids: Vec<i64> = (FIRST_PK..FIRST_PK + influencers).collect();
    crate::seed::seed(&pool, &publisher, Duration::from_secs(interval_s), &ids).await?;
    publisher.close().await;
    let metrics_port = free_port()?;
    let env = [
        ("DATABASE_URL", bench_db.database_url.expose().to_string()),
        ("AMQP_URL", queues.amqp_url.expose().to_string()),
        ("QUEUE_PREFIX", queues.queue_prefix.clone()),
        ("MOCKSTAGRAM_URL", base.clone()),
        ("POLL_INTERVAL", format!("{interval_s}s")),
    ];
    let mut roles = Roles::default();
    let mut sink_env = env.to_vec();
    sink_env.push(("METRICS_ADDR", format!("127.0.0.1:{}", free_port()?)));
    roles.spawn("sink", &["sink"], &sink_env)?;
    let mut poll_env = env.to_vec();
    poll_env.push(("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")));
    roles.spawn("poll", &["poll"], &poll_env)?;
    let poll_metrics = MetricsPage::new(format!("http://127.0.0.1:{metrics_port}/metrics"));
    roles.wait_ready(poll_metrics.url()).await?;
    // Warm up one interval, then measure.
    tokio::time::sleep(Duration::from_secs(interval_s)).await;
    let (fetched_before, at_before) = (fetched(&poll_metrics).await?, Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    roles.check()?;
    let fetched_after = fetched(&poll_metrics).await?;
    let pipeline_rate = (fetched_after - fetched_before) / at_before.elapsed().as_secs_f64();
    roles.stop();
    pool.close().await;
    let publisher = Broker::connect(&queues).await?;
    publisher.delete_all().await?;
    publisher.close().await;

    let mut report = Report::new(
        Scenario::Upstream,
        quick,
        format!(
            "Upstream {base}. Ceiling: {LOAD_CLIENTS} keep-alive clients, random pks, {seconds} s. Pipeline: poll and sink processes, \
             {influencers} influencers every {interval_s} s (1.5 × the ceiling), fetch rate from poll's /metrics over {seconds} s after a warm-up interval. \
             MOCKSTAGRAM_CONCURRENCY={}.",
            upstream.mockstagram_concurrency
        ),
    );
    report
        .ratio(
            "pipeline fetch rate ÷ load generator",
            pipeline_rate / ceiling_rate,
            ceiling_rate,
            Goal::AtLeast(0.9),
        )
        .info("pipeline fetches", pipeline_rate, "req/s")
        .info("load generator", ceiling_rate, "req/s")
        .info("load generator errors", ceiling.errors as f64, "requests");
    Ok(report)
}

/// The most the upstream at `base` answers: LOAD_CLIENTS keep-alive clients asking for random
/// pks for `seconds`.
async fn ceiling(base: &str, seconds: u64) -> anyhow::Result<load::Load> {
    let target = base.to_string();
    let ceiling = load::run(
        LOAD_CLIENTS,
        Duration::from_secs(seconds),
        move |client, i| {
            let pk = FIRST_PK as u64 + splitmix((client as u64) << 32 | i) % POPULATION;
            format!("{target}/api/v1/influencers/{pk}")
        },
        load::success,
    )
    .await?;
    if ceiling.latencies.is_empty() {
        bail!(
            "{base} answered no request with 2xx ({} errors): is MOCKSTAGRAM_URL right?",
            ceiling.errors
        );
    }
    Ok(ceiling)
}

/// Fetches answered with data so far, from poll's /metrics.
async fn fetched(poll: &MetricsPage) -> anyhow::Result<f64> {
    counter_sum(&poll.read().await?, "fetches_total", |l| {
        l.contains("outcome=\"fetched\"")
    })
    .context("in poll's /metrics")
}
