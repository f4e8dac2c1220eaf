//! The benchmark's data: a day of points for every influencer, a year of day segments for
//! some, and the last 24 hours of others written up to the minute before the run, each kept
//! in the benchmark's database for the next run where it can be.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::{DAY_START, MINUTES, RANKED, RECENT_FIRST, range_url, spread_id};
use crate::series::{
    fixtures,
    inspect::{self, RangeHoldings, TierTable},
};

/// The recent day: `influencers` influencers from [`RECENT_FIRST`] with points up to the minute
/// before the benchmark started, and where the range of their last 24 hours lies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recent {
    pub(super) influencers: i64,
    /// The range's first and last slot, epoch seconds (1,440 slots).
    pub(super) start_s: i64,
    pub(super) end_s: i64,
    /// What one influencer's range reads, on average: day segments, hour segments (members
    /// of hour blocks) and raw points.
    pub(super) day_segments: f64,
    pub(super) hour_segments: f64,
    pub(super) raw_points: f64,
}

impl Recent {
    pub(super) fn id(&self, seed: u64, client: usize, i: u64) -> i64 {
        spread_id(RECENT_FIRST, self.influencers, seed, client, i)
    }

    pub(super) fn url(&self, base: &str, id: i64) -> String {
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
pub(super) async fn prepare_recent(pool: &PgPool, influencers: i64) -> anyhow::Result<Recent> {
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
pub(super) async fn generated(
    pool: &PgPool,
    table: &str,
    influencers: i64,
) -> anyhow::Result<Option<i64>> {
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

pub(super) async fn record_generated(
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
pub(super) async fn ensure_history(pool: &PgPool, influencers: i64) -> anyhow::Result<()> {
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

/// The marker of the generated day of points (its name changes with what is generated, so
/// that a dataset of an older kind is generated again).
pub(super) const DATASET: &str = "bench_dataset_noise";

/// Makes sure the database holds `with_points` influencers × one day of points and 1,000,000
/// ranked influencers; generates what is missing. Returns the number of points.
pub(super) async fn ensure_dataset(pool: &PgPool, with_points: i64) -> anyhow::Result<i64> {
    if let Some(points) = generated(pool, DATASET, with_points).await? {
        return Ok(points);
    }
    let started = Instant::now();
    eprintln!(
        "bench api: generating {with_points} influencers × {MINUTES} minutes of points (once; kept for the next run)"
    );
    // The year of history is generated again for the new dataset.
    sqlx::query!("drop table if exists bench_history")
        .execute(pool)
        .await?;
    sqlx::query!("drop table if exists bench_dataset")
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
    sqlx::query!("delete from influencers")
        .execute(pool)
        .await?;
    crate::bench::register_with_latest(pool, RANKED).await?;
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
    sqlx::query!(
        "insert into average_followers
         select to_timestamp(t), 150000 + (t % 1000), $1
         from generate_series($2::bigint, $2 + 86400 - 60, 60) t",
        RANKED,
        DAY_START
    )
    .execute(pool)
    .await?;
    crate::jobs::ranking::refresh(pool).await?;
    sqlx::query!("vacuum analyze").execute(pool).await?;
    let points = with_points * MINUTES;
    record_generated(pool, DATASET, with_points, points).await?;
    eprintln!(
        "bench api: dataset ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(points)
}
