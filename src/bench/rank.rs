//! `bench rank`: the rank history at 1,000,000 influencers over a year (`--quick`: 100,000
//! over 30 days). What ranking a closed day costs the jobs (from a day of closes, as the job
//! does), the bytes an influencer-day takes (goal ≤ 8), and `/influencer_analytics/{id}/rank`
//! for a year served by a `serve` process of its own (goal p99 ≤ 20 ms).

use std::time::{Duration, Instant};

use super::{
    Goal, Report, Scenario, bench_database, load, ms,
    procs::{Roles, free_port},
    quantile,
};
use crate::{
    config::DatabaseSettings,
    series::{DAY_MS, Snapshot, closes, ranks},
};

/// Clients of the load.
const CLIENTS: usize = 50;
/// The rate at which the latency under load is measured, requests a second.
const FIXED_RATE: f64 = 100.0;
/// The first influencer id (as the registry's pks).
const FIRST_ID: i64 = 1_000_000;

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let (influencers, days) = if quick {
        (100_000, 30)
    } else {
        (1_000_000, 365)
    };
    let seconds = if quick { 5 } else { 20 };
    let (pool, bench) = bench_database(database, "rank", true).await?;
    super::register_with_latest(&pool, influencers).await?;
    let today = chrono::Utc::now().timestamp_millis().div_euclid(DAY_MS) * DAY_MS;

    // The newest day as the job ranks it: from its closes.
    let newest = today - DAY_MS;
    write_closes(&pool, influencers, newest).await?;
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let ranked = ranks::rank_day(&mut tx, &pool, newest).await?;
    tx.commit().await?;
    let rank_day = started.elapsed();
    anyhow::ensure!(ranked == influencers as usize, "ranked {ranked}");
    let generated = write_history(&pool, influencers, days, today).await?;
    let stored = ranks::bytes_on_disk(&pool).await?;
    // The writes flushed before the reads are timed.
    sqlx::query!("checkpoint").execute(&pool).await?;

    let port = free_port()?;
    let mut server = Roles::default();
    server.spawn(
        "serve",
        &["serve"],
        &[
            ("DATABASE_URL", bench.database_url.expose().to_string()),
            ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ],
    )?;
    let base = format!("http://127.0.0.1:{port}");
    server.wait_ready(&format!("{base}/healthz")).await?;
    let year_ago = (today - 366 * DAY_MS) / 1000;
    let url = move |c: usize, i: u64| {
        let id = FIRST_ID + ((c as u64 * 7_919 + i * 104_729) % influencers as u64) as i64;
        format!("{base}/influencer_analytics/{id}/rank?start_time={year_ago}")
    };
    check_answer(&url(0, 0), days).await?;
    let duration = Duration::from_secs(seconds);
    let alone = load::run(1, duration, url.clone(), load::success).await?;
    let most = load::run(CLIENTS, duration, url.clone(), load::success).await?;
    let at_rate = load::run_at_rate(CLIENTS, FIXED_RATE, duration, url, load::success).await?;
    server.stop();
    pool.close().await;

    let setup = (influencers, days, seconds, quick, generated);
    Ok(report(setup, rank_day, stored, [alone, most, at_rate]))
}

/// The days before the newest and the 48 hours, written directly (a walk of everyone's
/// followers); how long that took.
async fn write_history(
    pool: &sqlx::PgPool,
    influencers: i64,
    days: i64,
    today: i64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let newest = today - DAY_MS;
    for d in 1..days {
        let mut tx = pool.begin().await?;
        ranks::write(
            &mut tx,
            ranks::Kind::Day,
            newest - d * DAY_MS,
            walk(influencers, d),
        )
        .await?;
        tx.commit().await?;
    }
    for h in 0..48 {
        let mut tx = pool.begin().await?;
        let hour = today - h * 3_600_000;
        ranks::write(
            &mut tx,
            ranks::Kind::Hour,
            hour,
            walk(influencers, 1_000 + h),
        )
        .await?;
        tx.commit().await?;
    }
    Ok(started.elapsed())
}

/// Everyone's followers on day (or hour) `n` of a walk: spread as the pipeline's.
fn walk(influencers: i64, n: i64) -> Vec<(i64, i32)> {
    (FIRST_ID..FIRST_ID + influencers)
        .map(|id| {
            let base = 5_000 + (id * 2_654_435_761) % 400_000;
            let step = (id * 7_919 + n * 104_729) % 3_001 - 1_500;
            (id, (base + step * (n % 50)).max(5_000) as i32)
        })
        .collect()
}

/// A day of closes for everyone, in rows as compaction writes them.
async fn write_closes(pool: &sqlx::PgPool, influencers: i64, day: i64) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    for part in walk(influencers, 0).chunks(19_968) {
        let mut closes = Snapshot::with_capacity(part.len());
        for &(id, followers) in part {
            closes.push(id, followers, 100, day + DAY_MS - 40_000);
        }
        closes::write(&mut tx, day, &closes).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The history asked for holds every day and hour.
async fn check_answer(url: &str, days: i64) -> anyhow::Result<()> {
    let body: serde_json::Value = crate::tls::http_client()
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let count = |list: &str| body[list].as_array().map_or(0, Vec::len) as i64;
    anyhow::ensure!(
        count("days") == days && count("hours") >= 47,
        "{url}: {} days and {} hours",
        count("days"),
        count("hours")
    );
    Ok(())
}

fn report(
    (influencers, days, seconds, quick, generated): (i64, i64, u64, bool, Duration),
    rank_day: Duration,
    stored: i64,
    [mut alone, mut most, mut at_rate]: [load::Load; 3],
) -> Report {
    let mut out = Report::new(
        Scenario::Rank,
        quick,
        format!(
            "{influencers} influencers; the newest day ranked from its closes as the job does; {} more days and 48 hours of ranks written directly ({:.0} s); a serve process answers a year's history of random influencers, for {seconds} s each: one request at a time, {CLIENTS} clients as fast as answered, and {CLIENTS} clients at {FIXED_RATE} requests/s. serve, PostgreSQL and this process share the 2 cores.",
            days - 1,
            generated.as_secs_f64()
        ),
    );
    out.info("ranking a closed day (job)", rank_day.as_secs_f64(), "s")
        .goal(
            "stored bytes an influencer-moment (heap, TOAST and index)",
            stored as f64 / (influencers * (days + 48)) as f64,
            "bytes",
            Goal::AtMost(8.0),
        )
        .goal(
            "a year's rank history, p99 one request at a time",
            ms(quantile(&mut alone.latencies, 0.99)),
            "ms",
            Goal::AtMost(20.0),
        )
        .goal(
            &format!("a year's rank history, p99 at {FIXED_RATE} requests/s"),
            ms(quantile(&mut at_rate.latencies, 0.99)),
            "ms",
            Goal::AtMost(20.0),
        )
        .info(
            &format!("a year's rank history, most requests/s from {CLIENTS} clients"),
            most.rate(),
            "req/s",
        )
        .info(
            "p99 at the most (queueing)",
            ms(quantile(&mut most.latencies, 0.99)),
            "ms",
        )
        .info("errors", (most.errors + at_rate.errors) as f64, "requests");
    out
}
