//! `bench api`: the query API under load, served by a `serve` process of its own.
//!
//! - Range: one influencer, one day at 1-minute points (1,440 points), with 100,000,000 points
//!   stored (1,000,000 with `--quick`), 50 concurrent clients. At a fixed load of
//!   [`FIXED_RATE`] requests a second (the issue's "≥ 2,000 requests/s"): p99 ≤ 20 ms, latency
//!   counted from when each request was due. At full speed (each client's next request as
//!   soon as its answer is in): the most the box answers, and the ratio of its p50/p99 to the
//!   same read run directly at the same concurrency with the same pool size (goal ≤ 1.5).
//! - Rank (`/latest`) and `/average` at 1,000,000 ranked influencers: p99 ≤ 5 ms.
//! - Growth and compare on the influencers with a year of history ([`analytics`]): growth
//!   p99 ≤ 20 ms at 50 clients, compare of 10 over 30 days at step=1h p99 ≤ 100 ms at 100
//!   requests a second.
//!
//! The data is generated with `generate_series` (minutes, not the pipeline's hours) once, and
//! kept in its own database for the next run.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::future::join_all;
use sqlx::PgPool;

use super::{
    Goal, Report, Scenario, bench_database, load, ms,
    procs::{Roles, free_port},
    quantile,
};
use crate::{
    config::{DatabaseSettings, ServiceUrl},
    db,
    model::splitmix,
};

/// The day of points every influencer has (aligned to a whole day, in the past).
const DAY_START: i64 = 1_767_225_600; // 2026-01-01 00:00 UTC
const MINUTES: i64 = 1440;
const RANKED: i64 = 1_000_000;
const RANGE_CLIENTS: usize = 50;
/// The fixed load the day range is measured at, in requests a second: the goal's 2,000 and a
/// margin, so that a run that keeps it shows ≥ 2,000 answered (`--quick`: a tenth).
const FIXED_RATE: f64 = 2_100.0;
const POINT_CLIENTS: usize = 4;
/// The influencers of the recent day ("the last 24 hours", relative to now): whole hour blocks
/// (64 × 29,688 onward), registered and ranked like the rest but without the dataset's day.
const RECENT_FIRST: i64 = 1_900_032;
/// The range and its SQL alternate this many times, each for 1/ROUNDS of the duration.
const ROUNDS: u32 = 4;

/// The range of influencer `id` over `[start_s, end_s]` (epoch seconds), raw points.
fn range_url(base: &str, id: i64, (start_s, end_s): (i64, i64)) -> String {
    format!("{base}/influencer_analytics/{id}?start_time={start_s}&end_time={end_s}")
}

/// The range of the dataset's whole day for influencer `id`.
fn day_url(base: &str, id: i64) -> String {
    range_url(base, id, (DAY_START, DAY_START + MINUTES * 60 - 60))
}

/// The influencer client `client` asks for in its `i`-th request: spread over the `count`
/// influencers from `first`, a different sequence for every `seed` (round and side).
fn spread_id(first: i64, count: i64, seed: u64, client: usize, i: u64) -> i64 {
    first + (splitmix(seed << 48 | (client as u64) << 32 | i) % count as u64) as i64
}

/// The influencer a range client asks for among all influencers with the dataset's day.
fn range_id(seed: u64, client: usize, i: u64, with_points: i64) -> i64 {
    spread_id(1_000_000, with_points, seed, client, i)
}

/// Measures the API; with `replica` (DATABASE_READ_URL), also through a `serve` reading off
/// it ([`replica`]).
pub async fn run(
    database: &DatabaseSettings,
    quick: bool,
    replica: Option<&ServiceUrl>,
) -> anyhow::Result<Report> {
    let mut setup = Setup::start(database, quick).await?;
    let (mut api, mut sql) = range_rounds(&setup).await?;
    let fixed = fixed_range(&setup).await?;
    let recent = recent_day(&setup).await?;
    setup.sql_pool.close().await;
    let long = long_ranges(&setup).await?;
    let (mut latest, mut average) = point_reads(&setup).await?;
    let analytics = analytics::measure(&setup, quick).await?;
    let on_replica = replica::measure(&mut setup, replica).await?;
    let mut report = Report::new(Scenario::Api, quick, setup.description());
    let connections = setup.sql_pool.options().get_max_connections();
    let (points, recent_of_setup) = (setup.points, setup.recent);
    let Setup {
        mut server, pool, ..
    } = setup;
    server.stop();
    pool.close().await;
    let errors = api.errors
        + fixed.load.errors
        + recent.fixed.errors
        + recent.full.errors
        + latest.errors
        + average.errors;
    if errors > 0 {
        bail!("{errors} requests failed during the benchmark");
    }
    let answered_goal = Goal::AtLeast(if quick { 200.0 } else { 2_000.0 });
    let mut fixed_load = fixed.load;
    range_figures(
        &mut report,
        "range",
        answered_goal,
        &mut fixed_load,
        &mut api,
        &mut sql,
    );
    report
        .info(
            "range p99 inside the API at the fixed load (its histogram, interpolated)",
            fixed.inside_p99_ms,
            "ms",
        )
        .info(
            "range p50 inside the API at the fixed load",
            fixed.inside_p50_ms,
            "ms",
        );
    recent.report(&mut report, answered_goal, recent_of_setup);
    long_figures(&mut report, &long);
    analytics.report(&mut report);
    report
        .info(
            "database connections (API and SQL alike)",
            f64::from(connections),
            "connections",
        )
        .goal(
            "rank (/latest) p99",
            ms(quantile(&mut latest.latencies, 0.99)),
            "ms",
            Goal::AtMost(5.0),
        )
        .goal(
            "/average p99",
            ms(quantile(&mut average.latencies, 0.99)),
            "ms",
            Goal::AtMost(5.0),
        )
        .info("points stored", points as f64, "points");
    replica::report(on_replica, &mut report, api.rate());
    Ok(report)
}

/// The long ranges' figures: each one's p99 against its goal of 50 ms, p50 and rate.
fn long_figures(report: &mut Report, long: &[(i64, &'static str, Duration, Duration, f64)]) {
    for (days, step, p50, p99, rate) in long {
        report
            .goal(
                &format!("{days} days at step={step}, p99 (50 clients)"),
                ms(*p99),
                "ms",
                Goal::AtMost(50.0),
            )
            .info(&format!("{days} days at step={step}, p50"), ms(*p50), "ms")
            .info(
                &format!("{days} days at step={step}, requests/s"),
                *rate,
                "req/s",
            );
    }
}

/// The benchmark's database and data, the `serve` process under test, and the pool of the
/// direct reads it is compared with.
struct Setup {
    seconds: u64,
    duration: Duration,
    pool: PgPool,
    sql_pool: PgPool,
    server: Roles,
    server_base: String,
    /// Points in the dataset's day, and the influencers that have it.
    points: i64,
    with_points: i64,
    /// Influencers that also have a year of day segments before the dataset's day.
    with_history: i64,
    recent: Recent,
    connections: u64,
    fixed_rate: f64,
    /// The benchmark's database (what `serve` is given as DATABASE_URL).
    database_url: ServiceUrl,
}

impl Setup {
    async fn start(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Self> {
        let (with_points, seconds) = if quick { (700, 5) } else { (69_445, 30) };
        let with_history = if quick { 50 } else { 2_000 };
        let suffix = if quick { "api_quick" } else { "api" };
        let (pool, bench) = bench_database(database, suffix, false).await?;
        let points = dataset::ensure_dataset(&pool, with_points).await?;
        // The dataset's day is long closed: compacted into day segments, as in production (a
        // no-op once done).
        use crate::jobs::compaction::{Budget, run_now};
        run_now(&pool, Budget::FULL, Duration::from_secs(600), &mut |line| {
            eprintln!("bench api: {line}")
        })
        .await?;
        dataset::ensure_history(&pool, with_history).await?;
        let recent_influencers = if quick { 640 } else { 10_048 };
        let recent = dataset::prepare_recent(&pool, recent_influencers).await?;
        // The API and the SQL it is compared with get the same number of connections (the pool
        // size the user configured), so the ratio measures the API, not a bigger pool.
        let connections = database.database_pool_size;
        let sql_pool = db::open_api_pool(
            &DatabaseSettings {
                database_url: bench.database_url.clone(),
                database_pool_size: connections,
            },
            Duration::from_secs(5),
        )
        .await?;
        let port = free_port()?;
        let mut server = Roles::default();
        server.spawn(
            "serve",
            &["serve"],
            &[
                ("DATABASE_URL", bench.database_url.expose().to_string()),
                ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
                ("DATABASE_POOL_SIZE", connections.to_string()),
            ],
        )?;
        let server_base = format!("http://127.0.0.1:{port}");
        server.wait_ready(&format!("{server_base}/healthz")).await?;
        Ok(Self {
            seconds,
            duration: Duration::from_secs(seconds),
            pool,
            sql_pool,
            server,
            server_base,
            points,
            with_points,
            with_history,
            recent,
            connections,
            fixed_rate: if quick { FIXED_RATE / 10.0 } else { FIXED_RATE },
            database_url: bench.database_url,
        })
    }

    fn description(&self) -> String {
        let Self {
            points,
            with_points,
            seconds,
            fixed_rate,
            connections,
            ..
        } = self;
        let half = *seconds as f64 / 2.0;
        let recent_influencers = self.recent.influencers;
        format!(
            "{points} points stored ({with_points} influencers × {MINUTES} minutes, 1-hour chunks); {RANKED} influencers ranked; the day compacted into day segments (the cold tier) before the run. \
             Range: GET /influencer_analytics/{{random id}} for one whole day (1,440 points, raw), {RANGE_CLIENTS} clients: for {half} s at a fixed {fixed_rate} requests/s (latency from when each was due), and for {seconds} s at full speed, \
             alternating with the same read without HTTP (series::read::points: both tiers, decoded; the API keeps usernames it has read) at the same concurrency, in {ROUNDS} rounds with fresh ids each, both through {connections} database connections (DATABASE_POOL_SIZE). Rank (/latest) and /average: {POINT_CLIENTS} clients. \
             The last 24 hours: {recent_influencers} other influencers written up to the minute before the run, minute by minute across all of them, and compacted as the jobs would have (what each range reads is reported), for {half} s at the fixed rate, at full speed, and read directly. \
             The load generator, the API and PostgreSQL share the box's 2 cores."
        )
    }
}

/// Range queries through the API, and the same SQL (the registry lookup and the range)
/// directly at the same concurrency, in alternating rounds (API first, then SQL first, ...)
/// with fresh ids in each: neither side runs on a cache the other warmed, and a drift of the
/// box's speed during the run falls on both alike.
async fn range_rounds(setup: &Setup) -> anyhow::Result<(load::Load, Vec<Duration>)> {
    let round_length = setup.duration / ROUNDS;
    let with_points = setup.with_points;
    let mut api = load::Load::default();
    let mut sql = Vec::new();
    for round in 0..ROUNDS {
        let api_seed = u64::from(round) * 2;
        let sql_seed = api_seed + 1;
        let base = setup.server_base.clone();
        let range_url =
            move |client: usize, i: u64| day_url(&base, range_id(api_seed, client, i, with_points));
        let day = (DAY_START * 1000, (DAY_START + MINUTES * 60 - 60) * 1000);
        let sql_id = move |client, i| range_id(sql_seed, client, i, with_points);
        if round % 2 == 1 {
            sql.extend(sql_load(&setup.sql_pool, day, sql_id, round_length).await?);
        }
        api.absorb(load::run(RANGE_CLIENTS, round_length, range_url, load::success).await?);
        if round % 2 == 0 {
            sql.extend(sql_load(&setup.sql_pool, day, sql_id, round_length).await?);
        }
    }
    Ok((api, sql))
}

/// The range at a fixed load, and the time inside the API meanwhile.
struct FixedRange {
    load: load::Load,
    inside_p99_ms: f64,
    inside_p50_ms: f64,
}

/// The same range at a fixed load, fresh ids again; the API's own histogram of the time it
/// took (from the request read to the answer handed to hyper) is scraped around it, to tell
/// the time inside the API from the time around it.
async fn fixed_range(setup: &Setup) -> anyhow::Result<FixedRange> {
    let inside_before = range_durations(&setup.server_base).await?;
    let (base, with_points) = (setup.server_base.clone(), setup.with_points);
    let load = load::run_at_rate(
        RANGE_CLIENTS,
        setup.fixed_rate,
        setup.duration / 2,
        move |client, i| {
            day_url(
                &base,
                range_id(u64::from(ROUNDS) * 2, client, i, with_points),
            )
        },
        load::success,
    )
    .await?;
    let inside = load::histogram_delta(&inside_before, &range_durations(&setup.server_base).await?);
    let inside_quantile =
        |q: f64| load::histogram_quantile(&inside, q).map_or(f64::NAN, |s| s * 1e3);
    Ok(FixedRange {
        load,
        inside_p99_ms: inside_quantile(0.99),
        inside_p50_ms: inside_quantile(0.5),
    })
}

/// The last 24 hours of the recent influencers, across the tiers as they stand: at the fixed
/// load, at full speed, and read directly.
struct RecentDay {
    fixed: load::Load,
    full: load::Load,
    direct: Vec<Duration>,
}

impl RecentDay {
    fn report(mut self, report: &mut Report, answered_goal: Goal, recent: Recent) {
        report
            .info(
                "last 24 hours: day segments read a range",
                recent.day_segments,
                "segments",
            )
            .info(
                "last 24 hours: hour segments (hour block members) read a range",
                recent.hour_segments,
                "segments",
            )
            .info(
                "last 24 hours: raw points read a range",
                recent.raw_points,
                "points",
            );
        range_figures(
            report,
            "last 24 hours",
            answered_goal,
            &mut self.fixed,
            &mut self.full,
            &mut self.direct,
        );
    }
}

async fn recent_day(setup: &Setup) -> anyhow::Result<RecentDay> {
    let recent = setup.recent;
    let base = setup.server_base.clone();
    let fixed = load::run_at_rate(
        RANGE_CLIENTS,
        setup.fixed_rate,
        setup.duration / 2,
        move |client, i| recent.url(&base, recent.id(20, client, i)),
        load::success,
    )
    .await?;
    let base = setup.server_base.clone();
    let full = load::run(
        RANGE_CLIENTS,
        setup.duration / 2,
        move |client, i| recent.url(&base, recent.id(21, client, i)),
        load::success,
    )
    .await?;
    let direct = sql_load(
        &setup.sql_pool,
        (recent.start_s * 1000, recent.end_s * 1000),
        move |client, i| recent.id(22, client, i),
        setup.duration / 2,
    )
    .await?;
    Ok(RecentDay {
        fixed,
        full,
        direct,
    })
}

/// Long ranges ending with the dataset's day: 30 days at step=1h, a year at step=1d. Each:
/// (days, step, p50, p99, requests a second).
async fn long_ranges(
    setup: &Setup,
) -> anyhow::Result<Vec<(i64, &'static str, Duration, Duration, f64)>> {
    let mut long = Vec::new();
    for (days, step) in [(30i64, "1h"), (365, "1d")] {
        let (base, with_history) = (setup.server_base.clone(), setup.with_history);
        let end = DAY_START + MINUTES * 60 - 60;
        let mut load = load::run(
            RANGE_CLIENTS,
            setup.duration / 2,
            move |client, i| {
                let id =
                    1_000_000 + (splitmix((client as u64) << 40 | i) % with_history as u64) as i64;
                format!(
                    "{base}/influencer_analytics/{id}?start_time={}&end_time={end}&step={step}",
                    end - days * 86_400
                )
            },
            load::success,
        )
        .await?;
        if load.errors > 0 {
            bail!("{} long-range requests failed", load.errors);
        }
        let (p50, p99) = (
            quantile(&mut load.latencies, 0.5),
            quantile(&mut load.latencies, 0.99),
        );
        long.push((days, step, p50, p99, load.rate()));
    }
    Ok(long)
}

/// Rank and average at 1,000,000 ranked influencers.
async fn point_reads(setup: &Setup) -> anyhow::Result<(load::Load, load::Load)> {
    let base = setup.server_base.clone();
    let latest = load::run(
        POINT_CLIENTS,
        setup.duration,
        move |client, i| {
            let id = 1_000_000 + (splitmix((client as u64) << 32 | i) % RANKED as u64) as i64;
            format!("{base}/influencer_analytics/{id}/latest")
        },
        load::success,
    )
    .await?;
    let base = setup.server_base.clone();
    let average = load::run(
        POINT_CLIENTS,
        setup.duration,
        move |_, _| {
            format!(
                "{base}/influencer_analytics/average?start_time={DAY_START}&end_time={}",
                DAY_START + 3600
            )
        },
        load::success,
    )
    .await?;
    Ok((latest, average))
}

/// The figures of one range measured at the fixed load, at full speed and read directly
/// (`direct`), each named after `what`: the fixed load's p99 against the goal's 20 ms, its p50
/// and the rate it answered (against `answered_goal`); full speed's p99, p50 and rate; and the
/// ratio of each full-speed quantile to the direct read's (goal ≤ 1.5).
fn range_figures(
    report: &mut Report,
    what: &str,
    answered_goal: Goal,
    fixed: &mut load::Load,
    full: &mut load::Load,
    direct: &mut [Duration],
) {
    report
        .goal(
            &format!("{what} p99 at a fixed load (50 clients)"),
            ms(quantile(&mut fixed.latencies, 0.99)),
            "ms",
            Goal::AtMost(20.0),
        )
        .info(
            &format!("{what} p50 at a fixed load"),
            ms(quantile(&mut fixed.latencies, 0.5)),
            "ms",
        )
        .goal(
            &format!("{what} requests/s answered at the fixed load"),
            fixed.rate(),
            "req/s",
            answered_goal,
        );
    for (q, name) in [(0.99, "p99"), (0.5, "p50")] {
        let (at_full_speed, read_directly) = (
            ms(quantile(&mut full.latencies, q)),
            ms(quantile(direct, q)),
        );
        report
            .info(
                &format!("{what} {name} at full speed (50 clients)"),
                at_full_speed,
                "ms",
            )
            .ratio(
                &format!("{what} {name} ÷ direct read {name}"),
                at_full_speed / read_directly,
                read_directly,
                Goal::AtMost(1.5),
            );
    }
    report.info(
        &format!("{what} requests/s at full speed"),
        full.rate(),
        "req/s",
    );
}

/// The cumulative buckets of the API's `http_request_duration_seconds` for the range route.
async fn range_durations(server_base: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let exposition = crate::tls::http_client_builder()
        .build()?
        .get(format!("{server_base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let buckets = load::histogram_buckets(
        &exposition,
        "http_request_duration_seconds",
        r#"route="/influencer_analytics/{id}""#,
    );
    anyhow::ensure!(
        !buckets.is_empty() || !exposition.contains("influencer_analytics/{id}"),
        "the API's /metrics has no histogram of the range route's durations"
    );
    Ok(buckets)
}

/// The API's read for a range request over `[start_ms, end_ms]`, run directly by
/// `RANGE_CLIENTS` tasks, client c's i-th read for influencer `id(c, i)`.
async fn sql_load(
    pool: &PgPool,
    (start_ms, end_ms): (i64, i64),
    id: impl Fn(usize, u64) -> i64 + Clone,
    duration: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + duration;
    let tasks = (0..RANGE_CLIENTS).map(|client| {
        let (pool, id) = (pool.clone(), id.clone());
        async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let id = id(client, i);
                i += 1;
                let sent = Instant::now();
                let rows = crate::series::read::points(&pool, id, start_ms, end_ms).await?;
                std::hint::black_box(rows);
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }
    });
    let mut all = Vec::new();
    for latencies in join_all(tasks).await {
        all.extend(latencies?);
    }
    Ok(all)
}

mod analytics;
mod dataset;
mod replica;

use dataset::Recent;
