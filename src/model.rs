//! Shared types every stage uses: the influencer id's bounds, a stored point, a failed poll,
//! the follower ratio's exact rounding, and the stable hash behind the schedule's offsets.
//!
//! Nothing here touches the broker, the database or the network.

use serde::{Deserialize, Serialize};

/// The largest pk accepted: the upstream is a JavaScript server, whose numbers are exact up to
/// 2^53 - 1.
pub(crate) const MAX_PK: i64 = 9_007_199_254_740_991;

/// One stored sample: `pk`'s counts at `slot_ms`, fetched at `fetched_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(i64, i64, i64, i32, i32)", into = "(i64, i64, i64, i32, i32)")]
pub struct Point {
    pub pk: i64,
    pub slot_ms: i64,
    pub fetched_ms: i64,
    pub follower_count: i32,
    pub following_count: i32,
}

impl From<(i64, i64, i64, i32, i32)> for Point {
    fn from(
        (pk, slot_ms, fetched_ms, follower_count, following_count): (i64, i64, i64, i32, i32),
    ) -> Self {
        Self {
            pk,
            slot_ms,
            fetched_ms,
            follower_count,
            following_count,
        }
    }
}

impl From<Point> for (i64, i64, i64, i32, i32) {
    fn from(p: Point) -> Self {
        (
            p.pk,
            p.slot_ms,
            p.fetched_ms,
            p.follower_count,
            p.following_count,
        )
    }
}

/// followerCount ÷ followingCount rounded to 2 decimals, half away from zero, as PostgreSQL's
/// `round(numeric, 2)` does; `None` when nobody is followed. Computed on integers, so a ratio
/// such as 23/40 = 0.575 rounds to 0.58 (floating-point division would give 0.57499… and 0.57).
pub fn follower_ratio(follower_count: i32, following_count: i32) -> Option<f64> {
    if following_count <= 0 {
        return None;
    }
    let (hundredfold, divisor) = (i64::from(follower_count) * 100, i64::from(following_count));
    let magnitude = (2 * hundredfold.abs() + divisor) / (2 * divisor);
    let hundredths = if hundredfold < 0 {
        -magnitude
    } else {
        magnitude
    };
    // Both are exact in an f64, and IEEE division rounds once: the nearest double to the
    // decimal, as numeric's conversion to float8 gives.
    Some(hundredths as f64 / 100.0)
}

/// A poll that gave no point, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub pk: i64,
    pub slot_ms: i64,
    pub failed_ms: i64,
    pub reason: String,
}

/// An influencer the upstream does not know: it leaves the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    pub pk: i64,
    pub reason: String,
    /// When the poller decided it (epoch ms): a decision older than the influencer's current
    /// tracking state (tracked again since) changes nothing. Absent in messages of versions
    /// before it: then the time the sink records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_ms: Option<i64>,
}

/// SplitMix64's finaliser: a fast, well-mixed hash of one u64 (the schedule's offsets and the
/// simulator's deterministic draws).
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_ratio_rounds_half_away_from_zero_exactly() {
        assert_eq!(follower_ratio(57_166, 1_328), Some(43.05));
        assert_eq!(follower_ratio(1, 3), Some(0.33));
        assert_eq!(follower_ratio(2, 3), Some(0.67));
        assert_eq!(follower_ratio(1, 8), Some(0.13), "0.125 rounds up");
        // 0.575 is 0.57499… as a double: dividing in floating point rounds it down.
        assert_eq!(follower_ratio(23, 40), Some(0.58));
        assert_eq!(follower_ratio(41, 40), Some(1.03));
        assert_eq!(follower_ratio(0, 7), Some(0.0));
        assert_eq!(follower_ratio(i32::MAX, 1), Some(f64::from(i32::MAX)));
        assert_eq!(follower_ratio(5, 0), None, "nobody followed: no ratio");
    }
}
