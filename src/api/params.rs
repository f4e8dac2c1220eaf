//! Request parameters: each endpoint's query is one struct, deserialized by the [`Query`]
//! extractor and described to the OpenAPI document by the same struct (`utoipa::IntoParams`),
//! so each parameter is named once and the document states its bounds. Values are parsed
//! strictly into trusted types ([`Epoch`], [`Step`], [`Limit`], [`Cursor`]), and every mistake
//! is a 400 problem+json that names the parameter and says what was expected; no framework
//! rejection ever answers in another shape.

use axum::{
    extract::{FromRequestParts, RawPathParams},
    http::request::Parts,
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use utoipa::{IntoParams, openapi::path::ParameterIn};

use super::error::ApiError;
use crate::model::MAX_PK;

/// Epoch seconds accepted: 1970 to the year 3000.
pub(crate) const MAX_EPOCH: i64 = 32_503_680_000;

/// The longest bucket: 366 days.
pub(crate) const MAX_STEP: i64 = 366 * 86_400;

/// The `{id}` of a path: a positive whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InfluencerId {
    /// The influencer's pk.
    #[param(minimum = 1, maximum = 9_007_199_254_740_991_i64)]
    pub id: i64,
}

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
        parse_id(raw).map(|id| InfluencerId { id })
    }
}

pub(crate) fn parse_id(raw: &str) -> Result<i64, ApiError> {
    let shown = shown(raw);
    match raw.parse::<i64>() {
        Ok(id) if raw.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_PK).contains(&id) => Ok(id),
        _ => Err(ApiError::bad_request(
            "Invalid influencer id",
            format!("the influencer id must be a whole number from 1 to {MAX_PK}, got {shown:?}"),
        )),
    }
}

/// At most 40 characters of a value, for messages.
fn shown(raw: &str) -> String {
    raw.chars().take(40).collect()
}

/// A query string read into `T`: a name `T` does not declare, a name given twice, or a value
/// that does not parse is a 400 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + IntoParams,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(Query)
    }
}

/// Reads `raw` (a query string without its `?`) into `T`; see [`Query`].
pub(crate) fn parse_query<T: DeserializeOwned + IntoParams>(raw: &str) -> Result<T, ApiError> {
    let known: Vec<String> = T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .map(|p| p.name)
        .collect();
    let mut seen: Vec<String> = Vec::new();
    for (name, _) in form_urlencoded::parse(raw.as_bytes()) {
        if !known.iter().any(|k| *k == name) {
            let expected = if known.is_empty() {
                "this endpoint takes no query parameters".to_string()
            } else {
                format!("expected {}", known.join(", "))
            };
            return Err(ApiError::bad_request(
                "Unknown query parameter",
                format!("unknown query parameter {:?}; {expected}", shown(&name)),
            ));
        }
        if seen.iter().any(|s| *s == name) {
            return Err(ApiError::bad_request(
                "Repeated query parameter",
                format!("the query parameter {name} is given more than once"),
            ));
        }
        seen.push(name.into_owned());
    }
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let parameter = e.path().to_string();
        let message = e.into_inner().to_string();
        let (title, detail) = ValueError::split(&message);
        ApiError::bad_request(title, format!("{parameter} {detail}"))
    })
}

/// A value that does not parse, carried through serde's error as `title␟detail`.
struct ValueError {
    title: &'static str,
    detail: String,
}

impl ValueError {
    /// Separates title and detail; a message from serde itself gets a generic title.
    fn split(message: &str) -> (&'static str, String) {
        for title in [
            "Invalid time",
            "Invalid step",
            "Invalid limit",
            "Invalid days",
            "Invalid ids",
            "Invalid cursor",
            "Invalid day",
            "Invalid min_followers",
        ] {
            if let Some(detail) = message
                .strip_prefix(title)
                .and_then(|m| m.strip_prefix('\u{1f}'))
            {
                return (title, detail.to_string());
            }
        }
        ("Invalid query parameter", message.to_string())
    }

    fn into_serde<E: serde::de::Error>(self) -> E {
        E::custom(format!("{}\u{1f}{}", self.title, self.detail))
    }
}

/// Deserializes a value from its text with `parse`.
fn from_text<'de, D, T>(d: D, parse: fn(&str) -> Result<T, ValueError>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = std::borrow::Cow::<'de, str>::deserialize(d)?;
    parse(&raw).map_err(ValueError::into_serde)
}

/// Whole epoch seconds from 0 to [`MAX_EPOCH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(pub i64);

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |raw| match raw.parse::<i64>() {
            Ok(t) if (0..=MAX_EPOCH).contains(&t) && !raw.starts_with('+') => Ok(Epoch(t)),
            _ => Err(ValueError {
                title: "Invalid time",
                detail: format!(
                    "must be whole epoch seconds from 0 to {MAX_EPOCH}, got {:?}",
                    shown(raw)
                ),
            }),
        })
    }
}

/// A bucket width in seconds ([`parse_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step(pub i64);

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |raw| {
            parse_step(raw).map(Step).ok_or_else(|| ValueError {
                title: "Invalid step",
                detail: format!(
                    "must be seconds (60) or a number with s, m, h or d (5m, 1h, 1d), at least 60 s and at most 366 d; got {:?}",
                    shown(raw)
                ),
            })
        })
    }
}

/// A page size from 1 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub i64);

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |raw| match raw.parse::<i64>() {
            Ok(n) if (1..=1000).contains(&n) && raw.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Limit(n))
            }
            _ => Err(ValueError {
                title: "Invalid limit",
                detail: format!(
                    "must be a whole number from 1 to 1000, got {:?}",
                    shown(raw)
                ),
            }),
        })
    }
}

/// A number of UTC days from 1 to 400 (the default retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days(pub i64);

impl<'de> Deserialize<'de> for Days {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |raw| match raw.parse::<i64>() {
            Ok(n) if (1..=400).contains(&n) && raw.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Days(n))
            }
            _ => Err(ValueError {
                title: "Invalid days",
                detail: format!(
                    "must be a whole number of days from 1 to 400, got {:?}",
                    shown(raw)
                ),
            }),
        })
    }
}

/// Most influencers one list of `ids` holds.
pub(crate) const MAX_IDS: usize = 20;

/// Comma-separated influencer ids, 1 to [`MAX_IDS`] of them, in the order given; an id given
/// twice counts once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdList(pub Vec<i64>);

impl<'de> Deserialize<'de> for IdList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |raw| {
            let mut ids = Vec::new();
            for part in raw.split(',') {
                let id = parse_id(part).map_err(|_| ValueError {
                    title: "Invalid ids",
                    detail: format!(
                        "must be influencer ids (whole numbers from 1 to {MAX_PK}) separated by commas, got {:?}",
                        shown(part)
                    ),
                })?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            if ids.len() > MAX_IDS {
                return Err(ValueError {
                    title: "Invalid ids",
                    detail: format!("at most {MAX_IDS} influencers, got {}", ids.len()),
                });
            }
            Ok(IdList(ids))
        })
    }
}

/// A keyset cursor: the whole numbers of the last row of the previous page, joined by '.'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor<const N: usize>(pub [i64; N]);

impl<'de, const N: usize> Deserialize<'de> for Cursor<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |raw| {
            raw.split('.')
                .map(|p| {
                    p.parse::<i64>()
                        .ok()
                        .filter(|v| *v >= 0 && p.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect::<Option<Vec<i64>>>()
                .and_then(|parts| parts.try_into().ok())
                .map(Cursor)
                .ok_or_else(|| ValueError {
                    title: "Invalid cursor",
                    detail: "must be the next_cursor of a previous page".into(),
                })
        })
    }
}

/// A UTC day, `YYYY-MM-DD` (years 0000 to 9999): its start in epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day(pub i64);

impl Day {
    /// The day as `YYYY-MM-DD`.
    pub fn name(self) -> String {
        crate::series::at(self.0).format("%Y-%m-%d").to_string()
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |raw| {
            chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .ok()
                .filter(|_| raw.len() == 10)
                .map(|date| {
                    Day(date
                        .and_time(chrono::NaiveTime::MIN)
                        .and_utc()
                        .timestamp_millis())
                })
                .ok_or_else(|| ValueError {
                    title: "Invalid day",
                    detail: format!("must be a UTC date, YYYY-MM-DD, got {:?}", shown(raw)),
                })
        })
    }
}

/// A least number of followers, 0 to 2147483647.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinFollowers(pub i32);

impl<'de> Deserialize<'de> for MinFollowers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |raw| match raw.parse::<i32>() {
            Ok(n) if n >= 0 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(MinFollowers(n)),
            _ => Err(ValueError {
                title: "Invalid min_followers",
                detail: format!(
                    "must be a whole number of followers from 0 to {}, got {:?}",
                    i32::MAX,
                    shown(raw)
                ),
            }),
        })
    }
}

/// The keyset cursor of a page of movers: the last row's sort value and influencer id,
/// `<value>_<id>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyCursor(pub f64, pub i64);

impl KeyCursor {
    pub fn text(key: f64, id: i64) -> String {
        format!("{key}_{id}")
    }
}

impl<'de> Deserialize<'de> for KeyCursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |raw| {
            raw.rsplit_once('_')
                .and_then(|(key, id)| {
                    let key = key.parse::<f64>().ok().filter(|k| k.is_finite())?;
                    let id = id
                        .parse::<i64>()
                        .ok()
                        .filter(|_| id.bytes().all(|b| b.is_ascii_digit()))?;
                    Some(KeyCursor(key, id))
                })
                .ok_or_else(|| ValueError {
                    title: "Invalid cursor",
                    detail: "must be the next_cursor of a previous page".into(),
                })
        })
    }
}

/// `start_time`, `end_time` and `step` of a range of points or buckets. A range whose start is
/// after its end, or that holds more than 10,000 raw points or buckets, is a 400 (the latter
/// naming a `step` that fits).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Epoch seconds, inclusive; default end_time - 24 h; not after end_time.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 32_503_680_000_i64)]
    pub start_time: Option<Epoch>,
    /// Epoch seconds, inclusive; default now.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 32_503_680_000_i64)]
    pub end_time: Option<Epoch>,
    /// Bucket width: seconds (60) or with a unit (5m, 1h, 1d); 60 s to 366 d.
    #[param(value_type = Option<String>, pattern = r"^((6[0-9]|[7-9][0-9]|[1-9][0-9]{2,6})s?|[1-9][0-9]{0,2}[mh]|([1-9]|[1-9][0-9]|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d)$")]
    pub step: Option<Step>,
    /// `json` (default) or `csv` (also by `Accept: text/csv`).
    #[param(value_type = Option<crate::api::csv::Format>)]
    pub format: Option<crate::api::csv::Format>,
}

/// No query parameters at all.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NoQuery {}

/// A page of `/top`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// Influencers per page, 1 to 1000; default 10.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<Limit>,
    /// The next_cursor of the previous page.
    #[param(value_type = Option<String>, pattern = r"^[0-9]{1,18}\.[0-9]{1,18}$")]
    pub cursor: Option<Cursor<2>>,
    /// Only the members of this watchlist (each with its rank among everyone).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
    pub watchlist: Option<String>,
    /// `json` (default) or `csv` (also by `Accept: text/csv`).
    #[param(value_type = Option<crate::api::csv::Format>)]
    pub format: Option<crate::api::csv::Format>,
}

/// A page of `/suspicious`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuspiciousQuery {
    /// Influencers per page, 1 to 1000; default 100.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<Limit>,
    /// The next_cursor of the previous page.
    #[param(value_type = Option<String>, pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<Cursor<1>>,
    /// `json` (default) or `csv` (also by `Accept: text/csv`).
    #[param(value_type = Option<crate::api::csv::Format>)]
    pub format: Option<crate::api::csv::Format>,
}

/// Most points (or buckets) one answer holds.
pub(crate) const MAX_POINTS: i64 = 10_000;
/// Without start_time, a range covers the day before end_time.
pub(crate) const DEFAULT_RANGE_SECONDS: i64 = 86_400;

/// A checked `start_time`/`end_time`/`step` (epoch seconds, both ends inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub start: i64,
    pub end: i64,
    /// Bucket width in seconds, if asked for.
    pub step: Option<i64>,
}

impl TimeRange {
    /// Reads the range from `params`: end defaults to `now`, start to a day before end. Without
    /// a step, points are `point_spacing` seconds apart; more than [`MAX_POINTS`] is a 400
    /// naming a step that fits.
    pub(crate) fn from_query(
        query: &RangeQuery,
        now: i64,
        point_spacing: i64,
    ) -> Result<Self, ApiError> {
        let step = query.step.map(|Step(s)| s);
        // Without start_time: the day before end_time, or as much of it as one answer holds
        // (at a poll interval under 9 s a day of raw points is more than MAX_POINTS).
        let default_span = match step {
            Some(_) => DEFAULT_RANGE_SECONDS,
            None => DEFAULT_RANGE_SECONDS.min((MAX_POINTS - 1) * point_spacing.max(1)),
        };
        let (start, end) = bounds(query.start_time, query.end_time, now, default_span)?;
        let span = end - start;
        let width = step.unwrap_or(point_spacing.max(1));
        let (start_ms, end_ms) = crate::series::window_of_seconds(start, end);
        // Buckets are aligned as time_bucket aligns them, so an unaligned range touches one
        // more than its span holds; raw points are one per `width` on the influencer's grid.
        let most = match step {
            Some(step) => crate::series::buckets_touched(start_ms, end_ms, step * 1000),
            None => span / width + 1,
        };
        if most > MAX_POINTS {
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

    /// The range in epoch milliseconds, both ends inclusive: from the start of `start`'s second
    /// to the end of `end`'s ([`crate::series::window_of_seconds`]).
    pub(crate) fn window_ms(&self) -> (i64, i64) {
        crate::series::window_of_seconds(self.start, self.end)
    }

    /// The first instant of the range.
    pub(crate) fn start_at(&self) -> chrono::DateTime<chrono::Utc> {
        crate::series::at(self.window_ms().0)
    }

    /// The last instant of the range (the last millisecond of `end`'s second).
    pub(crate) fn end_at(&self) -> chrono::DateTime<chrono::Utc> {
        crate::series::at(self.window_ms().1)
    }
}

/// `start_time` and `end_time` (epoch seconds, inclusive) with their defaults: the end is
/// `now`, the start `default_span` before the end; a start after the end is a 400.
pub fn bounds(
    start_time: Option<Epoch>,
    end_time: Option<Epoch>,
    now: i64,
    default_span: i64,
) -> Result<(i64, i64), ApiError> {
    let end = end_time.map_or(now, |Epoch(t)| t);
    let start = start_time.map_or((end - default_span).max(0), |Epoch(t)| t);
    if start > end {
        return Err(ApiError::bad_request(
            "Invalid time range",
            format!("start_time ({start}) is after end_time ({end})"),
        ));
    }
    Ok((start, end))
}

/// A bucket width: `60` (seconds), `5m`, `1h`, `1d`; `None` unless from 60 s to 366 d.
pub(crate) fn parse_step(raw: &str) -> Option<i64> {
    let (digits, unit) = match raw.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: i64 = digits.parse().ok()?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (60..=MAX_STEP).contains(&seconds).then_some(seconds)
}

/// Suggests the smallest usual step that keeps a range under `cap` buckets, however the range
/// is aligned (it may touch two buckets more than its span divided by the step).
pub(crate) fn suggest_step(range_seconds: i64, cap: i64) -> &'static str {
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
        .find(|(s, _)| range_seconds / s + 2 <= cap)
        .map(|(_, name)| *name)
        .unwrap_or("366d")
}

#[cfg(test)]
mod tests;
