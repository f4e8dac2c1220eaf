//! `bench forecast`: the forecast's calibration. Walks are written into the cold tier as
//! compaction writes them (a point a minute, day segments with their summaries): the
//! simulator's own walk (followers += 10,000·N(0,1) a minute, floor 5,000, from
//! max(100,000·(1+N(0,1)), 5,000)), the same with a drift of its own for each influencer, and
//! with spikes (a jump of 0.5 to 2 million followers, bought or purged, about once in 20
//! days). From origins every 5 days, the forecast is made from the closes the API reads (the
//! same read path) and compared with the close that came: how often each interval held it, per
//! walk and horizon. The 80% interval's goal: 75 to 85%.

use rand::{Rng, SeedableRng, rngs::SmallRng};
use rand_distr::{Distribution, Normal};

use super::{Goal, Report, Scenario, bench_database};
use crate::{
    api::forecast::{Horizon, LOOKBACK_DAYS, model::Walk},
    config::DatabaseSettings,
    series::{
        self, DAY_MS, SeriesPoint,
        store::{self, Segment},
    },
};

/// The kinds of walk.
const WALKS: [&str; 3] = ["walk", "drift", "spikes"];
const HORIZONS: [Horizon; 3] = [Horizon::Week, Horizon::Month, Horizon::Quarter];
/// Days between two origins of one influencer.
const ORIGIN_EVERY: i64 = 5;

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let (per_walk, days) = if quick { (20, 200) } else { (60, 300) };
    let (pool, _bench) = bench_database(database, "forecast", true).await?;
    let today = chrono::Utc::now().timestamp_millis().div_euclid(DAY_MS) * DAY_MS;
    let first_day = today - days * DAY_MS;
    let started = std::time::Instant::now();
    // held[walk][horizon] = (origins, within 80%, within 95%)
    let mut held = [[(0u64, 0u64, 0u64); 3]; 3];
    for (w, kind) in WALKS.iter().enumerate() {
        for n in 0..per_walk {
            let id = 1_000_000 + (w as i64) * 10_000 + n;
            let points = tokio::task::spawn_blocking({
                let kind = *kind;
                move || walk(kind, id as u64, first_day, days)
            })
            .await?;
            write(&pool, id, first_day, days, &points).await?;
            let buckets = series::read::buckets(&pool, id, first_day, today - 1, DAY_MS).await?;
            let closes: Vec<(i64, i64)> = buckets
                .iter()
                .map(|b| (b.time * 1000, i64::from(b.follower_count.last)))
                .collect();
            for (h, horizon) in HORIZONS.iter().enumerate() {
                backtest(&closes, horizon.days() as i64, &mut held[w][h]);
            }
        }
    }
    let mut out = Report::new(
        Scenario::Forecast,
        quick,
        format!(
            "{per_walk} influencers of each walk (the simulator's; with a drift of its own, uniform from -50,000 to +150,000 a day; with spikes), {days} days of a point a minute written as day segments; origins every {ORIGIN_EVERY} days from day {LOOKBACK_DAYS}, each forecast from the 90 closes before it as the API reads them; {:.0} s",
            started.elapsed().as_secs_f64()
        ),
    );
    for (w, kind) in WALKS.iter().enumerate() {
        for (h, horizon) in HORIZONS.iter().enumerate() {
            let (origins, in80, in95) = held[w][h];
            let share = |n: u64| n as f64 * 100.0 / origins.max(1) as f64;
            let name = format!("{kind}, {} days: 80% interval held", horizon.days());
            out.goal(&name, share(in80), "%", Goal::Between(75.0, 85.0))
                .info(
                    &format!("{kind}, {} days: 95% interval held", horizon.days()),
                    share(in95),
                    "%",
                )
                .info(
                    &format!("{kind}, {} days: origins", horizon.days()),
                    origins as f64,
                    "forecasts",
                );
        }
    }
    Ok(out)
}

/// One influencer's walk: a point a minute for `days` days from `first_day`.
fn walk(kind: &str, seed: u64, first_day: i64, days: i64) -> Vec<SeriesPoint> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let unit: Normal<f64> = Normal::new(0.0, 1.0).expect("a normal");
    let mut followers = (100_000.0 * (1.0 + unit.sample(&mut rng))).max(5_000.0);
    let mut following = (1_000.0 * (1.0 + unit.sample(&mut rng))).max(50.0);
    let drift = match kind {
        "drift" => rng.random_range(-50_000.0..150_000.0) / 1_440.0,
        _ => 0.0,
    };
    let minutes = days * 1_440;
    let mut points = Vec::with_capacity(minutes as usize);
    for m in 0..minutes {
        followers = (followers + drift + 10_000.0 * unit.sample(&mut rng)).max(5_000.0);
        if kind == "spikes" && rng.random_bool(1.0 / (20.0 * 1_440.0)) {
            let jump = rng.random_range(500_000.0..2_000_000.0);
            let sign = if rng.random_bool(0.7) { 1.0 } else { -1.0 };
            followers = (followers + sign * jump).max(5_000.0);
        }
        following = (following + 100.0 * unit.sample(&mut rng)).max(50.0);
        points.push(SeriesPoint {
            slot_ms: first_day + m * 60_000 + 20_000,
            follower_count: followers.round().min(f64::from(i32::MAX)) as i32,
            following_count: following.round() as i32,
        });
    }
    points
}

/// The walk as day segments, as compaction writes them.
async fn write(
    pool: &sqlx::PgPool,
    id: i64,
    first_day: i64,
    days: i64,
    points: &[SeriesPoint],
) -> anyhow::Result<()> {
    sqlx::query!(
        "insert into influencers (influencer_id, username) values ($1, 'influencer-' || $1::bigint)
         on conflict do nothing",
        id
    )
    .execute(pool)
    .await?;
    let mut segments = Vec::with_capacity(days as usize);
    for (d, day) in points.chunks(1_440).enumerate() {
        let day_ms = first_day + d as i64 * DAY_MS;
        segments.push(Segment::new(id, (day_ms, day_ms + DAY_MS), day, 150, 150)?);
    }
    let mut tx = pool.begin().await?;
    store::upsert(&mut tx, &segments).await?;
    tx.commit().await?;
    Ok(())
}

/// Forecasts from each origin with the [`LOOKBACK_DAYS`] closes before it and `horizon` days
/// of closes after it; counts `(origins, within 80%, within 95%)`.
fn backtest(closes: &[(i64, i64)], horizon: i64, held: &mut (u64, u64, u64)) {
    let lookback = LOOKBACK_DAYS as usize;
    let mut origin = lookback;
    // The origin's value is the close of the day before it, the last of the history.
    while origin + horizon as usize <= closes.len() {
        let history = &closes[origin - lookback..origin];
        let (from_ms, from) = history[lookback - 1];
        let came = closes[origin - 1 + horizon as usize];
        if came.0 != from_ms + horizon * DAY_MS {
            origin += ORIGIN_EVERY as usize;
            continue;
        }
        if let Some(walk) = Walk::estimate(history) {
            let band = walk.band(from as f64, horizon as f64);
            let value = came.1 as f64;
            held.0 += 1;
            held.1 += u64::from((band.low80..=band.high80).contains(&value));
            held.2 += u64::from((band.low95..=band.high95).contains(&value));
        }
        origin += ORIGIN_EVERY as usize;
    }
}
