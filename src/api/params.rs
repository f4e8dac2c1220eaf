//! Request parameters, parsed strictly into trusted types, each mistake a 400 that says what
//! was expected. Parsing is done by hand from the raw path and query, so no framework
//! rejection ever answers in another shape.

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, RawPathParams, RawQuery},
    http::request::Parts,
};

use super::error::ApiError;
use crate::model::MAX_PK;

/// Epoch seconds accepted: 1970 to the year 3000.
pub const MAX_EPOCH: i64 = 32_503_680_000;

/// The `{id}` of a path: a positive whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfluencerId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for InfluencerId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::bad_request("Invalid influencer id", "the path is not valid UTF-8")
            })?;
        let raw = params
            .iter()
            .find(|(name, _)| *name == "id")
            .map(|(_, value)| value)
            .unwrap_or_default();
        parse_id(raw).map(InfluencerId)
    }
}

pub fn parse_id(raw: &str) -> Result<i64, ApiError> {
    let shown: String = raw.chars().take(40).collect();
    match raw.parse::<i64>() {
        Ok(id) if raw.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_PK).contains(&id) => Ok(id),
        _ => Err(ApiError::bad_request(
            "Invalid influencer id",
            format!("the influencer id must be a whole number from 1 to {MAX_PK}, got {shown:?}"),
        )),
    }
}

/// The query string as name → value, refusing names the endpoint does not know and repeats.
#[derive(Debug, Default)]
pub struct QueryParams(HashMap<String, String>);

impl QueryParams {
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut params = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                let shown: String = name.chars().take(40).collect();
                return Err(ApiError::bad_request(
                    "Unknown query parameter",
                    format!(
                        "unknown query parameter {shown:?}; expected {}",
                        allowed.join(", ")
                    ),
                ));
            }
            if params.insert(name.to_string(), value.to_string()).is_some() {
                return Err(ApiError::bad_request(
                    "Repeated query parameter",
                    format!("the query parameter {name} is given more than once"),
                ));
            }
        }
        Ok(Self(params))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An epoch-seconds parameter.
    pub fn epoch(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let shown: String = raw.chars().take(40).collect();
        match raw.parse::<i64>() {
            Ok(t) if (0..=MAX_EPOCH).contains(&t) && !raw.starts_with('+') => Ok(Some(t)),
            _ => Err(ApiError::bad_request(
                "Invalid time",
                format!("{name} must be whole epoch seconds from 0 to {MAX_EPOCH}, got {shown:?}"),
            )),
        }
    }
}

/// Most points (or buckets) one answer holds.
pub const MAX_POINTS: i64 = 10_000;
/// Without start_time, a range covers the day before end_time.
pub const DEFAULT_RANGE_SECONDS: i64 = 86_400;

/// A checked `start_time`/`end_time`/`step` (epoch seconds, both ends inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
    /// Bucket width in seconds, if asked for.
    pub step: Option<i64>,
}

impl TimeRange {
    /// Reads the range from `params`: end defaults to `now`, start to a day before end. Without
    /// a step, points are `point_spacing` seconds apart; more than [`MAX_POINTS`] is a 400
    /// naming a step that fits.
    pub fn from_params(
        params: &QueryParams,
        now: i64,
        point_spacing: i64,
    ) -> Result<Self, ApiError> {
        let end = params.epoch("end_time")?.unwrap_or(now);
        let start = params
            .epoch("start_time")?
            .unwrap_or((end - DEFAULT_RANGE_SECONDS).max(0));
        if start > end {
            return Err(ApiError::bad_request(
                "Invalid time range",
                format!("start_time ({start}) is after end_time ({end})"),
            ));
        }
        let step = params.get("step").map(parse_step).transpose()?;
        let span = end - start;
        let width = step.unwrap_or(point_spacing.max(1));
        if span / width + 1 > MAX_POINTS {
            return Err(ApiError::bad_request(
                "Too many points",
                format!(
                    "{span} s at {width} s per point is more than {MAX_POINTS} points; use step={} or a shorter range",
                    suggest_step(span, MAX_POINTS)
                ),
            ));
        }
        Ok(Self { start, end, step })
    }

    pub fn start_at(&self) -> chrono::DateTime<chrono::Utc> {
        at(self.start)
    }

    pub fn end_at(&self) -> chrono::DateTime<chrono::Utc> {
        at(self.end)
    }
}

fn at(seconds: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(seconds, 0).unwrap_or(chrono::DateTime::UNIX_EPOCH)
}

/// The raw query of a request; never rejects.
pub fn raw_query(RawQuery(query): &RawQuery) -> Option<&str> {
    query.as_deref()
}

/// A bucket width: `60` (seconds), `5m`, `1h`, `1d`.
pub fn parse_step(raw: &str) -> Result<i64, ApiError> {
    let shown: String = raw.chars().take(40).collect();
    let invalid = || {
        ApiError::bad_request(
            "Invalid step",
            format!(
                "step must be seconds (60) or a number with s, m, h or d (5m, 1h, 1d), at least 60 s and at most 366 d; got {shown:?}"
            ),
        )
    };
    let (digits, unit) = match raw.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: i64 = digits.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(invalid)?,
        "h" => n.checked_mul(3600).ok_or_else(invalid)?,
        "d" => n.checked_mul(86_400).ok_or_else(invalid)?,
        _ => return Err(invalid()),
    };
    if !(60..=366 * 86_400).contains(&seconds) {
        return Err(invalid());
    }
    Ok(seconds)
}

/// Suggests the smallest usual step that keeps a range under `cap` buckets.
pub fn suggest_step(range_seconds: i64, cap: i64) -> &'static str {
    const STEPS: [(i64, &str); 8] = [
        (60, "60"),
        (300, "5m"),
        (900, "15m"),
        (3600, "1h"),
        (21_600, "6h"),
        (86_400, "1d"),
        (604_800, "7d"),
        (2_592_000, "30d"),
    ];
    STEPS
        .iter()
        .find(|(s, _)| range_seconds / s < cap)
        .map(|(_, name)| *name)
        .unwrap_or("366d")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_whole_numbers() {
        assert_eq!(parse_id("1000001").unwrap(), 1_000_001);
        for bad in [
            "abc",
            "-5",
            "0",
            "1.5",
            "+7",
            "",
            "99999999999999999999",
            " 5",
        ] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn steps_take_seconds_or_units() {
        assert_eq!(parse_step("60").unwrap(), 60);
        assert_eq!(parse_step("5m").unwrap(), 300);
        assert_eq!(parse_step("1h").unwrap(), 3600);
        assert_eq!(parse_step("1d").unwrap(), 86_400);
        for bad in [
            "",
            "m",
            "5x",
            "30",
            "1.5h",
            "-1h",
            "9999999999999999999d",
            "400d",
        ] {
            assert!(parse_step(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert!(
            QueryParams::parse(Some("start_time=1&end_time=2"), &["start_time", "end_time"])
                .is_ok()
        );
        assert!(QueryParams::parse(Some("start=1"), &["start_time"]).is_err());
        assert!(QueryParams::parse(Some("start_time=1&start_time=2"), &["start_time"]).is_err());
    }

    #[test]
    fn epochs_are_whole_seconds_within_reason() {
        let q = QueryParams::parse(
            Some("a=1763800000&b=1.5&c=-1&d=99999999999&e=%2B5"),
            &["a", "b", "c", "d", "e"],
        )
        .unwrap();
        assert_eq!(q.epoch("a").unwrap(), Some(1_763_800_000));
        assert_eq!(q.epoch("missing").unwrap(), None);
        for name in ["b", "c", "d", "e"] {
            assert!(q.epoch(name).is_err(), "{name}");
        }
    }

    #[test]
    fn the_suggested_step_fits_the_cap() {
        assert_eq!(suggest_step(86_400, 10_000), "60");
        assert_eq!(suggest_step(30 * 86_400, 10_000), "5m");
        assert_eq!(suggest_step(365 * 86_400, 10_000), "1h");
    }
}
