//! `bench sink`: rows/s through the sink's write path (decode the point messages, batch them
//! as the sink does, write with the idempotent UNNEST inserts and the latest-value upsert),
//! divided by psql's `\copy` of the same rows into the same hypertable: the ceiling of
//! getting rows into TimescaleDB on this box. Goal ≥ 0.8.

use std::{io::Write as _, process::Command, time::Instant};

use anyhow::{Context, bail};
use rand::{SeedableRng, rngs::SmallRng, seq::SliceRandom};
use sqlx::PgPool;

use super::{Goal, Report, Scenario, bench_database};
use crate::{
    config::DatabaseSettings, model::Point, queue::points::Outcomes, series, sink::writer,
};

/// Rows per point message, as the poller sends them (one schedule batch).
const MESSAGE_POINTS: usize = 500;
/// The sink's default batch (SINK_BATCH_ROWS).
const BATCH_ROWS: usize = 5000;

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let (influencers, minutes) = if quick { (20_000, 10) } else { (100_000, 20) };
    let rows = influencers * minutes;
    let (pool, bench) = bench_database(database, "sink", true).await?;
    register(&pool, influencers).await?;
    let messages = point_messages(influencers, minutes);

    let started = Instant::now();
    let mut stored = 0u64;
    let mut held: Vec<Outcomes> = Vec::new();
    let mut held_rows = 0;
    for bytes in &messages {
        let outcomes = Outcomes::decode(bytes)?;
        held_rows += outcomes.len();
        held.push(outcomes);
        if held_rows >= BATCH_ROWS {
            stored += write(&pool, &held).await?;
            held.clear();
            held_rows = 0;
        }
    }
    stored += write(&pool, &held).await?;
    let sink_secs = started.elapsed().as_secs_f64();
    if stored != rows as u64 {
        bail!("the sink path stored {stored} of {rows} rows");
    }

    let csv = csv_of(&messages)?;
    series::fixtures::truncate_raw(&pool).await?;
    let started = Instant::now();
    let output = Command::new("psql")
        .arg(bench.database_url.expose())
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(series::fixtures::psql_copy_of_csv(csv.path()))
        .output()
        .context(
            "cannot run psql (install the PostgreSQL client: apt-get install postgresql-client)",
        )?;
    let copy_secs = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "psql \\copy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let copied = series::fixtures::raw_points(&pool).await?;
    if copied != rows as i64 {
        bail!("psql \\copy stored {copied} of {rows} rows");
    }
    pool.close().await;

    let sink_rate = rows as f64 / sink_secs;
    let copy_rate = rows as f64 / copy_secs;
    let mut report = Report::new(
        Scenario::Sink,
        quick,
        format!(
            "{rows} rows ({influencers} influencers × {minutes} minutes) in {} messages of {MESSAGE_POINTS} points, shuffled within each minute as polling delivers them; the sink path writes batches of {BATCH_ROWS} rows one after another (as `sink` does); then the table is truncated and psql `\\copy` loads the same rows from CSV.",
            messages.len()
        ),
    );
    report
        .ratio(
            "sink rate ÷ psql \\copy rate",
            sink_rate / copy_rate,
            copy_rate,
            Goal::AtLeast(0.8),
        )
        .info("sink path", sink_rate, "rows/s")
        .info("psql \\copy", copy_rate, "rows/s")
        .info("rows", rows as f64, "rows");
    Ok(report)
}

async fn write(pool: &PgPool, held: &[Outcomes]) -> anyhow::Result<u64> {
    if held.is_empty() {
        return Ok(0);
    }
    let refs: Vec<&Outcomes> = held.iter().collect();
    Ok(writer::write_with_cutoff(pool, &refs, i64::MIN)
        .await?
        .points_stored)
}

/// Registers influencers 1000000.. (the latest-value upsert joins the registry).
pub async fn register(pool: &PgPool, influencers: usize) -> anyhow::Result<()> {
    sqlx::query!(
        "insert into influencers (influencer_id, username)
         select id, 'influencer-' || id from generate_series(1000000::bigint, 1000000 + $1 - 1) id
         on conflict do nothing",
        influencers as i64
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Encoded point messages: every influencer once a minute, shuffled within the minute.
pub(crate) fn point_messages(influencers: usize, minutes: usize) -> Vec<Vec<u8>> {
    let mut rng = SmallRng::seed_from_u64(1);
    let start_ms = (chrono::Utc::now().timestamp() / 3600 - 2) * 3_600_000;
    let mut pks: Vec<i64> = (0..influencers as i64).map(|i| 1_000_000 + i).collect();
    // Each influencer's slot is at its own offset in the minute, as the schedule places it.
    let grid = crate::schedule::SlotGrid::new(std::time::Duration::from_secs(60));
    let mut messages = Vec::new();
    for minute in 0..minutes as i64 {
        pks.shuffle(&mut rng);
        for chunk in pks.chunks(MESSAGE_POINTS) {
            let points = chunk
                .iter()
                .map(|&pk| {
                    let slot_ms = grid.slot_at_or_after(pk, start_ms + minute * 60_000);
                    Point {
                        pk,
                        slot_ms,
                        fetched_ms: slot_ms + 150,
                        follower_count: 100_000 + (pk % 9973) as i32 * 7 + minute as i32,
                        following_count: 1000 + (pk % 997) as i32,
                    }
                })
                .collect();
            messages.push(
                Outcomes {
                    points,
                    ..Outcomes::default()
                }
                .encode(),
            );
        }
    }
    messages
}

/// The messages' rows as a CSV file for psql.
fn csv_of(messages: &[Vec<u8>]) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix("bench-sink-")
        .suffix(".csv")
        .tempfile()?;
    let mut out = std::io::BufWriter::new(file.as_file_mut());
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("valid time")
            .format("%Y-%m-%d %H:%M:%S%.3f+00")
    };
    for bytes in messages {
        for p in Outcomes::decode(bytes)?.points {
            writeln!(
                out,
                "{},{},{},{},{}",
                p.pk,
                time(p.slot_ms),
                time(p.fetched_ms),
                p.follower_count,
                p.following_count
            )?;
        }
    }
    out.flush()?;
    drop(out);
    Ok(file)
}
