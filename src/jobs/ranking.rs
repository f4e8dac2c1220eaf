//! The ranking by followerCount of tracked influencers, once a minute: one snapshot
//! (`ranking_runs.entries`, migration 0012), the tracked influencers sorted by followers, which
//! each API process reads once when it changes and answers `/latest`'s rank and `/top` from
//! ([`Ranking`]). One value written a minute, where rewriting a row per influencer cost the
//! database 8 to 52 s a minute at 1,000,000 (`bench ranking` compares the two).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::{JobOutcome, try_lock};
use crate::series::ranks;

/// Advisory lock key: "ranking" in ASCII.
const LOCK_KEY: i64 = 0x72_616e_6b69_6e67;
/// Advisory lock key of ranking closed days: "rankdays" in ASCII.
const DAYS_LOCK_KEY: i64 = 0x7261_6e6b_6461_7973;

/// Bytes of one entry of the snapshot: follower_count (i32) then influencer_id (i64), LE.
const ENTRY_BYTES: usize = 12;

/// Ranks unless another process is ranking or this minute's ranking is done.
pub async fn refresh_if_due(pool: &PgPool) -> Result<JobOutcome<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !try_lock(&mut tx, LOCK_KEY).await? {
        tx.rollback().await?;
        return Ok(JobOutcome::Busy);
    }
    let done: bool = sqlx::query_scalar!(
r#"select coalesce((select ranked_at >= date_trunc('minute', now()) from ranking_runs), false)
     as "done!""#,
)
    .fetch_one(&mut *tx)
    .await?;
    if done {
        // Ended here, not when dropped: a dropped transaction keeps its lock until the pool
        // next uses the connection.
        tx.rollback().await?;
        return Ok(JobOutcome::AlreadyDone);
    }
    let ranked = rank(&mut tx).await?;
    tx.commit().await?;
    Ok(JobOutcome::Done(ranked))
}

/// Ranks now; returns how many influencers it ranked.
pub async fn refresh(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ranked = rank(&mut tx).await?;
    tx.commit().await?;
    Ok(ranked)
}

/// Reads the tracked influencers' latest followers, sorts them here and writes the snapshot.
async fn rank(tx: &mut Transaction<'_, Postgres>) -> Result<i64, sqlx::Error> {
    let entries: Vec<(i64, i32)> = sqlx::query!(
        "select l.influencer_id, l.follower_count
         from influencer_latest l join influencers i using (influencer_id)
         where i.tracked",
    )
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|row| (row.influencer_id, row.follower_count))
    .collect();
    // The rank history's hourly moment, on the first ranking of each hour.
    if let Some(hour_ms) = ranks::hour_due(tx).await? {
        ranks::write(tx, ranks::Kind::Hour, hour_ms, entries.clone()).await?;
    }
    let bytes = tokio::task::spawn_blocking(move || Ranking::new(Utc::now(), entries).encode())
        .await
        .expect("sorting the ranking does not panic");
    let ranked = (bytes.len() / ENTRY_BYTES) as i64;
    sqlx::query!(
"insert into ranking_runs (id, ranked_at, influencers, entries) values (true, now(), $1, $2)
         on conflict (id) do update set ranked_at = excluded.ranked_at,
             influencers = excluded.influencers, entries = excluded.entries",
ranked,
bytes
)
    .execute(&mut **tx)
    .await?;
    Ok(ranked)
}

/// Ranks every day whose closes compaction has finished writing and that has no ranks yet
/// (the rank history's days), unless another process is at it; returns the days ranked.
pub async fn rank_closed_days(pool: &PgPool) -> anyhow::Result<JobOutcome<usize>> {
    let days = ranks::days_to_rank(pool).await?;
    if days.is_empty() {
        return Ok(JobOutcome::AlreadyDone);
    }
    for (done, &day_ms) in days.iter().enumerate() {
        let mut tx = pool.begin().await?;
        if !try_lock(&mut tx, DAYS_LOCK_KEY).await? {
            tx.rollback().await?;
            return Ok(if done == 0 {
                JobOutcome::Busy
            } else {
                JobOutcome::Done(done)
            });
        }
        let ranked = ranks::rank_day(&mut tx, pool, day_ms).await?;
        tx.commit().await?;
        tracing::info!(day = %crate::series::at(day_ms).date_naive(), ranked, "day ranked");
    }
    Ok(JobOutcome::Done(days.len()))
}

/// Where one influencer stands in a ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    /// 1 = most followers; ties share a rank.
    pub rank: i64,
    /// How many ranked influencers have fewer followers.
    pub fewer: i64,
    /// The followerCount it was ranked by.
    pub follower_count: i32,
}

/// A ranking: influencers by followers, most first, ties by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranking {
    pub ranked_at: DateTime<Utc>,
    counts: Vec<i32>,
    ids: Vec<i64>,
    /// (id, index in `ids`), by id.
    by_id: Vec<(i64, u32)>,
}

/// A snapshot whose length is not a whole number of entries.
#[derive(Debug, thiserror::Error)]
#[error("a ranking snapshot of {0} bytes is not a whole number of {ENTRY_BYTES}-byte entries")]
pub struct Torn(usize);

impl Ranking {
    /// Ranks `(influencer_id, follower_count)` pairs.
    pub fn new(ranked_at: DateTime<Utc>, mut entries: Vec<(i64, i32)>) -> Self {
        entries.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let (ids, counts) = entries.into_iter().unzip();
        Self::indexed(ranked_at, counts, ids)
    }

    fn indexed(ranked_at: DateTime<Utc>, counts: Vec<i32>, ids: Vec<i64>) -> Self {
        let mut by_id: Vec<(i64, u32)> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        by_id.sort_unstable();
        Self {
            ranked_at,
            counts,
            ids,
            by_id,
        }
    }

    /// The snapshot as stored: 12 bytes an entry, in rank order.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.ids.len() * ENTRY_BYTES);
        for (count, id) in self.counts.iter().zip(&self.ids) {
            bytes.extend_from_slice(&count.to_le_bytes());
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        bytes
    }

    /// Reads a stored snapshot (already in rank order).
    pub fn decode(ranked_at: DateTime<Utc>, bytes: &[u8]) -> Result<Self, Torn> {
        if !bytes.len().is_multiple_of(ENTRY_BYTES) {
            return Err(Torn(bytes.len()));
        }
        let (counts, ids) = bytes
            .chunks_exact(ENTRY_BYTES)
            .map(|e| {
                let count = i32::from_le_bytes(e[..4].try_into().expect("4 bytes"));
                let id = i64::from_le_bytes(e[4..].try_into().expect("8 bytes"));
                (count, id)
            })
            .unzip();
        Ok(Self::indexed(ranked_at, counts, ids))
    }

    /// How many influencers are ranked.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The rank at position `i` of the order: one more than those with more followers.
    fn rank_at(&self, i: usize) -> i64 {
        let count = self.counts[i];
        self.counts.partition_point(|&c| c > count) as i64 + 1
    }

    /// The first `n` influencers of the order (ties by id).
    pub(crate) fn top_ids(&self, n: usize) -> &[i64] {
        &self.ids[..n.min(self.ids.len())]
    }

    /// `id`'s place in the order (1 for the first; ties by id); `None` if it is not ranked.
    pub(crate) fn place_of(&self, id: i64) -> Option<usize> {
        let at = self.by_id.binary_search_by_key(&id, |e| e.0).ok()?;
        Some(self.by_id[at].1 as usize + 1)
    }

    /// Where `id` stands; `None` if it is not ranked.
    pub(crate) fn standing(&self, id: i64) -> Option<Standing> {
        let at = self.by_id.binary_search_by_key(&id, |e| e.0).ok()?;
        let i = self.by_id[at].1 as usize;
        let count = self.counts[i];
        let not_fewer = self.counts.partition_point(|&c| c >= count);
        Some(Standing {
            rank: self.rank_at(i),
            fewer: (self.len() - not_fewer) as i64,
            follower_count: count,
        })
    }

    /// Up to `limit` entries after `(rank, id)` in rank order (the leaderboard's keyset):
    /// `(rank, influencer_id, follower_count)`.
    pub fn page(&self, after: (i64, i64), limit: usize) -> Vec<(i64, i64, i32)> {
        let low = self.first_after(after);
        (low..self.len().min(low.saturating_add(limit)))
            .map(|i| (self.rank_at(i), self.ids[i], self.counts[i]))
            .collect()
    }

    /// As [`Self::page`], of only `members` (a watchlist's ids, sorted): its leaderboard, each
    /// entry with its rank among everyone. Members not ranked are left out.
    pub fn page_among(
        &self,
        members: &[i64],
        after: (i64, i64),
        limit: usize,
    ) -> Vec<(i64, i64, i32)> {
        let low = self.first_after(after);
        let mut positions: Vec<usize> = members
            .iter()
            .filter_map(|id| {
                let at = self.by_id.binary_search_by_key(id, |e| e.0).ok()?;
                Some(self.by_id[at].1 as usize).filter(|&i| i >= low)
            })
            .collect();
        positions.sort_unstable();
        positions
            .into_iter()
            .take(limit)
            .map(|i| (self.rank_at(i), self.ids[i], self.counts[i]))
            .collect()
    }

    /// The first position past `(rank, id)`: the pair grows strictly along the order.
    fn first_after(&self, after: (i64, i64)) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = (low + high) / 2;
            if (self.rank_at(mid), self.ids[mid]) <= after {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }
}

/// The latest ranking as an API process keeps it: read again only when a newer one is stored.
#[derive(Clone, Default)]
pub struct RankingCache {
    held: std::sync::Arc<tokio::sync::Mutex<Option<std::sync::Arc<Ranking>>>>,
}

impl RankingCache {
    /// The latest stored ranking (`None` before the first): one small lookup of when it was
    /// made, and a read of the snapshot when that changed.
    pub async fn current(
        &self,
        pool: &PgPool,
    ) -> Result<Option<std::sync::Arc<Ranking>>, sqlx::Error> {
        let stored: Option<DateTime<Utc>> =
            sqlx::query_scalar!("select ranked_at from ranking_runs where entries is not null")
                .fetch_optional(pool)
                .await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let mut held = self.held.lock().await;
        if let Some(ranking) = held.as_ref().filter(|r| r.ranked_at == stored) {
            return Ok(Some(ranking.clone()));
        }
        let stored = sqlx::query!(
            r#"select ranked_at, entries as "entries!"
             from ranking_runs where entries is not null"#
        )
        .fetch_one(pool)
        .await?;
        let (ranked_at, bytes) = (stored.ranked_at, stored.entries);
        let ranking = tokio::task::spawn_blocking(move || Ranking::decode(ranked_at, &bytes))
            .await
            .expect("decoding the ranking does not panic")
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let ranking = std::sync::Arc::new(ranking);
        *held = Some(ranking.clone());
        Ok(Some(ranking))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranking(entries: &[(i64, i32)]) -> Ranking {
        Ranking::new(DateTime::UNIX_EPOCH, entries.to_vec())
    }

    #[test]
    fn ties_share_a_rank_and_fewer_counts_only_the_smaller() {
        let r = ranking(&[(5, 100), (3, 300), (4, 300), (9, 50), (7, 100)]);
        let standing = |id| r.standing(id).map(|s| (s.rank, s.fewer, s.follower_count));
        assert_eq!(standing(3), Some((1, 3, 300)));
        assert_eq!(standing(4), Some((1, 3, 300)));
        assert_eq!(standing(5), Some((3, 1, 100)));
        assert_eq!(standing(7), Some((3, 1, 100)));
        assert_eq!(standing(9), Some((5, 0, 50)));
        assert_eq!(standing(6), None);
    }

    #[test]
    fn pages_follow_rank_then_id_from_the_cursor() {
        let r = ranking(&[(5, 100), (3, 300), (4, 300), (9, 50), (7, 100)]);
        assert_eq!(r.page((0, 0), 2), vec![(1, 3, 300), (1, 4, 300)]);
        assert_eq!(r.page((1, 4), 2), vec![(3, 5, 100), (3, 7, 100)]);
        assert_eq!(r.page((3, 5), 10), vec![(3, 7, 100), (5, 9, 50)]);
        assert_eq!(r.page((5, 9), 10), vec![]);
        assert_eq!(r.page((i64::MAX, 0), 10), vec![]);
        assert_eq!(r.page((0, 0), 0), vec![]);
    }

    #[test]
    fn a_watchlists_page_holds_only_its_members_with_their_ranks_among_everyone() {
        let r = ranking(&[(5, 100), (3, 300), (4, 300), (9, 50), (7, 100)]);
        // 8 is not ranked: left out.
        let members = [4, 7, 8, 9];
        assert_eq!(
            r.page_among(&members, (0, 0), 2),
            vec![(1, 4, 300), (3, 7, 100)]
        );
        assert_eq!(r.page_among(&members, (3, 7), 2), vec![(5, 9, 50)]);
        assert_eq!(r.page_among(&members, (5, 9), 2), vec![]);
        assert_eq!(r.page_among(&[], (0, 0), 2), vec![]);
    }

    #[test]
    fn a_snapshot_reads_back_as_written_and_a_torn_one_is_refused() {
        let r = ranking(&[(5, 100), (3, 300), (2_000_000, i32::MAX), (9, 0)]);
        let bytes = r.encode();
        assert_eq!(bytes.len(), 4 * ENTRY_BYTES);
        assert_eq!(Ranking::decode(r.ranked_at, &bytes).unwrap(), r);
        assert!(Ranking::decode(r.ranked_at, &bytes[1..]).is_err());
        assert!(ranking(&[]).is_empty());
    }
}
