//! `influencer-analytics bench <scenario> [--quick]`: the performance goals, measured.
//!
//! Each scenario prints a Markdown table and writes `target/bench/<scenario>.json`: a list of
//! figures, each with `name`, `value`, `unit`, `goal` and `met`, and the `ceiling` it is
//! compared with when that ceiling was measured in the same run (ratios beat absolute figures
//! on a shared machine).
//!
//! Scenarios work in databases of their own (`<DATABASE_URL's name>_bench_<scenario>`) and
//! queues of their own (prefix `bench`), so they never touch the service's data.

pub mod api;
pub mod classify;
pub mod compaction;
pub mod e2e;
pub mod events;
pub mod export;
pub mod fleet;
pub mod forecast;
pub mod load;
pub mod movers;
pub mod procs;
pub mod rank;
pub mod ranking;
pub mod sink;
pub mod storage;
pub mod upstream;
pub mod webhooks;

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::Context;
use serde::Serialize;
use sqlx::{ConnectOptions, Connection, PgPool, postgres::PgConnectOptions};

use crate::config::{
    BrokerSettings, ClassifySettings, DatabaseSettings, ServiceUrl, StorageSettings,
    UpstreamSettings,
};

/// `bench`'s flags.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    scenario: Scenario,
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
    #[command(flatten)]
    storage: StorageSettings,
    /// `e2e` only: no closed hour to compact during the measured minutes (a control run).
    #[arg(long)]
    without_compaction: bool,
    /// `e2e` only: the population polled (default 1,000,000; 100,000 with --quick), to find
    /// the largest that fits a box.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    influencers: Option<u32>,
    /// `api` only: a streaming replica of DATABASE_URL's server (`scripts/services replica
    /// up`); the API's reads are measured through it too, beside the primary's.
    #[arg(long, env = "DATABASE_READ_URL", value_parser = crate::config::postgres_url)]
    replica: Option<ServiceUrl>,
}

/// Runs one scenario, prints its report and writes it as JSON.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (database, quick) = (&args.database, args.quick);
    let report = match args.scenario {
        Scenario::Sink => sink::run(database, quick).await?,
        Scenario::Storage => storage::run(database, quick).await?,
        Scenario::Api => api::run(database, quick, args.replica.as_ref()).await?,
        Scenario::E2e => {
            let compaction = (!args.without_compaction).then_some(&args.storage);
            let influencers = args.influencers.map(i64::from);
            e2e::run(database, &args.broker, compaction, quick, influencers).await?
        }
        Scenario::Compaction => compaction::run(database, &args.storage, quick).await?,
        Scenario::Upstream => upstream::run(database, &args.broker, &args.upstream, quick).await?,
        Scenario::Fleet => fleet::run(database, &args.broker, quick).await?,
        Scenario::Classify => {
            classify::run(database, args.classify.classify_concurrency, quick).await?
        }
        Scenario::Ranking => ranking::run(database, quick).await?,
        Scenario::Movers => movers::run(database, quick).await?,
        Scenario::Rank => rank::run(database, quick).await?,
        Scenario::Forecast => forecast::run(database, quick).await?,
        Scenario::Export => export::run(database, quick).await?,
        Scenario::Webhooks => webhooks::run(database, quick).await?,
        Scenario::Events => events::run(database, quick).await?,
    };
    println!("{}", report.markdown());
    println!("written to {}", report.write_json()?.display());
    Ok(())
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The whole pipeline on the built-in simulator: slots stored, lateness, CPU and memory.
    E2e,
    /// The pipeline's fetch rate against MOCKSTAGRAM_URL ÷ a load generator's on the same server.
    Upstream,
    /// The sink's write path ÷ psql `\copy` of the same rows into the same hypertable.
    Sink,
    /// Three pollers and two sinks under one MOCKSTAGRAM_RPS: the fleet's upstream rate ÷ it.
    Fleet,
    /// Range queries at 50 clients over 100,000,000 points; rank and average at 1,000,000.
    Api,
    /// Bytes per stored point.
    Storage,
    /// An hour of 1,000,000 influencers compacted into hour segments: time and cores.
    Compaction,
    /// A classification pass against the simulator's real is_suspicious delay.
    Classify,
    /// The minutely ranking job at 1,000,000: its snapshot ÷ a row per influencer rewritten.
    Ranking,
    /// The movers at 1,000,000: the minutely mark's cost, and the endpoint under load.
    Movers,
    /// The rank history at 1,000,000 over a year: a day's ranking, bytes, the endpoint.
    Rank,
    /// The forecast's intervals backtested on stored walks: how often each held what came.
    Forecast,
    /// A day of 100,000 influencers exported to Parquet and CSV: points/s, bytes a point.
    Export,
    /// 10,000 events a minute to 10 webhook receivers, one down for a stretch: delivery
    /// latency, completeness, the backlog's drain.
    Webhooks,
    /// Event detection at 1,000,000 a minute (cores), a spike's time from stored to a webhook
    /// receiver, and staged spikes and milestones found against the simulator's truth.
    Events,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::E2e => "e2e",
            Scenario::Upstream => "upstream",
            Scenario::Fleet => "fleet",
            Scenario::Sink => "sink",
            Scenario::Api => "api",
            Scenario::Storage => "storage",
            Scenario::Compaction => "compaction",
            Scenario::Classify => "classify",
            Scenario::Ranking => "ranking",
            Scenario::Movers => "movers",
            Scenario::Rank => "rank",
            Scenario::Forecast => "forecast",
            Scenario::Export => "export",
            Scenario::Webhooks => "webhooks",
            Scenario::Events => "events",
        }
    }
}

/// A goal: a figure at least or at most some value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
    /// From the first to the second, both included.
    Between(f64, f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(goal) => value >= goal,
            Goal::AtMost(goal) => value <= goal,
            Goal::Between(low, high) => (low..=high).contains(&value),
        }
    }

    fn describe(self) -> String {
        match self {
            Goal::AtLeast(goal) => format!("≥ {}", number(goal)),
            Goal::AtMost(goal) => format!("≤ {}", number(goal)),
            Goal::Between(low, high) => format!("{} to {}", number(low), number(high)),
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// e.g. "≥ 0.8"; absent for figures reported for information.
    pub goal: Option<String>,
    pub met: Option<bool>,
    /// What the value was compared with, measured in the same run (e.g. psql's COPY rate).
    pub ceiling: Option<f64>,
}

/// What a scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub quick: bool,
    pub measured_at: chrono::DateTime<chrono::Utc>,
    /// How the run was set up (sizes, concurrency), in words.
    pub setup: String,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn new(scenario: Scenario, quick: bool, setup: impl Into<String>) -> Self {
        Self {
            scenario: scenario.name(),
            quick,
            measured_at: chrono::Utc::now(),
            setup: setup.into(),
            figures: Vec::new(),
        }
    }

    /// Adds a figure reported for information.
    pub fn info(&mut self, name: &str, value: f64, unit: &str) -> &mut Self {
        self.push(name, value, unit, None, None)
    }

    /// Adds a figure with its goal.
    pub fn goal(&mut self, name: &str, value: f64, unit: &str, goal: Goal) -> &mut Self {
        self.push(name, value, unit, Some(goal), None)
    }

    /// Adds a ratio to a ceiling measured in the same run, with its goal.
    pub fn ratio(&mut self, name: &str, value: f64, ceiling: f64, goal: Goal) -> &mut Self {
        self.push(name, value, "ratio", Some(goal), Some(ceiling))
    }

    fn push(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        goal: Option<Goal>,
        ceiling: Option<f64>,
    ) -> &mut Self {
        self.figures.push(Figure {
            name: name.into(),
            value: round(value),
            unit: unit.into(),
            goal: goal.map(Goal::describe),
            met: goal.map(|g| g.met(value)),
            ceiling: ceiling.map(round),
        });
        self
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = format!(
            "## bench {}{} ({})\n\n{}\n\n| figure | value | unit | goal | met | ceiling |\n|---|---:|---|---|---|---:|\n",
            self.scenario,
            if self.quick { " --quick" } else { "" },
            self.measured_at.format("%Y-%m-%d %H:%M UTC"),
            self.setup,
        );
        for f in &self.figures {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                f.name,
                number(f.value),
                f.unit,
                f.goal.as_deref().unwrap_or(""),
                match f.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                },
                f.ceiling.map(number).unwrap_or_default(),
            );
        }
        out
    }

    /// Writes `target/bench/<scenario>.json` and returns its path.
    pub(crate) fn write_json(&self) -> anyhow::Result<PathBuf> {
        let dir = PathBuf::from("target/bench");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.scenario));
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 {
        v.round()
    } else {
        (v * 1000.0).round() / 1000.0
    }
}

/// 1234567.0 → "1,234,567"; 0.8123 → "0.812".
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let digits = (v.abs() as u64).to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else {
        format!("{v:.3}")
    }
}

/// The `q`-quantile (0..=1) of `samples` (sorted in place), nearest rank.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Queues of the scenario's own (prefix `bench_<suffix>`), deleted and declared again, so a
/// run starts empty; and a connection to them (for seeding).
pub(crate) async fn bench_queues(
    broker: &BrokerSettings,
    suffix: &str,
) -> anyhow::Result<(BrokerSettings, crate::queue::Broker)> {
    let queues = BrokerSettings {
        queue_prefix: format!("bench_{suffix}"),
        ..broker.clone()
    };
    let earlier = crate::queue::Broker::connect(&queues).await?;
    earlier.delete_all().await?;
    earlier.close().await;
    let publisher = crate::queue::Broker::connect(&queues).await?;
    Ok((queues, publisher))
}

/// A database of the scenario's own beside DATABASE_URL's: `<name>_bench_<suffix>`. With
/// `fresh`, it is dropped first. Migrated.
pub(crate) async fn bench_database(
    settings: &DatabaseSettings,
    suffix: &str,
    fresh: bool,
) -> anyhow::Result<(PgPool, DatabaseSettings)> {
    let mut url = settings.database_url.url().clone();
    let name = url.path().trim_start_matches('/').to_string();
    let bench_name = format!("{name}_bench_{suffix}");
    url.set_path(&format!("/{bench_name}"));
    let bench = DatabaseSettings {
        database_url: ServiceUrl::parse(url.as_str(), &["postgres", "postgresql"])
            .map_err(anyhow::Error::msg)?,
        database_pool_size: settings.database_pool_size.max(64),
    };
    if fresh {
        let options: PgConnectOptions = bench.database_url.expose().parse()?;
        let mut admin = options.database("postgres").connect().await?;
        sqlx::query(&format!(
            "drop database if exists \"{bench_name}\" with (force)"
        ))
        .execute(&mut admin)
        .await?;
        let _ = admin.close().await;
    }
    let pool = crate::db::connect(&bench).await?;
    Ok((pool, bench))
}

/// Registers `influencers` influencers from id 1,000,000, each with a latest value (followers
/// spread over 5,000 to 405,000): what the ranking and the classification read.
pub(super) async fn register_with_latest(
    pool: &sqlx::PgPool,
    influencers: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into influencers (influencer_id, username)
         select id, 'influencer-' || id from generate_series(1000000::bigint, 1000000 + $1::bigint - 1) id",
        influencers
    )
    .execute(pool)
    .await?;
    sqlx::query!(
        "insert into influencer_latest
         select id, now(), now(), 5000 + ((id * 2654435761) % 400000)::int, 50 + (id % 2000)::int
         from generate_series(1000000::bigint, 1000000 + $1::bigint - 1) id",
        influencers
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_say_whether_their_goal_is_met() {
        let mut report = Report::new(Scenario::Sink, true, "test");
        report
            .ratio("sink ÷ copy", 0.85, 120_000.0, Goal::AtLeast(0.8))
            .goal("p99", 25.0, "ms", Goal::AtMost(20.0))
            .info("rows", 1_000_000.0, "rows");
        let f = &report.figures;
        assert_eq!((f[0].met, f[0].ceiling), (Some(true), Some(120_000.0)));
        assert_eq!(f[0].goal.as_deref(), Some("≥ 0.800"));
        assert_eq!(f[1].met, Some(false));
        assert_eq!((f[2].met, f[2].goal.clone()), (None, None));
        let table = report.markdown();
        assert!(
            table.contains("| p99 | 25 | ms | ≤ 20 | **no** |  |"),
            "{table}"
        );
        assert!(table.contains("| rows | 1,000,000 | rows |"), "{table}");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut samples, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&mut samples, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&mut samples, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&mut [], 0.5), Duration::ZERO);
    }
}
