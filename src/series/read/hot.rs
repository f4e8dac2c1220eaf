//! Hot points as the read path gets them: packed by PostgreSQL, unpacked here; the one rule
//! for a slot stored twice (the first stored answer wins); merged into segments' points.

use chrono::{DateTime, Utc};

use crate::series::{SeriesPoint, at, codec};

/// A `timestamptz` read as epoch milliseconds, straight from PostgreSQL's binary form (an i64 of
/// microseconds since 2000-01-01 UTC), without building a calendar date: a year at step=1d
/// reads 365 rows of three timestamps, and decoding them through chrono was about a twelfth of
/// the API's CPU in perf (a change wrk could not tell from the box's noise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EpochMs(pub i64);

/// 2000-01-01 00:00 UTC, PostgreSQL's epoch, in Unix epoch milliseconds.
pub(super) const POSTGRES_EPOCH_MS: i64 = 946_684_800_000;

impl sqlx::Type<sqlx::Postgres> for EpochMs {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <DateTime<Utc> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for EpochMs {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        use sqlx::postgres::PgValueFormat;
        Ok(match value.format() {
            PgValueFormat::Binary => {
                let micros = <i64 as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Self(POSTGRES_EPOCH_MS + micros.div_euclid(1000))
            }
            PgValueFormat::Text => Self(
                <DateTime<Utc> as sqlx::Decode<sqlx::Postgres>>::decode(value)?.timestamp_millis(),
            ),
        })
    }
}

/// Raw points of one influencer over `[$2, $3]`, both hot tables, packed in one `bytea`, 16
/// bytes a point ([`unpack_hot`]; null when there are none), in slot order, a slot in both
/// hot tables first as `influencer_metrics` holds it (the first stored answer, which
/// [`first_stored`] keeps; `late` is false there). One value instead of a row a point: the
/// last 24 hours read up to 70 raw minutes, and each row through sqlx's row stream cost more of
/// the API than PostgreSQL spends packing it.
///
/// A slot can be in both hot tables (a re-fetch that reached the sink late, with other
/// counts): the first stored answer wins, and `influencer_metrics` holds the first (the sink
/// writes only later slots there, `series::hot`), as compaction keeps it (a chunk's points go
/// into segments before the late points of its hour, which keep a stored slot's value).
pub(super) async fn fetch(
    connection: &mut sqlx::PgConnection,
    influencer_id: i64,
    (start_ms, end_ms): (i64, i64),
) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar!(
        "select string_agg(timestamptz_send(at) || int4send(follower_count)
                               || int4send(following_count), ''::bytea order by at, late)
         from (select slot as at, follower_count, following_count, false as late
               from influencer_metrics where influencer_id = $1 and slot >= $2 and slot <= $3
               union all
               select slot as at, follower_count, following_count, true as late
               from late_points where influencer_id = $1 and slot >= $2 and slot <= $3) hot",
        influencer_id,
        at(start_ms),
        at(end_ms),
    )
    .fetch_one(connection)
    .await
}

/// Bytes a hot point takes in [`fetch`]: its slot (`timestamptz_send`: microseconds since
/// 2000-01-01 UTC, big-endian), then its two counts (`int4send`).
pub(super) const PACKED_HOT_POINT: usize = 16;

/// The points [`fetch`] packed, in the order PostgreSQL aggregated them.
pub(super) fn unpack_hot(
    packed: &[u8],
) -> Result<impl Iterator<Item = SeriesPoint> + '_, codec::CodecError> {
    if !packed.len().is_multiple_of(PACKED_HOT_POINT) {
        return Err(codec::CodecError::Corrupt(format!(
            "{} bytes of hot points are not a whole number of {PACKED_HOT_POINT}-byte points",
            packed.len()
        )));
    }
    Ok(packed.chunks_exact(PACKED_HOT_POINT).map(|point| {
        let field = |at: usize| -> [u8; 4] { point[at..at + 4].try_into().expect("4 bytes") };
        let micros = i64::from_be_bytes(point[..8].try_into().expect("8 bytes"));
        SeriesPoint {
            slot_ms: POSTGRES_EPOCH_MS + micros.div_euclid(1000),
            follower_count: i32::from_be_bytes(field(8)),
            following_count: i32::from_be_bytes(field(12)),
        }
    }))
}

/// Hot points as [`fetch`] orders them (by slot, the first stored answer of a slot first)
/// with one point a slot: the first stored. The one rule of every read path and of compaction
/// (`store::merge` keeps a stored slot's value): an answer never changes with which copy a read
/// happened to meet first.
pub(super) fn first_stored(hot: &mut Vec<SeriesPoint>) {
    // Stable: of equal slots, the first stored stays first.
    if !hot.is_sorted_by_key(|p| p.slot_ms) {
        hot.sort_by_key(|p| p.slot_ms);
    }
    hot.dedup_by_key(|p| p.slot_ms);
}

/// Merges one influencer's hot points (as [`fetch`] orders them) into its decoded segment
/// points (in slot order); a slot in both keeps the segment's value, a slot in both hot tables
/// the first stored. Only points within `[start, end]` are kept.
pub(super) fn merge(
    cold: Vec<SeriesPoint>,
    mut hot: Vec<SeriesPoint>,
    start_ms: i64,
    end_ms: i64,
) -> Vec<SeriesPoint> {
    let in_range = |p: &SeriesPoint| p.slot_ms >= start_ms && p.slot_ms <= end_ms;
    if hot.is_empty() {
        // Most long ranges: all of it is in segments, kept in place.
        let mut cold = cold;
        cold.retain(in_range);
        return cold;
    }
    first_stored(&mut hot);
    let mut out = Vec::with_capacity(cold.len() + hot.len());
    let mut cold = cold.into_iter().filter(in_range).peekable();
    let mut hot = hot.into_iter().filter(in_range).peekable();
    loop {
        match (cold.peek(), hot.peek()) {
            (Some(c), Some(h)) if h.slot_ms < c.slot_ms => out.extend(hot.next()),
            (Some(c), Some(h)) if h.slot_ms == c.slot_ms => {
                hot.next();
                out.extend(cold.next());
            }
            (Some(_), _) => out.extend(cold.next()),
            (None, Some(_)) => out.extend(hot.next()),
            (None, None) => return out,
        }
    }
}
