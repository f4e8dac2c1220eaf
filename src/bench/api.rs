//! `bench api`: the query API under load, served by a `serve` process of its own.
//!
//! - Range: one influencer, one day at 1-minute points (1,440 points), with 100,000,000 points
//!   stored (1,000,000 with `--quick`), 50 concurrent clients. At a fixed load of
//!   [`FIXED_RATE`] requests a second (the issue's "≥ 2,000 requests/s"): p99 ≤ 20 ms, latency
//!   counted from when each request was due. At full speed (each client's next request as
//!   soon as its answer is in): the most the box answers, and the ratio of its p50/p99 to the
//!   same read run directly at the same concurrency with the same pool size (goal ≤ 1.5).
//! - Rank (`/latest`) and `/average` at 1,000,000 ranked influencers: p99 ≤ 5 ms.
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
use crate::series::{
    fixtures,
    inspect::{self, RangeHoldings, TierTable},
};
use crate::{config::DatabaseSettings, db, model::splitmix};

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

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let (with_points, seconds) = if quick { (700, 5) } else { (69_445, 30) };
    // Influencers that also have a year of day segments before the dataset's day.
    let with_history = if quick { 50 } else { 2_000 };
    let duration = Duration::from_secs(seconds);
    let suffix = if quick { "api_quick" } else { "api" };
    let (pool, bench) = bench_database(database, suffix, false).await?;
    let points = ensure_dataset(&pool, with_points).await?;
    // The dataset's day is long closed: compacted into day segments, as in production (a
    // no-op once done).
    use crate::jobs::compaction::{Budget, run_now};
    run_now(&pool, Budget::FULL, Duration::from_secs(600), &mut |line| {
        eprintln!("bench api: {line}")
    })
    .await?;
    ensure_history(&pool, with_history).await?;
    let recent_influencers = if quick { 640 } else { 10_048 };
    let recent = prepare_recent(&pool, recent_influencers).await?;
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

    // Range queries through the API, and the same SQL (the registry lookup and the range)
    // directly at the same concurrency, in alternating rounds (API first, then SQL first, ...)
    // with fresh ids in each: neither side runs on a cache the other warmed, and a drift of
    // the box's speed during the run falls on both alike.
    let round_length = duration / ROUNDS;
    let mut api = load::Load::default();
    let mut sql = Vec::new();
    for round in 0..ROUNDS {
        let api_seed = u64::from(round) * 2;
        let sql_seed = api_seed + 1;
        let base = server_base.clone();
        let range_url =
            move |client: usize, i: u64| day_url(&base, range_id(api_seed, client, i, with_points));
        let day = (DAY_START * 1000, (DAY_START + MINUTES * 60 - 60) * 1000);
        let sql_id = move |client, i| range_id(sql_seed, client, i, with_points);
        if round % 2 == 1 {
            sql.extend(sql_load(&sql_pool, day, sql_id, round_length).await?);
        }
        api.absorb(load::run(RANGE_CLIENTS, round_length, range_url, load::success).await?);
        if round % 2 == 0 {
            sql.extend(sql_load(&sql_pool, day, sql_id, round_length).await?);
        }
    }

    // The same range at a fixed load, fresh ids again; the API's own histogram of the time it
    // took (from the request read to the answer handed to hyper) is scraped around it, to tell
    // the time inside the API from the time around it.
    let fixed_rate = if quick { FIXED_RATE / 10.0 } else { FIXED_RATE };
    let inside_before = range_durations(&server_base).await?;
    let base = server_base.clone();
    let mut fixed = load::run_at_rate(
        RANGE_CLIENTS,
        fixed_rate,
        duration / 2,
        move |client, i| {
            day_url(
                &base,
                range_id(u64::from(ROUNDS) * 2, client, i, with_points),
            )
        },
        load::success,
    )
    .await?;
    let inside = load::histogram_delta(&inside_before, &range_durations(&server_base).await?);
    let inside_quantile =
        |q: f64| load::histogram_quantile(&inside, q).map_or(f64::NAN, |s| s * 1e3);

    // The last 24 hours of the recent influencers, across the tiers as they stand: at the
    // fixed load, at full speed, and read directly.
    let base = server_base.clone();
    let mut recent_fixed = load::run_at_rate(
        RANGE_CLIENTS,
        fixed_rate,
        duration / 2,
        move |client, i| recent.url(&base, recent.id(20, client, i)),
        load::success,
    )
    .await?;
    let base = server_base.clone();
    let mut recent_full = load::run(
        RANGE_CLIENTS,
        duration / 2,
        move |client, i| recent.url(&base, recent.id(21, client, i)),
        load::success,
    )
    .await?;
    let mut recent_direct = sql_load(
        &sql_pool,
        (recent.start_s * 1000, recent.end_s * 1000),
        move |client, i| recent.id(22, client, i),
        duration / 2,
    )
    .await?;
    sql_pool.close().await;

    // Long ranges ending with the dataset's day: 30 days at step=1h, a year at step=1d.
    let mut long = Vec::new();
    for (days, step) in [(30i64, "1h"), (365, "1d")] {
        let base = server_base.clone();
        let end = DAY_START + MINUTES * 60 - 60;
        let mut load = load::run(
            RANGE_CLIENTS,
            duration / 2,
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

    // Rank and average at 1,000,000 ranked influencers.
    let base = server_base.clone();
    let mut latest = load::run(
        POINT_CLIENTS,
        duration,
        move |client, i| {
            let id = 1_000_000 + (splitmix((client as u64) << 32 | i) % RANKED as u64) as i64;
            format!("{base}/influencer_analytics/{id}/latest")
        },
        load::success,
    )
    .await?;
    let base = server_base.clone();
    let mut average = load::run(
        POINT_CLIENTS,
        duration,
        move |_, _| {
            format!(
                "{base}/influencer_analytics/average?start_time={DAY_START}&end_time={}",
                DAY_START + 3600
            )
        },
        load::success,
    )
    .await?;
    server.stop();
    pool.close().await;
    let half = seconds as f64 / 2.0;
    let errors = api.errors
        + fixed.errors
        + recent_fixed.errors
        + recent_full.errors
        + latest.errors
        + average.errors;
    if errors > 0 {
        bail!("{errors} requests failed during the benchmark");
    }

    let mut report = Report::new(
        Scenario::Api,
        quick,
        format!(
            "{points} points stored ({with_points} influencers × {MINUTES} minutes, 1-hour chunks); {RANKED} influencers ranked; the day compacted into day segments (the cold tier) before the run. \
             Range: GET /influencer_analytics/{{random id}} for one whole day (1,440 points, raw), {RANGE_CLIENTS} clients: for {half} s at a fixed {fixed_rate} requests/s (latency from when each was due), and for {seconds} s at full speed, \
             alternating with the same read without HTTP (series::read::points: both tiers, decoded; the API keeps usernames it has read) at the same concurrency, in {ROUNDS} rounds with fresh ids each, both through {connections} database connections (DATABASE_POOL_SIZE). Rank (/latest) and /average: {POINT_CLIENTS} clients. \
             The last 24 hours: {recent_influencers} other influencers written up to the minute before the run, minute by minute across all of them, and compacted as the jobs would have (what each range reads is reported), for {half} s at the fixed rate, at full speed, and read directly. \
             The load generator, the API and PostgreSQL share the box's 2 cores."
        ),
    );
    let answered_goal = Goal::AtLeast(if quick { 200.0 } else { 2_000.0 });
    range_figures(
        &mut report,
        "range",
        answered_goal,
        &mut fixed,
        &mut api,
        &mut sql,
    );
    report
        .info(
            "range p99 inside the API at the fixed load (its histogram, interpolated)",
            inside_quantile(0.99),
            "ms",
        )
        .info(
            "range p50 inside the API at the fixed load",
            inside_quantile(0.5),
            "ms",
        )
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
        &mut report,
        "last 24 hours",
        answered_goal,
        &mut recent_fixed,
        &mut recent_full,
        &mut recent_direct,
    );
    for (days, step, p50, p99, rate) in &long {
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
    report
        .info(
            "database connections (API and SQL alike)",
            f64::from(sql_pool.options().get_max_connections()),
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
    Ok(report)
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

/// The recent day: `influencers` influencers from [`RECENT_FIRST`] with points up to the minute
/// before the benchmark started, and where the range of their last 24 hours lies.
#[derive(Debug, Clone, Copy)]
struct Recent {
    influencers: i64,
    /// The range's first and last slot, epoch seconds (1,440 slots).
    start_s: i64,
    end_s: i64,
    /// What one influencer's range reads, on average: day segments, hour segments (members
    /// of hour blocks) and raw points.
    day_segments: f64,
    hour_segments: f64,
    raw_points: f64,
}

impl Recent {
    fn id(&self, seed: u64, client: usize, i: u64) -> i64 {
        spread_id(RECENT_FIRST, self.influencers, seed, client, i)
    }

    fn url(&self, base: &str, id: i64) -> String {
        range_url(base, id, (self.start_s, self.end_s))
    }
}

/// Writes the last day of `influencers` influencers from [`RECENT_FIRST`], up to the minute
/// before now, minute by minute across all of them as the sink writes, and compacts what has
/// closed and settled, as the jobs would have: the range of the last 24 hours then reads what
/// production reads at this time of day (yesterday's part from its day segment, or from hour
/// blocks in the first minutes after midnight; today's closed hours from hour blocks; the last
/// hour or so raw). The data is relative to when it was written, so an earlier run's is dropped
/// first (every chunk after the dataset's day holds only this).
async fn prepare_recent(pool: &PgPool, influencers: i64) -> anyhow::Result<Recent> {
    use crate::jobs::compaction::{Budget, run_now};
    let started = Instant::now();
    let last = RECENT_FIRST + influencers - 1;
    let after_dataset = DAY_START + MINUTES * 60;
    fixtures::clear_after(pool, after_dataset, (RECENT_FIRST, last)).await?;
    let now_s = chrono::Utc::now().timestamp();
    let end_s = now_s - now_s.rem_euclid(60) - 60;
    let start_s = end_s - MINUTES * 60 + 60;
    // An hour (one chunk) a statement, from the hour the range starts in.
    let mut from = start_s - start_s.rem_euclid(3600);
    while from <= end_s {
        fixtures::insert_noise(pool, (RECENT_FIRST, last), (from, (from + 3540).min(end_s)))
            .await?;
        from += 3600;
    }
    run_now(pool, Budget::FULL, Duration::from_secs(600), &mut |line| {
        eprintln!("bench api (recent day): {line}")
    })
    .await?;
    inspect::analyze(pool, TierTable::Raw, false).await?;
    let RangeHoldings {
        day_segments,
        hour_segments,
        raw_points,
    } = inspect::range_holdings(pool, (RECENT_FIRST, last), (start_s, end_s)).await?;
    let per_influencer = |n: i64| n as f64 / influencers as f64;
    let recent = Recent {
        influencers,
        start_s,
        end_s,
        day_segments: per_influencer(day_segments),
        hour_segments: per_influencer(hour_segments),
        raw_points: per_influencer(raw_points),
    };
    eprintln!(
        "bench api: the last 24 hours of {influencers} influencers written and compacted in {:.0} s: {recent:?}",
        started.elapsed().as_secs_f64()
    );
    Ok(recent)
}

/// How many points a generated part of the dataset (`table`: its marker table) holds for
/// `influencers`, if it was generated already.
async fn generated(pool: &PgPool, table: &str, influencers: i64) -> anyhow::Result<Option<i64>> {
    sqlx::query(&format!(
        "create table if not exists {table} (influencers bigint primary key, points bigint not null)"
    ))
    .execute(pool)
    .await?;
    Ok(sqlx::query_scalar(&format!(
        "select points from {table} where influencers = $1"
    ))
    .bind(influencers)
    .fetch_optional(pool)
    .await?)
}

async fn record_generated(
    pool: &PgPool,
    table: &str,
    influencers: i64,
    points: i64,
) -> anyhow::Result<()> {
    sqlx::query(&format!("insert into {table} values ($1, $2)"))
        .bind(influencers)
        .bind(points)
        .execute(pool)
        .await?;
    Ok(())
}

/// Makes sure the first `influencers` influencers have a year of day segments before the
/// dataset's day (the simulator's walk, written straight into the cold tier as compaction
/// writes it): what the long ranges read.
async fn ensure_history(pool: &PgPool, influencers: i64) -> anyhow::Result<()> {
    use crate::series::{
        DAY_MS, SeriesPoint,
        store::{self, Segment},
    };
    use rand::{SeedableRng, rngs::SmallRng};
    use rand_distr::{Distribution, Normal};
    if generated(pool, "bench_history", influencers)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let started = Instant::now();
    let first_day = DAY_START * 1000 - 365 * DAY_MS;
    let (big, small) = (Normal::new(0.0, 10_000.0)?, Normal::new(0.0, 100.0)?);
    for id in 1_000_000..1_000_000 + influencers {
        let mut rng = SmallRng::seed_from_u64(id as u64);
        let (mut followers, mut following) = (5_000_000f64, 1_000f64);
        let mut segments = Vec::with_capacity(365);
        for day in 0..365 {
            let day_ms = first_day + day * DAY_MS;
            let points: Vec<SeriesPoint> = (0..MINUTES)
                .map(|m| {
                    followers = (followers + big.sample(&mut rng)).max(0.0);
                    following = (following + small.sample(&mut rng)).max(0.0);
                    SeriesPoint {
                        slot_ms: day_ms + m * 60_000,
                        follower_count: followers.round() as i32,
                        following_count: following.round() as i32,
                    }
                })
                .collect();
            segments.push(Segment::new(
                id,
                (day_ms, day_ms + DAY_MS),
                &points,
                150,
                150,
            )?);
        }
        let mut tx = pool.begin().await?;
        store::upsert(&mut tx, &segments).await?;
        tx.commit().await?;
    }
    inspect::analyze(pool, TierTable::DaySegments, true).await?;
    record_generated(
        pool,
        "bench_history",
        influencers,
        influencers * 365 * MINUTES,
    )
    .await?;
    eprintln!(
        "bench api: a year of day segments for {influencers} influencers in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Makes sure the database holds `with_points` influencers × one day of points and 1,000,000
/// ranked influencers; generates what is missing. Returns the number of points.
/// The marker of the generated day of points (its name changes with what is generated, so
/// that a dataset of an older kind is generated again).
const DATASET: &str = "bench_dataset_noise";

async fn ensure_dataset(pool: &PgPool, with_points: i64) -> anyhow::Result<i64> {
    if let Some(points) = generated(pool, DATASET, with_points).await? {
        return Ok(points);
    }
    let started = Instant::now();
    eprintln!(
        "bench api: generating {with_points} influencers × {MINUTES} minutes of points (once; kept for the next run)"
    );
    // The year of history is generated again for the new dataset.
    sqlx::query("drop table if exists bench_history")
        .execute(pool)
        .await?;
    sqlx::query("drop table if exists bench_dataset")
        .execute(pool)
        .await?;
    for table in [
        DATASET,
        "ranking_runs",
        "average_followers",
        "influencer_latest",
        "current_verdicts",
        "suspicious_classifications",
        "fetch_failures",
    ] {
        sqlx::query(&format!("truncate {table} cascade"))
            .execute(pool)
            .await?;
    }
    fixtures::truncate_all(pool).await?;
    sqlx::query("delete from influencers").execute(pool).await?;
    sqlx::query(
        "insert into influencers (influencer_id, username)
         select id, 'influencer-' || id from generate_series(1000000::bigint, 1000000 + $1 - 1) id",
    )
    .bind(RANKED)
    .execute(pool)
    .await?;
    // One hour at a time (one chunk per statement); compacted before it is read, so a day
    // segment of noise is as big as a real one (about 4.3 kB, two TOAST chunks and a tail).
    for hour in 0..24 {
        let from = DAY_START + hour * 3600;
        fixtures::insert_noise(
            pool,
            (1_000_000, 1_000_000 + with_points - 1),
            (from, from + 3540),
        )
        .await?;
        eprintln!(
            "bench api: hour {} of 24 stored ({:.0} s)",
            hour + 1,
            started.elapsed().as_secs_f64()
        );
    }
    sqlx::query(
        "insert into influencer_latest
         select id, now(), now(), 5000 + ((id * 2654435761) % 400000)::int, 50 + (id % 2000)::int
         from generate_series(1000000::bigint, 1000000 + $1 - 1) id",
    )
    .bind(RANKED)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into average_followers
         select to_timestamp(t), 150000 + (t % 1000), $1
         from generate_series($2::bigint, $2 + 86400 - 60, 60) t",
    )
    .bind(RANKED)
    .bind(DAY_START)
    .execute(pool)
    .await?;
    crate::jobs::ranking::refresh(pool).await?;
    sqlx::query("vacuum analyze").execute(pool).await?;
    let points = with_points * MINUTES;
    record_generated(pool, DATASET, with_points, points).await?;
    eprintln!(
        "bench api: dataset ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(points)
}
