//! `bench events`: what event detection costs at 1,000,000 influencers a minute, how soon a
//! spike reaches a webhook receiver, and how well detection finds what the simulator stages.
//!
//! - **Cost** (1,000,000 influencers, 100,000 with `--quick`): minutes of the simulator's walk
//!   written through the sink's writer, alternating with the same kind of minute written with
//!   the upsert of each influencer's newest value as it was before the spike screen (migration
//!   0021), so the screen's cost is the difference of two measurements in the same minutes
//!   (database and bench process CPU together). To it are added the `spikes` role's decisions
//!   of the screened minutes' candidates and the minute-mark rules (milestones, staleness)
//!   over everyone's values. Goal: at most 0.1 of a core at 1,000,000 a minute.
//! - **Staged** ([`staged`]): 20,000 influencers (5,000 with `--quick`), 2% of them staging
//!   jumps of 150,000 followers every hour (every 40 minutes with `--quick`), six hours of
//!   minutes (2.5 with `--quick`) written at one minute a second, with the `spikes` role and
//!   the `webhooks` role delivering to a receiver here. Reports the time from the write that
//!   stored a spike's point to the receiver's receipt (p50, p99; goal p99 ≤ 5 s), the staged
//!   jumps found and missed, the false alarms per 1,000,000 influencer-days, and the
//!   milestone crossings found against the walk's own (counted independently).

mod staged;

use rayon::prelude::*;

use super::{Goal, Report, Scenario, bench_database, procs};
use crate::{
    config::{DatabaseSettings, SimulatorSettings},
    events::detect::{Detector, Rules},
    jobs::spikes,
    mockstagram::FIRST_PK,
    model::Point,
    queue::points::Outcomes,
    series::{self, Snapshot},
    simulator::Simulator,
    sink::writer,
};

/// Rows written at once, as the sink's batches.
const BATCH: usize = 10_000;

/// Minutes not measured at the start (first sight, the screen's first changes).
const SETTLE: usize = 2;

/// `EVENT_SPIKE_Z`'s default.
const Z: f64 = 10.0;

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let (population, minutes) = if quick {
        (100_000, 12)
    } else {
        (1_000_000, 36)
    };
    let cost = cost(database, population, minutes).await?;
    let staged = staged::run(database, quick).await?;
    let mut out = Report::new(
        Scenario::Events,
        quick,
        format!(
            "cost: {population} influencers, {minutes} minutes of the simulator's walk written in batches of {BATCH}, screened and plain minutes alternating; staged: {}",
            staged.setup
        ),
    );
    cost.report(&mut out, population);
    staged.report(&mut out);
    Ok(out)
}

/// CPU seconds (database and this process) of the measured minutes.
#[derive(Debug, Default)]
struct Cost {
    screened: Vec<f64>,
    plain: Vec<f64>,
    decided: Vec<f64>,
    marks: Vec<f64>,
    candidates: usize,
    spikes: usize,
    mark_events: usize,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl Cost {
    fn report(&self, out: &mut Report, population: usize) {
        let scale = 1_000_000.0 / population as f64;
        let screen = (mean(&self.screened) - mean(&self.plain)).max(0.0);
        let per_minute = screen + mean(&self.decided) + mean(&self.marks);
        out.info(
            "a minute written, screened (CPU)",
            mean(&self.screened),
            "s",
        )
        .info("a minute written, plain (CPU)", mean(&self.plain), "s")
        .info(
            "a minute written, screened ÷ plain (CPU)",
            mean(&self.screened) / mean(&self.plain),
            "ratio",
        )
        .info("the screen's CPU a minute", screen, "s")
        .info(
            "deciding the candidates, CPU a minute",
            mean(&self.decided),
            "s",
        )
        .info(
            "the minute-mark rules and logging their events, CPU a minute",
            mean(&self.marks),
            "s",
        )
        .info(
            "their events a minute (milestones of the walk)",
            self.mark_events as f64 / self.marks.len().max(1) as f64,
            "events",
        )
        .info(
            "spike candidates a screened minute",
            self.candidates as f64 / self.decided.len().max(1) as f64,
            "candidates",
        )
        .info(
            "of which spikes (a plain walk: none)",
            self.spikes as f64,
            "spikes",
        )
        .goal(
            "detection at 1,000,000 a minute",
            per_minute * scale / 60.0,
            "cores",
            Goal::AtMost(0.1),
        );
    }
}

/// Process and database CPU seconds now.
fn cpu_now(database_pids: &[u32]) -> f64 {
    let mine = procs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    mine + database_pids
        .iter()
        .filter_map(|&pid| procs::cpu_seconds(pid))
        .sum::<f64>()
}

async fn cost(
    database: &DatabaseSettings,
    population: usize,
    minutes: usize,
) -> anyhow::Result<Cost> {
    let (pool, _bench) = bench_database(database, "events", true).await?;
    register(&pool, population as i64).await?;
    let sim = Simulator::new(&simulated(
        population,
        0.0,
        std::time::Duration::from_secs(3600),
    ));
    let start_ms = (chrono::Utc::now().timestamp_millis() / 60_000 - minutes as i64) * 60_000;
    let mut detector = Detector::new(Rules { stale_slots: 5 });
    let mut cost = Cost::default();
    for minute in 0..minutes {
        let slot_ms = start_ms + minute as i64 * 60_000;
        let points = minute_of(&sim, population, slot_ms);
        let screened = minute % 2 == 1;
        let pids = procs::pids_named("postgres");
        let before = cpu_now(&pids);
        write(&pool, &points, screened).await?;
        let written = cpu_now(&pids) - before;
        let measured = minute >= SETTLE;
        if screened {
            let before = cpu_now(&pids);
            let (candidates, found) = decide_all(&pool).await?;
            if measured {
                cost.decided.push(cpu_now(&pids) - before);
                (cost.candidates, cost.spikes) =
                    (cost.candidates + candidates, cost.spikes + found);
            }
        }
        let mark = mark_of(&points);
        let before = cpu_now(&pids);
        let observed = detector.observe(&mark, slot_ms + 30_000, false);
        crate::events::record(&pool, &observed.events).await?;
        let took = cpu_now(&pids) - before;
        if measured {
            cost.marks.push(took);
            cost.mark_events += observed.events.len();
            match screened {
                true => cost.screened.push(written),
                false => cost.plain.push(written),
            }
        }
        tracing::info!(
            minute,
            screened,
            written,
            events = observed.events.len(),
            "bench events: a minute written"
        );
    }
    Ok(cost)
}

/// The simulator's settings for `population`, with a share staging spikes every `every`.
pub(super) fn simulated(
    population: usize,
    spike_share: f64,
    every: std::time::Duration,
) -> SimulatorSettings {
    SimulatorSettings {
        listen: None,
        population: population as u64,
        seed: Some(40),
        delay_scale: 0.0,
        churn_share: 0.0,
        spike_share,
        spike_every: every,
        capacity: None,
        tls_cert_file: None,
        tls_key_file: None,
        faults: crate::config::FaultSettings::default(),
    }
}

/// Registers `n` influencers from the simulator's first pk, without a latest value.
pub(super) async fn register(pool: &sqlx::PgPool, n: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into influencers (influencer_id, username)
         select id, 'influencer-' || id from generate_series($1::bigint, $1 + $2::bigint - 1) id",
        FIRST_PK,
        n
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// One poll of everyone at `slot_ms`.
pub(super) fn minute_of(sim: &Simulator, population: usize, slot_ms: i64) -> Vec<Point> {
    (0..population as i64)
        .into_par_iter()
        .map(|i| {
            let pk = FIRST_PK + i;
            let (followers, following) = sim.step_at(pk, slot_ms).expect("a simulated pk");
            Point {
                pk,
                slot_ms,
                fetched_ms: slot_ms + 150,
                follower_count: followers as i32,
                following_count: following as i32,
            }
        })
        .collect()
}

pub(super) fn mark_of(points: &[Point]) -> Snapshot {
    let mut mark = Snapshot::with_capacity(points.len());
    for p in points {
        mark.push(p.pk, p.follower_count, p.following_count, p.slot_ms);
    }
    mark
}

/// Writes `points` in batches: through the sink's writer, or (not `screened`) the hot tier and
/// the newest values as before the screen.
async fn write(pool: &sqlx::PgPool, points: &[Point], screened: bool) -> anyhow::Result<()> {
    for batch in points.chunks(BATCH) {
        if screened {
            let outcomes = Outcomes {
                points: batch.to_vec(),
                ..Outcomes::default()
            };
            writer::write_with_cutoff(pool, &[&outcomes], i64::MIN).await?;
            continue;
        }
        let mut tx = pool.begin().await?;
        series::hot::store(&mut tx, batch.iter(), i64::MIN).await?;
        let all = series::hot::Columns::of(batch.iter());
        sqlx::query!(
            "insert into influencer_latest
                 (influencer_id, slot, fetched_at, follower_count, following_count)
             select distinct on (u.id) u.id, u.slot, u.fetched_at, u.followers, u.following
             from unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::int[], $5::int[])
                  as u(id, slot, fetched_at, followers, following)
             join influencers i on i.influencer_id = u.id
             order by u.id, u.slot desc
             on conflict (influencer_id) do update set
                 slot = excluded.slot,
                 fetched_at = excluded.fetched_at,
                 follower_count = excluded.follower_count,
                 following_count = excluded.following_count
             where influencer_latest.slot < excluded.slot",
            &all.ids,
            &all.slots,
            &all.fetched,
            &all.followers,
            &all.following
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Decides every noted candidate; how many, and how many were spikes.
async fn decide_all(pool: &sqlx::PgPool) -> anyhow::Result<(usize, usize)> {
    let (mut candidates, mut found) = (0, 0);
    loop {
        let decided = spikes::decide_pending(pool, Z).await?;
        if decided.candidates + decided.skipped == 0 {
            return Ok((candidates, found));
        }
        candidates += decided.candidates;
        found += decided.spikes;
    }
}
