//! `GET /influencer_analytics/{id}/forecast?horizon=7d|30d|90d`: the followers expected at the
//! horizon with 80% and 95% intervals, and when the next round milestone is reached, from the
//! influencer's daily closes of the last 90 days ([`model`] says how).

pub mod model;

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState,
    error::{ApiError, Problem},
    growth::latest_point,
    params::{InfluencerId, Query},
};
use crate::series::{self, DAY_MS};
use model::Walk;

/// Closed days whose closes the walk is estimated from.
pub const LOOKBACK_DAYS: i64 = 90;

/// What the answer says of its method.
const METHOD: &str = "random walk with drift on daily closes: the mean and the standard deviation of the day-to-day changes of followers over the last 90 closed days (at least 7 changes); expected = latest + mean × days; intervals normal with spread sd × √(days + days²/changes), the walk's and the estimated drift's error; lower ends not under 0. Calibration: bench forecast (docs/analytics.md).";

/// How far ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
pub enum Horizon {
    #[serde(rename = "7d")]
    Week,
    #[default]
    #[serde(rename = "30d")]
    Month,
    #[serde(rename = "90d")]
    Quarter,
}

impl Horizon {
    pub fn days(self) -> u32 {
        match self {
            Horizon::Week => 7,
            Horizon::Month => 30,
            Horizon::Quarter => 90,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForecastQuery {
    /// `7d`, `30d` (default) or `90d` after the latest value.
    #[param(value_type = Option<Horizon>)]
    pub horizon: Option<Horizon>,
}

/// An interval, low to high.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Interval {
    pub low: i64,
    pub high: i64,
}

/// The followers expected at the horizon.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AtHorizon {
    /// Epoch seconds: the latest value's time plus the horizon.
    pub time: i64,
    pub expected: i64,
    pub interval_80: Interval,
    pub interval_95: Interval,
}

/// When the next round milestone is reached.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Milestone {
    /// Followers: 10K, 50K, 100K, 500K, 1M, 5M, … (the next past the latest value in the
    /// drift's direction).
    pub followers: i64,
    /// `up` or `down`.
    pub direction: &'static str,
    /// The UTC day the expected value reaches it; absent when not within the horizon.
    pub expected_day: Option<String>,
    /// The 80% interval of that day: from the day the optimistic end of the 80% band reaches
    /// it to the day the pessimistic end does; each absent when not within the horizon.
    pub earliest_day: Option<String>,
    pub latest_day: Option<String>,
    /// `within the horizon` or `not within the horizon`.
    pub status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ForecastAnswer {
    pub influencer_id: i64,
    pub horizon: Horizon,
    pub method: &'static str,
    /// The latest value the forecast starts from: time (epoch seconds) and followers.
    pub from_time: i64,
    pub from_followers: i64,
    /// Daily changes the walk was estimated from, their mean and standard deviation.
    pub changes: usize,
    pub daily_drift: f64,
    pub daily_sd: f64,
    pub at_horizon: AtHorizon,
    /// Absent past the last milestone (or under the first, going down).
    pub milestone: Option<Milestone>,
}

/// An influencer's followers forecast.
#[utoipa::path(get, path = "/influencer_analytics/{id}/forecast", tag = "influencers",
    params(InfluencerId, ForecastQuery),
    responses(
        (status = 200, body = ForecastAnswer),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
         description = "never tracked, or not enough daily closes to forecast from"),
    ))]
pub async fn forecast(
    State(state): State<ApiState>,
    InfluencerId { id }: InfluencerId,
    Query(query): Query<ForecastQuery>,
) -> Result<Json<ForecastAnswer>, ApiError> {
    let horizon = query.horizon.unwrap_or_default();
    let Some(latest) = latest_point(&state, id).await? else {
        return Err(ApiError::NotFound(format!(
            "influencer {id} has no stored point to forecast from"
        )));
    };
    let today = Utc::now().timestamp_millis().div_euclid(DAY_MS) * DAY_MS;
    let closes = daily_closes(state.reads.pool(), id, today).await?;
    let walk = Walk::estimate(&closes).ok_or_else(|| {
        ApiError::NotFound(format!(
            "influencer {id} has {} closed days of the last {LOOKBACK_DAYS}; a forecast needs {} in a row",
            closes.len(),
            model::MIN_CHANGES + 1
        ))
    })?;
    Ok(Json(answer(
        id,
        horizon,
        walk,
        (latest.slot_ms, f64::from(latest.follower_count)),
    )))
}

/// The closes `(day start ms, followers)` of the closed days of the last [`LOOKBACK_DAYS`]
/// before `today_ms`, read through the one read path (day summaries for closed days).
pub async fn daily_closes(
    pool: &sqlx::PgPool,
    id: i64,
    today_ms: i64,
) -> Result<Vec<(i64, i64)>, series::read::ReadError> {
    let buckets = series::read::buckets(
        pool,
        id,
        today_ms - LOOKBACK_DAYS * DAY_MS,
        today_ms - 1,
        DAY_MS,
    )
    .await?;
    Ok(buckets
        .iter()
        .map(|b| (b.time * 1000, i64::from(b.follower_count.last)))
        .collect())
}

/// The answer for `walk` from `(time ms, followers)`.
pub fn answer(id: i64, horizon: Horizon, walk: Walk, from: (i64, f64)) -> ForecastAnswer {
    let (from_ms, value) = from;
    let days = horizon.days();
    let band = walk.band(value, f64::from(days));
    let day_name = |ahead: Option<u32>| {
        ahead.and_then(|d| {
            DateTime::<Utc>::from_timestamp_millis(from_ms + i64::from(d) * DAY_MS)
                .map(|t| t.format("%Y-%m-%d").to_string())
        })
    };
    let milestone = walk.next_milestone(value).map(|(followers, up)| {
        let r = walk.reaching(value, (followers, up), days);
        Milestone {
            followers,
            direction: if up { "up" } else { "down" },
            expected_day: day_name(r.expected),
            earliest_day: day_name(r.earliest),
            latest_day: day_name(r.latest),
            status: if r.expected.is_some() {
                "within the horizon"
            } else {
                "not within the horizon"
            },
        }
    });
    let round = |v: f64| v.round() as i64;
    ForecastAnswer {
        influencer_id: id,
        horizon,
        method: METHOD,
        from_time: from_ms.div_euclid(1000),
        from_followers: round(value),
        changes: walk.changes,
        daily_drift: (walk.drift * 100.0).round() / 100.0,
        daily_sd: (walk.sd * 100.0).round() / 100.0,
        at_horizon: AtHorizon {
            time: (from_ms + i64::from(days) * DAY_MS).div_euclid(1000),
            expected: round(band.expected),
            interval_80: Interval {
                low: round(band.low80),
                high: round(band.high80),
            },
            interval_95: Interval {
                low: round(band.low95),
                high: round(band.high95),
            },
        },
        milestone,
    }
}
