//! `influencer-analytics export`: every point of the chosen influencers over a range, straight
//! from the tiers, as a CSV or Parquet file for data teams, with a progress bar.
//!
//! The points are read as the range API reads them ([`series::read::window`]: raw minutes, late
//! points, hour blocks and day segments, a slot stored twice answered once with its first
//! stored value), a group of influencers at a time, two groups in flight while a thread writes
//! the file. Rows come by influencer, then time: `influencer_id, time, follower_count,
//! following_count`, `time` the second the point belongs to, as the API answers it. The file is
//! written beside its name (`<name>.partial`) and renamed when complete, so a file under the
//! asked name is always whole.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use futures_util::{StreamExt, TryStreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use crate::{
    config::DatabaseSettings,
    db,
    series::{self, SeriesPoint},
};

mod csv;
mod parquet;
mod plan;
#[cfg(test)]
mod tests;

pub use plan::{Window, group_ids};

/// The columns of an export, in both formats.
pub const COLUMNS: [&str; 4] = ["influencer_id", "time", "follower_count", "following_count"];

/// Group reads in flight while the file is written.
const READS_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// A header row, then a row a point; `time` in epoch seconds.
    Csv,
    /// Apache Parquet: `time` a UTC timestamp, columns delta-encoded and zstd-compressed.
    Parquet,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The first moment exported (inclusive): RFC 3339 (`2026-12-01T00:00:00Z`), epoch seconds,
    /// or a UTC date (`2026-12-01`, its first second).
    #[arg(long, value_parser = plan::parse_start)]
    start: i64,
    /// The last moment exported (inclusive), as --start; a UTC date means its last second, so
    /// `--start 2026-12-01 --end 2026-12-01` is that whole day. Default: now.
    #[arg(long, value_parser = plan::parse_end)]
    end: Option<i64>,
    /// A file of the influencer ids to export, one a line ('#' starts a comment), as `seed
    /// --file` reads it. Default: every registered influencer, tracked or not.
    #[arg(long)]
    ids: Option<PathBuf>,
    /// The file's format.
    #[arg(long, value_enum, default_value = "csv")]
    format: ExportFormat,
    /// The file to write (`-`: standard output).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    database: DatabaseSettings,
}

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Influencers asked for.
    pub influencers: u64,
    /// Of them, those with at least one point in the range.
    pub with_points: u64,
    pub points: u64,
}

/// Writes points, an influencer at a time, in id order.
pub trait PointWriter: Send {
    fn write(&mut self, influencer_id: i64, points: &[SeriesPoint]) -> anyhow::Result<()>;
    /// Writes what is buffered and the format's footer; returns the sink.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

/// A writer of `format` over `out`.
pub fn writer(
    format: ExportFormat,
    out: Box<dyn Write + Send>,
    window: Window,
) -> anyhow::Result<Box<dyn PointWriter>> {
    Ok(match format {
        ExportFormat::Csv => Box::new(csv::CsvPoints::new(out)?),
        ExportFormat::Parquet => Box::new(parquet::ParquetPoints::new(out, window)?),
    })
}

/// The command: resolves the window and the ids, writes the file, prints what it wrote.
pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let window = Window::new(args.start, args.end)?;
    let pool = db::connect(&args.database).await?;
    let ids = match &args.ids {
        Some(path) => ids_of_file(&pool, path).await?,
        None => registered(&pool).await?,
    };
    let started = Instant::now();
    let file = Destination::new(&args.out);
    let progress = ProgressBar::new(ids.len() as u64).with_style(
        ProgressStyle::with_template("exporting {wide_bar} {pos}/{len} influencers ({eta})")
            .expect("static template"),
    );
    let result = match file.open() {
        Ok(out) => {
            let out = writer(args.format, out, window)?;
            export(&pool, &ids, window, out, &|n| progress.inc(n)).await
        }
        Err(e) => Err(e),
    };
    progress.finish_and_clear();
    let exported = match result {
        Ok(exported) => exported,
        Err(e) => {
            file.abandon();
            return Err(e);
        }
    };
    let bytes = file.commit()?;
    let seconds = started.elapsed().as_secs_f64();
    let line = format!(
        "exported {} points of {} influencers ({} without points in the range) to {}: {} bytes ({:.2} a point) in {:.1} s ({:.0} points/s)",
        exported.points,
        exported.with_points,
        exported.influencers - exported.with_points,
        args.out.display(),
        bytes.map_or("?".to_string(), |b| b.to_string()),
        bytes.map_or(0.0, |b| b as f64 / exported.points.max(1) as f64),
        seconds,
        exported.points as f64 / seconds.max(1e-9),
    );
    tracing::info!(
        points = exported.points,
        influencers = exported.with_points,
        seconds,
        "export written"
    );
    // The summary goes where the file does not.
    match file.is_stdout() {
        true => eprintln!("{line}"),
        false => println!("{line}"),
    }
    Ok(())
}

/// Every point of `ids` (sorted, distinct) over `window`, through `out`, by influencer then
/// time; `progress` is told of each group of influencers done.
pub async fn export(
    pool: &PgPool,
    ids: &[i64],
    window: Window,
    mut out: Box<dyn PointWriter>,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Exported> {
    let groups = group_ids(ids, window.points_per_influencer());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(i64, Vec<SeriesPoint>)>>(4);
    let writing = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, u64)> {
        let (mut with_points, mut points) = (0, 0);
        while let Some(group) = rx.blocking_recv() {
            for (id, series) in &group {
                out.write(*id, series)?;
                with_points += 1;
                points += series.len() as u64;
            }
        }
        out.finish()?;
        Ok((with_points, points))
    });
    let reading = stream::iter(groups.iter().map(|group| read_group(pool, group, window)))
        .buffered(READS_IN_FLIGHT)
        .try_for_each(|(asked, series)| {
            let tx = tx.clone();
            async move {
                // A closed channel means the writer stopped: its error is the one to report.
                if tx.send(series).await.is_ok() {
                    progress(asked);
                }
                Ok(())
            }
        })
        .await;
    drop(tx);
    let written = writing.await.context("the export's writer panicked")?;
    reading?;
    let (with_points, points) = written?;
    Ok(Exported {
        influencers: ids.len() as u64,
        with_points,
        points,
    })
}

/// The points of a group's influencers (one read of the id range, the others left out), and
/// how many were asked for.
async fn read_group(
    pool: &PgPool,
    group: &[i64],
    window: Window,
) -> anyhow::Result<(u64, Vec<(i64, Vec<SeriesPoint>)>)> {
    let (first, last) = (group[0], group[group.len() - 1]);
    let mut series = series::read::window(pool, (first, last), window.start_ms, window.end_ms)
        .await
        .with_context(|| format!("reading the points of influencers {first} to {last}"))?;
    series.retain(|(id, _)| group.binary_search(id).is_ok());
    Ok((group.len() as u64, series))
}

/// Every registered influencer's id, in order.
async fn registered(pool: &PgPool) -> anyhow::Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar!("select influencer_id from influencers order by influencer_id")
            .fetch_all(pool)
            .await?,
    )
}

/// The ids of an ids file, sorted; lines that are not ids stop the export with their count,
/// ids that are not registered are said and exported (they have no points).
async fn ids_of_file(pool: &PgPool, path: &Path) -> anyhow::Result<Vec<i64>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the ids file {} (--ids)", path.display()))?;
    let parsed = crate::seed::parse_ids(&text);
    if !parsed.rejected.is_empty() {
        let reasons: Vec<String> = parsed
            .rejected
            .iter()
            .map(|(reason, lines)| format!("{lines} {reason}"))
            .collect();
        anyhow::bail!(
            "the ids file {} (--ids) has lines that are not ids: {}",
            path.display(),
            reasons.join(", ")
        );
    }
    let mut ids = parsed.ids;
    ids.sort_unstable();
    let known = sqlx::query_scalar!(
        r#"select count(*) as "known!" from influencers where influencer_id = any($1)"#,
        &ids
    )
    .fetch_one(pool)
    .await?;
    if (known as usize) < ids.len() {
        eprintln!(
            "{} of the {} ids in {} are not registered (they have no points)",
            ids.len() - known as usize,
            ids.len(),
            path.display()
        );
    }
    Ok(ids)
}

/// Where the file goes: written as `<name>.partial`, renamed to its name when complete.
struct Destination {
    path: PathBuf,
    partial: PathBuf,
}

impl Destination {
    fn new(path: &Path) -> Self {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        Self {
            path: path.to_path_buf(),
            partial: partial.into(),
        }
    }

    fn is_stdout(&self) -> bool {
        self.path.as_os_str() == "-"
    }

    fn open(&self) -> anyhow::Result<Box<dyn Write + Send>> {
        if self.is_stdout() {
            return Ok(Box::new(std::io::BufWriter::new(std::io::stdout())));
        }
        let file = std::fs::File::create(&self.partial)
            .with_context(|| format!("cannot create {} (--out)", self.partial.display()))?;
        Ok(Box::new(std::io::BufWriter::with_capacity(1 << 20, file)))
    }

    /// Renames the complete file to its name; its size.
    fn commit(&self) -> anyhow::Result<Option<u64>> {
        if self.is_stdout() {
            return Ok(None);
        }
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("cannot rename the export to {}", self.path.display()))?;
        Ok(Some(std::fs::metadata(&self.path)?.len()))
    }

    fn abandon(&self) {
        if !self.is_stdout() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
