//! The command line: one binary, one subcommand per role.
//!
//! `main.rs` only parses and hands over to [`run`]; every role's wiring lives in the library so
//! tests build it the same way.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{
    CommandFactory, Parser, Subcommand,
    error::{ContextKind, ContextValue, ErrorKind},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{
        BrokerSettings, ClassifySettings, DatabaseSettings, ListenSettings, ScheduleSettings,
        ServiceUrl, SimulatorSettings, SinkSettings, UpstreamSettings,
    },
    db,
    fetch::{MockstagramClient, Poller, PollerMemory},
    queue::Broker,
    reconcile,
    seed::{self, SeedSource},
    shutdown,
    simulator::Simulator,
    sink::Sink,
    telemetry::{self, LogFormat},
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

/// The roles. Each long-running one stops cleanly on SIGINT/SIGTERM.
#[derive(Debug, Subcommand)]
// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Create the database if missing and apply the schema migrations.
    Migrate {
        #[command(flatten)]
        database: DatabaseSettings,
    },
    /// Serve a simulated Mockstagram API (both endpoints, same JSON, same faults as the real one).
    Simulate {
        #[command(flatten)]
        simulator: SimulatorSettings,
    },
    /// Register influencers and put them into the polling schedule.
    Seed {
        #[command(flatten)]
        source: SeedSource,
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        broker: BrokerSettings,
        #[command(flatten)]
        schedule: ScheduleSettings,
    },
    /// Fetch each scheduled influencer from Mockstagram once per interval (the poller), and
    /// reconcile the schedule.
    Poll {
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
    },
    /// Write fetched points from the point queue into TimescaleDB in batches; store the
    /// average followerCount each minute.
    Sink {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        broker: BrokerSettings,
        #[command(flatten)]
        sink: SinkSettings,
        /// Address of this process's /metrics.
        #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9102")]
        metrics_addr: SocketAddr,
    },
    /// Serve the query API and the dashboard.
    Serve {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        listen: ListenSettings,
        #[command(flatten)]
        schedule: ScheduleSettings,
        #[command(flatten)]
        broker: BrokerSettings,
    },
    /// Run one suspicious-classification pass now (or resume the unfinished one): Mockstagram's
    /// is_suspicious for every influencer, and the follower-spike detector over the last day.
    Classify {
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
    },
    /// Measure a performance goal: prints a Markdown table and writes target/bench/<scenario>.json.
    Bench {
        #[arg(value_enum)]
        scenario: crate::bench::Scenario,
        /// A shorter, smaller run for quick checks.
        #[arg(long)]
        quick: bool,
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        broker: BrokerSettings,
        #[command(flatten)]
        upstream: UpstreamSettings,
        #[command(flatten)]
        classify: ClassifySettings,
    },
    /// Run every role in one process: poll, sink, reconciler, jobs (optionally with the
    /// built-in simulator and a seeded demo population).
    Run {
        /// Start the built-in Mockstagram simulator and poll it (MOCKSTAGRAM_URL is ignored).
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
        listen: ListenSettings,
        #[command(flatten)]
        classify: ClassifySettings,
        #[command(flatten)]
        simulator: SimulatorSettings,
    },
}

/// Runs the parsed command to its end.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate { database } => {
            let pool = db::connect(&database).await?;
            pool.close().await;
            println!("migrations applied to {}", database.database_url);
            Ok(())
        }
        Command::Simulate { simulator } => simulate(simulator).await,
        Command::Seed {
            source,
            database,
            broker,
            schedule,
        } => {
            let parsed = source.read()?;
            let pool = db::connect(&database).await?;
            let broker = Broker::connect(&broker).await?;
            let report = seed::seed(&pool, &broker, schedule.poll_interval, &parsed.ids).await?;
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
        Command::Poll {
            database,
            broker,
            upstream,
            schedule,
            metrics_addr,
        } => {
            let shutdown = shutdown::on_signal();
            let pool = db::connect(&database).await?;
            let (_, ops) = serve_ops(metrics_addr, shutdown.clone()).await?;
            let client = MockstagramClient::new(&upstream)?;
            let roles = vec![
                tokio::spawn(run_poller(
                    broker.clone(),
                    client,
                    schedule.poll_interval,
                    shutdown.clone(),
                )),
                tokio::spawn(run_reconciler(
                    pool,
                    broker,
                    schedule.poll_interval,
                    shutdown.clone(),
                )),
            ];
            futures_util::future::join_all(roles).await;
            let _ = ops.await;
            Ok(())
        }
        Command::Sink {
            database,
            broker,
            sink,
            metrics_addr,
        } => {
            let shutdown = shutdown::on_signal();
            let pool = db::connect(&database).await?;
            let (_, ops) = serve_ops(metrics_addr, shutdown.clone()).await?;
            let roles = vec![
                tokio::spawn(run_sink(pool.clone(), broker, sink, shutdown.clone())),
                tokio::spawn(crate::sink::run_average_job(pool, shutdown.clone())),
            ];
            futures_util::future::join_all(roles).await;
            let _ = ops.await;
            Ok(())
        }
        Command::Serve {
            database,
            listen,
            schedule,
            broker,
        } => {
            let shutdown = shutdown::on_signal();
            let pool = db::connect(&database).await?;
            let state = crate::api::ApiState {
                pool,
                interval: schedule.poll_interval,
                amqp_url: Some(broker.amqp_url),
            };
            let (addr, server) = serve_api(state, listen.listen_addr, shutdown).await?;
            println!(
                "API at http://{addr}/influencer_analytics/{{id}}; metrics at http://{addr}/metrics"
            );
            let _ = server.await;
            Ok(())
        }
        Command::Classify {
            status,
            daily,
            classify,
            schedule,
            database,
            mut upstream,
            metrics_addr,
        } => {
            let pool = db::connect(&database).await?;
            if status {
                match crate::classify::status(&pool).await? {
                    Some(line) => println!("{line}"),
                    None => println!("no classification pass has run yet"),
                }
                return Ok(());
            }
            upstream.mockstagram_concurrency = classify.classify_concurrency as u64;
            let client = MockstagramClient::new(&upstream)?;
            let settings = pass_settings(&classify, &schedule);
            let shutdown = shutdown::on_signal();
            if daily {
                let (_, ops) = serve_ops(metrics_addr, shutdown.clone()).await?;
                crate::classify::daily::run_daily(
                    pool,
                    client,
                    settings,
                    classify.classify_at,
                    Duration::ZERO,
                    shutdown,
                )
                .await;
                let _ = ops.await;
                return Ok(());
            }
            let outcome = crate::classify::run_pass(
                &pool,
                &client,
                &settings,
                crate::classify::PassStart::Now,
                shutdown,
            )
            .await?;
            match outcome {
                crate::classify::PassOutcome::AlreadyRunning => {
                    println!("another classification pass is running; nothing done")
                }
                crate::classify::PassOutcome::UpToDate => unreachable!("only for daily passes"),
                crate::classify::PassOutcome::Ran(report) => println!(
                    "pass {}: asked is_suspicious for {} ({} without a verdict, {} without data yet); \
                     spike detector judged {} and flagged {}; {}",
                    report.pass_id,
                    report.asked,
                    report.failed,
                    report.skipped,
                    report.judged,
                    report.flagged,
                    if report.finished {
                        "finished"
                    } else {
                        "stopped (the next classify resumes it)"
                    }
                ),
            }
            Ok(())
        }
        Command::Bench {
            scenario,
            quick,
            database,
            broker,
            upstream,
            classify,
        } => {
            use crate::bench::{self, Scenario};
            let report = match scenario {
                Scenario::Sink => bench::sink::run(&database, quick).await?,
                Scenario::Storage => bench::storage::run(&database, quick).await?,
                Scenario::Api => bench::api::run(&database, quick).await?,
                Scenario::E2e => bench::e2e::run(&database, &broker, quick).await?,
                Scenario::Upstream => {
                    bench::upstream::run(&database, &broker, &upstream, quick).await?
                }
                Scenario::Classify => {
                    bench::classify::run(&database, classify.classify_concurrency, quick).await?
                }
            };
            println!("{}", report.markdown());
            println!("written to {}", report.write_json()?.display());
            Ok(())
        }
        Command::Run {
            simulate,
            seed_count,
            database,
            broker,
            mut upstream,
            schedule,
            sink,
            listen,
            classify,
            simulator,
        } => {
            let shutdown = shutdown::on_signal();
            // The simulator stops last, once the poller has finished the batches in hand.
            let simulator_stop = CancellationToken::new();
            if simulate {
                let sim = Simulator::new(&simulator);
                let listener = TcpListener::bind(simulator.listen).await.with_context(|| {
                    format!("cannot listen on SIMULATOR_LISTEN={}", simulator.listen)
                })?;
                let addr = listener.local_addr()?;
                tokio::spawn(Simulator::serve(
                    sim.router(),
                    listener,
                    simulator_stop.clone(),
                ));
                upstream.mockstagram_url =
                    ServiceUrl::parse(&format!("http://{addr}"), &["http"]).expect("valid URL");
                println!("simulated Mockstagram at http://{addr}");
            }
            let pool = db::connect(&database).await?;
            let seed_count = seed_count.unwrap_or(if simulate { 5000 } else { 0 });
            if seed_count > 0 {
                let first = crate::mockstagram::FIRST_PK;
                let ids: Vec<i64> = (first..first + seed_count as i64).collect();
                let publisher = Broker::connect(&broker).await?;
                let report = seed::seed(&pool, &publisher, schedule.poll_interval, &ids).await?;
                publisher.close().await;
                println!(
                    "seeded {seed_count} influencers ({} new, {} already tracked)",
                    report.new, report.already_tracked
                );
            }
            let api = crate::api::ApiState {
                pool: pool.clone(),
                interval: schedule.poll_interval,
                amqp_url: Some(broker.amqp_url.clone()),
            };
            let (addr, ops) = serve_api(api, listen.listen_addr, shutdown.clone()).await?;
            println!(
                "polling every {}; API at http://{addr}/influencer_analytics/1000000; metrics at http://{addr}/metrics; Ctrl-C stops",
                humantime::format_duration(schedule.poll_interval),
            );
            let client = MockstagramClient::new(&upstream)?;
            let interval = schedule.poll_interval;
            // The daily pass shares the fetcher's rate ceiling; its first look waits two
            // intervals, so that a fresh start has everyone's first point to send.
            let daily = crate::classify::daily::run_daily(
                pool.clone(),
                client.with_in_flight(classify.classify_concurrency),
                pass_settings(&classify, &schedule),
                classify.classify_at,
                2 * interval,
                shutdown.clone(),
            );
            let roles = vec![
                tokio::spawn(daily),
                tokio::spawn(run_poller(
                    broker.clone(),
                    client,
                    interval,
                    shutdown.clone(),
                )),
                tokio::spawn(run_reconciler(
                    pool.clone(),
                    broker.clone(),
                    interval,
                    shutdown.clone(),
                )),
                tokio::spawn(run_sink(pool.clone(), broker, sink, shutdown.clone())),
                tokio::spawn(crate::sink::run_average_job(pool, shutdown.clone())),
            ];
            futures_util::future::join_all(roles).await;
            simulator_stop.cancel();
            let _ = ops.await;
            Ok(())
        }
    }
}

fn pass_settings(
    classify: &ClassifySettings,
    schedule: &ScheduleSettings,
) -> crate::classify::PassSettings {
    crate::classify::PassSettings {
        concurrency: classify.classify_concurrency,
        interval: schedule.poll_interval,
        spike: crate::classify::SpikeRule {
            z_threshold: classify.spike_z,
            ..crate::classify::SpikeRule::default()
        },
    }
}

/// The pause before starting a failed role again: growing from [`FIRST_PAUSE`] to
/// [`MAX_PAUSE`] while attempts keep failing at once, and back to the first after an attempt
/// that ran a while (a role that worked for a minute and then lost the broker should be back
/// within a second or two of the broker's return, not after a long pause from an outage ago).
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(2);
const RAN_A_WHILE: Duration = Duration::from_secs(10);

fn next_pause(pause: Duration, ran_for: Duration) -> Duration {
    if ran_for >= RAN_A_WHILE {
        FIRST_PAUSE
    } else {
        (pause * 2).min(MAX_PAUSE)
    }
}

/// Runs `attempt` until it ends cleanly, starting it again after an error (a lost broker or
/// database connection) after a pause ([`next_pause`]).
async fn supervise<F, Fut>(role: &'static str, shutdown: CancellationToken, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut pause = FIRST_PAUSE / 2;
    loop {
        let started = std::time::Instant::now();
        let result = attempt().await;
        pause = next_pause(pause, started.elapsed());
        match result {
            Ok(()) => return,
            Err(e) if shutdown.is_cancelled() => {
                tracing::warn!(
                    role,
                    error = format!("{e:#}"),
                    "stopped with an error during shutdown"
                );
                return;
            }
            Err(e) => {
                metrics::counter!("role_restarts_total", "role" => role).increment(1);
                tracing::error!(
                    role,
                    error = format!("{e:#}"),
                    retry_in_ms = pause.as_millis() as u64,
                    "role failed; starting it again"
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn run_poller(
    broker: BrokerSettings,
    client: MockstagramClient,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let memory = PollerMemory::new(interval);
    supervise("poll", shutdown.clone(), || async {
        let connection = Broker::connect(&broker).await?;
        let result =
            Poller::remembering(connection.clone(), client.clone(), interval, memory.clone())
                .run(shutdown.clone())
                .await;
        connection.close().await;
        result
    })
    .await;
}

async fn run_sink(
    pool: sqlx::PgPool,
    broker: BrokerSettings,
    settings: SinkSettings,
    shutdown: CancellationToken,
) {
    supervise("sink", shutdown.clone(), || async {
        let connection = Broker::connect(&broker).await?;
        let result = Sink::new(pool.clone(), connection.clone(), settings.clone())
            .run(shutdown.clone())
            .await;
        connection.close().await;
        result
    })
    .await;
}

async fn run_reconciler(
    pool: sqlx::PgPool,
    broker: BrokerSettings,
    interval: Duration,
    shutdown: CancellationToken,
) {
    supervise("reconcile", shutdown.clone(), || async {
        let connection = Broker::connect(&broker).await?;
        reconcile::run(
            pool.clone(),
            connection.clone(),
            interval,
            interval * 5,
            shutdown.clone(),
        )
        .await;
        connection.close().await;
        Ok(())
    })
    .await;
}

/// Serves `/metrics` and `/healthz` for a role until `shutdown`.
async fn serve_ops(
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let router =
        telemetry::metrics_router().route("/healthz", axum::routing::get(|| async { "ok" }));
    serve_router(router, addr, "METRICS_ADDR", shutdown).await
}

/// Serves the API (with `/metrics`, `/healthz`, `/readyz`) until `shutdown`.
async fn serve_api(
    state: crate::api::ApiState,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_router(crate::api::router(state), addr, "LISTEN_ADDR", shutdown).await
}

/// Binds `addr` (named by `setting` in errors) and serves `router` until `shutdown`; returns
/// the bound address (port 0 picks one) and the server's task.
async fn serve_router(
    router: axum::Router,
    addr: SocketAddr,
    setting: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {setting}={addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "HTTP listening");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok((bound, task))
}

async fn simulate(settings: SimulatorSettings) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let simulator = Simulator::new(&settings);
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on SIMULATOR_LISTEN={}", settings.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        population = settings.population,
        seed = ?settings.seed,
        delay_scale = settings.delay_scale,
        build_ms = started.elapsed().as_millis() as u64,
        "Mockstagram simulator listening"
    );
    println!(
        "Mockstagram simulator at http://{addr} (pks {}..={}; metrics at /metrics)",
        crate::mockstagram::FIRST_PK,
        crate::mockstagram::FIRST_PK + settings.population as i64 - 1
    );
    let router = simulator.router().merge(telemetry::metrics_router());
    Simulator::serve(router, listener, shutdown::on_signal()).await?;
    Ok(())
}

/// Prints a clap error. A bad value becomes one line naming the setting (flag and variable)
/// and what was expected; other errors (help, unknown flags) are clap's own.
pub fn report_usage_error(error: clap::Error) -> ExitCode {
    match one_line_usage_error(&error) {
        Some(line) => {
            eprintln!("{line}");
            ExitCode::from(2)
        }
        None => {
            let _ = error.print();
            ExitCode::from(error.exit_code() as u8)
        }
    }
}

/// `error: POLL_INTERVAL (--poll-interval) is "abc": expected a duration such as 60s, ...`
pub fn one_line_usage_error(error: &clap::Error) -> Option<String> {
    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let ContextValue::String(arg) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let flag = arg.split_whitespace().next()?.to_string();
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    let expected = match (
        std::error::Error::source(error),
        error.get(ContextKind::ValidValue),
    ) {
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) => {
            format!("expected one of {}", valid.join(", "))
        }
        _ => "see --help".to_string(),
    };
    let setting = match env_of_flag(&Cli::command(), flag.trim_start_matches('-')) {
        Some(env) => format!("{env} ({flag})"),
        None => flag,
    };
    Some(format!("error: {setting} is {value:?}: {expected}"))
}

/// The environment variable behind a long flag, searching every subcommand.
fn env_of_flag(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| env_of_flag(sub, long))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_role_is_retried_sooner_after_it_had_been_working() {
        let quick = Duration::from_millis(50);
        let mut pause = FIRST_PAUSE / 2;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            pause = next_pause(pause, quick);
            pauses.push(pause.as_millis());
        }
        assert_eq!(pauses, [250, 500, 1000, 2000, 2000, 2000]);
        // After a long outage the pause is at its maximum; a role that then ran a while and
        // failed again starts from the first pause, not from the outage's.
        assert_eq!(next_pause(MAX_PAUSE, RAN_A_WHILE), FIRST_PAUSE);
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bad_interval_names_the_setting_in_one_line() {
        let error =
            Cli::try_parse_from(["influencer-analytics", "poll", "--poll-interval", "soon"])
                .unwrap_err();
        let line = one_line_usage_error(&error).unwrap();
        assert_eq!(
            line,
            r#"error: POLL_INTERVAL (--poll-interval) is "soon": expected a duration such as 60s, 2s, 500ms or 1m"#
        );
    }

    #[test]
    fn a_bad_enum_value_lists_the_valid_ones() {
        let error = Cli::try_parse_from(["influencer-analytics", "--log-format", "xml", "migrate"])
            .unwrap_err();
        let line = one_line_usage_error(&error).unwrap();
        assert!(
            line.starts_with("error: LOG_FORMAT (--log-format)"),
            "{line}"
        );
        assert!(line.contains("text") && line.contains("json"), "{line}");
    }
}
