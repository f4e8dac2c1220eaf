//! `bench storage`: bytes per stored point in each tier, on the simulator's data.
//!
//! One closed UTC day of points for every influencer, each value a step of the simulator's own
//! random walk (followers N(0, 10,000), following N(0, 100) a minute), written by the sink's
//! writer in polling order (every influencer once a minute, shuffled within the minute). Then
//! measured as written (raw, the hot tier), after the hours are compacted into hour segments,
//! and after the day is merged into day segments. Goals (issue 17): ≤ 3.5 bytes a point in
//! closed days, ≤ 5 in closed hours not yet merged. The spike detector's scan of the day is timed
//! on the raw points and again on the day segments.

use std::time::Instant;

use rand::{SeedableRng, seq::SliceRandom};

use super::{Goal, Report, Scenario, bench_database, sink};
use crate::{
    config::DatabaseSettings,
    jobs::compaction,
    model::Point,
    queue::points::Outcomes,
    series::DAY_MS,
    series::inspect::{self, TierTable},
    simulator::Simulator,
    sink::writer,
};

/// The walk's entropy, bytes a point: a rounded Gaussian step of σ has about
/// log2(σ·sqrt(2πe)) bits; followers σ = 10,000, following σ = 100.
pub(crate) fn walk_entropy_bytes() -> f64 {
    let bits =
        |sigma: f64| (sigma * (2.0 * std::f64::consts::PI * std::f64::consts::E).sqrt()).log2();
    (bits(10_000.0) + bits(100.0)) / 8.0
}

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let influencers: usize = if quick { 1_000 } else { 10_000 };
    let (pool, _) = bench_database(database, "storage", true).await?;
    sink::register(&pool, influencers).await?;
    // The latest closed day that compaction merges now (yesterday, once it has settled).
    let day_ms = compaction::latest_settled_day_ms(chrono::Utc::now().timestamp_millis());
    let started = Instant::now();
    write_day(&pool, influencers, day_ms).await?;
    let write_secs = started.elapsed().as_secs_f64();
    let points = (influencers * 1440) as f64;
    let raw = inspect::bytes(&pool, TierTable::Raw).await?;
    let (spike_raw, judged_raw) = spike_scan(&pool, day_ms + DAY_MS).await?;

    let started = Instant::now();
    let cpu = super::procs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    compaction::run_stages(&pool, compaction::Budget::FULL, false, &mut |_| {}).await?;
    let hours_secs = started.elapsed().as_secs_f64();
    let hours_cpu = super::procs::cpu_seconds(std::process::id()).unwrap_or(0.0) - cpu;
    let hours = inspect::bytes(&pool, TierTable::HourBlocks).await?;
    let started = Instant::now();
    compaction::run_stages(&pool, compaction::Budget::FULL, true, &mut |_| {}).await?;
    let days_secs = started.elapsed().as_secs_f64();
    // A closed day is its day segments and its entries in the summary packs (migration 0006):
    // here each pack holds the one day written, so its row and index entry weigh on one day,
    // not on the 28 of a pack in steady state (an upper bound).
    let packs = inspect::bytes(&pool, TierTable::SummaryPacks).await?;
    let days = inspect::bytes(&pool, TierTable::DaySegments).await? + packs;
    let (spike_days, judged_days) = spike_scan(&pool, day_ms + DAY_MS).await?;
    if judged_raw != influencers as u64 || judged_days != judged_raw {
        anyhow::bail!(
            "the spike detector judged {judged_raw} influencers on raw points and {judged_days} on day segments, of {influencers}"
        );
    }
    let data: i64 = inspect::day_data_bytes(&pool)
        .await?
        .ok_or_else(|| anyhow::anyhow!("compaction merged no day segments for the day written"))?;
    pool.close().await;

    let measured = Measured {
        influencers,
        points,
        raw,
        hours,
        days,
        packs,
        data,
        spike_raw,
        spike_days,
        hours_secs,
        hours_cpu,
    };
    let mut report = Report::new(
        Scenario::Storage,
        quick,
        format!(
            "{points} points ({influencers} influencers × one closed UTC day at 1 minute), the simulator's walk, written by the sink's writer in polling order in {write_secs:.0} s; then compacted as the jobs do: hours into hour segments ({hours_secs:.1} s), the day into day segments ({days_secs:.1} s). Sizes are PostgreSQL's (heap + TOAST + indexes, after VACUUM)."
        ),
    );
    measured.figures(&mut report);
    Ok(report)
}

/// What a run measured: the sizes of each tier's form of the day, and the times.
struct Measured {
    influencers: usize,
    points: f64,
    raw: i64,
    hours: i64,
    days: i64,
    packs: i64,
    data: i64,
    spike_raw: f64,
    spike_days: f64,
    hours_secs: f64,
    hours_cpu: f64,
}

impl Measured {
    fn figures(&self, report: &mut Report) {
        let Self {
            influencers,
            points,
            raw,
            hours,
            days,
            packs,
            data,
            spike_raw,
            spike_days,
            hours_secs: _,
            hours_cpu: _,
        } = *self;
        let per = |bytes: i64| bytes as f64 / points;
        let entropy = walk_entropy_bytes();
        let day_bytes = per(days);
        report
            .goal(
                "bytes per point, closed days (day segments and their summary packs)",
                day_bytes,
                "bytes",
                Goal::AtMost(3.5),
            )
            .goal(
                "bytes per point, closed hours not yet merged (hour segments)",
                per(hours),
                "bytes",
                Goal::AtMost(5.0),
            )
            .info(
                "bytes per point, raw (hot tier, as written)",
                per(raw),
                "bytes",
            )
            .info("encoded data alone, day segments", per(data), "bytes")
            .info(
                "summary packs alone (in the day segments' figure; one day a pack here)",
                per(packs),
                "bytes",
            )
            .info("the walk's entropy", entropy, "bytes")
            .info("day segments ÷ entropy", day_bytes / entropy, "ratio")
            .info(
                "disk a day at 1,000,000 influencers (day segments)",
                day_bytes * 1.44e9 / 1e9,
                "GB",
            )
            .info(
                "disk a day at 1,000,000 influencers (raw)",
                per(raw) * 1.44e9 / 1e9,
                "GB",
            )
            .info(
                "spike scan of the day, raw points, at 1,000,000 influencers (from this run)",
                spike_raw * 1e6 / influencers as f64 / 60.0,
                "minutes",
            )
            .info(
                "spike scan of the day, day segments, at 1,000,000 influencers (from this run)",
                spike_days * 1e6 / influencers as f64 / 60.0,
                "minutes",
            )
            .info(
                "spike scan: raw ÷ day segments",
                spike_raw / spike_days,
                "ratio",
            );
        self.time_figures(report);
    }

    /// The hour compaction's rate and CPU, scaled to 1,000,000 influencers.
    fn time_figures(&self, report: &mut Report) {
        let (points, hours_secs) = (self.points, self.hours_secs);
        report
            .info("points", points, "points")
            .info("hour compaction rate", points / hours_secs, "points/s")
            .info(
                "hour compaction CPU of this process per 1,000,000 points",
                self.hours_cpu / points * 1e6,
                "s",
            )
            .info(
                "an hour at 1,000,000 influencers (60,000,000 points) at that rate",
                60e6 / (points / hours_secs) / 60.0,
                "minutes",
            );
    }
}

/// Writes one closed UTC day (starting at `day_ms`) of the simulator's walk for `influencers`
/// influencers through the sink's writer, minute by minute in polling order.
async fn write_day(pool: &sqlx::PgPool, influencers: usize, day_ms: i64) -> anyhow::Result<()> {
    let simulator = Simulator::new(&crate::testing::simulator_settings(influencers as u64, 17));
    let grid = crate::schedule::SlotGrid::new(std::time::Duration::from_secs(60));
    let mut pks: Vec<i64> = (0..influencers as i64).map(|i| 1_000_000 + i).collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    for minute in 0..1440 {
        pks.shuffle(&mut rng);
        let mut messages = Vec::new();
        for chunk in pks.chunks(500) {
            let points = chunk
                .iter()
                .map(|&pk| {
                    let slot_ms = grid.slot_at_or_after(pk, day_ms + minute * 60_000);
                    let (followers, following) = simulator.step(pk).expect("pk in the population");
                    Point {
                        pk,
                        slot_ms,
                        fetched_ms: slot_ms + 150,
                        follower_count: followers as i32,
                        following_count: following as i32,
                    }
                })
                .collect();
            messages.push(Outcomes {
                points,
                ..Outcomes::default()
            });
        }
        for group in messages.chunks(10) {
            let refs: Vec<&Outcomes> = group.iter().collect();
            writer::write_with_cutoff(pool, &refs, i64::MIN).await?;
        }
    }
    Ok(())
}

/// One scan of the spike detector over every influencer's day ending at `end_ms`, as the daily
/// classification runs it (read through the one read path, judged, verdicts stored): its
/// seconds and how many influencers it judged.
async fn spike_scan(pool: &sqlx::PgPool, end_ms: i64) -> anyhow::Result<(f64, u64)> {
    let created = sqlx::query!(
        "insert into classification_passes (started_at) values ($1) returning pass_id, started_at",
        chrono::DateTime::from_timestamp_millis(end_ms),
    )
    .fetch_one(pool)
    .await?;
    let pass = crate::classify::Pass {
        id: created.pass_id,
        started_at: created.started_at,
        mockstagram_done: true,
        spike_done: false,
        spike_cursor: 0,
    };
    let started = Instant::now();
    let scanned = crate::classify::spike::scan(
        pool,
        &pass,
        std::time::Duration::from_secs(60),
        &crate::classify::SpikeRule::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    Ok((started.elapsed().as_secs_f64(), scanned.judged))
}
