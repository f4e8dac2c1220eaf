//! The cold tier's encoding: the points of one influencer over one closed period (an hour or a
//! day) as one compact byte string.
//!
//! Three columns, each compressed on its own by pco (pcodec), which picks a delta order and
//! entropy-codes what is left: the slots (epoch milliseconds; on a regular grid their deltas are
//! all equal and cost almost nothing), the followerCount and the followingCount. On the
//! simulator's random walk a day costs about 3.1 bytes a point and an hour about 3.75 (the walk's
//! entropy is 3.0; `bench storage` measures it).
//!
//! Layout (format 2, written since 2026-12-01): a format byte ([`FORMAT`]); the slots' layout;
//! the number of points (varint); for a regular grid (every poll of the period stored, the usual
//! case) its first slot (zigzag varint) and step (varint), which cost 9 bytes where pco's
//! metadata for the column would cost 40; then each pco column (the slots if listed, the
//! followers, the following) as pco's "wrapped" form: the column's metadata and its one page,
//! with none of the standalone form's file header, per-column counts and footer, which are
//! known here (19 bytes of an hour's 232, 8% of it). The pco format version, which the wrapped
//! form writes once per file, is fixed by the format byte ([`PCO_HEADER`]).
//!
//! Format 1 (the standalone form: first slot as 8 bytes, then one pco standalone file) is still
//! read: segments written before are not rewritten.

use pco::{ChunkConfig, DeltaSpec, PagingSpec, standalone, wrapped};

/// A stored point: the slot and both counts (what the API answers; `fetched_at` is not kept in
/// the cold tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesPoint {
    /// The slot, epoch milliseconds.
    pub slot_ms: i64,
    pub follower_count: i32,
    pub following_count: i32,
}

/// The layout version written first; a reader refuses any but this and [`FORMAT_STANDALONE`].
pub(crate) const FORMAT: u8 = 2;

/// The first layout (pco's standalone form), still read.
const FORMAT_STANDALONE: u8 = 1;

/// The header pco's wrapped form writes for its format version 4.1 (pco 1.1), which every
/// format-2 segment was written in. A pco release that writes another version needs a new
/// [`FORMAT`] (a unit test compares this with what pco writes).
const PCO_HEADER: [u8; 2] = [4, 1];

/// The most points a segment may hold (a day at one poll a second is 86,400): [`encode`]
/// refuses more, and a decoder reading a larger count takes it for damage, not an allocation of
/// gigabytes. `config::MIN_POLL_INTERVAL` keeps a day's slots under it.
pub(crate) const MAX_POINTS: u64 = 1 << 20;

/// pco's compression level. Its default, 8, builds bigger tables for each column, which a
/// reader rebuilds for every segment it decodes: on the simulator's walk, 30 days decoded in
/// 521 µs at level 8 and 328 µs at level 5, for 3.095 and 3.109 bytes a point (levels 0-4 were
/// no faster and up to 8% bigger; higher levels than 8 gained under 1%). A month at step=1h
/// decodes 30 day segments per request.
const LEVEL: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(
        "segment format {0} is not known (this build reads formats {FORMAT_STANDALONE} and {FORMAT})"
    )]
    UnknownFormat(u8),
    #[error("segment is truncated")]
    Truncated,
    #[error(
        "segment columns disagree: {slots} slots, {followers} followers, {following} following"
    )]
    Ragged {
        slots: usize,
        followers: usize,
        following: usize,
    },
    #[error("segment column is corrupt: {0}")]
    Corrupt(String),
    #[error("a segment holds 1 to {MAX_POINTS} points, not {0}")]
    Unencodable(usize),
}

/// How the slots are stored: a regular grid (the usual case: every poll of the period
/// stored) as its first slot and its step, anything else as a pco column.
const GRID: u8 = 0;
const LISTED: u8 = 1;

/// The step of `slots` if they form a regular grid (one slot is a grid of step 0).
fn grid_step(slots: &[i64]) -> Option<i64> {
    let step = match slots {
        [_] => 0,
        [a, b, ..] if b > a => b - a,
        _ => return None,
    };
    slots
        .windows(2)
        .all(|w| w[1] - w[0] == step)
        .then_some(step)
}

/// The delta order pco uses for a column (0: the values, 1: their differences, 2: the
/// differences of those), chosen by which residuals spread least (mean absolute deviation).
/// pco's own search (`DeltaSpec::Auto`) compresses trial samples for each order and for its
/// lookback encoding: about 70 µs of a 60-point segment's 84, for the same bytes (a random
/// walk is order 1, a steady trend with noise also 1, noise about a level 0).
fn delta_order(values: impl Iterator<Item = i64>) -> usize {
    let mut residuals: Vec<i64> = values.collect();
    let mut best = (spread(&residuals), 0);
    for order in 1..=2 {
        if residuals.len() < 2 {
            break;
        }
        residuals = residuals
            .windows(2)
            .map(|w| w[1].wrapping_sub(w[0]))
            .collect();
        let spread = spread(&residuals);
        if spread < best.0 {
            best = (spread, order);
        }
    }
    best.1
}

/// Mean absolute deviation from the mean.
fn spread(values: &[i64]) -> f64 {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    values.iter().map(|&v| (v as f64 - mean).abs()).sum::<f64>() / n
}

/// One page for the whole column (a segment is read whole).
fn config(order: usize, n: usize) -> ChunkConfig {
    ChunkConfig::default()
        .with_compression_level(LEVEL)
        .with_delta_spec(DeltaSpec::TryConsecutive(order))
        .with_paging_spec(PagingSpec::EqualPagesUpTo(n.max(1)))
}

/// Encodes points (in slot order), in format 2: from 1 to [`MAX_POINTS`] of them, as a
/// decoder accepts (anything else is [`CodecError::Unencodable`], never a segment that cannot
/// be read back).
pub fn encode(points: &[SeriesPoint]) -> Result<Vec<u8>, CodecError> {
    let n = points.len();
    if n == 0 || n as u64 > MAX_POINTS {
        return Err(CodecError::Unencodable(n));
    }
    let slots: Vec<i64> = points.iter().map(|p| p.slot_ms).collect();
    let followers: Vec<i32> = points.iter().map(|p| p.follower_count).collect();
    let following: Vec<i32> = points.iter().map(|p| p.following_count).collect();
    let mut out = Vec::with_capacity(32 + n * 4);
    out.push(FORMAT);
    let grid = grid_step(&slots);
    out.push(if grid.is_some() { GRID } else { LISTED });
    varint(&mut out, n as u64);
    if let Some(step) = grid {
        varint(&mut out, zigzag(slots[0]));
        varint(&mut out, step as u64);
    }
    fn write_column<T: pco::data_types::Number>(
        out: &mut Vec<u8>,
        file: &wrapped::FileCompressor,
        values: &[T],
        order: usize,
    ) -> pco::errors::PcoResult<()> {
        let mut chunk = file.chunk_compressor(values, &config(order, values.len()))?;
        chunk.write_meta(&mut *out)?;
        chunk.write_page(0, &mut *out)?;
        Ok(())
    }
    // Writing to a Vec cannot fail, and this configuration is valid: pco has no other error.
    let written = (|| -> pco::errors::PcoResult<()> {
        let file = wrapped::FileCompressor::default();
        if grid.is_none() {
            write_column(&mut out, &file, &slots, delta_order(slots.iter().copied()))?;
        }
        for column in [&followers, &following] {
            let order = delta_order(column.iter().map(|&v| i64::from(v)));
            write_column(&mut out, &file, column, order)?;
        }
        Ok(())
    })();
    written.expect("pco writes a valid configuration to memory");
    Ok(out)
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(src: &mut &[u8]) -> Result<u64, CodecError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = src.split_first().ok_or(CodecError::Truncated)?;
        *src = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CodecError::Corrupt("a varint is too long".into()))
}

/// A column of a format-1 segment (a chunk of a standalone file).
fn standalone_column<T: pco::data_types::Number>(
    file: &standalone::FileDecompressor,
    src: &mut &[u8],
) -> Result<Vec<T>, CodecError> {
    let corrupt = |e: pco::errors::PcoError| CodecError::Corrupt(e.to_string());
    match file.chunk_decompressor::<T, _>(*src).map_err(corrupt)? {
        standalone::DecompressorItem::Chunk(mut chunk) => {
            let mut values = vec![T::default(); chunk.n()];
            let progress = chunk.read(&mut values).map_err(corrupt)?;
            if !progress.finished {
                return Err(CodecError::Truncated);
            }
            *src = chunk.into_src();
            Ok(values)
        }
        standalone::DecompressorItem::EndOfData(_) => Err(CodecError::Truncated),
    }
}

/// Decodes what [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<Vec<SeriesPoint>, CodecError> {
    let mut points = Vec::new();
    decode_into(bytes, &mut points)?;
    Ok(points)
}

/// Decodes what [`encode`] wrote, appending the points to `out` (a range decodes its segments
/// one after the other into one list, with no list per segment copied into it). On an error
/// `out` is left as it was.
pub fn decode_into(bytes: &[u8], out: &mut Vec<SeriesPoint>) -> Result<(), CodecError> {
    let columns = decode_columns(bytes)?;
    out.extend((0..columns.len()).map(|i| columns.point(i)));
    Ok(())
}

/// Decodes what [`encode`] wrote into its columns, not zipped into points: a bucketed read
/// folds runs of them as they are.
pub(crate) fn decode_columns(bytes: &[u8]) -> Result<Columns, CodecError> {
    let [format, layout, rest @ ..] = bytes else {
        return Err(CodecError::Truncated);
    };
    let columns = match *format {
        FORMAT => wrapped_columns,
        FORMAT_STANDALONE => standalone_columns,
        other => return Err(CodecError::UnknownFormat(other)),
    };
    let grid = match *layout {
        GRID => true,
        LISTED => false,
        other => return Err(CodecError::Corrupt(format!("unknown slot layout {other}"))),
    };
    let columns = columns(rest, grid)?;
    let n = match &columns.slots {
        Slots::Listed(listed) => listed.len(),
        Slots::Grid { .. } => columns.followers.len(),
    };
    if n != columns.followers.len() || n != columns.following.len() {
        return Err(CodecError::Ragged {
            slots: n,
            followers: columns.followers.len(),
            following: columns.following.len(),
        });
    }
    Ok(columns)
}

/// A segment's points as decoded columns, in slot order: point `i` is at [`Self::slot`]`(i)`
/// with `followers[i]` and `following[i]` (the three are as long as each other).
#[derive(Debug)]
pub struct Columns {
    slots: Slots,
    followers: Vec<i32>,
    following: Vec<i32>,
}

#[derive(Debug)]
enum Slots {
    /// `first + i·step`: a segment without gaps.
    Grid {
        first: i64,
        step: i64,
    },
    Listed(Vec<i64>),
}

impl Columns {
    pub fn len(&self) -> usize {
        self.followers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.followers.is_empty()
    }

    pub fn slot(&self, i: usize) -> i64 {
        match &self.slots {
            Slots::Grid { first, step } => first.saturating_add(step.saturating_mul(i as i64)),
            Slots::Listed(listed) => listed[i],
        }
    }

    pub fn point(&self, i: usize) -> SeriesPoint {
        SeriesPoint {
            slot_ms: self.slot(i),
            follower_count: self.followers[i],
            following_count: self.following[i],
        }
    }

    /// The index of the first point at or after `slot_ms` (`len()` if none is).
    pub(crate) fn first_at_or_after(&self, slot_ms: i64) -> usize {
        match &self.slots {
            Slots::Grid { first, step } => {
                if slot_ms <= *first {
                    return 0;
                }
                let step = i128::from((*step).max(1));
                let steps = (i128::from(slot_ms) - i128::from(*first) + step - 1) / step;
                steps.min(self.len() as i128) as usize
            }
            Slots::Listed(listed) => listed.partition_point(|&s| s < slot_ms),
        }
    }

    /// The counts of points `range`: followers and following.
    pub fn counts(&self, range: std::ops::Range<usize>) -> (&[i32], &[i32]) {
        (&self.followers[range.clone()], &self.following[range])
    }
}

/// The columns of a format-2 segment (after its format and layout bytes).
fn wrapped_columns(mut src: &[u8], grid: bool) -> Result<Columns, CodecError> {
    let n = read_varint(&mut src)?;
    if n == 0 || n > MAX_POINTS {
        return Err(CodecError::Corrupt(format!("segment claims {n} points")));
    }
    let n = n as usize;
    let grid = match grid {
        true => {
            let first = unzigzag(read_varint(&mut src)?);
            Some((first, read_varint(&mut src)? as i64))
        }
        false => None,
    };
    let (file, _) = wrapped::FileDecompressor::new(&PCO_HEADER[..])
        .map_err(|e| CodecError::Corrupt(e.to_string()))?;
    let slots = match grid {
        Some((first, step)) => Slots::Grid { first, step },
        None => Slots::Listed(wrapped_column(&file, &mut src, n)?),
    };
    let followers = wrapped_column(&file, &mut src, n)?;
    let following = wrapped_column(&file, &mut src, n)?;
    if !src.is_empty() {
        return Err(CodecError::Corrupt(format!(
            "{} bytes after the last column",
            src.len()
        )));
    }
    Ok(Columns {
        slots,
        followers,
        following,
    })
}

/// A column of a format-2 segment: pco's chunk metadata and one page of `n` values.
fn wrapped_column<T: pco::data_types::Number>(
    file: &wrapped::FileDecompressor,
    src: &mut &[u8],
    n: usize,
) -> Result<Vec<T>, CodecError> {
    let corrupt = |e: pco::errors::PcoError| CodecError::Corrupt(e.to_string());
    let (mut chunk, rest) = file.chunk_decompressor::<T, _>(*src).map_err(corrupt)?;
    let mut page = chunk.page_decompressor(rest, n).map_err(corrupt)?;
    let mut values = vec![T::default(); n];
    let progress = page.read(&mut values).map_err(corrupt)?;
    if !progress.finished {
        return Err(CodecError::Truncated);
    }
    *src = page.into_src();
    Ok(values)
}

/// The columns of a format-1 segment (after its format and layout bytes).
fn standalone_columns(mut src: &[u8], grid: bool) -> Result<Columns, CodecError> {
    let grid = match grid {
        true => {
            let (first, rest) = src.split_first_chunk::<8>().ok_or(CodecError::Truncated)?;
            src = rest;
            let first = i64::from_le_bytes(*first);
            Some((first, read_varint(&mut src)? as i64))
        }
        false => None,
    };
    let (file, mut src) =
        standalone::FileDecompressor::new(src).map_err(|e| CodecError::Corrupt(e.to_string()))?;
    let slots = match grid {
        Some((first, step)) => Slots::Grid { first, step },
        None => Slots::Listed(standalone_column(&file, &mut src)?),
    };
    let followers: Vec<i32> = standalone_column(&file, &mut src)?;
    let following: Vec<i32> = standalone_column(&file, &mut src)?;
    match file.chunk_decompressor::<i32, _>(src) {
        Ok(standalone::DecompressorItem::EndOfData(_)) => {}
        Ok(standalone::DecompressorItem::Chunk(_)) => {
            return Err(CodecError::Corrupt(
                "more columns than a segment has".into(),
            ));
        }
        Err(_) => return Err(CodecError::Truncated),
    }
    Ok(Columns {
        slots,
        followers,
        following,
    })
}

#[cfg(test)]
mod tests;
