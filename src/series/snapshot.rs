//! Everyone's values at one moment, as one compact byte string: the [`Snapshot`] the movers
//! read, both the day closes compaction writes ([`super::closes`]) and the marks the movers
//! job takes of everyone's latest values (`jobs::movers`).
//!
//! Layout: a format byte ([`FORMAT`]), then four columns, each its byte length (u32, LE) and
//! a pco standalone file: the influencer ids (ascending: their deltas cost almost nothing),
//! the followerCounts, the followingCounts and the times of the values (epoch ms). On the
//! simulator's population about 7 bytes an influencer, where the plain columns are 24.

use pco::{ChunkConfig, standalone};

use super::codec::CodecError;

/// The layout version written first; a reader refuses any other.
const FORMAT: u8 = 1;

/// pco's compression level: as for segments ([`super::codec`]), 5 decodes faster than the
/// default for under 1% more bytes.
const LEVEL: usize = 5;

/// Each influencer's value at a moment, by id (ascending, each once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub ids: Vec<i64>,
    pub followers: Vec<i32>,
    pub following: Vec<i32>,
    /// When each value was taken (its slot), epoch milliseconds.
    pub times_ms: Vec<i64>,
}

impl Snapshot {
    /// A snapshot of `(id, followers, following, time_ms)` rows in any order; an id given
    /// twice keeps its latest time.
    pub fn from_rows(mut rows: Vec<(i64, i32, i32, i64)>) -> Self {
        rows.sort_unstable_by_key(|r| (r.0, std::cmp::Reverse(r.3)));
        rows.dedup_by_key(|r| r.0);
        let mut s = Self::with_capacity(rows.len());
        for (id, followers, following, time_ms) in rows {
            s.push(id, followers, following, time_ms);
        }
        s
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            ids: Vec::with_capacity(n),
            followers: Vec::with_capacity(n),
            following: Vec::with_capacity(n),
            times_ms: Vec::with_capacity(n),
        }
    }

    /// Appends one influencer's value; ids must come in ascending order.
    pub fn push(&mut self, id: i64, followers: i32, following: i32, time_ms: i64) {
        debug_assert!(self.ids.last().is_none_or(|&last| last < id));
        self.ids.push(id);
        self.followers.push(followers);
        self.following.push(following);
        self.times_ms.push(time_ms);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Where `id` is, if it is here.
    pub fn position(&self, id: i64) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    /// Appends `other`, whose ids all come after this one's (snapshots written in parts).
    pub fn extend(&mut self, other: Snapshot) {
        debug_assert!(
            self.ids
                .last()
                .zip(other.ids.first())
                .is_none_or(|(a, b)| a < b)
        );
        self.ids.extend(other.ids);
        self.followers.extend(other.followers);
        self.following.extend(other.following);
        self.times_ms.extend(other.times_ms);
    }

    /// The snapshot as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        column(&mut out, &self.ids);
        column(&mut out, &self.followers);
        column(&mut out, &self.following);
        column(&mut out, &self.times_ms);
        out
    }

    /// Reads a stored snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (&format, mut rest) = bytes.split_first().ok_or(CodecError::Truncated)?;
        if format != FORMAT {
            return Err(CodecError::UnknownFormat(format));
        }
        let ids: Vec<i64> = read_column(&mut rest)?;
        let followers: Vec<i32> = read_column(&mut rest)?;
        let following: Vec<i32> = read_column(&mut rest)?;
        let times_ms: Vec<i64> = read_column(&mut rest)?;
        if followers.len() != ids.len()
            || following.len() != ids.len()
            || times_ms.len() != ids.len()
        {
            return Err(CodecError::Ragged {
                slots: ids.len(),
                followers: followers.len(),
                following: following.len(),
            });
        }
        if !ids.is_sorted_by(|a, b| a < b) {
            return Err(CodecError::Corrupt("snapshot ids out of order".into()));
        }
        Ok(Self {
            ids,
            followers,
            following,
            times_ms,
        })
    }
}

pub(super) fn column<T: pco::data_types::Number>(out: &mut Vec<u8>, values: &[T]) {
    let bytes = if values.is_empty() {
        Vec::new()
    } else {
        let config = ChunkConfig::default().with_compression_level(LEVEL);
        standalone::simple_compress(values, &config).expect("pco compresses any numbers")
    };
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes);
}

pub(super) fn read_column<T: pco::data_types::Number>(
    rest: &mut &[u8],
) -> Result<Vec<T>, CodecError> {
    let (len, tail) = rest.split_first_chunk::<4>().ok_or(CodecError::Truncated)?;
    let len = u32::from_le_bytes(*len) as usize;
    if tail.len() < len {
        return Err(CodecError::Truncated);
    }
    let (bytes, tail) = tail.split_at(len);
    *rest = tail;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    standalone::simple_decompress(bytes).map_err(|e| CodecError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let rows: Vec<(i64, i32, i32, i64)> = (0..5_000)
            .map(|i| {
                (
                    1_000_000 + i * 3,
                    (i as i32 * 7_919) % 200_000,
                    (i as i32) % 97,
                    1_700_000_000_000 + i * 17,
                )
            })
            .rev()
            .collect();
        let s = Snapshot::from_rows(rows);
        assert_eq!(s.len(), 5_000);
        assert!(s.ids.is_sorted());
        let bytes = s.encode();
        assert!(
            bytes.len() < 5_000 * 10,
            "{} bytes for 5,000 influencers",
            bytes.len()
        );
        assert_eq!(Snapshot::decode(&bytes).unwrap(), s);
        assert_eq!(s.position(1_000_003), Some(1));
        assert_eq!(s.position(1_000_004), None);
    }

    #[test]
    fn an_id_given_twice_keeps_its_latest_value() {
        let s = Snapshot::from_rows(vec![(5, 10, 1, 100), (5, 20, 2, 200), (4, 1, 1, 50)]);
        assert_eq!(s.ids, vec![4, 5]);
        assert_eq!(s.followers, vec![1, 20]);
        assert_eq!(s.times_ms, vec![50, 200]);
    }

    #[test]
    fn an_empty_snapshot_and_damaged_ones() {
        let empty = Snapshot::default();
        assert_eq!(Snapshot::decode(&empty.encode()).unwrap(), empty);
        let bytes = Snapshot::from_rows(vec![(1, 2, 3, 4), (2, 3, 4, 5)]).encode();
        assert!(matches!(
            Snapshot::decode(&bytes[..bytes.len() - 1]),
            Err(CodecError::Truncated | CodecError::Corrupt(_))
        ));
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(
            Snapshot::decode(&other),
            Err(CodecError::UnknownFormat(9))
        ));
        assert!(Snapshot::decode(&[]).is_err());
    }
}
