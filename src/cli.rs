//! The command line: one binary, one subcommand per role. Each subcommand's flags are a struct
//! and its body one short function: parse, then hand over to the stage ([`crate::seed`],
//! [`crate::classify`]) or to [`crate::roles`], which builds and supervises the long-running
//! roles the same way for the binary and for the tests.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};

use tokio_util::sync::CancellationToken;

use crate::{
    api::{ApiState, reads::Reads},
    classify::{self, PassOutcome, PassSettings, PassStart},
    config::{
        ApiSettings, BrokerSettings, ClassifySettings, DatabaseSettings, ListenSettings,
        ScheduleSettings, SinkSettings, StorageSettings, UpstreamSettings,
    },
    db,
    fetch::MockstagramClient,
    jobs,
    queue::Broker,
    roles::Roles,
    seed::{self, SeedSource},
    shutdown,
    telemetry::LogFormat,
};

/// Tracks influencers' follower metrics as time series: Mockstagram → RabbitMQ → TimescaleDB.
///
/// Every setting is a flag or the environment variable of the same name (listed in each
/// command's --help); the defaults point at what `scripts/services up` starts.
#[derive(Debug, Parser)]
#[command(name = "influencer-analytics", version, about, long_about)]
pub struct Cli {
    /// How logs are written (level: RUST_LOG, e.g. `info` or `influencer_analytics=debug`).
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The roles. Each long-running one stops cleanly on SIGINT/SIGTERM, and exits with a non-zero
/// status when one of its roles cannot go on.
#[derive(Debug, Subcommand)]
// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Create the database if missing and apply the schema migrations.
    Migrate(DatabaseSettings),
    /// Serve a simulated Mockstagram API (both endpoints, same JSON, same faults as the real one).
    #[cfg(feature = "tools")]
    Simulate(crate::config::SimulatorSettings),
    /// Register influencers and put them into the polling schedule.
    Seed(SeedArgs),
    /// Stop tracking influencers: they leave the schedule at their next slot, and the ranking
    /// and the average at their next run; their points stay, and `seed` tracks them again.
    Untrack(UntrackArgs),
    /// Fetch each scheduled influencer from Mockstagram once per interval (the poller), and
    /// reconcile the schedule.
    Poll(PollArgs),
    /// Write fetched points from the point queue into TimescaleDB in batches; run the minutely
    /// jobs (average, ranking, compaction, retention; one process at a time does each).
    Sink(SinkArgs),
    /// Compact now: closed hours of raw points into segments, closed days into day segments,
    /// late points into theirs; then apply RETENTION; write the day closes of days merged
    /// before they were kept, and rank the closed days. With --status, only print how far
    /// compaction lags.
    Compact(CompactArgs),
    /// Move the messages of a dead-letter queue back to the queue they came from, once the
    /// cause is fixed: `points` (<prefix>.points.dead to <prefix>.points) or `schedule`
    /// (<prefix>.schedule.dead to <prefix>.schedule.due). Prints how many moved.
    ReplayDead(ReplayDeadArgs),
    /// Serve the query API and the dashboard.
    Serve(ServeArgs),
    /// Run one suspicious-classification pass now (or resume the unfinished one): Mockstagram's
    /// is_suspicious for every influencer, and the follower-spike detector over the last day.
    Classify(ClassifyArgs),
    /// Write every point of the chosen influencers (all by default) over a range to a CSV or
    /// Parquet file, straight from the tiers, with a progress bar.
    Export(crate::export::ExportArgs),
    /// The event log: `events tail` follows an API's live stream (`GET /events`) and prints
    /// each event as a line of JSON, resuming after a dropped connection.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Measure a performance goal: prints a Markdown table and writes target/bench/<scenario>.json.
    #[cfg(feature = "tools")]
    Bench(crate::bench::BenchArgs),
    /// Run every role in one process: poll, sink, reconciler, jobs, API (optionally with the
    /// built-in simulator and a seeded demo population).
    Run(RunArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Print the API's events as they are detected, one JSON line each.
    Tail(crate::events::tail::TailArgs),
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    source: SeedSource,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    schedule: ScheduleSettings,
}

#[derive(Debug, Args)]
pub struct UntrackArgs {
    /// The ids to stop tracking, e.g. `1000005 1000006`.
    #[arg(value_parser = seed::parse_pk, required_unless_present = "file", conflicts_with = "file")]
    ids: Vec<i64>,
    /// A file with one id a line ('#' starts a comment), as `seed --file` reads.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Why tracking stops: kept in the registry and as the end of the stretch of tracking.
    #[arg(long, default_value = "untracked by a user")]
    reason: String,
    #[command(flatten)]
    database: DatabaseSettings,
}

#[derive(Debug, Args)]
pub struct PollArgs {
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    upstream: UpstreamSettings,
    #[command(flatten)]
    schedule: ScheduleSettings,
    /// Address of this process's /metrics.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9101")]
    metrics_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct SinkArgs {
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    sink: SinkSettings,
    #[command(flatten)]
    storage: StorageSettings,
    /// Address of this process's /metrics.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9102")]
    metrics_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Only print the compaction status (lag, raw chunks, segments) as JSON.
    #[arg(long)]
    status: bool,
    /// How long to wait for another process's compaction to finish first.
    #[arg(long, default_value = "10m", value_parser = crate::config::duration)]
    wait: Duration,
    #[command(flatten)]
    storage: StorageSettings,
    #[command(flatten)]
    database: DatabaseSettings,
}

#[derive(Debug, Args)]
pub struct ReplayDeadArgs {
    /// Which dead-letter queue.
    #[arg(value_enum)]
    queue: crate::queue::replay::DeadLetters,
    #[command(flatten)]
    broker: BrokerSettings,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    database: DatabaseSettings,
    /// The broker `POST /influencers` schedules through.
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    listen: ListenSettings,
    #[command(flatten)]
    api: ApiSettings,
    #[command(flatten)]
    schedule: ScheduleSettings,
    /// WEBHOOK_ALLOW_PRIVATE checks the URLs `POST /webhooks` is given.
    #[command(flatten)]
    webhooks: crate::config::WebhookSettings,
    /// Address of this process's /metrics, /healthz and /readyz, apart from the API. Unset:
    /// /metrics is served on LISTEN_ADDR with the API.
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Only print the state of the latest pass.
    #[arg(long)]
    status: bool,
    /// Keep running, and run a pass every day at CLASSIFY_AT (UTC) instead of once now.
    #[arg(long, conflicts_with = "status")]
    daily: bool,
    #[command(flatten)]
    classify: ClassifySettings,
    #[command(flatten)]
    schedule: ScheduleSettings,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    upstream: UpstreamSettings,
    /// Address of this process's /metrics (with --daily).
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9103")]
    metrics_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Start the built-in Mockstagram simulator and poll it (MOCKSTAGRAM_URL is ignored).
    #[cfg(feature = "tools")]
    #[arg(long)]
    simulate: bool,
    /// Seed this many influencers (pks from 1000000) at start; 5000 with --simulate.
    #[arg(long, env = "SEED_COUNT")]
    seed_count: Option<u64>,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    upstream: UpstreamSettings,
    #[command(flatten)]
    schedule: ScheduleSettings,
    #[command(flatten)]
    sink: SinkSettings,
    #[command(flatten)]
    storage: StorageSettings,
    #[command(flatten)]
    listen: ListenSettings,
    #[command(flatten)]
    api: ApiSettings,
    #[command(flatten)]
    classify: ClassifySettings,
    #[cfg(feature = "tools")]
    #[command(flatten)]
    simulator: crate::config::SimulatorSettings,
}

/// Runs the parsed command to its end.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate(database) => migrate(database).await,
        #[cfg(feature = "tools")]
        Command::Simulate(settings) => crate::simulator::run(settings, shutdown::on_signal()).await,
        Command::Seed(args) => seed(args).await,
        Command::Untrack(args) => untrack(args).await,
        Command::Poll(args) => poll(args).await,
        Command::Sink(args) => sink(args).await,
        Command::Compact(args) => compact(args).await,
        Command::ReplayDead(args) => replay_dead(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Classify(args) => classify(args).await,
        Command::Export(args) => crate::export::run(args).await,
        Command::Events(EventsCommand::Tail(args)) => crate::events::tail::run(args).await,
        #[cfg(feature = "tools")]
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Run(args) => run_all(args).await,
    }
}

async fn migrate(database: DatabaseSettings) -> anyhow::Result<()> {
    db::connect(&database).await?.close().await;
    println!("migrations applied to {}", database.database_url);
    Ok(())
}

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let parsed = args.source.read()?;
    let pool = db::connect(&args.database).await?;
    let broker = Broker::connect(&args.broker).await?;
    let report = seed::seed(&pool, &broker, args.schedule.poll_interval, &parsed.ids).await?;
    println!(
        "seeded {} ids: {} new, {} already tracked, {} tracked again, {} repeated in the input; {} schedule messages",
        parsed.ids.len(),
        report.new,
        report.already_tracked,
        report.retracked,
        parsed.repeated,
        report.schedule_messages
    );
    for (reason, n) in &parsed.rejected {
        println!("rejected {n}: {reason}");
    }
    broker.close().await;
    Ok(())
}

async fn untrack(args: UntrackArgs) -> anyhow::Result<()> {
    let ids = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read the file of ids {}: {e}", path.display())
            })?;
            let parsed = seed::parse_ids(&text);
            if let Some((reason, n)) = parsed.rejected.iter().next() {
                anyhow::bail!(
                    "{}: {n} lines rejected ({reason}); nothing untracked",
                    path.display()
                );
            }
            parsed.ids
        }
        None => args.ids.clone(),
    };
    let pool = db::connect(&args.database).await?;
    let report = crate::registry::untrack(&pool, &ids, &args.reason).await?;
    println!(
        "untracked {}, not tracked already {}, unknown {}",
        report.untracked.len(),
        report.not_tracked.len(),
        report.unknown.len()
    );
    if !report.unknown.is_empty() {
        let shown: Vec<String> = report.unknown.iter().take(20).map(i64::to_string).collect();
        let more = report.unknown.len().saturating_sub(shown.len());
        anyhow::bail!(
            "{} ids were never registered: {}{}",
            report.unknown.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

async fn poll(args: PollArgs) -> anyhow::Result<()> {
    let mut roles = Roles::new(shutdown::on_signal());
    let pool = db::connect(&args.database).await?;
    roles.serve_ops(args.metrics_addr).await?;
    let client = MockstagramClient::new(&args.upstream)?;
    let interval = args.schedule.poll_interval;
    roles.poll(pool.clone(), args.broker.clone(), client, interval);
    roles.reconcile(pool, args.broker, interval);
    roles.wait().await
}

async fn sink(args: SinkArgs) -> anyhow::Result<()> {
    let mut roles = Roles::new(shutdown::on_signal());
    let pool = db::connect(&args.database).await?;
    roles.serve_ops(args.metrics_addr).await?;
    roles.sink(pool.clone(), args.broker, args.sink);
    roles.spikes(pool.clone(), args.storage.events.event_spike_z);
    roles.webhooks(pool.clone(), args.storage.events.webhooks.clone());
    roles.jobs(pool, args.storage);
    roles.wait().await
}

async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let pool = db::connect(&args.database).await?;
    if !args.status {
        let started = std::time::Instant::now();
        let report = jobs::compaction::run_now(
            &pool,
            jobs::compaction::Budget::of(&args.storage),
            args.wait,
            &mut |line| println!("{line}"),
        )
        .await?;
        let retained = jobs::retention::apply(&pool, args.storage.retention).await?;
        // Days merged before the day closes were kept get theirs, then their ranks.
        let filled = crate::series::closes::backfill(&pool, &mut |line| println!("{line}")).await?;
        if !filled.is_empty() {
            println!(
                "day closes written for {} days merged before they were kept",
                filled.len()
            );
        }
        if let jobs::JobOutcome::Done(days) = jobs::ranking::rank_closed_days(&pool).await? {
            println!("{days} closed days ranked");
        }
        println!(
            "compacted {} hours ({} points), {} late points, {} days: {} segments, {} bytes, in {:.1} s; retention dropped {} chunks and {} rows",
            report.chunks,
            report.hour_points,
            report.late_points,
            report.days,
            report.segments,
            report.bytes,
            started.elapsed().as_secs_f64(),
            retained.chunks,
            retained.rows,
        );
    }
    let status = jobs::compaction::status(&pool).await?;
    println!("{}", serde_json::to_string(&status)?);
    Ok(())
}

async fn replay_dead(args: ReplayDeadArgs) -> anyhow::Result<()> {
    let broker = Broker::connect(&args.broker).await?;
    let replayed = crate::queue::replay::replay_dead(&broker, args.queue).await;
    broker.close().await;
    let replayed = replayed?;
    println!(
        "replayed {} messages; {} left in the dead-letter queue",
        replayed.moved, replayed.left
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut roles = Roles::new(shutdown::on_signal());
    // Migrated first on a pool of its own; the API's statements are bounded in time.
    db::connect(&args.database).await?.close().await;
    let pool = db::open_api_pool(&args.database, args.api.api_statement_timeout).await?;
    let reads = Reads::for_api(&pool, &args.database, &args.api)?;
    // The API reads the database, and uses the broker only to schedule what `POST
    // /influencers` tracks: its /readyz does not wait for the broker.
    let mut api = ApiState::new(pool, args.schedule.poll_interval)
        .with_reads(reads)
        .with_limits(args.api)
        .with_scheduler(args.broker)
        .with_webhooks(&args.webhooks);
    let mut metrics_addr = None;
    if let Some(addr) = args.metrics_addr {
        api = api.without_metrics();
        metrics_addr = Some(roles.serve_ops(addr).await?);
    }
    let addr = roles.serve_api(api, args.listen.listen_addr).await?;
    let metrics_addr = metrics_addr.unwrap_or(addr);
    println!(
        "API at http://{addr}/influencer_analytics/{{id}}; metrics at http://{metrics_addr}/metrics"
    );
    roles.wait().await
}

async fn classify(args: ClassifyArgs) -> anyhow::Result<()> {
    let pool = db::connect(&args.database).await?;
    if args.status {
        match classify::status(&pool).await? {
            Some(line) => println!("{line}"),
            None => println!("no classification pass has run yet"),
        }
        return Ok(());
    }
    let settings = PassSettings::new(&args.classify, args.schedule.poll_interval);
    let mut upstream = args.upstream;
    upstream.mockstagram_concurrency = args.classify.classify_concurrency as u64;
    let client = MockstagramClient::new(&upstream)?;
    if args.daily {
        let mut roles = Roles::new(shutdown::on_signal());
        roles.serve_ops(args.metrics_addr).await?;
        let at = args.classify.classify_at;
        roles.daily_classification(pool, client, settings, at, Duration::ZERO);
        return roles.wait().await;
    }
    let start = PassStart::Now;
    match classify::run_pass(&pool, &client, &settings, start, shutdown::on_signal()).await? {
        PassOutcome::AlreadyRunning => {
            println!("another classification pass is running; nothing done")
        }
        PassOutcome::UpToDate => unreachable!("only for daily passes"),
        PassOutcome::Ran(report) => println!("{report}"),
    }
    Ok(())
}

/// `run`: every role in one process; with `--simulate`, the built-in simulator too.
async fn run_all(args: RunArgs) -> anyhow::Result<()> {
    let mut roles = Roles::new(shutdown::on_signal());
    // The simulator stops last, once the poller has finished the batches in hand.
    let simulator_stop = CancellationToken::new();
    let (upstream, seed_count) = upstream_of_run(&args, simulator_stop.clone()).await?;
    let pool = db::connect(&args.database).await?;
    let interval = args.schedule.poll_interval;
    if seed_count > 0 {
        seed_demo(&pool, &args.broker, interval, seed_count).await?;
    }
    let api_pool = db::open_api_pool(&args.database, args.api.api_statement_timeout).await?;
    let reads = Reads::for_api(&api_pool, &args.database, &args.api)?;
    let api = ApiState::new(api_pool, interval)
        .with_reads(reads)
        .with_broker(args.broker.amqp_url.clone())
        .with_scheduler(args.broker.clone())
        .with_limits(args.api.clone())
        .with_webhooks(&args.storage.events.webhooks);
    let addr = roles.serve_api(api, args.listen.listen_addr).await?;
    println!(
        "polling every {}; API at http://{addr}/influencer_analytics/1000000; metrics at http://{addr}/metrics; Ctrl-C stops",
        humantime::format_duration(interval),
    );
    let client = MockstagramClient::new(&upstream)?;
    // The daily pass shares the fetcher's rate ceiling; its first look waits two intervals,
    // so that a fresh start has everyone's first point to send.
    let classifier = client.with_in_flight(args.classify.classify_concurrency);
    let settings = PassSettings::new(&args.classify, interval);
    roles.daily_classification(
        pool.clone(),
        classifier,
        settings,
        args.classify.classify_at,
        2 * interval,
    );
    roles.poll(pool.clone(), args.broker.clone(), client, interval);
    roles.reconcile(pool.clone(), args.broker.clone(), interval);
    roles.sink(pool.clone(), args.broker, args.sink);
    roles.spikes(pool.clone(), args.storage.events.event_spike_z);
    roles.webhooks(pool.clone(), args.storage.events.webhooks.clone());
    roles.jobs(pool, args.storage);
    let ended = roles.wait().await;
    simulator_stop.cancel();
    ended
}

/// The upstream `run` polls and how many influencers it seeds: with `--simulate`, a simulator
/// started here (until `simulator_stop`) and 5,000 by default.
async fn upstream_of_run(
    args: &RunArgs,
    simulator_stop: CancellationToken,
) -> anyhow::Result<(UpstreamSettings, u64)> {
    #[cfg(feature = "tools")]
    if args.simulate {
        let addr = crate::simulator::start(&args.simulator, simulator_stop).await?;
        println!("simulated Mockstagram at http://{addr}");
        let url = crate::config::ServiceUrl::parse(&format!("http://{addr}"), &["http"])
            .map_err(anyhow::Error::msg)?;
        let upstream = UpstreamSettings {
            mockstagram_url: url,
            // Its own simulator is plain HTTP on loopback: a CA for MOCKSTAGRAM_URL is moot.
            mockstagram_ca_file: None,
            ..args.upstream.clone()
        };
        return Ok((upstream, args.seed_count.unwrap_or(5000)));
    }
    let _ = simulator_stop;
    Ok((args.upstream.clone(), args.seed_count.unwrap_or(0)))
}

/// Registers `count` influencers from the first pk and schedules them (`run`'s demo population).
async fn seed_demo(
    pool: &sqlx::PgPool,
    broker: &BrokerSettings,
    interval: Duration,
    count: u64,
) -> anyhow::Result<()> {
    let first = crate::mockstagram::FIRST_PK;
    let ids: Vec<i64> = (first..first + count as i64).collect();
    let publisher = Broker::connect(broker).await?;
    let report = seed::seed(pool, &publisher, interval, &ids).await?;
    publisher.close().await;
    println!(
        "seeded {count} influencers ({} new, {} already tracked)",
        report.new, report.already_tracked
    );
    Ok(())
}

mod usage;

pub use usage::report_usage_error;

#[cfg(test)]
mod tests;
