//! `GET /influencer_analytics/{id}/gaps`: how complete an influencer's series is over a range.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState,
    error::{ApiError, Problem},
    params::{DEFAULT_RANGE_SECONDS, Epoch, InfluencerId, Query, bounds},
};
use crate::{schedule::SlotGrid, series};

/// The longest range one gaps answer covers.
pub const MAX_GAPS_SPAN_SECONDS: i64 = 400 * 86_400;
/// Runs of missing slots listed at most (the counts cover them all).
pub const MAX_GAPS: usize = 1_000;

/// `start_time` and `end_time` of a gaps request.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GapsQuery {
    /// Epoch seconds, inclusive; default end_time - 24 h; at most 400 days before end_time.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 32_503_680_000_i64)]
    pub start_time: Option<Epoch>,
    /// Epoch seconds, inclusive; default now.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 32_503_680_000_i64)]
    pub end_time: Option<Epoch>,
}

/// A run of consecutive missing slots.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Gap {
    /// The first and the last missing slot, epoch seconds.
    pub start_time: i64,
    pub end_time: i64,
    pub slots: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GapsAnswer {
    pub influencer_id: i64,
    /// The range asked for, epoch seconds.
    pub start_time: i64,
    pub end_time: i64,
    /// The part of it in which slots were expected: from when the influencer was added to when
    /// tracking stopped or now; absent if none of the range is.
    pub expected_from: Option<i64>,
    pub expected_to: Option<i64>,
    /// The spacing of the influencer's slots (the poll interval), seconds.
    pub interval_seconds: i64,
    /// Slots of the influencer's grid in the expected part, how many hold a point, how many
    /// do not.
    pub expected: i64,
    pub stored: i64,
    pub missing: i64,
    /// The missing slots as runs, oldest first; at most 1,000 (`truncated` says if more).
    pub gaps: Vec<Gap>,
    pub truncated: bool,
}

#[derive(sqlx::FromRow)]
struct Tracking {
    added_at: DateTime<Utc>,
    untracked_at: Option<DateTime<Utc>>,
}

/// The slots an influencer's grid expected over a range, how many are stored, and the missing
/// ones as runs; from both tiers. Slots are expected from when the influencer was added until
/// its tracking stopped (or now). A range longer than 400 days is a 400.
#[utoipa::path(get, path = "/influencer_analytics/{id}/gaps", tag = "influencers",
    params(InfluencerId, GapsQuery),
    responses(
        (status = 200, body = GapsAnswer),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn gaps(
    State(state): State<ApiState>,
    InfluencerId { id }: InfluencerId,
    Query(query): Query<GapsQuery>,
) -> Result<Json<GapsAnswer>, ApiError> {
    let tracking: Tracking =
        sqlx::query_as("select added_at, untracked_at from influencers where influencer_id = $1")
            .bind(id)
            .fetch_optional(&state.pool)
            .await?
            .ok_or_else(|| ApiError::never_tracked(id))?;
    let now = Utc::now().timestamp();
    let (start, end) = bounds(query.start_time, query.end_time, now, DEFAULT_RANGE_SECONDS)?;
    if end - start > MAX_GAPS_SPAN_SECONDS {
        return Err(ApiError::bad_request(
            "Range too long",
            format!(
                "{} s is longer than the {MAX_GAPS_SPAN_SECONDS} s (400 days) one answer covers",
                end - start
            ),
        ));
    }
    // Slots are expected from when the influencer was added to when tracking stopped (or now).
    let from = start.max(tracking.added_at.timestamp());
    let to = end
        .min(now)
        .min(tracking.untracked_at.map_or(i64::MAX, |t| t.timestamp()));
    let expected_part = (from <= to).then_some((from, to));
    let found = match expected_part {
        Some((from, to)) => {
            let range = series::window_of_seconds(from, to);
            let grid = SlotGrid::new(state.interval);
            Some(series::read::gaps(&state.pool, id, range, grid, MAX_GAPS + 1).await?)
        }
        None => None,
    };
    let (expected, stored, mut runs) = found
        .map(|g| (g.expected, g.stored, g.missing))
        .unwrap_or_default();
    let truncated = runs.len() > MAX_GAPS;
    runs.truncate(MAX_GAPS);
    Ok(Json(GapsAnswer {
        influencer_id: id,
        start_time: start,
        end_time: end,
        expected_from: expected_part.map(|p| p.0),
        expected_to: expected_part.map(|p| p.1),
        interval_seconds: state.interval_seconds(),
        expected,
        stored,
        missing: expected - stored,
        gaps: runs
            .into_iter()
            .map(|(first, last, slots)| Gap {
                start_time: first.div_euclid(1000),
                end_time: last.div_euclid(1000),
                slots,
            })
            .collect(),
        truncated,
    }))
}
