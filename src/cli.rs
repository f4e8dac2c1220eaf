//! The command line: one binary, one subcommand per role.
//!
//! `main.rs` only parses and hands over to [`run`]; every role's wiring lives in the library so
//! tests build it the same way.

use std::process::ExitCode;

use anyhow::Context;
use clap::{
    CommandFactory, Parser, Subcommand,
    error::{ContextKind, ContextValue, ErrorKind},
};
use tokio::net::TcpListener;

use crate::{
    config::{
        BrokerSettings, DatabaseSettings, ListenSettings, ScheduleSettings, SimulatorSettings,
        UpstreamSettings,
    },
    db, shutdown,
    simulator::Simulator,
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
        database: DatabaseSettings,
        #[command(flatten)]
        broker: BrokerSettings,
        #[command(flatten)]
        schedule: ScheduleSettings,
    },
    /// Fetch each scheduled influencer from Mockstagram once per interval (the poller).
    Poll {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        broker: BrokerSettings,
        #[command(flatten)]
        upstream: UpstreamSettings,
        #[command(flatten)]
        schedule: ScheduleSettings,
    },
    /// Write fetched points from the point queue into TimescaleDB in batches.
    Sink {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        broker: BrokerSettings,
    },
    /// Serve the query API and the dashboard.
    Serve {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        listen: ListenSettings,
    },
    /// Run one suspicious-classification pass now.
    Classify {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        upstream: UpstreamSettings,
    },
    /// Run every role in one process (optionally with the built-in simulator).
    Run {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        broker: BrokerSettings,
        #[command(flatten)]
        upstream: UpstreamSettings,
        #[command(flatten)]
        schedule: ScheduleSettings,
        #[command(flatten)]
        listen: ListenSettings,
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
        Command::Seed { .. } => not_built("seed", 3),
        Command::Poll { .. } => not_built("poll", 3),
        Command::Sink { .. } => not_built("sink", 3),
        Command::Serve { .. } => not_built("serve", 4),
        Command::Classify { .. } => not_built("classify", 5),
        Command::Run { .. } => not_built("run", 3),
    }
}

/// Roles whose issue has not landed yet say so plainly instead of pretending to work.
fn not_built(role: &str, issue: u32) -> anyhow::Result<()> {
    anyhow::bail!("`{role}` is not built yet (issue #{issue}); its settings are listed by --help")
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
