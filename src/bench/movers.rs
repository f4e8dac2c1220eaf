//! `bench movers`: the movers at 1,000,000 tracked influencers (`--quick`: 100,000). The
//! minutely mark (what keeping the windows ending now fresh costs the jobs: goal ≤ 0.1 of a
//! core), its size, and `/influencer_analytics/movers` served by a `serve` process of its own:
//! a window ending now at 50 clients (goal p99 ≤ 20 ms, ≥ 1,000 requests/s) and movers between
//! two past days, each pair of days asked for the first time (goal p99 ≤ 2 s); and the search
//! box's search by username prefix over the 1,000,000 names.

use std::time::{Duration, Instant};

use super::{
    Goal, Report, Scenario, bench_database, load, ms,
    procs::{Roles, free_port},
    quantile,
};
use crate::{
    config::DatabaseSettings,
    jobs::movers,
    series::{DAY_MS, Snapshot, closes},
};

/// Clients of the load on a window ending now.
const CLIENTS: usize = 50;
/// The rate at which the window's latency is measured, requests a second.
const FIXED_RATE: f64 = 1_000.0;
/// Past days of closes written, and pairs of them asked for.
const DAYS: i64 = 6;
/// Influencers a row of day closes holds (as compaction's batches of 312 hour blocks).
const CLOSES_PER_ROW: i64 = 19_968;

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let influencers: i64 = if quick { 100_000 } else { 1_000_000 };
    let seconds = if quick { 5 } else { 20 };
    let (pool, bench) = bench_database(database, "movers", true).await?;
    super::register_with_latest(&pool, influencers).await?;
    sqlx::query!("vacuum analyze influencer_latest, influencers")
        .execute(&pool)
        .await?;
    let (marks, bytes) = take_marks(&pool).await?;
    let days = write_closes(&pool, influencers).await?;

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
    let client = crate::tls::http_client();

    // The first request of a minute pairs the two marks; each order is sorted when first
    // asked for.
    let mut cold = Vec::new();
    for order in orders() {
        let url = format!("{base}/influencer_analytics/movers?window=1h&{order}");
        let (took, body) = timed_get(&client, &url).await?;
        anyhow::ensure!(
            body["compared"].as_i64() == Some(influencers),
            "compared {} of {influencers}",
            body["compared"]
        );
        cold.push(took);
    }
    let window = window_loads(&base, seconds).await?;
    let search = load::run_at_rate(
        CLIENTS,
        FIXED_RATE,
        Duration::from_secs(seconds),
        {
            let base = base.clone();
            move |c, i| {
                let n = (c as u64 * 7_919 + i * 104_729) % 10_000;
                format!("{base}/influencer_analytics/search?q=influencer-1{n:04}")
            }
        },
        load::success,
    )
    .await?;
    let mut past = Vec::new();
    for pair in days.windows(2).take(DAYS as usize - 1) {
        let (start, end) = (day_name(pair[0]), day_name(pair[1]));
        let url = format!(
            "{base}/influencer_analytics/movers?start_day={start}&end_day={end}&direction=losers"
        );
        past.push(timed_get(&client, &url).await?.0);
    }
    server.stop();
    pool.close().await;

    let setup = (influencers, seconds, quick);
    let mut out = report(setup, &marks, bytes, &cold, window, &mut past)?;
    let mut search = search;
    out.goal(
        &format!("search by username prefix, p99 at {FIXED_RATE} requests/s"),
        ms(quantile(&mut search.latencies, 0.99)),
        "ms",
        Goal::AtMost(20.0),
    )
    .info("search, errors", search.errors as f64, "requests");
    Ok(out)
}

/// The movers job's mark three times, of values an hour old (the times of the three), then a
/// mark of new values an hour after them; and the largest mark's size.
async fn take_marks(pool: &sqlx::PgPool) -> anyhow::Result<(Vec<Duration>, i64)> {
    // Counts and times spread as the pipeline's are (the registry's are too regular to be
    // a fair test of a mark's size).
    sqlx::query!(
        "update influencer_latest set slot = now() - interval '1 hour' - random() * interval '60 s',
             follower_count = 5000 + (random() * 400000)::int,
             following_count = 50 + (random() * 2000)::int"
    )
    .execute(pool)
    .await?;
    let mut marks = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        movers::mark_now(pool).await?;
        marks.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    sqlx::query!("update movers_marks set marked_at = marked_at - interval '1 hour'")
        .execute(pool)
        .await?;
    sqlx::query!(
        "update influencer_latest set slot = now() - random() * interval '60 s',
             follower_count = greatest(0, follower_count + (random() * 2000)::int - 1000)"
    )
    .execute(pool)
    .await?;
    movers::mark_now(pool).await?;
    let bytes: i64 = sqlx::query_scalar!(
        r#"select max(octet_length(data))::bigint as "bytes!" from movers_marks"#
    )
    .fetch_one(pool)
    .await?;
    Ok((marks, bytes))
}

/// Pages of the 1h window at [`CLIENTS`] clients: as many as get answered (the most it
/// serves), then at [`FIXED_RATE`] (the latency that load meets).
async fn window_loads(base: &str, seconds: u64) -> anyhow::Result<(load::Load, load::Load)> {
    let orders = orders();
    let base = base.to_string();
    let page_url = std::sync::Arc::new(move |client: usize, i: u64| {
        let order = &orders[(client + i as usize) % orders.len()];
        format!("{base}/influencer_analytics/movers?window=1h&limit=20&{order}")
    });
    let duration = Duration::from_secs(seconds);
    let url = page_url.clone();
    let most = load::run(CLIENTS, duration, move |c, i| url(c, i), load::success).await?;
    let url = page_url.clone();
    let at_rate = load::run_at_rate(
        CLIENTS,
        FIXED_RATE,
        duration,
        move |c, i| url(c, i),
        load::success,
    )
    .await?;
    Ok((most, at_rate))
}

/// A GET that must succeed: its time and its JSON.
async fn timed_get(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<(Duration, serde_json::Value)> {
    let started = Instant::now();
    let response = client.get(url).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    let body: serde_json::Value = response.json().await?;
    Ok((started.elapsed(), body))
}

fn report(
    (influencers, seconds, quick): (i64, u64, bool),
    marks: &[Duration],
    bytes: i64,
    cold: &[Duration],
    mut window: (load::Load, load::Load),
    past: &mut [Duration],
) -> anyhow::Result<Report> {
    let mut marks = marks.to_vec();
    let mark = quantile(&mut marks, 0.5).as_secs_f64();
    let mut out = Report::new(
        Scenario::Movers,
        quick,
        format!(
            "{influencers} tracked influencers with a latest value; the movers job's mark taken three times (median), an hour-old mark against a new one; {DAYS} past days of closes (written as compaction writes them). A serve process answers: the 12 orders of the 1h window asked once each (cold: the pairing and each sort), then {CLIENTS} clients for {seconds} s on pages of 20 of them, as fast as answered and then at {FIXED_RATE} requests/s; then {} pairs of past days, each asked for the first time. serve, PostgreSQL and this process share the 2 cores.",
            past.len()
        ),
    );
    out.goal(
        "the movers mark each minute, share of a core",
        mark / 60.0,
        "cores",
        Goal::AtMost(0.1),
    )
    .info("the movers mark (job), one run", mark, "s")
    .info(
        "mark size a tracked influencer",
        bytes as f64 / influencers as f64,
        "bytes",
    )
    .info(
        "1h window: the first request of a new mark (pairing, one sort)",
        ms(cold[0]),
        "ms",
    )
    .info(
        "1h window: slowest first request of another order (its sort)",
        ms(cold[1..].iter().copied().max().unwrap_or_default()),
        "ms",
    )
    .goal(
        &format!("1h window, p99 at {FIXED_RATE} requests/s from {CLIENTS} clients"),
        ms(quantile(&mut window.1.latencies, 0.99)),
        "ms",
        Goal::AtMost(20.0),
    )
    .info(
        "1h window, requests/s kept at that rate",
        window.1.rate(),
        "req/s",
    )
    .goal(
        &format!("1h window, most requests/s from {CLIENTS} clients"),
        window.0.rate(),
        "req/s",
        Goal::AtLeast(1_000.0),
    )
    .info(
        &format!("1h window, p99 at the most from {CLIENTS} clients (queueing)"),
        ms(quantile(&mut window.0.latencies, 0.99)),
        "ms",
    )
    .info(
        "1h window, errors",
        (window.0.errors + window.1.errors) as f64,
        "requests",
    )
    .goal(
        "two past days (each pair new), p99",
        quantile(past, 0.99).as_secs_f64(),
        "s",
        Goal::AtMost(2.0),
    );
    Ok(out)
}

/// Every metric, by and direction, as query parameters.
fn orders() -> Vec<String> {
    let mut out = Vec::new();
    for metric in ["followers", "following", "ratio"] {
        for by in ["absolute", "percent"] {
            for direction in ["gainers", "losers"] {
                out.push(format!("metric={metric}&by={by}&direction={direction}"));
            }
        }
    }
    out
}

/// [`DAYS`] days of closes before today for every influencer, a random walk from day to day;
/// returns the days (start, epoch ms), oldest first.
async fn write_closes(pool: &sqlx::PgPool, influencers: i64) -> anyhow::Result<Vec<i64>> {
    let today = chrono::Utc::now().timestamp_millis().div_euclid(DAY_MS) * DAY_MS;
    let days: Vec<i64> = (1..=DAYS).rev().map(|d| today - d * DAY_MS).collect();
    for (n, &day) in days.iter().enumerate() {
        let mut tx = pool.begin().await?;
        let mut first = 1_000_000;
        while first < 1_000_000 + influencers {
            let last = (first + CLOSES_PER_ROW).min(1_000_000 + influencers);
            let part = tokio::task::spawn_blocking(move || {
                let mut part = Snapshot::with_capacity((last - first) as usize);
                for id in first..last {
                    let base = 5_000 + (id * 2_654_435_761) % 400_000;
                    let walk = (id * 7_919 + n as i64 * 104_729) % 3_001 - 1_500;
                    part.push(
                        id,
                        (base + walk * n as i64) as i32,
                        (50 + id % 2_000) as i32,
                        day + DAY_MS - 60_000 + id % 60_000,
                    );
                }
                part
            })
            .await?;
            closes::write(&mut tx, day, &part).await?;
            first = last;
        }
        tx.commit().await?;
    }
    Ok(days)
}

fn day_name(day_ms: i64) -> String {
    crate::series::at(day_ms).format("%Y-%m-%d").to_string()
}
