//! Writes the cold tier: points merged into hour and day segments.
//!
//! Everything here runs inside the caller's transaction, so a compaction step either commits
//! whole (its segments written and its raw points gone) or not at all.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{
    BLOCK_MEMBERS, DAY_MS, HOUR_MS, SeriesPoint, Summary, at, block_of, codec, member_of, pack,
};

/// A raw point on its way to a segment: whose it is and how late its poll ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPoint {
    pub influencer_id: i64,
    pub point: SeriesPoint,
    pub lateness_ms: i32,
}

/// A raw row as `influencer_metrics` and `late_points` hold it ([`RawRow::COLUMNS`]).
#[derive(Debug, sqlx::FromRow)]
pub struct RawRow {
    pub influencer_id: i64,
    pub slot: DateTime<Utc>,
    pub fetched_at: DateTime<Utc>,
    pub follower_count: i32,
    pub following_count: i32,
}

impl RawRow {
    pub const COLUMNS: &'static str =
        "influencer_id, slot, fetched_at, follower_count, following_count";
}

impl From<&RawRow> for RawPoint {
    fn from(r: &RawRow) -> Self {
        let slot_ms = r.slot.timestamp_millis();
        Self {
            influencer_id: r.influencer_id,
            point: SeriesPoint {
                slot_ms,
                follower_count: r.follower_count,
                following_count: r.following_count,
            },
            lateness_ms: (r.fetched_at.timestamp_millis() - slot_ms).clamp(0, i32::MAX as i64)
                as i32,
        }
    }
}

impl From<&crate::model::Point> for RawPoint {
    fn from(p: &crate::model::Point) -> Self {
        Self {
            influencer_id: p.pk,
            point: SeriesPoint {
                slot_ms: p.slot_ms,
                follower_count: p.follower_count,
                following_count: p.following_count,
            },
            lateness_ms: (p.fetched_ms - p.slot_ms).clamp(0, i32::MAX as i64) as i32,
        }
    }
}

/// A segment as written: its period, its points' count (and summary, for a day) and lateness,
/// and its bytes.
#[derive(Debug, Clone)]
pub struct Segment {
    pub influencer_id: i64,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    pub points: i32,
    /// The summary of its points, for a day segment; an hour segment is stored without one
    /// (migration 0004), so none is computed for it.
    pub summary: Option<Summary>,
    pub lateness_max_ms: i32,
    pub lateness_p99_ms: i32,
    pub data: Vec<u8>,
}

impl Segment {
    /// Builds a segment from its points (in slot order, at least one).
    pub fn new(
        influencer_id: i64,
        period: (i64, i64),
        points: &[SeriesPoint],
        lateness_max_ms: i32,
        lateness_p99_ms: i32,
    ) -> Result<Self, codec::CodecError> {
        Ok(Self {
            influencer_id,
            period_start_ms: period.0,
            period_end_ms: period.1,
            points: points.len() as i32,
            summary: (Table::of_period(period) == Table::Days).then(|| Summary::of(points)),
            lateness_max_ms,
            lateness_p99_ms,
            data: codec::encode(points)?,
        })
    }

    /// The table the segment is stored in.
    pub fn table(&self) -> Table {
        Table::of_period((self.period_start_ms, self.period_end_ms))
    }
}

/// The 99th percentile (nearest rank) of lateness figures; 0 for none.
pub fn p99(lateness: &mut [i32]) -> i32 {
    if lateness.is_empty() {
        return 0;
    }
    let rank = (lateness.len() * 99).div_ceil(100).max(1) - 1;
    *lateness.select_nth_unstable(rank).1
}

/// What a merge wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeReport {
    /// Points newly in the cold tier (a slot it already held is not counted).
    pub points: u64,
    /// Slots that were already stored in a segment: the segment's value was kept.
    pub duplicates: u64,
    pub segments: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for MergeReport {
    fn add_assign(&mut self, other: Self) {
        self.points += other.points;
        self.duplicates += other.duplicates;
        self.segments += other.segments;
        self.bytes += other.bytes;
    }
}

#[derive(sqlx::FromRow)]
struct ExistingRow {
    influencer_id: i64,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    lateness_max_ms: i32,
    lateness_p99_ms: i32,
    data: Vec<u8>,
}

/// Merges points (sorted by influencer, then slot; no slot twice) into the segments that cover
/// them: the influencer's existing hour or day segment, else a new hour segment. A slot a
/// segment already holds keeps the segment's value. `look_up` = false skips the search for
/// existing segments (the caller knows there are none).
pub async fn merge(
    tx: &mut PgConnection,
    points: &[RawPoint],
    look_up: bool,
) -> anyhow::Result<MergeReport> {
    if points.is_empty() {
        return Ok(MergeReport::default());
    }
    let existing: Vec<ExistingRow> = if look_up {
        let mut ids: Vec<i64> = points.iter().map(|p| p.influencer_id).collect();
        ids.dedup();
        let (lo, hi) = points.iter().fold((i64::MAX, i64::MIN), |(lo, hi), p| {
            (lo.min(p.point.slot_ms), hi.max(p.point.slot_ms))
        });
        sqlx::query_as(concat!(
            "select influencer_id, period_start, period_end, lateness_max_ms, lateness_p99_ms,
                    data_head || data_tail as data
             from influencer_segments
             where influencer_id = any($1)
               and period_start > $2 - interval '1 day' and period_start <= $3 and period_end > $2
             union all
             select s.id, b.period_start, b.period_start + interval '1 hour', ",
            hour_member!("b", "(s.id & 63)", "lateness_max_ms"),
            ", ",
            hour_member!("b", "(s.id & 63)", "lateness_p99_ms"),
            ", ",
            hour_member_data!("b", "(s.id & 63)"),
            " from unnest($1::bigint[]) s(id)
             join influencer_hour_blocks b on b.block = s.id >> 6
             where b.period_start > $2 - interval '1 hour' and b.period_start <= $3
               and ",
            hour_member!("b", "(s.id & 63)", "points"),
            " > 0
             order by 1, 2"
        ))
        .bind(&ids)
        .bind(at(lo))
        .bind(at(hi))
        .fetch_all(&mut *tx)
        .await?
    } else {
        Vec::new()
    };
    // Target segments keyed by (influencer, period start): existing ones first.
    struct Target {
        end_ms: i64,
        stored: Vec<SeriesPoint>,
        lateness_max: i32,
        lateness_p99: i32,
        new: Vec<SeriesPoint>,
        new_lateness: Vec<i32>,
    }
    let mut targets: BTreeMap<(i64, i64), Target> = BTreeMap::new();
    for row in existing {
        targets.insert(
            (row.influencer_id, row.period_start.timestamp_millis()),
            Target {
                end_ms: row.period_end.timestamp_millis(),
                stored: codec::decode(&row.data)?,
                lateness_max: row.lateness_max_ms,
                lateness_p99: row.lateness_p99_ms,
                new: Vec::new(),
                new_lateness: Vec::new(),
            },
        );
    }
    // Points go to their segment a run at a time: an influencer's points in one hour, which
    // an existing segment (an hour or a day) covers whole or not at all.
    for run in points.chunk_by(|a, b| {
        a.influencer_id == b.influencer_id
            && a.point.slot_ms.div_euclid(HOUR_MS) == b.point.slot_ms.div_euclid(HOUR_MS)
    }) {
        let (id, slot) = (run[0].influencer_id, run[0].point.slot_ms);
        // The existing segment covering the hour: the latest one starting at or before it.
        let covering = targets
            .range((id, i64::MIN)..=(id, slot))
            .next_back()
            .filter(|(_, t)| t.end_ms > slot)
            .map(|(k, _)| *k);
        let key = covering.unwrap_or((id, slot.div_euclid(HOUR_MS) * HOUR_MS));
        let target = targets.entry(key).or_insert_with(|| Target {
            end_ms: key.1 + HOUR_MS,
            stored: Vec::new(),
            lateness_max: 0,
            lateness_p99: 0,
            new: Vec::new(),
            new_lateness: Vec::new(),
        });
        target.new.extend(run.iter().map(|p| p.point));
        target
            .new_lateness
            .extend(run.iter().map(|p| p.lateness_ms));
    }
    let mut report = MergeReport::default();
    let mut segments = Vec::new();
    let mut new_days = Vec::new();
    for ((influencer_id, start_ms), mut t) in targets {
        if t.new.is_empty() {
            continue;
        }
        let before = t.stored.len();
        if t.stored.is_empty() && t.end_ms - start_ms < DAY_MS {
            new_days.push(at(start_ms.div_euclid(DAY_MS) * DAY_MS));
        }
        let mut merged = std::mem::take(&mut t.stored);
        let fresh: Vec<SeriesPoint> = t
            .new
            .iter()
            .filter(|n| {
                merged
                    .binary_search_by_key(&n.slot_ms, |s| s.slot_ms)
                    .is_err()
            })
            .copied()
            .collect();
        merged.extend(fresh);
        merged.sort_by_key(|p| p.slot_ms);
        let added = (merged.len() - before) as u64;
        report.points += added;
        report.duplicates += t.new.len() as u64 - added;
        if added == 0 {
            continue;
        }
        let lateness_max = t
            .new_lateness
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(t.lateness_max);
        let lateness_p99 = p99(&mut t.new_lateness).max(t.lateness_p99);
        segments.push(Segment::new(
            influencer_id,
            (start_ms, t.end_ms),
            &merged,
            lateness_max,
            lateness_p99,
        )?);
    }
    report.segments = segments.len() as u64;
    report.bytes = segments.iter().map(|s| s.data.len() as u64).sum();
    upsert(tx, &segments).await?;
    new_days.sort();
    new_days.dedup();
    if !new_days.is_empty() {
        sqlx::query(
            "insert into compaction_days (day) select unnest($1::timestamptz[])
             on conflict (day) do update set merged_at = null",
        )
        .bind(&new_days)
        .execute(&mut *tx)
        .await?;
    }
    Ok(report)
}

/// The two cold tables: `influencer_hour_blocks` and `influencer_segments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Hours,
    Days,
}

impl Table {
    /// The table of a segment over `period`: a day's in the day table, an hour's in the hour
    /// table.
    pub fn of_period((start, end): (i64, i64)) -> Self {
        if end - start >= DAY_MS {
            Table::Days
        } else {
            Table::Hours
        }
    }
}

/// How many bytes of an out-of-line value PostgreSQL stores per TOAST chunk (its
/// `TOAST_MAX_CHUNK_SIZE` with 8 kB pages, the default and what every packaged server uses;
/// four chunks fill a page).
pub const TOAST_CHUNK_BYTES: usize = 1996;

/// A segment's encoded bytes as (head, tail): the head is the leading whole multiple of
/// [`TOAST_CHUNK_BYTES`], stored out of line where it fills whole TOAST chunks; the tail, the
/// rest, stays in the row (migrations/0003_segment_data_split.sql says why).
pub fn split_for_toast(data: &[u8]) -> (&[u8], &[u8]) {
    data.split_at(data.len() / TOAST_CHUNK_BYTES * TOAST_CHUNK_BYTES)
}

/// Writes segments, each into its table, replacing any stored under the same (influencer,
/// period start).
pub async fn upsert(tx: &mut PgConnection, segments: &[Segment]) -> anyhow::Result<()> {
    let (days, hours): (Vec<&Segment>, Vec<&Segment>) =
        segments.iter().partition(|s| s.table() == Table::Days);
    upsert_days(tx, &days).await?;
    upsert_hours(tx, &hours).await
}

/// One column of `$rows` as an array: `$f` applied to each row.
macro_rules! column {
    ($rows:expr, $f:expr) => {
        $rows.iter().map($f).collect::<Vec<_>>()
    };
}

/// A row of `influencer_hour_blocks`: the hour segments of up to [`BLOCK_MEMBERS`] consecutive
/// influencers (migration 0005).
#[derive(sqlx::FromRow)]
struct HourBlockRow {
    block: i64,
    period_start: DateTime<Utc>,
    points: Vec<i32>,
    lateness_max_ms: Vec<i32>,
    lateness_p99_ms: Vec<i32>,
    offsets: Vec<i32>,
    data_head: Vec<u8>,
    data_tail: Vec<u8>,
}

impl HourBlockRow {
    const COLUMNS: &'static str = "block, period_start, points, lateness_max_ms, lateness_p99_ms, offsets, data_head, \
         data_tail";

    /// Its members' segments (those with points), in member order; a row whose arrays do not
    /// describe its bytes is corrupt.
    fn segments(&self) -> Result<Vec<Segment>, codec::CodecError> {
        let corrupt = |what: &str| {
            codec::CodecError::Corrupt(format!(
                "hour block {} at {}: {what}",
                self.block, self.period_start
            ))
        };
        if self.points.len() != BLOCK_MEMBERS
            || self.lateness_max_ms.len() != BLOCK_MEMBERS
            || self.lateness_p99_ms.len() != BLOCK_MEMBERS
            || self.offsets.len() != BLOCK_MEMBERS + 1
        {
            return Err(corrupt("arrays of the wrong length"));
        }
        let start_ms = self.period_start.timestamp_millis();
        let data = [self.data_head.as_slice(), &self.data_tail].concat();
        let mut segments = Vec::new();
        for member in 0..BLOCK_MEMBERS {
            let (from, to) = (self.offsets[member], self.offsets[member + 1]);
            let bytes = usize::try_from(from)
                .ok()
                .zip(usize::try_from(to).ok())
                .and_then(|(from, to)| data.get(from..to))
                .ok_or_else(|| corrupt("a byte range outside its data"))?;
            if self.points[member] <= 0 {
                if !bytes.is_empty() {
                    return Err(corrupt("bytes for a member without points"));
                }
                continue;
            }
            segments.push(Segment {
                influencer_id: member_of(self.block, member),
                period_start_ms: start_ms,
                period_end_ms: start_ms + HOUR_MS,
                points: self.points[member],
                summary: None,
                lateness_max_ms: self.lateness_max_ms[member],
                lateness_p99_ms: self.lateness_p99_ms[member],
                data: bytes.to_vec(),
            });
        }
        Ok(segments)
    }
}

/// Block rows as the columns of [`UPSERT_HOUR_BLOCKS`]: each block's member arrays flattened
/// one block after the other.
#[derive(Default)]
struct HourBlockColumns {
    blocks: Vec<i64>,
    starts: Vec<DateTime<Utc>>,
    points: Vec<i32>,
    lateness_max_ms: Vec<i32>,
    lateness_p99_ms: Vec<i32>,
    offsets: Vec<i32>,
    data_heads: Vec<Vec<u8>>,
    data_tails: Vec<Vec<u8>>,
}

impl HourBlockColumns {
    /// Adds the row of block `block` at `start_ms` holding `members` (by member index).
    fn push(&mut self, (block, start_ms): (i64, i64), members: &[Option<&Segment>]) {
        self.blocks.push(block);
        self.starts.push(at(start_ms));
        let mut data = Vec::new();
        self.offsets.push(0);
        for member in members {
            self.points.push(member.map_or(0, |s| s.points));
            self.lateness_max_ms
                .push(member.map_or(0, |s| s.lateness_max_ms));
            self.lateness_p99_ms
                .push(member.map_or(0, |s| s.lateness_p99_ms));
            if let Some(s) = member {
                data.extend_from_slice(&s.data);
            }
            self.offsets.push(data.len() as i32);
        }
        let (head, tail) = split_for_toast(&data);
        self.data_tails.push(tail.to_vec());
        data.truncate(head.len());
        self.data_heads.push(data);
    }
}

/// Writes block rows given as [`HourBlockColumns`] (`$3` to `$6` hold 64 or 65 elements a
/// row), replacing any stored under the same (block, period start).
const UPSERT_HOUR_BLOCKS: &str = "
    insert into influencer_hour_blocks (block, period_start, points, lateness_max_ms,
                                        lateness_p99_ms, offsets, data_head, data_tail)
    select a.blocks[i], a.starts[i], a.points[(i - 1) * 64 + 1 : i * 64],
           a.late_max[(i - 1) * 64 + 1 : i * 64], a.late_p99[(i - 1) * 64 + 1 : i * 64],
           a.offsets[(i - 1) * 65 + 1 : i * 65], a.heads[i], a.tails[i]
    from (select $1::bigint[] as blocks, $2::timestamptz[] as starts, $3::int[] as points,
                 $4::int[] as late_max, $5::int[] as late_p99, $6::int[] as offsets,
                 $7::bytea[] as heads, $8::bytea[] as tails) a,
         generate_subscripts(a.blocks, 1) i
    on conflict (block, period_start) do update set
        points = excluded.points, lateness_max_ms = excluded.lateness_max_ms,
        lateness_p99_ms = excluded.lateness_p99_ms, offsets = excluded.offsets,
        data_head = excluded.data_head, data_tail = excluded.data_tail";

/// Hour segments: into their block rows (migration 0005). A block row already stored for the
/// hour keeps its other members; a segment replaces its influencer's.
async fn upsert_hours(tx: &mut PgConnection, segments: &[&Segment]) -> anyhow::Result<()> {
    if segments.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<(i64, i64)> = segments
        .iter()
        .map(|s| (block_of(s.influencer_id).0, s.period_start_ms))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let stored: Vec<HourBlockRow> = sqlx::query_as(&format!(
        "select {} from influencer_hour_blocks
         where (block, period_start) in (select * from unnest($1::bigint[], $2::timestamptz[]))
         for update",
        HourBlockRow::COLUMNS
    ))
    .bind(column!(keys, |k| k.0))
    .bind(column!(keys, |k| at(k.1)))
    .fetch_all(&mut *tx)
    .await?;
    let stored: Vec<Segment> = stored
        .iter()
        .map(HourBlockRow::segments)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let mut rows: BTreeMap<(i64, i64), [Option<&Segment>; BLOCK_MEMBERS]> = BTreeMap::new();
    // Stored members first, then the new segments over them.
    for segment in stored.iter().chain(segments.iter().copied()) {
        let (block, member) = block_of(segment.influencer_id);
        rows.entry((block, segment.period_start_ms))
            .or_insert([None; BLOCK_MEMBERS])[member] = Some(segment);
    }
    let mut columns = HourBlockColumns::default();
    for (key, members) in &rows {
        columns.push(*key, members);
    }
    sqlx::query(UPSERT_HOUR_BLOCKS)
        .bind(&columns.blocks)
        .bind(&columns.starts)
        .bind(&columns.points)
        .bind(&columns.lateness_max_ms)
        .bind(&columns.lateness_p99_ms)
        .bind(&columns.offsets)
        .bind(&columns.data_heads)
        .bind(&columns.data_tails)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Day segments: the encoded points split for TOAST, and their summaries into their packs.
async fn upsert_days(tx: &mut PgConnection, segments: &[&Segment]) -> sqlx::Result<()> {
    if segments.is_empty() {
        return Ok(());
    }
    let (heads, tails): (Vec<&[u8]>, Vec<&[u8]>) =
        segments.iter().map(|s| split_for_toast(&s.data)).unzip();
    sqlx::query(
        "insert into influencer_segments (influencer_id, period_start, period_end, points,
             lateness_max_ms, lateness_p99_ms, data_head, data_tail)
         select * from unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::int[],
             $5::int[], $6::int[], $7::bytea[], $8::bytea[])
         on conflict (influencer_id, period_start) do update set
             period_end = excluded.period_end, points = excluded.points,
             lateness_max_ms = excluded.lateness_max_ms,
             lateness_p99_ms = excluded.lateness_p99_ms, data_head = excluded.data_head,
             data_tail = excluded.data_tail",
    )
    .bind(column!(segments, |s| s.influencer_id))
    .bind(column!(segments, |s| at(s.period_start_ms)))
    .bind(column!(segments, |s| at(s.period_end_ms)))
    .bind(column!(segments, |s| s.points))
    .bind(column!(segments, |s| s.lateness_max_ms))
    .bind(column!(segments, |s| s.lateness_p99_ms))
    .bind(&heads)
    .bind(&tails)
    .execute(&mut *tx)
    .await?;
    let summaries: Vec<pack::DaySummary> = segments
        .iter()
        .map(|s| {
            let summary = s
                .summary
                .as_ref()
                .expect("a day segment is built with its summary");
            (
                s.influencer_id,
                (s.period_start_ms, s.period_end_ms),
                summary,
            )
        })
        .collect();
    pack::update(tx, &summaries).await
}

/// Merges the hour segments of one UTC day into day segments, for the influencers of up to
/// `limit` hour blocks after block `after`; returns the last block merged (none when the day
/// is done) and the report.
pub async fn merge_day(
    tx: &mut PgConnection,
    day_ms: i64,
    after: i64,
    limit: i64,
) -> anyhow::Result<(Option<i64>, MergeReport)> {
    let rows: Vec<HourBlockRow> = sqlx::query_as(&format!(
        "delete from influencer_hour_blocks
         where period_start >= $1 and period_start < $1 + interval '1 day'
           and block in (
                 select distinct block from influencer_hour_blocks
                 where period_start >= $1 and period_start < $1 + interval '1 day'
                   and block > $2
                 order by block limit $3)
         returning {}",
        HourBlockRow::COLUMNS
    ))
    .bind(at(day_ms))
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let last = rows.iter().map(|row| row.block).max();
    let mut by_influencer: BTreeMap<i64, (Vec<SeriesPoint>, i32, i32)> = BTreeMap::new();
    for row in &rows {
        for segment in row.segments()? {
            let entry = by_influencer.entry(segment.influencer_id).or_default();
            codec::decode_into(&segment.data, &mut entry.0)?;
            entry.1 = entry.1.max(segment.lateness_max_ms);
            entry.2 = entry.2.max(segment.lateness_p99_ms);
        }
    }
    let mut report = MergeReport::default();
    let mut segments = Vec::with_capacity(by_influencer.len());
    for (id, (mut points, late_max, late_p99)) in by_influencer {
        points.sort_by_key(|p| p.slot_ms);
        points.dedup_by_key(|p| p.slot_ms);
        report.points += points.len() as u64;
        segments.push(Segment::new(
            id,
            (day_ms, day_ms + DAY_MS),
            &points,
            late_max,
            late_p99,
        )?);
    }
    report.segments = segments.len() as u64;
    report.bytes = segments.iter().map(|s| s.data.len() as u64).sum();
    upsert(tx, &segments).await?;
    Ok((last, report))
}

#[cfg(test)]
mod tests;
