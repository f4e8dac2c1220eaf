//! Rank history: every influencer's rank and percentile by followers at each UTC day's close
//! (ranked from the day closes, [`super::closes`], kept for the retention) and at each hour
//! (from the ranking job's latest values, kept [`HOURS_KEPT_MS`]), in `rank_moments` and
//! `rank_blocks` (migration 0015).
//!
//! A moment's ranks are stored one row per [`BLOCK_IDS`] consecutive ids, keyed by block first
//! (one influencer's history is one index range) and inline (`PLAIN`: no compression, no
//! TOAST; a dense row fills a page), so a moment read costs one heap page. Two layouts
//! ([`Block`]): dense, 6 bytes an id of the block (rank u32 and percentile in hundredths u16,
//! LE; rank 0 for an id not ranked), of which a reader of one influencer takes its 6 with
//! `substring`; or sparse, three pco columns (offset in the block, rank, percentile) read whole,
//! for blocks with under 7/8 of their ids ranked (and never larger than a dense row). With ids
//! as consecutive as Mockstagram's pks that is 6 bytes an influencer-moment, about 4 in the
//! pco columns.
//!
//! Ranks follow the ranking job's rule (`jobs::ranking`): 1 = most followers, ties share a
//! rank; the percentile is the share of the ranked with fewer followers, to the hundredth (as
//! `/latest` answers it).

use sqlx::{PgConnection, PgPool};

use super::{DAY_MS, at, closes, codec::CodecError, snapshot};

/// Ids per row of `rank_blocks`: block `b` holds ids `b * 1330` to `b * 1330 + 1329`. A dense
/// row is then 7,980 bytes, with its header one full 8 KB page (at most 8,164 bytes a row).
pub const BLOCK_IDS: usize = 1330;
/// Bytes a dense row gives each id of its block.
const DENSE_ENTRY: usize = 6;
/// How long the hourly moments are kept.
pub const HOURS_KEPT_MS: i64 = 48 * 3_600_000;
/// Ranked ids from which a block is stored dense: 7/8 of its ids (up to 9.1 bytes an id).
/// Below, the pco columns (about 5 bytes an id) are read whole: at most 7 KB.
const DENSE_FROM: usize = BLOCK_IDS * 7 / 8;
/// The layout version the sparse rows start with.
const SPARSE_FORMAT: u8 = 1;

/// Which moments: each day's close, or each hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Day,
    Hour,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Day => "day",
            Kind::Hour => "hour",
        }
    }
}

/// One influencer's place at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// 1 = most followers; ties share a rank.
    pub rank: u32,
    /// The share of the ranked with fewer followers, in hundredths of a percent (0 to 10,000).
    pub percentile: u16,
}

/// Ranks `(influencer_id, followers)` pairs (each id once): `(id, standing)` by id.
pub fn rank(mut entries: Vec<(i64, i32)>) -> Vec<(i64, Standing)> {
    entries.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let n = entries.len();
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let count = entries[start].1;
        let end = start + entries[start..].partition_point(|e| e.1 == count);
        for &(id, _) in &entries[start..end] {
            let standing = Standing {
                rank: (start + 1) as u32,
                percentile: hundredths(n - end, n),
            };
            out.push((id, standing));
        }
        start = end;
    }
    out.sort_unstable_by_key(|e| e.0);
    out
}

/// `fewer` of `ranked` in hundredths of a percent, rounded (as `/latest` rounds it).
pub fn hundredths(fewer: usize, ranked: usize) -> u16 {
    (fewer as f64 * 10_000.0 / ranked.max(1) as f64).round() as u16
}

/// The block of an id and its offset in it (negative ids too).
pub fn block_of(id: i64) -> (i64, usize) {
    let n = BLOCK_IDS as i64;
    (id.div_euclid(n), id.rem_euclid(n) as usize)
}

/// One stored row of a moment: a block's standings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub block: i64,
    pub dense: bool,
    pub data: Vec<u8>,
}

impl Block {
    /// The row of `block` for its ranked ids `(offset, standing)`, in offset order: dense
    /// when at least [`DENSE_FROM`] of its ids are ranked (a reader then fetches 6 bytes of
    /// it), sparse otherwise.
    fn encode(block: i64, members: &[(usize, Standing)]) -> Self {
        if members.len() < DENSE_FROM {
            let sparse = Self::sparse(block, members);
            // Never larger than the dense row, so that every row fits a page inline.
            if sparse.data.len() < BLOCK_IDS * DENSE_ENTRY {
                return sparse;
            }
        }
        let mut data = vec![0; BLOCK_IDS * DENSE_ENTRY];
        for &(offset, s) in members {
            let at = offset * DENSE_ENTRY;
            data[at..at + 4].copy_from_slice(&s.rank.to_le_bytes());
            data[at + 4..at + 6].copy_from_slice(&s.percentile.to_le_bytes());
        }
        Self {
            block,
            dense: true,
            data,
        }
    }

    fn sparse(block: i64, members: &[(usize, Standing)]) -> Self {
        let offsets: Vec<u32> = members.iter().map(|m| m.0 as u32).collect();
        let ranks: Vec<u32> = members.iter().map(|m| m.1.rank).collect();
        let percentiles: Vec<u32> = members.iter().map(|m| u32::from(m.1.percentile)).collect();
        let mut data = vec![SPARSE_FORMAT];
        snapshot::column(&mut data, &offsets);
        snapshot::column(&mut data, &ranks);
        snapshot::column(&mut data, &percentiles);
        Self {
            block,
            dense: false,
            data,
        }
    }

    /// The blocks of a moment from its standings by id.
    pub fn all(standings: &[(i64, Standing)]) -> Vec<Self> {
        standings
            .chunk_by(|a, b| block_of(a.0).0 == block_of(b.0).0)
            .map(|run| {
                let members: Vec<(usize, Standing)> =
                    run.iter().map(|&(id, s)| (block_of(id).1, s)).collect();
                Self::encode(block_of(run[0].0).0, &members)
            })
            .collect()
    }
}

/// The standing at `offset` from what a reader fetched of a row: the 6 bytes of a dense row
/// (`substring`), or a whole sparse row. `None` when the id is not ranked.
pub fn standing_in(
    dense: bool,
    bytes: &[u8],
    offset: usize,
) -> Result<Option<Standing>, CodecError> {
    if dense {
        let entry: &[u8; DENSE_ENTRY] = bytes.try_into().map_err(|_| CodecError::Truncated)?;
        let rank = u32::from_le_bytes(entry[..4].try_into().expect("4 bytes"));
        let percentile = u16::from_le_bytes(entry[4..].try_into().expect("2 bytes"));
        return Ok((rank != 0).then_some(Standing { rank, percentile }));
    }
    let (&format, mut rest) = bytes.split_first().ok_or(CodecError::Truncated)?;
    if format != SPARSE_FORMAT {
        return Err(CodecError::UnknownFormat(format));
    }
    let offsets: Vec<u32> = snapshot::read_column(&mut rest)?;
    let ranks: Vec<u32> = snapshot::read_column(&mut rest)?;
    let percentiles: Vec<u32> = snapshot::read_column(&mut rest)?;
    if ranks.len() != offsets.len() || percentiles.len() != offsets.len() {
        return Err(CodecError::Corrupt("rank block columns disagree".into()));
    }
    Ok(offsets
        .binary_search(&(offset as u32))
        .ok()
        .map(|i| Standing {
            rank: ranks[i],
            percentile: percentiles[i].min(10_000) as u16,
        }))
}

/// Stores the ranking of `entries` as the moment `kind` at `at_ms` (replacing one stored).
/// Returns how many it ranked.
pub async fn write(
    tx: &mut PgConnection,
    kind: Kind,
    at_ms: i64,
    entries: Vec<(i64, i32)>,
) -> sqlx::Result<usize> {
    let ranked = entries.len();
    let blocks = tokio::task::spawn_blocking(move || Block::all(&rank(entries)))
        .await
        .expect("ranking a moment does not panic");
    sqlx::query!(
        "insert into rank_moments (kind, at, ranked) values ($1, $2, $3)
         on conflict (kind, at) do update set ranked = excluded.ranked",
        kind.as_str(),
        at(at_ms),
        ranked as i32,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "delete from rank_blocks where kind = $1 and at = $2",
        kind.as_str(),
        at(at_ms)
    )
    .execute(&mut *tx)
    .await?;
    // About 2 MB a statement.
    for part in blocks.chunks(256) {
        let numbers: Vec<i64> = part.iter().map(|b| b.block).collect();
        let dense: Vec<bool> = part.iter().map(|b| b.dense).collect();
        let data: Vec<Vec<u8>> = part.iter().map(|b| b.data.clone()).collect();
        sqlx::query!(
            "insert into rank_blocks (kind, at, block, dense, data)
             select $1, $2, b, d, x from unnest($3::bigint[], $4::boolean[], $5::bytea[]) u(b, d, x)",
            kind.as_str(),
            at(at_ms),
            &numbers,
            &dense,
            &data,
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(ranked)
}

/// One influencer's place at one stored moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankAt {
    pub kind: Kind,
    /// The moment: a day's start, or the hour.
    pub at_ms: i64,
    pub standing: Standing,
    /// How many the moment ranked.
    pub ranked: u32,
}

/// Where `id` stood at each moment from `from_ms` to `to_ms` (inclusive) at which it was
/// ranked: the days, then the hours, each in time order.
pub async fn history(
    pool: &PgPool,
    id: i64,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<RankAt>, RanksError> {
    let (block, offset) = block_of(id);
    let rows = sqlx::query!(
        // The rows' bytes are cut down before the join: a join that hashes whole 8 KB rows
        // took most of the statement's time.
        r#"with b as materialized (
             select kind, at, dense,
                    case when dense then substring(data from $2 for 6) else data end as data
             from rank_blocks
             where kind = any('{day,hour}') and block = $1 and at >= $3 and at <= $4)
         select b.kind as "kind!", (extract(epoch from b.at) * 1000)::bigint as "at_ms!",
                m.ranked, b.dense as "dense!", b.data as "data!"
         from b join rank_moments m on m.kind = b.kind and m.at = b.at
         order by b.kind, b.at"#,
        block,
        (offset * DENSE_ENTRY + 1) as i32,
        at(from_ms),
        at(to_ms),
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let standing =
            standing_in(row.dense, &row.data, offset).map_err(|source| RanksError::Damaged {
                moment: at(row.at_ms),
                source,
            })?;
        if let Some(standing) = standing {
            out.push(RankAt {
                kind: if row.kind == "day" {
                    Kind::Day
                } else {
                    Kind::Hour
                },
                at_ms: row.at_ms,
                standing,
                ranked: row.ranked as u32,
            });
        }
    }
    Ok(out)
}

/// Why a rank history cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RanksError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the ranks of {moment} cannot be decoded: {source}")]
    Damaged {
        moment: chrono::DateTime<chrono::Utc>,
        source: CodecError,
    },
}

/// Days whose closes are all written (compaction finished merging them) and not ranked yet,
/// oldest first.
pub async fn days_to_rank(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar!(
        r#"select (extract(epoch from c.day) * 1000)::bigint as "day_ms!"
         from (select distinct day from influencer_day_closes) c
         where not exists (select 1 from rank_moments m where m.kind = 'day' and m.at = c.day)
           and not exists (select 1 from compaction_days d
                           where d.day = c.day and d.merged_at is null)
         order by c.day"#
    )
    .fetch_all(pool)
    .await
}

/// Ranks the day starting at `day_ms` from its closes (read from `pool`, written in `tx`);
/// returns how many it ranked (0 when the day has no closes).
pub async fn rank_day(tx: &mut PgConnection, pool: &PgPool, day_ms: i64) -> anyhow::Result<usize> {
    debug_assert_eq!(day_ms.rem_euclid(DAY_MS), 0);
    let Some(closes) = closes::day(pool, day_ms).await? else {
        return Ok(0);
    };
    let entries: Vec<(i64, i32)> = closes.ids.into_iter().zip(closes.followers).collect();
    Ok(write(tx, Kind::Day, day_ms, entries).await?)
}

/// The hour (epoch ms) to rank now, if it has no moment yet; drops hours past
/// [`HOURS_KEPT_MS`]. Called by the ranking job in its transaction.
pub async fn hour_due(tx: &mut PgConnection) -> sqlx::Result<Option<i64>> {
    sqlx::query!(
        "delete from rank_moments where kind = 'hour' and at < now() - make_interval(secs => $1)",
        (HOURS_KEPT_MS / 1000) as f64
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar!(
        r#"select (extract(epoch from date_trunc('hour', now())) * 1000)::bigint as "hour_ms!"
         where not exists (select 1 from rank_moments
                           where kind = 'hour' and at = date_trunc('hour', now()))"#
    )
    .fetch_optional(&mut *tx)
    .await
}

/// What the rank history takes on disk (heap, TOAST and indexes), after a `VACUUM ANALYZE`
/// (for `bench rank`).
pub async fn bytes_on_disk(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query!("vacuum analyze rank_moments, rank_blocks")
        .execute(pool)
        .await?;
    sqlx::query_scalar!(
        r#"select (pg_total_relation_size('rank_blocks') + pg_total_relation_size('rank_moments'))
                  ::bigint as "bytes!""#
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rank: u32, percentile: u16) -> Standing {
        Standing { rank, percentile }
    }

    #[test]
    fn ties_share_a_rank_and_the_percentile_counts_only_the_smaller() {
        let ranked = rank(vec![(5, 100), (3, 300), (4, 300), (9, 50), (7, 100)]);
        assert_eq!(
            ranked,
            vec![
                (3, s(1, 6_000)),
                (4, s(1, 6_000)),
                (5, s(3, 2_000)),
                (7, s(3, 2_000)),
                (9, s(5, 0)),
            ]
        );
        assert!(rank(vec![]).is_empty());
    }

    /// Every id's standing read back from its block as the reader reads it.
    fn read_back(blocks: &[Block], id: i64) -> Option<Standing> {
        let (block, offset) = block_of(id);
        let row = blocks.iter().find(|b| b.block == block)?;
        let bytes = if row.dense {
            &row.data[offset * DENSE_ENTRY..(offset + 1) * DENSE_ENTRY]
        } else {
            &row.data[..]
        };
        standing_in(row.dense, bytes, offset).unwrap()
    }

    #[test]
    fn dense_and_sparse_blocks_give_back_every_standing() {
        // 1,000,000 pks in a row (dense blocks), and a few ids far apart (sparse ones).
        let mut entries: Vec<(i64, i32)> = (1_000_000..1_003_000_i64)
            .map(|id| (id, ((id * 7_919) % 200_003) as i32))
            .collect();
        entries.extend([(5, 1), (70_000_000_000, 2), (70_000_000_001, 2), (-3, 9)]);
        let standings = rank(entries.clone());
        let blocks = Block::all(&standings);
        assert!(blocks.iter().any(|b| b.dense) && blocks.iter().any(|b| !b.dense));
        let full = blocks
            .iter()
            .find(|b| b.block == block_of(1_001_000).0)
            .unwrap();
        assert!(full.dense);
        assert_eq!(full.data.len(), BLOCK_IDS * DENSE_ENTRY);
        let far = blocks.iter().find(|b| b.block == block_of(5).0).unwrap();
        assert!(!far.dense && far.data.len() < 100, "{}", far.data.len());
        for &(id, standing) in &standings {
            assert_eq!(read_back(&blocks, id), Some(standing), "{id}");
        }
        // Not ranked: in a block of others, and in no block.
        assert_eq!(read_back(&blocks, 6), None);
        assert_eq!(read_back(&blocks, 999_999), None);
        assert_eq!(read_back(&blocks, 3_000_000), None);
        let total: usize = blocks.iter().map(|b| b.data.len()).sum();
        assert!(total <= 6 * entries.len(), "{total} bytes");
    }

    #[test]
    fn damaged_rows_are_errors() {
        assert!(standing_in(true, &[1, 2, 3], 0).is_err());
        assert!(standing_in(false, &[], 0).is_err());
        assert!(matches!(
            standing_in(false, &[7, 0, 0, 0, 0], 0),
            Err(CodecError::UnknownFormat(7))
        ));
    }
}
