//! The point-queue message: what one polled schedule batch came to.
//!
//! One [`Outcomes`] message per polled batch goes through the point queue. Besides the points
//! it carries the polls that failed (so a gap has a reason) and the influencers the upstream
//! no longer knows (so the registry records why they left), all written by the sink: the
//! fetchers never need the database.

use serde::{Deserialize, Serialize};

use crate::model::{Failure, Gone, MAX_PK, Point};

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
