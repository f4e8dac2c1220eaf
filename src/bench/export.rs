//! `bench export`: a closed day of 100,000 influencers (`--quick`: 10,000), the simulator's
//! walk stored as compaction stores it (a day segment each), exported by the export command's
//! own path to Parquet and to CSV. Reports points a second and bytes a point in the file (goal
//! ≤ 4 for Parquet), the same read without a file as the ceiling, and what a day of 1,000,000
//! would take.

use std::time::Instant;

use rayon::prelude::*;
use sqlx::PgPool;

use super::{Goal, Report, Scenario, bench_database};
use crate::{
    config::DatabaseSettings,
    export::{self, ExportFormat, Exported, PointWriter, Window},
    schedule::SlotGrid,
    series::{
        DAY_MS, SeriesPoint, compact,
        inspect::{self, TierTable},
        store::{self, Segment},
    },
    simulator::Simulator,
};

/// The day exported: a closed UTC day, fixed so that the generated data is kept between runs.
const DAY_START_MS: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z
const FIRST_ID: i64 = 1_000_000;
/// Influencers a transaction of generated segments holds.
const WRITE_BATCH: usize = 2_000;

/// A writer that keeps nothing: the read alone, the ceiling of an export.
struct Discard;

impl PointWriter for Discard {
    fn write(&mut self, _: i64, _: &[SeriesPoint]) -> anyhow::Result<()> {
        Ok(())
    }
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}

/// One export's measures.
struct Run {
    exported: Exported,
    seconds: f64,
    cpu_seconds: f64,
    bytes: u64,
}

impl Run {
    fn points_per_second(&self) -> f64 {
        self.exported.points as f64 / self.seconds
    }
}

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let influencers: i64 = if quick { 10_000 } else { 100_000 };
    let (pool, generation) = ensure_day(database, influencers).await?;
    let ids: Vec<i64> = (FIRST_ID..FIRST_ID + influencers).collect();
    let window = Window::new(DAY_START_MS, Some(DAY_START_MS + DAY_MS - 1))?;
    let dir = std::path::PathBuf::from("target/bench");
    std::fs::create_dir_all(&dir)?;

    let read = measure(&pool, &ids, window, None).await?;
    let parquet_path = dir.join("export.parquet");
    let parquet = measure(
        &pool,
        &ids,
        window,
        Some((ExportFormat::Parquet, &parquet_path)),
    )
    .await?;
    let csv_path = dir.join("export.csv");
    let csv = measure(&pool, &ids, window, Some((ExportFormat::Csv, &csv_path))).await?;
    let _ = std::fs::remove_file(&csv_path);
    pool.close().await;
    let points = (influencers * 1_440) as u64;
    for (name, run) in [("read", &read), ("parquet", &parquet), ("csv", &csv)] {
        anyhow::ensure!(
            run.exported.points == points,
            "the {name} export wrote {} points of {points}",
            run.exported.points
        );
    }

    let mut report = Report::new(
        Scenario::Export,
        quick,
        format!(
            "{points} points ({influencers} influencers × one closed UTC day at 1 minute, the simulator's walk) stored as compaction stores a closed day (a day segment each; {generation}), exported through `export`'s own path: the read alone (no file), then Parquet ({}), then CSV; one run of each.",
            parquet_path.display()
        ),
    );
    figures(&mut report, points, [&read, &parquet, &csv]);
    Ok(report)
}

/// The figures of the three runs: the read alone, Parquet, CSV.
fn figures(report: &mut Report, points: u64, [read, parquet, csv]: [&Run; 3]) {
    let per_point = |run: &Run| run.bytes as f64 / points as f64;
    report
        .goal(
            "Parquet: bytes a point in the file",
            per_point(parquet),
            "bytes",
            Goal::AtMost(4.0),
        )
        .info(
            "Parquet: points exported a second",
            parquet.points_per_second(),
            "points/s",
        )
        .info(
            "Parquet export ÷ the read alone (points/s)",
            parquet.points_per_second() / read.points_per_second(),
            "ratio",
        )
        .info(
            "Parquet: CPU of the export process a million points",
            parquet.cpu_seconds / points as f64 * 1e6,
            "s",
        )
        .info(
            "CSV: points exported a second",
            csv.points_per_second(),
            "points/s",
        )
        .info("CSV: bytes a point in the file", per_point(csv), "bytes")
        .info(
            "the read alone: points a second",
            read.points_per_second(),
            "points/s",
        );
    let day_of_a_million = 1_000_000.0 * 1_440.0;
    report
        .info(
            "a day of 1,000,000 influencers to Parquet at this rate (extrapolated)",
            day_of_a_million / parquet.points_per_second() / 60.0,
            "minutes",
        )
        .info(
            "a day of 1,000,000 influencers in Parquet (extrapolated)",
            day_of_a_million * per_point(parquet) / 1e9,
            "GB",
        );
}

/// An export of `ids` over `window` to `file` in its format (none: the read alone).
async fn measure(
    pool: &PgPool,
    ids: &[i64],
    window: Window,
    file: Option<(ExportFormat, &std::path::Path)>,
) -> anyhow::Result<Run> {
    let out: Box<dyn PointWriter> = match file {
        Some((format, path)) => {
            let file = std::fs::File::create(path)?;
            let out = Box::new(std::io::BufWriter::with_capacity(1 << 20, file));
            export::writer(format, out, window)?
        }
        None => Box::new(Discard),
    };
    let cpu = super::procs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let started = Instant::now();
    let exported = export::export(pool, ids, window, out, &|_| {}).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = super::procs::cpu_seconds(std::process::id()).unwrap_or(0.0) - cpu;
    let bytes = match file {
        Some((_, path)) => std::fs::metadata(path)?.len(),
        None => 0,
    };
    Ok(Run {
        exported,
        seconds,
        cpu_seconds,
        bytes,
    })
}

/// The benchmark's database with `influencers` influencers registered and the day's segments
/// (the simulator's walk at real slots), kept from an earlier run of the same size or written
/// into a fresh database; and how they came to be there.
async fn ensure_day(
    database: &DatabaseSettings,
    influencers: i64,
) -> anyhow::Result<(PgPool, String)> {
    let (pool, _) = bench_database(database, "export", false).await?;
    if compact::counts(&pool).await?.day_segments == influencers {
        return Ok((pool, "kept from an earlier run".to_string()));
    }
    pool.close().await;
    let (pool, _) = bench_database(database, "export", true).await?;
    let started = Instant::now();
    super::register_with_latest(&pool, influencers).await?;
    let simulator = Simulator::new(&crate::testing::simulator_settings(influencers as u64, 17));
    let grid = SlotGrid::new(std::time::Duration::from_secs(60));
    let ids: Vec<i64> = (FIRST_ID..FIRST_ID + influencers).collect();
    for batch in ids.chunks(WRITE_BATCH) {
        let segments = batch
            .par_iter()
            .map(|&id| {
                let points: Vec<SeriesPoint> = (0..1_440)
                    .map(|minute| {
                        let slot_ms = grid.slot_at_or_after(id, DAY_START_MS + minute * 60_000);
                        let (followers, following) = simulator.step(id).expect("in the population");
                        SeriesPoint {
                            slot_ms,
                            follower_count: followers as i32,
                            following_count: following as i32,
                        }
                    })
                    .collect();
                Segment::new(id, (DAY_START_MS, DAY_START_MS + DAY_MS), &points, 150, 150)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = pool.begin().await?;
        store::upsert(&mut tx, &segments).await?;
        tx.commit().await?;
    }
    inspect::analyze(&pool, TierTable::DaySegments, true).await?;
    let how = format!("generated in {:.0} s", started.elapsed().as_secs_f64());
    Ok((pool, how))
}
