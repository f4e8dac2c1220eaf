//! `bench fleet`: three poll processes and two sink processes against the simulator, all given
//! the same MOCKSTAGRAM_RPS, with twice the work that ceiling allows, the pollers joining one
//! after another. Measured from the simulator's own count of requests
//! (`simulator_requests_total`), once a second: the fleet's combined rate over every
//! one-second window (joins included, and once settled) and over the whole run, each divided by the
//! ceiling (goal ≤ 1.1: the ceiling plus its tenth-of-a-second burst); and, once the point
//! queue has drained, the points stored with a fetch time in the measured window divided by
//! the profiles the simulator answered in it (goal ≥ 0.999: each answer stored, and no slot
//! fetched twice; the window's edges cut through a few requests in flight).

use std::time::{Duration, Instant};

use anyhow::Context;

use super::{
    Goal, Report, Scenario, bench_database, bench_queues,
    procs::{MetricsPage, Roles, counter_sum, free_port},
};
use crate::{
    config::{BrokerSettings, DatabaseSettings},
    mockstagram::FIRST_PK,
    queue::Broker,
};

const POLLERS: usize = 3;
const SINKS: usize = 2;
const INTERVAL_S: u64 = 10;
/// Seconds after the last poller's start by which every poller has counted the others.
const SETTLE_S: usize = 5;
/// Seconds between two pollers' starts.
const JOIN_GAP_S: u64 = 10;

pub async fn run(
    database: &DatabaseSettings,
    broker: &BrokerSettings,
    quick: bool,
) -> anyhow::Result<Report> {
    let (ceiling, seconds) = if quick { (300u64, 15u64) } else { (2000, 60) };
    // Twice what the ceiling allows.
    let influencers = (2 * ceiling * INTERVAL_S) as i64;
    let (pool, bench_db) = bench_database(database, "fleet", true).await?;
    let (queues, publisher) = bench_queues(broker, "fleet").await?;

    let mut roles = Roles::default();
    let sim_port = roles.spawn_simulator(influencers)?;
    let simulator_metrics = MetricsPage::new(format!("http://127.0.0.1:{sim_port}/metrics"));
    roles.wait_ready(simulator_metrics.url()).await?;
    let ids: Vec<i64> = (FIRST_PK..FIRST_PK + influencers).collect();
    crate::seed::seed(&pool, &publisher, Duration::from_secs(INTERVAL_S), &ids).await?;
    publisher.close().await;
    let env = [
        ("DATABASE_URL", bench_db.database_url.expose().to_string()),
        ("AMQP_URL", queues.amqp_url.expose().to_string()),
        ("QUEUE_PREFIX", queues.queue_prefix.clone()),
        ("QUEUE_TYPE", queues.queue_type.name().to_string()),
        ("MOCKSTAGRAM_URL", format!("http://127.0.0.1:{sim_port}")),
        ("MOCKSTAGRAM_RPS", ceiling.to_string()),
        ("POLL_INTERVAL", format!("{INTERVAL_S}s")),
    ];
    let mut sinks = Roles::default();
    for i in 0..SINKS {
        let mut sink_env = env.to_vec();
        sink_env.push(("METRICS_ADDR", format!("127.0.0.1:{}", free_port()?)));
        sinks.spawn(&format!("sink {i}"), &["sink"], &sink_env)?;
    }
    let mut pollers = Roles::default();
    let (samples, last_join) =
        join_pollers(&mut pollers, &mut sinks, &simulator_metrics, &env, seconds).await?;
    pollers.stop();
    drain(&queues).await?;
    sinks.stop();
    roles.stop();
    // Each answer the simulator gave in the window, stored once.
    let settled_from = last_join + SETTLE_S;
    let (from, to) = (&samples[settled_from], &samples[samples.len() - 1]);
    let answered = to.answered - from.answered;
    let stored = crate::series::inspect::hot_points_fetched(&pool, from.wall, to.wall).await?;
    pool.close().await;
    let publisher = Broker::connect(&queues).await?;
    publisher.delete_all().await?;
    publisher.close().await;

    let rates: Vec<f64> = samples
        .windows(2)
        .map(|w| (w[1].requests - w[0].requests) / (w[1].at - w[0].at).as_secs_f64())
        .collect();
    // The worst window over the whole run, the pollers' joins included, and again from
    // SETTLE_S seconds after the last join.
    let worst = rates.iter().copied().fold(0.0, f64::max);
    let settled = rates.iter().skip(settled_from).copied().fold(0.0, f64::max);
    let mean = (to.requests - from.requests) / (to.at - from.at).as_secs_f64();
    let ceiling = ceiling as f64;
    let mut report = Report::new(
        Scenario::Fleet,
        quick,
        format!(
            "{POLLERS} poll and {SINKS} sink processes, each given MOCKSTAGRAM_RPS={ceiling}, {influencers} influencers every {INTERVAL_S} s \
             (twice the ceiling), against the simulator in a process of its own. Pollers started {JOIN_GAP_S} s apart; requests counted \
             by the simulator each second from before the first poller's start to {seconds} s after the last one's; the settled figures, \
             the mean and the stored ÷ answered window start {SETTLE_S} s after the last start. Points counted once the point queue drained."
        ),
    );
    figures(
        &mut report,
        (worst, settled, mean),
        ceiling,
        (stored, answered),
    );
    Ok(report)
}

/// Starts a poller every JOIN_GAP_S seconds, sampling the simulator's counts of requests
/// every second from before the first one starts; the samples, and the index of the sample
/// at the last poller's start.
async fn join_pollers(
    pollers: &mut Roles,
    sinks: &mut Roles,
    simulator_metrics: &MetricsPage,
    env: &[(&str, String)],
    seconds: u64,
) -> anyhow::Result<(Vec<Sample>, usize)> {
    // Every second: the simulator's counts of requests, from before the first poller starts;
    // a poller joins every JOIN_GAP_S seconds.
    let started = Instant::now();
    let mut samples = vec![Sample::take(simulator_metrics).await?];
    let (mut joined, mut last_join) = (0, 0);
    let run_for = Duration::from_secs(JOIN_GAP_S * (POLLERS as u64 - 1) + seconds);
    loop {
        if joined < POLLERS && started.elapsed() >= Duration::from_secs(JOIN_GAP_S * joined as u64)
        {
            let mut poll_env = env.to_vec();
            poll_env.push(("METRICS_ADDR", format!("127.0.0.1:{}", free_port()?)));
            pollers.spawn(&format!("poll {joined}"), &["poll"], &poll_env)?;
            (joined, last_join) = (joined + 1, samples.len() - 1);
        }
        if started.elapsed() >= run_for {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(Sample::take(simulator_metrics).await?);
        pollers.check()?;
        sinks.check()?;
    }
    Ok((samples, last_join))
}

/// The upstream rates (worst, worst settled, mean) against the ceiling, and the points stored
/// against the profiles answered.
fn figures(
    report: &mut Report,
    (worst, settled, mean): (f64, f64, f64),
    ceiling: f64,
    (stored, answered): (i64, f64),
) {
    report
        .ratio(
            "worst 1 s upstream rate ÷ ceiling",
            worst / ceiling,
            ceiling,
            Goal::AtMost(1.1),
        )
        .ratio(
            "worst 1 s upstream rate ÷ ceiling, settled",
            settled / ceiling,
            ceiling,
            Goal::AtMost(1.1),
        )
        .ratio(
            "mean upstream rate ÷ ceiling",
            mean / ceiling,
            ceiling,
            // The burst, a tenth of a second's worth, spread over the window, at most.
            Goal::AtMost(1.01),
        )
        .goal(
            "points stored ÷ profiles answered",
            stored as f64 / answered.max(1.0),
            "",
            Goal::AtLeast(0.999),
        )
        .info("profiles answered in the window", answered, "requests")
        .info("points stored from the window", stored as f64, "points")
        .info("mean upstream rate", mean, "req/s");
}

/// Waits until the point queue is empty (the sinks have taken every outcome), then a moment
/// for the last commits.
async fn drain(queues: &BrokerSettings) -> anyhow::Result<()> {
    let broker = Broker::connect(queues).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.ready_count(&broker.topology.points).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker.close().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// The simulator's counts at one moment.
struct Sample {
    at: Instant,
    wall: chrono::DateTime<chrono::Utc>,
    /// Requests answered so far, any outcome.
    requests: f64,
    /// Profiles answered with data so far.
    answered: f64,
}

impl Sample {
    async fn take(simulator: &MetricsPage) -> anyhow::Result<Self> {
        let (at, wall) = (Instant::now(), chrono::Utc::now());
        let page = simulator.read().await?;
        let requests = |keep: fn(&str) -> bool| {
            counter_sum(&page, "simulator_requests_total", keep)
                .context("in the simulator's /metrics")
        };
        Ok(Self {
            at,
            wall,
            requests: requests(|_| true)?,
            answered: requests(|line| line.contains("outcome=\"ok\""))?,
        })
    }
}
