//! `bench e2e`: the whole pipeline on this box, each role its own process as in production:
//! the built-in simulator, `poll`, `sink`, with RabbitMQ and TimescaleDB.
//!
//! N influencers are seeded at a 60 s interval; after a warm-up minute, D whole minutes are
//! measured: the share of their slots stored, slot lateness (fetched_at − slot) p50/p99, and
//! CPU seconds and peak resident memory of each process (poll, sink, simulator, broker,
//! database). Goal: 1,000,000 influencers, ≥ 99.9% of slots, p99 lateness ≤ 2 s (10 minutes;
//! `--quick`: 100,000 influencers for 2 minutes).
//!
//! Through compaction (unless `--without-compaction`): before the run, a closed hour of every
//! influencer's points is written (as `bench compaction` writes it), and the sink's jobs
//! compact it during the measured minutes, at `COMPACTION_PACE`: the bench holds the
//! compaction lock until the measurement starts. The issue's goal holds through it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::compaction::write_closed_hour;
use super::{
    Goal, Report, Scenario, bench_database, bench_queues,
    procs::{Roles, Watch, free_port, pids_named},
};
use crate::{
    config::{BrokerSettings, DatabaseSettings, StorageSettings},
    db::SessionLock,
    jobs::compaction::LOCK_KEY,
    mockstagram::FIRST_PK,
    queue::Broker,
    series,
};

const INTERVAL: Duration = Duration::from_secs(60);

pub async fn run(
    database: &DatabaseSettings,
    broker: &BrokerSettings,
    compaction: Option<&StorageSettings>,
    quick: bool,
    population: Option<i64>,
) -> anyhow::Result<Report> {
    let (influencers, minutes) = if quick {
        (100_000i64, 2i64)
    } else {
        (1_000_000, 10)
    };
    let influencers = population.unwrap_or(influencers);
    let (pool, bench_db) = bench_database(database, "e2e", true).await?;
    let (queues, publisher) = bench_queues(broker, "e2e").await?;
    // The closed hour is written first, so that the schedule starts on time.
    let held = hold_closed_hour(&pool, influencers, compaction.is_some()).await?;

    let mut roles = Roles::default();
    let sim_port = roles.spawn_simulator(influencers)?;
    let ids: Vec<i64> = (FIRST_PK..FIRST_PK + influencers).collect();
    crate::seed::seed(&pool, &publisher, INTERVAL, &ids).await?;
    publisher.close().await;
    let sink_metrics = spawn_pipeline(&mut roles, &bench_db, &queues, sim_port, compaction)?;

    // Measure whole minutes, after a warm-up minute.
    let now = Utc::now().timestamp();
    let from = DateTime::from_timestamp(now - now % 60 + 120, 0).expect("valid time");
    let to = from + chrono::Duration::minutes(minutes);
    eprintln!("bench e2e: {influencers} influencers; measuring {from} to {to}");
    sleep_until(from).await;
    let closed_hour = held.as_ref().map(|(_, hour_ms)| *hour_ms);
    if let Some((lock, _)) = held {
        lock.release().await;
    }
    let jobs_before = job_runs(&sink_metrics).await;
    let (watches, compacted_after) = watch(&mut roles, &pool, (from, to), closed_hour).await?;
    let jobs_after = job_runs(&sink_metrics).await;
    // Let the last measured slots land.
    tokio::time::sleep(Duration::from_secs(15)).await;
    roles.stop();

    let measured = measure(&pool, from, to).await?;
    pool.close().await;
    let publisher = Broker::connect(&queues).await?;
    publisher.delete_all().await?;
    publisher.close().await;

    let expected = influencers * minutes;
    let seconds = (to - from).num_seconds() as f64;
    let description = describe(influencers, minutes, (from, to), compaction, broker);
    let mut report = Report::new(Scenario::E2e, quick, description);
    report
        .goal(
            "slots stored",
            100.0 * measured.stored as f64 / expected as f64,
            "%",
            Goal::AtLeast(99.9),
        )
        .goal("slot lateness p99", measured.p99, "s", Goal::AtMost(2.0))
        .info("slot lateness p50", measured.p50, "s")
        .info("slots expected", expected as f64, "slots")
        .info("slots stored", measured.stored as f64, "slots")
        .info("fetch failures recorded", measured.failures as f64, "slots");
    job_figures(&mut report, jobs_before.zip(jobs_after));
    compaction_figure(&mut report, closed_hour, compacted_after);
    cpu_figures(&mut report, &watches, seconds);
    Ok(report)
}

/// What a run measured, for its report.
fn describe(
    influencers: i64,
    minutes: i64,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    compaction: Option<&StorageSettings>,
    broker: &BrokerSettings,
) -> String {
    format!(
        "{influencers} influencers at a 60 s interval; {minutes} whole minutes measured ({from} to {to}) after a warm-up minute. \
             Simulator, poll and sink are processes of their own; RabbitMQ and TimescaleDB run on the same 2 cores \
             (RabbitMQ: {} node(s) in AMQP_URL, {} queues). {}",
        broker.amqp_url.nodes().len(),
        broker.queue_type.name(),
        match compaction {
            Some(storage) => format!(
                "Through compaction: a closed hour of every influencer's points ({} points) compacted by the sink's jobs during the measured minutes, at COMPACTION_PACE={}.",
                influencers * 60,
                storage.compaction_pace
            ),
            None => "Without compaction (a control run).".to_string(),
        }
    )
}

/// With compaction: a closed hour of every influencer written, and the compaction lock held
/// so that it waits for the measured minutes; the lock and the hour's start.
async fn hold_closed_hour(
    pool: &PgPool,
    influencers: i64,
    compaction: bool,
) -> anyhow::Result<Option<(SessionLock, i64)>> {
    if !compaction {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let hour_ms = write_closed_hour(pool, influencers, |_| {}).await?;
    eprintln!(
        "bench e2e: a closed hour of {influencers} influencers written in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let lock = SessionLock::try_take(pool, LOCK_KEY).await?;
    let lock = lock.ok_or_else(|| anyhow::anyhow!("another process holds the compaction lock"))?;
    Ok(Some((lock, hour_ms)))
}

/// Starts the sink and the poller against the simulator at `sim_port`; the sink's metrics
/// address.
fn spawn_pipeline(
    roles: &mut Roles,
    bench_db: &DatabaseSettings,
    queues: &BrokerSettings,
    sim_port: u16,
    compaction: Option<&StorageSettings>,
) -> anyhow::Result<String> {
    let env = [
        ("DATABASE_URL", bench_db.database_url.expose().to_string()),
        ("AMQP_URL", queues.amqp_url.expose().to_string()),
        ("QUEUE_PREFIX", queues.queue_prefix.clone()),
        ("QUEUE_TYPE", queues.queue_type.name().to_string()),
        ("MOCKSTAGRAM_URL", format!("http://127.0.0.1:{sim_port}")),
        ("POLL_INTERVAL", "60s".into()),
    ];
    let mut sink_env = env.to_vec();
    let sink_metrics = format!("127.0.0.1:{}", free_port()?);
    sink_env.push(("METRICS_ADDR", sink_metrics.clone()));
    if let Some(storage) = compaction {
        sink_env.push(("COMPACTION_PACE", storage.compaction_pace.to_string()));
        sink_env.push((
            "COMPACTION_PASS_POINTS",
            storage.compaction_pass_points.to_string(),
        ));
    }
    roles.spawn("sink", &["sink"], &sink_env)?;
    let mut poll_env = env.to_vec();
    poll_env.push(("METRICS_ADDR", format!("127.0.0.1:{}", free_port()?)));
    roles.spawn("poll", &["poll"], &poll_env)?;

    Ok(sink_metrics)
}

/// Each process group's CPU and memory, watched once a second.
type Watches = Vec<(String, Vec<u32>, Watch)>;

/// Watches the roles, the broker and the database over `[from, to)`, and when the closed hour
/// (if any) is compacted: minutes after `from`.
async fn watch(
    roles: &mut Roles,
    pool: &PgPool,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    closed_hour: Option<i64>,
) -> anyhow::Result<(Watches, Option<f64>)> {
    let mut compacted_after: Option<f64> = None;
    let groups = ["poll", "sink", "simulator"];
    let mut watches: Vec<(String, Vec<u32>, Watch)> = groups
        .iter()
        .map(|name| {
            let pids = vec![roles.pid(name)];
            (name.to_string(), pids.clone(), Watch::start(&pids))
        })
        .collect();
    for (name, comm) in [("broker", "beam.smp"), ("database", "postgres")] {
        let pids = pids_named(comm);
        watches.push((name.into(), pids.clone(), Watch::start(&pids)));
    }
    while Utc::now() < to {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (name, pids, watch) in &mut watches {
            if name == "database" {
                *pids = pids_named("postgres");
            }
            watch.sample(pids);
        }
        roles.check()?;
        let second = (Utc::now() - from).num_seconds();
        if let Some(hour_ms) = closed_hour
            && compacted_after.is_none()
            && second % 10 == 0
            && !series::inspect::raw_hour_left(pool, hour_ms).await?
        {
            compacted_after = Some(second as f64 / 60.0);
        }
    }
    Ok((watches, compacted_after))
}

/// The periodic jobs' runs and time over the measured minutes, from `job_run_seconds`'
/// (sum, count) per job before and after: for the average, the ranking and retention nearly
/// all of it the database's (a few statements each); compaction's includes its pace's rests.
fn job_figures(report: &mut Report, runs: Option<(JobRuns, JobRuns)>) {
    let Some((before, after)) = runs else {
        return;
    };
    for job in [
        "average",
        "ranking",
        "movers",
        "events",
        "compaction",
        "retention",
    ] {
        let (sum_0, runs_0) = before.get(job).copied().unwrap_or_default();
        let (sum_1, runs_1) = after.get(job).copied().unwrap_or_default();
        let (seconds, runs) = (sum_1 - sum_0, runs_1 - runs_0);
        report
            .info(
                &format!("{job} job runs in the measured minutes"),
                runs,
                "runs",
            )
            .info(
                &format!("{job} job, time in the measured minutes"),
                seconds,
                "s",
            )
            .info(
                &format!("{job} job, mean time a run"),
                if runs > 0.0 { seconds / runs } else { 0.0 },
                "s",
            );
    }
}

fn compaction_figure(report: &mut Report, closed_hour: Option<i64>, compacted_after: Option<f64>) {
    if closed_hour.is_some() {
        match compacted_after {
            Some(minutes) => report.info(
                "closed hour compacted, minutes after the measurement began",
                minutes,
                "min",
            ),
            None => report.info(
                "closed hour compacted within the measured minutes (0 = no)",
                0.0,
                "",
            ),
        };
    }
}

fn cpu_figures(report: &mut Report, watches: &Watches, seconds: f64) {
    for (name, _, watch) in watches {
        report
            .info(
                &format!("{name} CPU"),
                100.0 * watch.cpu_seconds() / seconds,
                "% of a core",
            )
            .info(
                &format!("{name} peak RSS"),
                watch.peak_rss as f64 / 1e6,
                "MB",
            );
    }
}

struct Measured {
    stored: i64,
    failures: i64,
    p50: f64,
    p99: f64,
}

async fn measure(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Measured> {
    let raw = series::inspect::raw_window(pool, from, to).await?;
    let failures: i64 = sqlx::query_scalar!(
        r#"select count(*) as "failures!" from fetch_failures where slot >= $1 and slot < $2"#,
        from,
        to
    )
    .fetch_one(pool)
    .await?;
    Ok(Measured {
        stored: raw.points,
        failures,
        p50: raw.lateness_p50,
        p99: raw.lateness_p99,
    })
}

/// `job_run_seconds`' (sum, count) per job.
type JobRuns = std::collections::BTreeMap<String, (f64, f64)>;

/// The jobs' runs from the process's `/metrics` at `addr`; `None` when it cannot be read (the
/// figures are then left out of the report).
async fn job_runs(addr: &str) -> Option<JobRuns> {
    let exposition = crate::tls::http_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(parse_job_runs(&exposition))
}

/// `job_run_seconds_sum{job="…"} v` and `job_run_seconds_count{job="…"} n` lines, by job.
fn parse_job_runs(exposition: &str) -> JobRuns {
    let mut runs = JobRuns::new();
    for line in exposition.lines() {
        for (suffix, sum) in [("_sum", true), ("_count", false)] {
            let prefix = format!("job_run_seconds{suffix}{{job=\"");
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Some((job, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let entry = runs.entry(job.to_string()).or_default();
            if sum {
                entry.0 = value;
            } else {
                entry.1 = value;
            }
        }
    }
    runs
}

async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_runs_are_read_per_job_from_the_exposition() {
        let exposition = "# TYPE job_run_seconds histogram\n\
             job_run_seconds_bucket{job=\"ranking\",le=\"0.1\"} 0\n\
             job_run_seconds_sum{job=\"ranking\"} 12.5\n\
             job_run_seconds_count{job=\"ranking\"} 5\n\
             job_run_seconds_sum{job=\"average\"} 0.25\n\
             job_run_seconds_count{job=\"average\"} 10\n\
             sink_flush_seconds_sum 99\n";
        let runs = parse_job_runs(exposition);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs["ranking"], (12.5, 5.0));
        assert_eq!(runs["average"], (0.25, 10.0));
    }
}
