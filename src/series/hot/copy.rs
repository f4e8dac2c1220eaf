//! Rows of `influencer_metrics` ([`Point`]s) in PostgreSQL's binary `COPY` format, both ways:
//! the sink writes points with it, compaction reads a closed chunk back with it.
//!
//! The format: a signature, flags and a header extension; then per row a field count (5) and
//! each field as its length and its bytes (int8, timestamptz, timestamptz, int4, int4; a
//! timestamptz is microseconds since 2000-01-01); then a trailer (a field count of -1).

use crate::model::Point;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_US: i64 = 946_684_800_000_000;
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// The fields of a row, by their lengths.
const FIELD_LENGTHS: [i32; 5] = [8, 8, 8, 4, 4];
/// A row's bytes: its field count, then each field's length and value.
const ROW_BYTES: usize = 2 + 5 * 4 + 8 + 8 + 8 + 4 + 4;

/// Points in the binary COPY format, with the header and the trailer.
pub fn encode(points: impl Iterator<Item = Point>) -> Vec<u8> {
    let (lower, _) = points.size_hint();
    let mut out = Vec::with_capacity(19 + lower * ROW_BYTES + 2);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for p in points {
        out.extend_from_slice(&5i16.to_be_bytes());
        for bytes in [
            p.pk.to_be_bytes(),
            (p.slot_ms * 1000 - POSTGRES_EPOCH_US).to_be_bytes(),
            (p.fetched_ms * 1000 - POSTGRES_EPOCH_US).to_be_bytes(),
        ] {
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        for count in [p.follower_count, p.following_count] {
            out.extend_from_slice(&4i32.to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Output of `COPY (select influencer_id, slot, fetched_at, follower_count, following_count
/// ...) to stdout (format binary)` that is not what [`Decoder`] reads.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyFormatError {
    #[error("the COPY output does not start with PostgreSQL's binary signature")]
    Signature,
    #[error("a COPY row has {0} fields, not the 5 of influencer_metrics")]
    FieldCount(i16),
    #[error("COPY field {field} is {length} bytes long, not {expected} (or it is null)")]
    FieldLength {
        field: usize,
        length: i32,
        expected: i32,
    },
    #[error("the COPY output goes on after its trailer")]
    AfterTrailer,
    #[error("the COPY output ended before its trailer")]
    Truncated,
}

/// Reads points from binary COPY output as it arrives, in pieces of any size (sqlx hands over
/// one protocol message at a time: a row each).
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of an unfinished header or row carried to the next piece.
    carry: Vec<u8>,
    header_read: bool,
    finished: bool,
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}
fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}
fn epoch_ms(postgres_us: i64) -> i64 {
    (postgres_us + POSTGRES_EPOCH_US).div_euclid(1000)
}

impl Decoder {
    /// Takes the next piece of the output; appends the rows it completes to `out`.
    pub fn feed(&mut self, piece: &[u8], out: &mut Vec<Point>) -> Result<(), CopyFormatError> {
        if self.carry.is_empty() {
            let used = self.parse(piece, out)?;
            self.carry.extend_from_slice(&piece[used..]);
        } else {
            let mut carry = std::mem::take(&mut self.carry);
            carry.extend_from_slice(piece);
            let used = self.parse(&carry, out)?;
            carry.drain(..used);
            self.carry = carry;
        }
        Ok(())
    }

    /// Checks that the output ended with its trailer.
    pub fn finish(self) -> Result<(), CopyFormatError> {
        if self.finished && self.carry.is_empty() {
            Ok(())
        } else {
            Err(CopyFormatError::Truncated)
        }
    }

    /// Reads what is complete in `bytes`; returns how many bytes it used.
    fn parse(&mut self, bytes: &[u8], out: &mut Vec<Point>) -> Result<usize, CopyFormatError> {
        let mut at = 0;
        if !self.header_read {
            if bytes.len() < 19 {
                return Ok(0);
            }
            if &bytes[..11] != SIGNATURE {
                return Err(CopyFormatError::Signature);
            }
            let extension = be_i32(&bytes[15..19]).max(0) as usize;
            if bytes.len() < 19 + extension {
                return Ok(0);
            }
            at = 19 + extension;
            self.header_read = true;
        }
        while at + 2 <= bytes.len() {
            if self.finished {
                return Err(CopyFormatError::AfterTrailer);
            }
            let fields = be_i16(&bytes[at..]);
            if fields == -1 {
                self.finished = true;
                at += 2;
                continue;
            }
            if fields != 5 {
                return Err(CopyFormatError::FieldCount(fields));
            }
            if at + ROW_BYTES > bytes.len() {
                break;
            }
            let row = &bytes[at + 2..at + ROW_BYTES];
            let mut values = [0usize; 5];
            let mut offset = 0;
            for (field, expected) in FIELD_LENGTHS.into_iter().enumerate() {
                let length = be_i32(&row[offset..]);
                if length != expected {
                    return Err(CopyFormatError::FieldLength {
                        field,
                        length,
                        expected,
                    });
                }
                values[field] = offset + 4;
                offset += 4 + expected as usize;
            }
            out.push(Point {
                pk: be_i64(&row[values[0]..]),
                slot_ms: epoch_ms(be_i64(&row[values[1]..])),
                fetched_ms: epoch_ms(be_i64(&row[values[2]..])),
                follower_count: be_i32(&row[values[3]..]),
                following_count: be_i32(&row[values[4]..]),
            });
            at += ROW_BYTES;
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(pk: i64, slot_ms: i64) -> Point {
        Point {
            pk,
            slot_ms,
            fetched_ms: slot_ms + 250,
            follower_count: 57_166,
            following_count: 1_328,
        }
    }

    #[test]
    fn encode_writes_the_header_one_tuple_per_point_and_the_trailer() {
        let p = point(1_000_001, 946_684_800_000 + 1500); // 2000-01-01 00:00:01.5 UTC
        let bytes = encode([p, p].into_iter());
        assert_eq!(&bytes[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(bytes.len(), 19 + 2 * ROW_BYTES + 2);
        let tuple = &bytes[19..19 + ROW_BYTES];
        assert_eq!(be_i16(tuple), 5);
        assert_eq!(be_i32(&tuple[2..]), 8);
        assert_eq!(be_i64(&tuple[6..]), 1_000_001);
        // Microseconds since 2000-01-01.
        assert_eq!(be_i64(&tuple[18..]), 1_500_000);
        assert_eq!(be_i64(&tuple[30..]), 1_750_000);
        assert_eq!(be_i32(&tuple[42..]), 57_166);
        assert_eq!(be_i32(&tuple[50..]), 1_328);
        assert_eq!(&bytes[bytes.len() - 2..], &(-1i16).to_be_bytes());
    }

    #[test]
    fn decode_reads_back_what_encode_wrote_whatever_the_pieces() {
        let points: Vec<Point> = (0..50)
            .map(|i| point(1_000_000 + i, 1_767_225_600_000 + i * 60_000 - 7))
            .collect();
        let bytes = encode(points.iter().copied());
        for piece in [1, 2, 7, ROW_BYTES, 100, bytes.len()] {
            let mut decoder = Decoder::default();
            let mut out = Vec::new();
            for chunk in bytes.chunks(piece) {
                decoder.feed(chunk, &mut out).unwrap();
            }
            decoder.finish().unwrap();
            assert_eq!(out, points, "pieces of {piece} bytes");
        }
    }

    #[test]
    fn decode_refuses_what_is_not_a_row_of_influencer_metrics() {
        let bytes = encode([point(1, 1_000)].into_iter());
        let decode = |bytes: &[u8]| {
            let mut decoder = Decoder::default();
            decoder.feed(bytes, &mut Vec::new())?;
            decoder.finish()
        };
        assert_eq!(
            decode(&bytes[..bytes.len() - 2]),
            Err(CopyFormatError::Truncated)
        );
        let mut other = bytes.clone();
        other[0] = b'X';
        assert_eq!(decode(&other), Err(CopyFormatError::Signature));
        let mut fields = bytes.clone();
        fields[19..21].copy_from_slice(&4i16.to_be_bytes());
        assert_eq!(decode(&fields), Err(CopyFormatError::FieldCount(4)));
        let mut null = bytes.clone();
        null[19 + 2 + 12..19 + 2 + 16].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            decode(&null),
            Err(CopyFormatError::FieldLength {
                field: 1,
                length: -1,
                expected: 8
            })
        );
        let mut longer = bytes.clone();
        longer.extend_from_slice(&bytes[19..19 + ROW_BYTES]);
        assert_eq!(decode(&longer), Err(CopyFormatError::AfterTrailer));
    }
}
