//! The cold tier's rows: hour segments in block rows of 64 influencers (migration 0005), day
//! segments with their summaries in packs, and the merge of a closed day's hour segments into
//! day segments.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{MergeReport, Segment, split_for_toast, upsert};
use crate::series::{
    BLOCK_MEMBERS, DAY_MS, HOUR_MS, SeriesPoint, Snapshot, at, block_of, closes, codec, member_of,
    pack,
};

/// One column of `rows` as an array: `f` applied to each row.
fn column<R, T>(rows: &[R], f: impl FnMut(&R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// A row of `influencer_hour_blocks`: the hour segments of up to [`BLOCK_MEMBERS`] consecutive
/// influencers (migration 0005).
pub(super) struct HourBlockRow {
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

/// Block rows as the columns of the upsert in [`upsert_hours`]: each block's member arrays flattened
/// one block after the other.
#[derive(Default)]
pub(super) struct HourBlockColumns {
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

/// Hour segments: into their block rows (migration 0005). A block row already stored for the
/// hour keeps its other members; a segment replaces its influencer's.
pub(super) async fn upsert_hours(
    tx: &mut PgConnection,
    segments: &[&Segment],
) -> anyhow::Result<()> {
    if segments.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<(i64, i64)> = segments
        .iter()
        .map(|s| (block_of(s.influencer_id).0, s.period_start_ms))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let stored = sqlx::query_as!(
        HourBlockRow,
        "select block, period_start, points, lateness_max_ms, lateness_p99_ms, offsets, data_head,
                data_tail
         from influencer_hour_blocks
         where (block, period_start) in (select * from unnest($1::bigint[], $2::timestamptz[]))
         for update",
        &column(&keys, |k| k.0),
        &column(&keys, |k| at(k.1)),
    )
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
    sqlx::query!(
        "    insert into influencer_hour_blocks (block, period_start, points, lateness_max_ms,
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
        data_head = excluded.data_head, data_tail = excluded.data_tail",
        &columns.blocks,
        &columns.starts,
        &columns.points,
        &columns.lateness_max_ms,
        &columns.lateness_p99_ms,
        &columns.offsets,
        &columns.data_heads,
        &columns.data_tails,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Day segments: the encoded points split for TOAST, and their summaries into their packs.
pub(super) async fn upsert_days(tx: &mut PgConnection, segments: &[&Segment]) -> sqlx::Result<()> {
    if segments.is_empty() {
        return Ok(());
    }
    let (heads, tails): (Vec<&[u8]>, Vec<&[u8]>) =
        segments.iter().map(|s| split_for_toast(&s.data)).unzip();
    sqlx::query!(
        "insert into influencer_segments (influencer_id, period_start, period_end, points,
             lateness_max_ms, lateness_p99_ms, data_head, data_tail)
         select * from unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::int[],
             $5::int[], $6::int[], $7::bytea[], $8::bytea[])
         on conflict (influencer_id, period_start) do update set
             period_end = excluded.period_end, points = excluded.points,
             lateness_max_ms = excluded.lateness_max_ms,
             lateness_p99_ms = excluded.lateness_p99_ms, data_head = excluded.data_head,
             data_tail = excluded.data_tail",
        &column(segments, |s| s.influencer_id),
        &column(segments, |s| at(s.period_start_ms)),
        &column(segments, |s| at(s.period_end_ms)),
        &column(segments, |s| s.points),
        &column(segments, |s| s.lateness_max_ms),
        &column(segments, |s| s.lateness_p99_ms),
        &heads as &[&[u8]],
        &tails as &[&[u8]],
    )
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
pub(crate) async fn merge_day(
    tx: &mut PgConnection,
    day_ms: i64,
    after: i64,
    limit: i64,
) -> anyhow::Result<(Option<i64>, MergeReport)> {
    let rows = sqlx::query_as!(
        HourBlockRow,
        "delete from influencer_hour_blocks
         where period_start >= $1 and period_start < $1::timestamptz + interval '1 day'
           and block in (
                 select distinct block from influencer_hour_blocks
                 where period_start >= $1 and period_start < $1::timestamptz + interval '1 day'
                   and block > $2
                 order by block limit $3)
         returning block, period_start, points, lateness_max_ms, lateness_p99_ms, offsets,
                   data_head, data_tail",
        at(day_ms),
        after,
        limit,
    )
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
    // Each influencer's last point of the day, in id order (the map's).
    let mut closes = Snapshot::with_capacity(by_influencer.len());
    for (id, (mut points, late_max, late_p99)) in by_influencer {
        points.sort_by_key(|p| p.slot_ms);
        points.dedup_by_key(|p| p.slot_ms);
        report.points += points.len() as u64;
        if let Some(last) = points.last() {
            closes.push(id, last.follower_count, last.following_count, last.slot_ms);
        }
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
    closes::write(tx, day_ms, &closes).await?;
    Ok((last, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::store::TOAST_CHUNK_BYTES;

    /// Segments of every member of block 2 but 1, 2 and 3, for one hour: about 13 kB, more than
    /// a TOAST chunk.
    fn block_segments() -> Vec<Segment> {
        (0..BLOCK_MEMBERS)
            .filter(|m| !(1..=3).contains(m))
            .map(|member| {
                let points: Vec<SeriesPoint> = (0..60 - member as i64 / 5)
                    .map(|i| SeriesPoint {
                        slot_ms: 7 * HOUR_MS + i * 60_000,
                        follower_count: 1_000 * member as i32 + (i as i32 * 7_919) % 3_000,
                        following_count: 3,
                    })
                    .collect();
                Segment::new(
                    member_of(2, member),
                    (7 * HOUR_MS, 8 * HOUR_MS),
                    &points,
                    member as i32 * 10,
                    member as i32,
                )
                .unwrap()
            })
            .collect()
    }

    /// The row `HourBlockColumns` writes for `segments` (all of one block and hour).
    fn block_row(segments: &[Segment]) -> HourBlockRow {
        let mut members = [None; BLOCK_MEMBERS];
        for s in segments {
            members[block_of(s.influencer_id).1] = Some(s);
        }
        let mut columns = HourBlockColumns::default();
        columns.push((2, 7 * HOUR_MS), &members);
        HourBlockRow {
            block: columns.blocks[0],
            period_start: columns.starts[0],
            points: columns.points,
            lateness_max_ms: columns.lateness_max_ms,
            lateness_p99_ms: columns.lateness_p99_ms,
            offsets: columns.offsets,
            data_head: columns.data_heads.remove(0),
            data_tail: columns.data_tails.remove(0),
        }
    }

    #[test]
    fn a_block_row_gives_back_its_members_segments() {
        let segments = block_segments();
        let row = block_row(&segments);
        assert_eq!(row.points.len(), BLOCK_MEMBERS);
        assert_eq!(row.offsets.len(), BLOCK_MEMBERS + 1);
        assert!(!row.data_head.is_empty() && row.data_head.len().is_multiple_of(TOAST_CHUNK_BYTES));
        assert!(row.data_tail.len() < TOAST_CHUNK_BYTES);
        let read = row.segments().unwrap();
        assert_eq!(read.len(), segments.len());
        for (read, written) in read.iter().zip(&segments) {
            assert_eq!(read.influencer_id, written.influencer_id);
            assert_eq!(
                (read.period_start_ms, read.period_end_ms),
                (written.period_start_ms, written.period_end_ms)
            );
            assert_eq!(read.points, written.points);
            assert_eq!(
                (read.lateness_max_ms, read.lateness_p99_ms),
                (written.lateness_max_ms, written.lateness_p99_ms)
            );
            assert_eq!(read.data, written.data);
        }
    }

    #[test]
    fn a_block_row_whose_arrays_do_not_describe_its_bytes_is_corrupt() {
        let segments = block_segments();
        let damaged: [fn(&mut HourBlockRow); 5] = [
            |row| row.points.truncate(63),
            |row| row.offsets.push(0),
            |row| row.offsets[64] += 1,
            |row| row.offsets[1] = -1,
            // Member 1 has no points but claims bytes.
            |row| row.offsets[1] = 1,
        ];
        for (i, damage) in damaged.iter().enumerate() {
            let mut row = block_row(&segments);
            damage(&mut row);
            assert!(
                matches!(row.segments(), Err(codec::CodecError::Corrupt(_))),
                "damage {i}"
            );
        }
    }
}
