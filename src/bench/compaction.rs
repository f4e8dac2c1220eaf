//! `bench compaction`: one closed hour of every influencer's points compacted into hour
//! segments, as the sink's jobs do it once the hour has closed.
//!
//! The hour (it ended an hour ago, so it is closed and settled) is written minute by minute,
//! as the sink writes it: each minute's rows of every influencer together, so that one
//! influencer's 60 points lie on 60 heap pages, with the slots spread over the minute and a
//! lateness of up to a second. It is then vacuumed and checkpointed (as autovacuum and the
//! checkpointer would have done in the hour since), and compacted at `COMPACTION_PACE`.
//! Measured: the wall time, and the CPU of this process and of PostgreSQL. Goals (issue 17):
//! 1,000,000 influencers (60,000,000 points) in ≤ 5 minutes using at most one core.
//! `--quick`: 20,000 influencers, its time scaled to 1,000,000.

use std::time::Instant;

use sqlx::PgPool;

use super::{
    Goal, Report, Scenario, bench_database, number,
    procs::{Watch, pids_named},
};
use crate::{
    config::{DatabaseSettings, StorageSettings},
    jobs::compaction::{self, Budget},
    mockstagram::FIRST_PK,
    series::{
        HOUR_MS, compact, fixtures,
        inspect::{self, TierTable},
    },
};

/// The influencers the goal is stated for.
const TARGET: f64 = 1_000_000.0;

pub async fn run(
    database: &DatabaseSettings,
    storage: &StorageSettings,
    quick: bool,
) -> anyhow::Result<Report> {
    let influencers: i64 = if quick { 20_000 } else { 1_000_000 };
    let (pool, _) = bench_database(database, "compaction", true).await?;
    let (hour_ms, write_secs) = write_with_progress(&pool, influencers).await?;

    let budget = Budget::of(storage);
    let this = vec![std::process::id()];
    let database_pids = pids_named("postgres");
    let mut mine = Watch::start(&this);
    let mut theirs = Watch::start(&database_pids);
    let started = Instant::now();
    let pass = compaction::run_stages(&pool, budget, false, &mut |line| {
        eprintln!("bench compaction: {line}")
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("another process held the compaction lock"))?;
    let seconds = started.elapsed().as_secs_f64();
    mine.sample(&this);
    theirs.sample(&pids_named("postgres"));
    let left = compact::raw_chunks(&pool, false).await?.len();
    pool.close().await;
    let points = influencers * 60;
    anyhow::ensure!(
        pass.hour_points == points as u64 && left == 0,
        "compaction left the hour unfinished: {} of {points} points compacted, {left} raw chunks left",
        pass.hour_points
    );

    let (cpu_mine, cpu_database) = (mine.cpu_seconds(), theirs.cpu_seconds());
    let scale = TARGET / influencers as f64;
    let hour = chrono::DateTime::from_timestamp_millis(hour_ms).unwrap_or_default();
    let mut report = Report::new(
        Scenario::Compaction,
        quick,
        describe(influencers, hour, write_secs, storage),
    );
    let mut minutes_name = format!("minutes for an hour of {} influencers", number(TARGET));
    if quick {
        minutes_name += &format!(" (scaled from {})", number(influencers as f64));
    }
    report
        .goal(
            &minutes_name,
            seconds * scale / 60.0,
            "min",
            Goal::AtMost(5.0),
        )
        .goal(
            "cores used while compacting (compactor + database)",
            (cpu_mine + cpu_database) / seconds,
            "cores",
            Goal::AtMost(1.0),
        )
        .info("compactor CPU", cpu_mine, "s")
        .info("database CPU", cpu_database, "s")
        .info(
            "CPU per million points (compactor + database)",
            (cpu_mine + cpu_database) * 1e6 / points as f64,
            "s",
        )
        .info(
            "share of the time resting (the pace's rests ÷ the time)",
            pass.rested.as_secs_f64() / seconds,
            "ratio",
        )
        .info("points compacted", pass.hour_points as f64, "points")
        .info("points per second", points as f64 / seconds, "points/s")
        .info(
            "hour segment bytes a point (the encoded data only)",
            pass.bytes as f64 / points as f64,
            "bytes",
        );
    Ok(report)
}

/// What a run measured, for its report.
fn describe(
    influencers: i64,
    hour: chrono::DateTime<chrono::Utc>,
    write_secs: f64,
    storage: &StorageSettings,
) -> String {
    let points = influencers * 60;
    format!(
        "{influencers} influencers × the hour from {hour} ({points} points, written minute by minute in {write_secs:.0} s, then vacuumed and checkpointed), \
             compacted into hour segments at COMPACTION_PACE={} (the share of the time compaction works), \
             reading the hour {} points at a time (COMPACTION_PASS_POINTS). \
             CPU of this process (the compactor) and of every PostgreSQL process; TimescaleDB shares the box's 2 cores.",
        storage.compaction_pace,
        number(storage.compaction_pass_points as f64)
    )
}

/// [`write_closed_hour`], telling every ten minutes written; the hour's start and the seconds
/// it took.
async fn write_with_progress(pool: &PgPool, influencers: i64) -> anyhow::Result<(i64, f64)> {
    let started = Instant::now();
    let hour_ms = write_closed_hour(pool, influencers, |minute| {
        if minute % 10 == 9 {
            eprintln!(
                "bench compaction: {} of 60 minutes written ({:.0} s)",
                minute + 1,
                started.elapsed().as_secs_f64()
            );
        }
    })
    .await?;
    let write_secs = started.elapsed().as_secs_f64();

    Ok((hour_ms, write_secs))
}

/// Writes one closed hour of points for the influencers `FIRST_PK..FIRST_PK + influencers`:
/// the hour that ended an hour ago (closed and settled), minute by minute as the sink writes
/// it. Each value is hashed noise of about the walk's entropy; each slot lies on the
/// influencer's own second of the minute; each point is fetched up to a second late. Rows go
/// in as the sink writes them: by slot, and within a slot in no order of influencer (a page
/// holds about 130 influencers scattered over the whole range), which is what made reading a
/// closed chunk influencer by influencer expensive; written in id order, neighbouring ids
/// shared pages and that read looked four times cheaper than it was (PostgreSQL 34 s of CPU
/// for the hour against 140).
/// `written(minute)` hears of each minute done. Returns the hour's start, in ms.
pub(crate) async fn write_closed_hour(
    pool: &PgPool,
    influencers: i64,
    mut written: impl FnMut(i64),
) -> anyhow::Result<i64> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let hour_ms = (now_ms.div_euclid(HOUR_MS) - 2) * HOUR_MS;
    for minute in 0..60 {
        let minute_s = hour_ms / 1000 + minute * 60;
        fixtures::insert_minute(pool, (FIRST_PK, FIRST_PK + influencers - 1), minute_s).await?;
        written(minute);
    }
    inspect::analyze(pool, TierTable::Raw, true).await?;
    sqlx::query!("checkpoint").execute(pool).await?;
    Ok(hour_ms)
}
