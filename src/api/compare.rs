//! `GET /influencer_analytics/compare?ids=a,b,c`: up to 20 influencers' series on the same
//! buckets, as their values or as their change in percent from each one's first bucket.

use axum::{Json, extract::State};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::csv::{Format, Table, ToCsv, opt, respond};
use super::{
    ApiState,
    error::{ApiError, Problem},
    params::{Epoch, IdList, Query, RangeQuery, Step, TimeRange, bounds, parse_step, suggest_step},
};
use crate::{model::follower_ratio, series};
use axum::response::IntoResponse;

/// Buckets a comparison holds when no `step` is given: the smallest usual step that keeps the
/// range under this many.
const DEFAULT_BUCKETS: i64 = 1_000;

/// How the values are given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// The counts and the ratio as stored.
    #[default]
    None,
    /// The change in percent from the series' first bucket with a value.
    Percent,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// Influencer ids, comma-separated, 1 to 20 (an id given twice counts once).
    #[param(value_type = String, pattern = r"^[1-9][0-9]{0,14}(,[1-9][0-9]{0,14}){0,19}$")]
    pub ids: IdList,
    /// Epoch seconds, inclusive; default end_time - 24 h; not after end_time.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 32_503_680_000_i64)]
    pub start_time: Option<Epoch>,
    /// Epoch seconds, inclusive; default now.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 32_503_680_000_i64)]
    pub end_time: Option<Epoch>,
    /// Bucket width: seconds (60) or with a unit (5m, 1h, 1d); 60 s to 366 d; default the
    /// smallest of 60, 5m, 15m, 1h, 6h, 1d, 7d, 30d that keeps the range within 1,000 buckets.
    #[param(value_type = Option<String>, pattern = r"^((6[0-9]|[7-9][0-9]|[1-9][0-9]{2,6})s?|[1-9][0-9]{0,2}[mh]|([1-9]|[1-9][0-9]|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d)$")]
    pub step: Option<Step>,
    /// `none` (default) or `percent`.
    #[param(value_type = Option<Normalize>)]
    pub normalize: Option<Normalize>,
    /// `json` (default) or `csv` (also by `Accept: text/csv`).
    #[param(value_type = Option<crate::api::csv::Format>)]
    pub format: Option<crate::api::csv::Format>,
}

/// One influencer's series on the comparison's buckets: a value a bucket (its last point), or
/// null for a bucket without a point.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ComparedSeries {
    pub influencer_id: i64,
    pub username: String,
    pub follower_count: Vec<Option<f64>>,
    pub following_count: Vec<Option<f64>>,
    pub follower_ratio: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CompareAnswer {
    pub start_time: i64,
    pub end_time: i64,
    pub step: i64,
    pub normalize: Normalize,
    /// Each bucket's start (epoch seconds): every bucket in which one of the series has a
    /// point, in order.
    pub times: Vec<i64>,
    /// In the order of `ids`.
    pub series: Vec<ComparedSeries>,
}

impl ToCsv for CompareAnswer {
    /// A row per bucket and series (long form): the bucket's values, empty where it has none.
    fn table(&self) -> Table {
        let mut t = Table::new(
            "compare",
            &[
                "time",
                "influencer_id",
                "username",
                "follower_count",
                "following_count",
                "follower_ratio",
            ],
        );
        for (i, &time) in self.times.iter().enumerate() {
            for s in &self.series {
                t.push(vec![
                    time.to_string(),
                    s.influencer_id.to_string(),
                    s.username.clone(),
                    opt(s.follower_count[i]),
                    opt(s.following_count[i]),
                    opt(s.follower_ratio[i]),
                ]);
            }
        }
        t
    }
}

/// Several influencers' series aligned on the same buckets.
#[utoipa::path(get, path = "/influencer_analytics/compare", tag = "influencers",
    params(CompareQuery),
    responses(
        (status = 200, content((CompareAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn compare(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    Query(query): Query<CompareQuery>,
) -> Result<axum::response::Response, ApiError> {
    let format = Format::of(query.format, &headers);
    let IdList(ids) = query.ids;
    let names = usernames(&state, &ids).await?;
    let now = Utc::now().timestamp();
    let mut range = RangeQuery {
        start_time: query.start_time,
        end_time: query.end_time,
        step: query.step,
        format: None,
    };
    if range.step.is_none() {
        let (start, end) = bounds(range.start_time, range.end_time, now, 86_400)?;
        let step =
            parse_step(suggest_step(end - start, DEFAULT_BUCKETS)).expect("a usual step parses");
        range.step = Some(Step(step));
    }
    let range = TimeRange::from_query(&range, now, state.interval_seconds())?;
    let step = range.step.expect("a step was set");
    let (start_ms, end_ms) = range.window_ms();
    let reads = ids
        .iter()
        .map(|&id| series::read::buckets(state.reads.pool(), id, start_ms, end_ms, step * 1000));
    let buckets = futures_util::future::try_join_all(reads).await?;
    let normalize = query.normalize.unwrap_or_default();
    let (times, columns) = align(&buckets);
    let series = ids
        .iter()
        .zip(names)
        .zip(columns)
        .map(
            |((&influencer_id, username), [followers, following, ratio])| {
                let shown = |column: Vec<Option<f64>>| match normalize {
                    Normalize::None => column,
                    Normalize::Percent => percent_of_first(&column),
                };
                ComparedSeries {
                    influencer_id,
                    username,
                    follower_count: shown(followers),
                    following_count: shown(following),
                    follower_ratio: shown(ratio),
                }
            },
        )
        .collect();
    let answer = CompareAnswer {
        start_time: range.start,
        end_time: range.end,
        step,
        normalize,
        times,
        series,
    };
    Ok(respond(format, answer, |a| Json(a).into_response()))
}

/// A series' followers, following and ratio on the comparison's buckets (null where it has no
/// point).
type Columns = [Vec<Option<f64>>; 3];

/// Every bucket time any series has, in order, and each series' last followers, following and
/// ratio on those times.
pub(crate) fn align(buckets: &[Vec<series::BucketStats>]) -> (Vec<i64>, Vec<Columns>) {
    let mut times: Vec<i64> = buckets.iter().flatten().map(|b| b.time).collect();
    times.sort_unstable();
    times.dedup();
    let columns = buckets
        .iter()
        .map(|own| {
            let mut columns = [
                vec![None; times.len()],
                vec![None; times.len()],
                vec![None; times.len()],
            ];
            for b in own {
                let at = times
                    .binary_search(&b.time)
                    .expect("every time is in times");
                columns[0][at] = Some(f64::from(b.follower_count.last));
                columns[1][at] = Some(f64::from(b.following_count.last));
                columns[2][at] = follower_ratio(b.follower_count.last, b.following_count.last);
            }
            columns
        })
        .collect();
    (times, columns)
}

/// Each value as its change in percent from the first value (to the hundredth); all null when
/// the first is 0.
pub(crate) fn percent_of_first(column: &[Option<f64>]) -> Vec<Option<f64>> {
    let first = column.iter().flatten().next().copied();
    column
        .iter()
        .map(|v| match (first, v) {
            (Some(first), Some(v)) if first != 0.0 => {
                Some(((v - first) * 10_000.0 / first).round() / 100.0)
            }
            _ => None,
        })
        .collect()
}

/// The usernames of `ids`, in their order; a 404 naming every id never registered.
async fn usernames(state: &ApiState, ids: &[i64]) -> Result<Vec<String>, ApiError> {
    let found: std::collections::HashMap<i64, String> = sqlx::query!(
        "select influencer_id, username from influencers where influencer_id = any($1)",
        ids,
    )
    .fetch_all(state.reads.pool())
    .await?
    .into_iter()
    .map(|row| (row.influencer_id, row.username))
    .collect();
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains_key(id))
        .map(i64::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::NotFound(format!(
            "never tracked: {}",
            unknown.join(", ")
        )));
    }
    Ok(ids.iter().map(|id| found[id].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{BucketStats, Stats};

    fn bucket(time: i64, followers: i32, following: i32) -> BucketStats {
        let stats = |v: i32| Stats {
            avg: f64::from(v),
            min: v,
            max: v,
            last: v,
        };
        BucketStats {
            time,
            samples: 1,
            follower_count: stats(followers),
            following_count: stats(following),
            follower_ratio: None,
        }
    }

    #[test]
    fn series_are_aligned_on_every_bucket_any_of_them_has() {
        let a = vec![bucket(0, 100, 10), bucket(120, 110, 10)];
        let b = vec![bucket(60, 50, 0), bucket(120, 55, 5)];
        let (times, columns) = align(&[a, b]);
        assert_eq!(times, [0, 60, 120]);
        assert_eq!(columns[0][0], [Some(100.0), None, Some(110.0)]);
        assert_eq!(columns[1][0], [None, Some(50.0), Some(55.0)]);
        assert_eq!(
            columns[1][2],
            [None, None, Some(11.0)],
            "no ratio when following is 0"
        );
    }

    #[test]
    fn percent_is_the_change_from_the_first_value() {
        let column = [None, Some(200.0), None, Some(250.0), Some(199.0)];
        assert_eq!(
            percent_of_first(&column),
            [None, Some(0.0), None, Some(25.0), Some(-0.5)]
        );
        assert_eq!(percent_of_first(&[Some(0.0), Some(5.0)]), [None, None]);
    }
}
