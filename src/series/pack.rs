//! Summary packs (migration 0006): the summaries of an influencer's day segments, one row per
//! influencer and 28-day span of `influencer_segments`' chunk grid, so that a long bucketed
//! range reads a row a span (a year: 14) instead of a row a day.
//!
//! A day segment's summary lives only here: [`update`] writes it in the transaction that writes
//! the day row, so a reader's snapshot sees a pack and its days agree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{DAY_MS, Period, Summary, at};

/// The span of a pack: `influencer_segments`' chunk interval (migration 0002), on the Unix
/// epoch's grid as TimescaleDB lays chunks out.
pub(crate) const SPAN_MS: i64 = 28 * DAY_MS;

/// Bytes of one day segment's entry (migration 0006 gives the layout).
pub(crate) const ENTRY_BYTES: usize = 88;

/// The period start of the pack holding a day segment that starts at `period_start_ms`.
pub fn start_of(period_start_ms: i64) -> i64 {
    period_start_ms.div_euclid(SPAN_MS) * SPAN_MS
}

/// Why a pack could not be read.
#[derive(Debug, thiserror::Error)]
#[error("a summary pack of {len} bytes is not whole entries of {ENTRY_BYTES}")]
pub struct PackError {
    len: usize,
}

/// The entries of a pack that starts at `pack_start_ms`, each day's period and summary (in
/// period order if they are).
pub fn encode(pack_start_ms: i64, days: &[(Period, Summary)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(days.len() * ENTRY_BYTES);
    for ((start, end), s) in days {
        // A day segment's offsets always fit: under 28 days in seconds, under a day in
        // milliseconds.
        let int4 = |v: i64| i32::try_from(v).unwrap_or(i32::MAX).to_be_bytes();
        out.extend(int4((start - pack_start_ms) / 1000));
        out.extend(int4((end - start) / 1000));
        out.extend(int4(s.first_slot_ms - start));
        out.extend(int4(s.last_slot_ms - start));
        out.extend(s.follower_sum.to_be_bytes());
        out.extend(s.following_sum.to_be_bytes());
        for ratio in [s.ratio_min, s.ratio_max, s.ratio_sum] {
            out.extend(ratio.unwrap_or(0.0).to_be_bytes());
        }
        for v in [
            s.points,
            s.ratio_points,
            s.follower_min,
            s.follower_max,
            s.follower_last,
            s.following_min,
            s.following_max,
            s.following_last,
        ] {
            out.extend(v.to_be_bytes());
        }
    }
    out
}

/// The day summaries of the pack that starts at `pack_start_ms`, each with its period (epoch
/// ms, end exclusive), in the pack's order.
pub fn decode(pack_start_ms: i64, bytes: &[u8]) -> Result<Vec<(Period, Summary)>, PackError> {
    if !bytes.len().is_multiple_of(ENTRY_BYTES) {
        return Err(PackError { len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(ENTRY_BYTES)
        .map(|entry| decode_entry(pack_start_ms, entry))
        .collect())
}

/// One entry ([`ENTRY_BYTES`] long).
fn decode_entry(pack_start_ms: i64, entry: &[u8]) -> (Period, Summary) {
    let field = |at: usize, n: usize| &entry[at..at + n];
    let int4 = |at: usize| i32::from_be_bytes(field(at, 4).try_into().expect("4 bytes"));
    let int8 = |at: usize| i64::from_be_bytes(field(at, 8).try_into().expect("8 bytes"));
    let float8 = |at: usize| f64::from_be_bytes(field(at, 8).try_into().expect("8 bytes"));
    let start = pack_start_ms + i64::from(int4(0)) * 1000;
    let end = start + i64::from(int4(4)) * 1000;
    let ratio_points = int4(60);
    let ratio = |at: usize| (ratio_points > 0).then(|| float8(at));
    (
        (start, end),
        Summary {
            first_slot_ms: start + i64::from(int4(8)),
            last_slot_ms: start + i64::from(int4(12)),
            follower_sum: int8(16),
            following_sum: int8(24),
            ratio_min: ratio(32),
            ratio_max: ratio(40),
            ratio_sum: ratio(48),
            points: int4(56),
            ratio_points,
            follower_min: int4(64),
            follower_max: int4(68),
            follower_last: int4(72),
            following_min: int4(76),
            following_max: int4(80),
            following_last: int4(84),
        },
    )
}

/// A day segment's summary as [`update`] takes it: whose, its period, its summary.
pub(crate) type DaySummary<'a> = (i64, Period, &'a Summary);

/// Writes day segments' summaries into their packs, replacing a day's earlier summary: the
/// packs they fall in are read, changed and written back whole, in the caller's transaction
/// (the one writing the day rows). Two writers of one pack at once would each write back what
/// it read and lose the other's day: every writer of day segments is compaction, one process
/// at a time under its advisory lock (`jobs::compaction`).
pub async fn update(tx: &mut PgConnection, days: &[DaySummary<'_>]) -> sqlx::Result<()> {
    // Each pack touched, with its days by period start.
    let mut packs: BTreeMap<(i64, i64), BTreeMap<i64, (Period, Summary)>> = BTreeMap::new();
    for &(id, period, _) in days {
        packs.entry((id, start_of(period.0))).or_default();
    }
    let (Some(first), Some(last)) = (
        packs.keys().map(|&(_, start)| start).min(),
        packs.keys().map(|&(_, start)| start).max(),
    ) else {
        return Ok(());
    };
    let ids: Vec<i64> = packs.keys().map(|&(id, _)| id).collect();
    let starts: Vec<DateTime<Utc>> = packs.keys().map(|&(_, start)| at(start)).collect();
    // $3 and $4 bound the packs read to their chunks when the statement is planned.
    let stored = sqlx::query!(
        "select p.influencer_id, p.period_start, p.days
         from unnest($1::bigint[], $2::timestamptz[]) k(id, start)
         join influencer_summary_packs p on p.influencer_id = k.id and p.period_start = k.start
         where p.period_start >= $3 and p.period_start <= $4",
        &ids,
        &starts,
        at(first),
        at(last),
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in stored {
        let (id, start) = (row.influencer_id, row.period_start.timestamp_millis());
        let entries = decode(start, &row.days).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let pack = packs.entry((id, start)).or_default();
        pack.extend(entries.into_iter().map(|day| (day.0.0, day)));
    }
    for &(id, period, summary) in days {
        packs
            .entry((id, start_of(period.0)))
            .or_default()
            .insert(period.0, (period, *summary));
    }
    let bytes: Vec<Vec<u8>> = packs
        .iter()
        .map(|(&(_, start), pack)| {
            let pack: Vec<(Period, Summary)> = pack.values().cloned().collect();
            encode(start, &pack)
        })
        .collect();
    sqlx::query!(
        "insert into influencer_summary_packs (influencer_id, period_start, days)
         select * from unnest($1::bigint[], $2::timestamptz[], $3::bytea[])
         on conflict (influencer_id, period_start) do update set days = excluded.days",
        &ids,
        &starts,
        &bytes
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry laid out field by field as migration 0006 describes it (big-endian, as
    /// PostgreSQL's int4send, int8send and float8send write them).
    fn entry(
        fields: (i32, i32, i32, i32),
        sums: (i64, i64),
        ratios: [f64; 3],
        ints: [i32; 8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [fields.0, fields.1, fields.2, fields.3] {
            out.extend(v.to_be_bytes());
        }
        out.extend(sums.0.to_be_bytes());
        out.extend(sums.1.to_be_bytes());
        for v in ratios {
            out.extend(v.to_be_bytes());
        }
        for v in ints {
            out.extend(v.to_be_bytes());
        }
        out
    }

    #[test]
    fn packs_lie_on_the_chunk_grid() {
        // 2024-12-19 and 2025-01-16 are chunk bounds of a 28-day hypertable.
        let bound = 1_734_566_400_000;
        assert_eq!(start_of(bound), bound);
        assert_eq!(start_of(bound + SPAN_MS - 1), bound);
        assert_eq!(start_of(bound + SPAN_MS), bound + SPAN_MS);
        assert_eq!(start_of(-1), -SPAN_MS);
    }

    #[test]
    fn a_pack_reads_back_each_day_with_its_period_and_summary() {
        let pack = 1_734_566_400_000;
        let mut bytes = entry(
            (86_400, 86_400, 60_000, 86_340_000),
            (7_000_000_000, 1_440_000),
            [1.5, 2.5, 2_000.25],
            [1440, 1000, 4_000_000, 6_000_000, 5_000_000, 900, 1100, 1000],
        );
        bytes.extend(entry(
            (3 * 86_400, 86_400, 0, 0),
            (5, 0),
            [0.0; 3],
            [1, 0, 5, 5, 5, 0, 0, 0],
        ));
        let days = decode(pack, &bytes).unwrap();
        assert_eq!(days.len(), 2);
        let ((start, end), s) = &days[0];
        assert_eq!((*start, *end), (pack + DAY_MS, pack + 2 * DAY_MS));
        assert_eq!(
            (s.first_slot_ms, s.last_slot_ms),
            (start + 60_000, start + 86_340_000)
        );
        assert_eq!(
            (s.follower_sum, s.following_sum),
            (7_000_000_000, 1_440_000)
        );
        assert_eq!(
            (s.ratio_min, s.ratio_max, s.ratio_sum),
            (Some(1.5), Some(2.5), Some(2_000.25))
        );
        assert_eq!((s.points, s.ratio_points), (1440, 1000));
        assert_eq!(
            (s.follower_min, s.follower_max, s.follower_last),
            (4_000_000, 6_000_000, 5_000_000)
        );
        assert_eq!(
            (s.following_min, s.following_max, s.following_last),
            (900, 1100, 1000)
        );
        // No ratio (following 0 throughout): none of its figures.
        let (period, s) = &days[1];
        assert_eq!(period.0, pack + 3 * DAY_MS);
        assert_eq!((s.ratio_min, s.ratio_max, s.ratio_sum), (None, None, None));
        // What encode writes is that layout.
        assert_eq!(encode(pack, &days), bytes);
        assert!(decode(pack, &bytes[..ENTRY_BYTES + 1]).is_err());
    }
}
