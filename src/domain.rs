//! What travels from the fetchers to the sink: the outcome of polling one schedule batch.
//!
//! One [`Outcomes`] message per polled batch goes through the point queue. Besides the points
//! it carries the polls that failed (so a gap has a reason) and the influencers the upstream
//! no longer knows (so the registry records why they left), all written by the sink: the
//! fetchers never need the database.

use serde::{Deserialize, Serialize};

/// The largest pk accepted: the upstream is a JavaScript server, whose numbers are exact up to
/// 2^53 - 1.
pub const MAX_PK: i64 = 9_007_199_254_740_991;

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
}

/// The point-queue message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    #[serde(default)]
    pub points: Vec<Point>,
    #[serde(default)]
    pub failures: Vec<Failure>,
    #[serde(default)]
    pub gone: Vec<Gone>,
}

/// Why a point-queue message cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid outcomes message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid point for pk {pk}: {what}")]
    Invalid { pk: i64, what: &'static str },
}

impl Outcomes {
    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.failures.is_empty() && self.gone.is_empty()
    }

    /// Rows this message writes.
    pub fn len(&self) -> usize {
        self.points.len() + self.failures.len() + self.gone.len()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("outcomes serialise")
    }

    /// Decodes and checks a message: anything that passes can be written.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outcomes: Self = serde_json::from_slice(bytes)?;
        for p in &outcomes.points {
            let what = if !(1..=MAX_PK).contains(&p.pk) {
                Some("pk out of range")
            } else if p.follower_count < 0 || p.following_count < 0 {
                Some("negative count")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(DecodeError::Invalid { pk: p.pk, what });
            }
        }
        Ok(outcomes)
    }
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

    #[test]
    fn points_travel_as_compact_tuples() {
        let outcomes = Outcomes {
            points: vec![Point {
                pk: 1_000_001,
                slot_ms: 17,
                fetched_ms: 18,
                follower_count: 5,
                following_count: 6,
            }],
            ..Outcomes::default()
        };
        let bytes = outcomes.encode();
        assert_eq!(
            bytes,
            br#"{"points":[[1000001,17,18,5,6]],"failures":[],"gone":[]}"#
        );
        assert_eq!(Outcomes::decode(&bytes).unwrap(), outcomes);
    }

    #[test]
    fn decode_refuses_garbage_and_impossible_points() {
        assert!(Outcomes::decode(b"\x00\xffnot json").is_err());
        assert!(Outcomes::decode(br#"{"points":[[1,2,3,-4,5]]}"#).is_err());
        assert!(Outcomes::decode(br#"{"points":[[0,2,3,4,5]]}"#).is_err());
        assert!(Outcomes::decode(br#"{"points":[[1,2,3,4]]}"#).is_err());
        assert!(Outcomes::decode(br#"{"gone":[{"pk":5,"reason":"x"}]}"#).is_ok());
    }
}
