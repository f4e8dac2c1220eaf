//! `GET /watchlists/{name}/series`: a watchlist's followers over time, on the buckets a range
//! uses and from the same tiers: in each bucket, every member's last value, summed (`total`),
//! and their mean over the members with a point in the bucket (`members` says how many).
//! Each member is read through the one read path, [`SERIES_READS_IN_FLIGHT`] at a time, so a
//! series is for lists of up to [`MAX_SERIES_MEMBERS`].

use std::collections::BTreeMap;

use axum::{Json, extract::State, response::IntoResponse};
use chrono::Utc;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use utoipa::ToSchema;

use super::{WatchlistName, member_ids};
use crate::{
    api::{
        ApiState,
        csv::{Format, Table, ToCsv, respond},
        error::{ApiError, Problem},
        params::{Query, RangeQuery, Step, TimeRange, bounds, parse_step, suggest_step},
    },
    series,
};

/// The most members a list's series sums (each is read on its own).
pub(crate) const MAX_SERIES_MEMBERS: usize = 1_000;
/// Members read at once.
const SERIES_READS_IN_FLIGHT: usize = 8;
/// Without a step, the smallest usual step that keeps a series within this many buckets.
const DEFAULT_BUCKETS: i64 = 1_000;

/// One bucket of a list's series.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ListBucket {
    /// The bucket's start, epoch seconds (aligned as a range's buckets).
    pub time: i64,
    /// Members with a point in the bucket: what the totals and the average are over.
    pub members: i64,
    /// Their last followers in the bucket, summed.
    pub total_followers: i64,
    pub average_followers: f64,
    /// Their last following counts in the bucket, summed.
    pub total_following: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WatchlistSeries {
    pub name: String,
    pub start_time: i64,
    pub end_time: i64,
    /// Bucket width, seconds.
    pub step: i64,
    /// Members of the list now.
    pub members: usize,
    /// Buckets where at least one member has a point, in time order.
    pub buckets: Vec<ListBucket>,
}

/// A watchlist's total and average followers over time (lists of up to 1,000 members).
///
/// Without `step`, the smallest of 60, 5m, 15m, 1h, 6h, 1d, 7d, 30d within 1,000 buckets.
#[utoipa::path(get, path = "/watchlists/{name}/series", tag = "watchlists",
    params(WatchlistName, RangeQuery),
    responses(
        (status = 200, content((WatchlistSeries = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn series(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    WatchlistName { name }: WatchlistName,
    Query(mut query): Query<RangeQuery>,
) -> Result<axum::response::Response, ApiError> {
    let format = Format::of(query.format, &headers);
    let now = Utc::now().timestamp();
    if query.step.is_none() {
        let (start, end) = bounds(query.start_time, query.end_time, now, 86_400)?;
        let step =
            parse_step(suggest_step(end - start, DEFAULT_BUCKETS)).expect("a usual step parses");
        query.step = Some(Step(step));
    }
    let range = TimeRange::from_query(&query, now, state.interval_seconds())?;
    let step = range.step.expect("a step was set");
    let members = member_ids(&state, &name).await?;
    if members.len() > MAX_SERIES_MEMBERS {
        return Err(ApiError::bad_request(
            "Watchlist too large for a series",
            format!(
                "the watchlist holds {} influencers; a series sums at most {MAX_SERIES_MEMBERS}",
                members.len()
            ),
        ));
    }
    let (start_ms, end_ms) = range.window_ms();
    let reads: Vec<Vec<series::BucketStats>> = stream::iter(members.clone())
        .map(|id| {
            let pool = state.reads.pool().clone();
            async move { series::read::buckets(&pool, id, start_ms, end_ms, step * 1000).await }
        })
        .buffered(SERIES_READS_IN_FLIGHT)
        .try_collect()
        .await?;
    let answer = WatchlistSeries {
        name,
        start_time: range.start,
        end_time: range.end,
        step,
        members: members.len(),
        buckets: summed(&reads),
    };
    Ok(respond(format, answer, |a| Json(a).into_response()))
}

/// Each bucket time's members with a point, their followers and following summed.
pub(crate) fn summed(reads: &[Vec<series::BucketStats>]) -> Vec<ListBucket> {
    let mut by_time: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    for bucket in reads.iter().flatten() {
        let sums = by_time.entry(bucket.time).or_default();
        sums.0 += 1;
        sums.1 += i64::from(bucket.follower_count.last);
        sums.2 += i64::from(bucket.following_count.last);
    }
    by_time
        .into_iter()
        .map(|(time, (members, followers, following))| ListBucket {
            time,
            members,
            total_followers: followers,
            average_followers: followers as f64 / members as f64,
            total_following: following,
        })
        .collect()
}

impl ToCsv for WatchlistSeries {
    /// A row a bucket.
    fn table(&self) -> Table {
        let mut t = Table::new(
            format!("watchlist-{}", self.name),
            &[
                "time",
                "members",
                "total_followers",
                "average_followers",
                "total_following",
            ],
        );
        for b in &self.buckets {
            t.push(vec![
                b.time.to_string(),
                b.members.to_string(),
                b.total_followers.to_string(),
                b.average_followers.to_string(),
                b.total_following.to_string(),
            ]);
        }
        t
    }
}
