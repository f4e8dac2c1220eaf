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
pub(crate) const MAX_GAPS_SPAN_SECONDS: i64 = 400 * 86_400;
/// Runs of missing slots listed at most (the counts cover them all).
pub(crate) const MAX_GAPS: usize = 1_000;

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
    /// The part of it in which slots were expected: from the first of the tracked stretches
    /// that overlap it to the last one's end (or now); absent if none of the range is.
    pub expected_from: Option<i64>,
    pub expected_to: Option<i64>,
    /// The stretches of tracking within the range, epoch seconds, oldest first: slots are
    /// expected inside them only (from the first slot the schedule planned to when tracking
    /// stopped), never while the influencer was not tracked.
    pub tracked: Vec<TrackedStretch>,
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

/// A stretch of tracking inside the range asked for, epoch seconds (both inclusive).
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct TrackedStretch {
    pub from: i64,
    pub to: i64,
}

/// The slots an influencer's grid expected over a range, how many are stored, and the missing
/// ones as runs; from both tiers. Slots are expected inside the stretches it was tracked (from
/// the first slot the schedule planned until tracking stopped, or now). A range longer than
/// 400 days is a 400.
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
    let stretches = tracking_stretches(&state, id).await?;
    if stretches.is_empty() {
        // Registered (or never): a 404 for an id never tracked, else nothing expected yet.
        username_exists(&state, id).await?;
    }
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
    // Each stretch of tracking within the range, in epoch milliseconds (a slot belongs to the
    // second its time shows: series::window_of_seconds).
    let (range_from, range_to) = series::window_of_seconds(start, end.min(now));
    let within: Vec<(i64, i64)> = stretches
        .iter()
        .map(|(from, stopped)| {
            let stopped = stopped.map_or(i64::MAX, |t| t.timestamp_millis());
            (
                from.timestamp_millis().max(range_from),
                stopped.min(range_to),
            )
        })
        .filter(|(from, to)| from <= to)
        .collect();
    let grid = SlotGrid::new(state.interval);
    let (mut expected, mut stored, mut runs) = (0, 0, Vec::new());
    for &window in &within {
        let found = series::read::gaps(state.reads.pool(), id, window, grid, MAX_GAPS + 1).await?;
        expected += found.expected;
        stored += found.stored;
        runs.extend(found.missing);
    }
    let truncated = runs.len() > MAX_GAPS;
    runs.truncate(MAX_GAPS);
    Ok(Json(GapsAnswer {
        influencer_id: id,
        start_time: start,
        end_time: end,
        expected_from: within.first().map(|w| w.0.div_euclid(1000)),
        expected_to: within.last().map(|w| w.1.div_euclid(1000)),
        tracked: within
            .iter()
            .map(|&(from, to)| TrackedStretch {
                from: from.div_euclid(1000),
                to: to.div_euclid(1000),
            })
            .collect(),
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

/// The stretches of tracking of `id` (each from when its first slot was planned to when it
/// stopped, if it did), in order.
async fn tracking_stretches(
    state: &ApiState,
    id: i64,
) -> Result<Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>, ApiError> {
    Ok(sqlx::query!(
        "select expected_from, stopped_at from tracking_periods
         where influencer_id = $1 order by expected_from",
        id,
    )
    .fetch_all(state.reads.pool())
    .await?
    .into_iter()
    .map(|stretch| (stretch.expected_from, stretch.stopped_at))
    .collect())
}

/// A 404 unless `id` is in the registry.
async fn username_exists(state: &ApiState, id: i64) -> Result<(), ApiError> {
    sqlx::query_scalar!(
        "select influencer_id from influencers where influencer_id = $1",
        id
    )
    .fetch_optional(state.reads.pool())
    .await?
    .ok_or_else(|| ApiError::never_tracked(id))?;
    Ok(())
}
