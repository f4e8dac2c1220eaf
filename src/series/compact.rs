//! What compaction does to the tiers, step by step: the raw chunks and their state, a closed
//! chunk read back a share at a time and merged into hour segments, its late points, its drop;
//! late points of hours without a chunk; days whose hour segments merge into day segments. The
//! job (`jobs::compaction`) decides when, under which lock and at what pace; every statement on
//! a tier table is here.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::store::{self, MergeReport, RawPoint, RawRow};
use super::{SETTLE_MS, block_of, hot::copy};
use crate::model::Point;

/// What a row of `influencer_metrics` takes in its heap: 32 bytes of columns, a 24-byte tuple
/// header and a 4-byte line pointer (migrations/0001_baseline.sql).
pub(crate) const HEAP_BYTES_PER_ROW: i64 = 60;

/// How long the final `DROP TABLE` of a chunk may wait for readers to let go of it.
const DROP_LOCK_TIMEOUT: &str = "2s";

/// SQLSTATE of a lock timeout.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// A chunk of the hot tier (`influencer_metrics`): an hour of raw points.
#[derive(Debug, Clone)]
pub struct RawChunk {
    pub chunk_schema: String,
    pub chunk_name: String,
    pub range_start: DateTime<Utc>,
    pub range_end: DateTime<Utc>,
}

impl RawChunk {
    /// The chunk's table, quoted.
    fn table(&self) -> String {
        format!("{}.{}", quote(&self.chunk_schema), quote(&self.chunk_name))
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The raw chunks in time order: all of them, or only those closed and settled
/// ([`SETTLE_MS`]), due for compaction.
pub async fn raw_chunks(pool: &PgPool, due_only: bool) -> sqlx::Result<Vec<RawChunk>> {
    sqlx::query_as!(
        RawChunk,
        r#"select chunk_schema as "chunk_schema!", chunk_name as "chunk_name!",
                range_start as "range_start!", range_end as "range_end!"
         from timescaledb_information.chunks
         where hypertable_name = 'influencer_metrics'
           and (not $1 or range_end <= now() - make_interval(secs => $2))
         order by range_start"#,
        due_only,
        (SETTLE_MS / 1000) as f64,
    )
    .fetch_all(pool)
    .await
}

/// Seconds since the end of the oldest closed hour still raw (0 when none is due). Reads only
/// the chunk catalogue: cheap enough for every pass.
pub async fn lag_seconds(pool: &PgPool) -> sqlx::Result<f64> {
    let lag: Option<f64> = sqlx::query_scalar!(
        "select extract(epoch from now() - min(range_end))::float8
         from timescaledb_information.chunks
         where hypertable_name = 'influencer_metrics'
           and range_end <= now() - make_interval(secs => $1)",
        (SETTLE_MS / 1000) as f64
    )
    .fetch_one(pool)
    .await?;
    Ok(lag.unwrap_or(0.0).max(0.0))
}

/// What the tiers hold, as compaction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierCounts {
    /// Raw hour chunks, and how many of them are closed and settled (due).
    pub raw_chunks: i64,
    pub due_chunks: i64,
    pub late_points: i64,
    /// Days whose hour segments wait to be merged.
    pub days_pending: i64,
    pub hour_segments: i64,
    pub day_segments: i64,
    /// On-disk size of the cold tier (heap, TOAST and index).
    pub segment_bytes: i64,
}

/// Counts the tiers' contents (a scan of the cold tier: for a status, not for every pass).
pub async fn counts(pool: &PgPool) -> sqlx::Result<TierCounts> {
    let row = sqlx::query!(
        r#"select count(c.*) as "raw_chunks!",
                count(c.*) filter (where c.range_end <= now() - make_interval(secs => $1))
                    as "due_chunks!",
                (select count(*) from late_points) as "late_points!",
                (select count(*) from compaction_days where merged_at is null) as "days_pending!",
                (select count(*) from influencer_hour_blocks b, unnest(b.points) p where p > 0)
                    as "hour_segments!",
                (select count(*) from influencer_segments) as "day_segments!",
                (select sum(total_bytes)::bigint from (
                     select total_bytes from hypertable_detailed_size('influencer_segments')
                     union all
                     select total_bytes from hypertable_detailed_size('influencer_summary_packs')
                     union all
                     select total_bytes from hypertable_detailed_size('influencer_hour_blocks')) s)
                    as segment_bytes
         from timescaledb_information.chunks c where c.hypertable_name = 'influencer_metrics'"#,
        (SETTLE_MS / 1000) as f64,
    )
    .fetch_one(pool)
    .await?;
    Ok(TierCounts {
        raw_chunks: row.raw_chunks,
        due_chunks: row.due_chunks,
        late_points: row.late_points,
        days_pending: row.days_pending,
        hour_segments: row.hour_segments,
        day_segments: row.day_segments,
        segment_bytes: row.segment_bytes.unwrap_or(0),
    })
}

/// A closed chunk being compacted in one transaction: read in `passes` shares, each merged into
/// hour segments, then its hour's late points merged, then dropped.
pub(crate) struct ChunkScan<'c> {
    chunk: &'c RawChunk,
    table: String,
    /// Whether segments already cover this hour: only if the chunk was written again after a
    /// compaction (points inserted by hand); then each batch merges into them.
    look_up: bool,
    pub passes: i64,
    /// Points expected in a share, to size its buffer.
    expected: usize,
}

impl<'c> ChunkScan<'c> {
    /// Starts compacting `chunk`: how many shares it is read in, so that a share holds about
    /// `pass_points` points ([`passes_for`]).
    pub async fn start(
        tx: &mut PgConnection,
        chunk: &'c RawChunk,
        pass_points: usize,
    ) -> sqlx::Result<Self> {
        let look_up: bool = sqlx::query_scalar!(
            "select exists (select 1 from all_segments
                            where period_start > $1::timestamptz - interval '1 day'
                              and period_start < $2 and period_end > $1) as \"look_up!\"",
            chunk.range_start,
            chunk.range_end
        )
        .fetch_one(&mut *tx)
        .await?;
        let table = chunk.table();
        let bytes: i64 = sqlx::query_scalar!(
            r#"select pg_relation_size($1::text::regclass) as "bytes!""#,
            &table
        )
        .fetch_one(&mut *tx)
        .await?;
        let passes = passes_for(bytes, pass_points);
        Ok(Self {
            chunk,
            table,
            look_up,
            passes,
            expected: (bytes / HEAP_BYTES_PER_ROW / passes) as usize,
        })
    }

    /// The points of share `pass` (the influencers whose hour block modulo the passes is
    /// `pass`), by a binary COPY of a scan of the chunk, sorted by influencer and slot.
    pub(crate) async fn read_share(
        &self,
        tx: &mut PgConnection,
        pass: i64,
    ) -> anyhow::Result<Vec<Point>> {
        use futures_util::TryStreamExt;
        let share = if self.passes == 1 {
            String::new()
        } else {
            format!("where abs((influencer_id >> 6) % {}) = {pass}", self.passes)
        };
        let mut out = tx
            .copy_out_raw(&format!(
                "copy (select {} from {} {share}) to stdout (format binary)",
                RawRow::COLUMNS,
                self.table
            ))
            .await?;
        let mut decoder = copy::Decoder::default();
        let mut points = Vec::with_capacity(self.expected);
        while let Some(piece) = out.try_next().await? {
            decoder.feed(&piece, &mut points)?;
        }
        decoder.finish()?;
        points.sort_unstable_by_key(|p| (p.pk, p.slot_ms));
        Ok(points)
    }

    /// Merges a batch of a share's points (whole hour blocks, [`by_block`]) into hour segments.
    pub async fn merge(
        &self,
        tx: &mut PgConnection,
        batch: &[Point],
    ) -> anyhow::Result<MergeReport> {
        let batch: Vec<RawPoint> = batch.iter().map(RawPoint::from).collect();
        store::merge(tx, &batch, self.look_up).await
    }

    /// Merges the late points of the chunk's hour (they may repeat a slot of the chunk: the
    /// chunk's value stays), then drops the chunk. `None` if readers held it past the lock
    /// timeout: the caller rolls back, nothing changed.
    pub async fn finish(self, tx: &mut PgConnection) -> anyhow::Result<Option<MergeReport>> {
        let late = sqlx::query_as!(
            RawRow,
            "delete from late_points where slot >= $1 and slot < $2
             returning influencer_id, slot, fetched_at, follower_count, following_count",
            self.chunk.range_start,
            self.chunk.range_end,
        )
        .fetch_all(&mut *tx)
        .await?;
        let late = merge_rows(tx, &late).await?;
        sqlx::query_scalar!(
            "select set_config('lock_timeout', $1, true)",
            DROP_LOCK_TIMEOUT
        )
        .fetch_one(&mut *tx)
        .await?;
        match sqlx::query(&format!("drop table {}", self.table))
            .execute(&mut *tx)
            .await
        {
            Ok(_) => Ok(Some(late)),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// How many passes a closed chunk of `bytes` is read in: a chunk is read a share of its
/// influencers at a time, each share one scan of the chunk in its physical order, grouped by
/// influencer here. The sink writes a chunk in slot order, so an influencer's 60 points of an
/// hour lie on 60 pages among a million influencers' rows: read influencer by influencer
/// through the index, every point cost PostgreSQL a page (bench compaction: 140 s of its CPU
/// for an hour of 1,000,000 influencers). The shares are hour blocks (`influencer_id >> 6`:
/// 64 consecutive ids, one row of `influencer_hour_blocks`, so each block row is written once)
/// modulo the number of passes, which spreads any set of ids about evenly, `pass_points`
/// points a pass. The count comes from the chunk's size on disk (rows of fixed size, so always
/// current, where the planner's row estimate may date from early in the hour).
pub(crate) fn passes_for(bytes: i64, pass_points: usize) -> i64 {
    let rows = bytes.max(0) as u64 / HEAP_BYTES_PER_ROW as u64;
    rows.div_ceil(pass_points.max(1) as u64).max(1) as i64
}

/// `points` (sorted by influencer) in batches of about `size`, an hour block (64 consecutive
/// influencers, one row of `influencer_hour_blocks`) never split: each block row is written
/// once.
pub(crate) fn by_block(points: &[Point], size: usize) -> impl Iterator<Item = &[Point]> {
    let mut rest = points;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = size.clamp(1, rest.len());
        while end < rest.len() && block_of(rest[end].pk).0 == block_of(rest[end - 1].pk).0 {
            end += 1;
        }
        let (batch, tail) = rest.split_at(end);
        rest = tail;
        Some(batch)
    })
}

async fn merge_rows(tx: &mut PgConnection, rows: &[RawRow]) -> anyhow::Result<MergeReport> {
    let mut points: Vec<RawPoint> = rows.iter().map(RawPoint::from).collect();
    points.sort_by_key(|p| (p.influencer_id, p.point.slot_ms));
    points.dedup_by_key(|p| (p.influencer_id, p.point.slot_ms));
    store::merge(tx, &points, true).await
}

/// Merges up to `limit` late points whose hour has none of the `remaining` raw chunks into
/// their segments (a slot already stored keeps its value). Returns how many late points were
/// taken, and what the merge wrote.
pub(crate) async fn merge_late_points(
    tx: &mut PgConnection,
    remaining: &[RawChunk],
    limit: i64,
) -> anyhow::Result<(usize, MergeReport)> {
    let starts: Vec<DateTime<Utc>> = remaining.iter().map(|c| c.range_start).collect();
    let ends: Vec<DateTime<Utc>> = remaining.iter().map(|c| c.range_end).collect();
    let rows = sqlx::query_as!(
        RawRow,
        "delete from late_points where (influencer_id, slot) in (
             select influencer_id, slot from late_points l
             where not exists (select 1 from unnest($1::timestamptz[], $2::timestamptz[]) c(s, e)
                               where l.slot >= c.s and l.slot < c.e)
             order by influencer_id, slot limit $3)
         returning influencer_id, slot, fetched_at, follower_count, following_count",
        &starts,
        &ends,
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok((rows.len(), merge_rows(tx, &rows).await?))
}

/// Days with hour segments to merge: ended a settle time ago, none of their hours still raw.
pub async fn days_due(pool: &PgPool) -> sqlx::Result<Vec<DateTime<Utc>>> {
    sqlx::query_scalar!(
        "select d.day from compaction_days d
         where d.merged_at is null
           and d.day + interval '1 day' <= now() - make_interval(secs => $1)
           and not exists (select 1 from timescaledb_information.chunks c
                           where c.hypertable_name = 'influencer_metrics'
                             and c.range_start < d.day + interval '1 day' and c.range_end > d.day)
         order by d.day",
        (SETTLE_MS / 1000) as f64
    )
    .fetch_all(pool)
    .await
}

pub(crate) use store::merge_day;

/// Marks `day` merged, once all its hour segments are in day segments, and drops the day's
/// chunk of hour blocks whole.
pub(crate) async fn finish_day(tx: &mut PgConnection, day: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query!(
        "update compaction_days set merged_at = now() where day = $1",
        day
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar!(
        "select drop_chunks('influencer_hour_blocks',
                            older_than => $1::timestamptz + interval '1 day', newer_than => $1)",
        day
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_read_in_as_many_passes_as_its_points_need() {
        // An hour of 1,000,000 influencers: 60,000,000 rows, 3.6 GB of heap.
        let default = crate::config::DEFAULT_COMPACTION_PASS_POINTS;
        assert_eq!(passes_for(60_000_000 * HEAP_BYTES_PER_ROW, default), 15);
        assert_eq!(passes_for(60_000_001 * HEAP_BYTES_PER_ROW, default), 16);
        assert_eq!(passes_for(8192, default), 1);
        assert_eq!(passes_for(0, default), 1);
        assert_eq!(passes_for(600 * HEAP_BYTES_PER_ROW, 100), 6);
        assert_eq!(passes_for(600 * HEAP_BYTES_PER_ROW, 0), 600);
    }

    #[test]
    fn batches_hold_whole_hour_blocks() {
        let point = |pk| Point {
            pk,
            slot_ms: 0,
            fetched_ms: 0,
            follower_count: 1,
            following_count: 1,
        };
        let points: Vec<Point> = [1, 1, 1, 63, 64, 64, 127, 128, 200]
            .into_iter()
            .map(point)
            .collect();
        let sizes: Vec<Vec<i64>> = by_block(&points, 2)
            .map(|b| b.iter().map(|p| p.pk).collect())
            .collect();
        assert_eq!(
            sizes,
            vec![vec![1, 1, 1, 63], vec![64, 64, 127], vec![128, 200]]
        );
        assert_eq!(by_block(&points, 100).count(), 1);
        assert_eq!(by_block(&[], 10).count(), 0);
    }
}
