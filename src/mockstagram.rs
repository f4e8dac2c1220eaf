//! The Mockstagram API's wire format, in one place: the simulator answers with these types and the
//! fetcher reads them. See `docs/mockstagram.md` for the server's behaviour.

use serde::{Deserialize, Serialize};

/// The path of one influencer's profile; `{pk}` follows.
pub(crate) const PROFILE_PATH: &str = "/api/v1/influencers/";
/// The path of the suspicious classifier.
pub(crate) const IS_SUSPICIOUS_PATH: &str = "/api/v1/influencers/is_suspicious";

/// The first pk of the real server's population (1,000,000 influencers: 1000000..=1999999).
pub const FIRST_PK: i64 = 1_000_000;

/// The error name the server gives, with HTTP 500, for a pk it does not know.
pub(crate) const NOT_FOUND_ERROR: &str = "InfluencerNotFoundError";

/// The classifier's rule: suspicious when followerCount / followingCount ≤ this.
pub(crate) const SUSPICIOUS_RATIO: f64 = 5.64;

/// `GET /api/v1/influencers/{pk}` answers this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub pk: i64,
    pub username: String,
    pub follower_count: i64,
    pub following_count: i64,
}

/// The body of an error answer: `{"error":{"name":"InfluencerNotFoundError"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorName {
    pub name: String,
}

/// `POST /api/v1/influencers/is_suspicious` takes the influencer's latest data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuspiciousRequest {
    pub pk: i64,
    pub username: String,
    pub follower_count: i64,
    pub following_count: i64,
}

/// ...and answers `{"pk":1000001,"suspicious":true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspiciousResponse {
    pub pk: serde_json::Value,
    pub suspicious: bool,
}

/// The username the server gives a pk.
pub fn username(pk: i64) -> String {
    format!("influencer-{pk}")
}

/// The upstream's suspicious rule. A following count of zero makes the ratio infinite: not
/// suspicious (unless there are no followers either).
pub fn is_suspicious(follower_count: i64, following_count: i64) -> bool {
    if following_count <= 0 {
        return follower_count <= 0;
    }
    (follower_count as f64) / (following_count as f64) <= SUSPICIOUS_RATIO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_uses_the_servers_camel_case_names() {
        let p = Profile {
            pk: 1_000_000,
            username: username(1_000_000),
            follower_count: 160_849,
            following_count: 2845,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"pk":1000000,"username":"influencer-1000000","followerCount":160849,"followingCount":2845}"#
        );
    }

    #[test]
    fn suspicious_rule_is_ratio_at_most_5_64() {
        assert!(is_suspicious(564, 100));
        assert!(!is_suspicious(565, 100));
        assert!(is_suspicious(57166, 10_136));
        assert!(!is_suspicious(10, 0));
    }
}
