//! `GET /influencer_analytics/{id}/growth`: how an influencer's counts changed over the
//! standard windows (1 h to 365 d) up to its latest value, and its daily gains: each UTC day's
//! closing counts and their change from the day before.
//!
//! Everything is read through the one read path: a window's starting value is the last point
//! at or before the window's start (looked for in the day before it, so a year back decodes one
//! day segment, not a year), and the daily table is a range bucketed by day, which closed days
//! answer from their stored summaries.

use axum::{Json, extract::State, response::IntoResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState,
    csv::{Format, Table, ToCsv, opt, respond},
    error::{ApiError, Problem},
    params::{Days, InfluencerId, Query},
};
use crate::{
    model::follower_ratio,
    series::{self, DAY_MS, SeriesPoint},
};

/// The windows of a growth answer: name and length in seconds.
pub(crate) const WINDOWS: [(&str, i64); 6] = [
    ("1h", 3_600),
    ("24h", 86_400),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
    ("90d", 90 * 86_400),
    ("365d", 365 * 86_400),
];

/// How far before a window's start its starting value is looked for: a window whose start
/// falls in a longer stretch without points is not covered (left out of the answer).
const LOOKBACK_MS: i64 = DAY_MS;

/// Days in the daily table when `days` is not given.
const DEFAULT_DAYS: i64 = 30;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrowthQuery {
    /// UTC days in the daily gains table, the current (unclosed) day included; 1 to 400
    /// (the default retention); default 30.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 400)]
    pub days: Option<Days>,
    /// `json` (default) or `csv` (also by `Accept: text/csv`): the daily gains table.
    #[param(value_type = Option<crate::api::csv::Format>)]
    pub format: Option<crate::api::csv::Format>,
}

/// A stored value: its time (epoch seconds, the second its slot falls in) and counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Value {
    pub time: i64,
    pub follower_count: i32,
    pub following_count: i32,
    /// followerCount / followingCount to the hundredth; absent when following is 0.
    pub follower_ratio: Option<f64>,
}

impl From<SeriesPoint> for Value {
    fn from(p: SeriesPoint) -> Self {
        Self {
            time: p.slot_ms.div_euclid(1000),
            follower_count: p.follower_count,
            following_count: p.following_count,
            follower_ratio: follower_ratio(p.follower_count, p.following_count),
        }
    }
}

/// A change from one value to another: absolute, and in percent of the first (absent when the
/// first is 0, or for the ratio when either ratio is).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Change<T> {
    pub change: Option<T>,
    pub percent: Option<f64>,
}

fn change_of_counts(from: i32, to: i32) -> Change<i64> {
    let change = i64::from(to) - i64::from(from);
    Change {
        change: Some(change),
        percent: (from != 0).then(|| percent(change as f64, f64::from(from))),
    }
}

fn change_of_ratios(from: Option<f64>, to: Option<f64>) -> Change<f64> {
    match (from, to) {
        (Some(from), Some(to)) => {
            let change = ((to - from) * 100.0).round() / 100.0;
            Change {
                change: Some(change),
                percent: (from != 0.0).then(|| percent(to - from, from)),
            }
        }
        _ => Change {
            change: None,
            percent: None,
        },
    }
}

/// `change` in percent of `base`, to the hundredth of a percent.
fn percent(change: f64, base: f64) -> f64 {
    (change * 10_000.0 / base).round() / 100.0
}

/// The change over one window, from the last value at or before its start to the latest.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WindowGrowth {
    /// `1h`, `24h`, `7d`, `30d`, `90d` or `365d`.
    pub window: &'static str,
    pub seconds: i64,
    pub from: Value,
    pub to: Value,
    pub followers: Change<i64>,
    pub following: Change<i64>,
    pub ratio: Change<f64>,
}

/// One UTC day of the daily table.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DailyGain {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// False for the current day: its counts so far.
    pub closed: bool,
    /// The day's last stored counts.
    pub follower_count: i32,
    pub following_count: i32,
    /// From the close of the day before; absent when that day has no stored point.
    pub follower_change: Option<i64>,
    pub following_change: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GrowthAnswer {
    pub influencer_id: i64,
    /// The latest stored value, which every window ends at; absent before the first point.
    pub latest: Option<Value>,
    /// The windows the stored points cover, shortest first.
    pub windows: Vec<WindowGrowth>,
    /// The days with stored points among the last `days`, oldest first.
    pub days: Vec<DailyGain>,
}

/// An influencer's growth over the standard windows and its daily gains.
#[utoipa::path(get, path = "/influencer_analytics/{id}/growth", tag = "influencers",
    params(InfluencerId, GrowthQuery),
    responses(
        (status = 200, content((GrowthAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn growth(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    InfluencerId { id }: InfluencerId,
    Query(query): Query<GrowthQuery>,
) -> Result<axum::response::Response, ApiError> {
    let format = Format::of(query.format, &headers);
    let days = query.days.map_or(DEFAULT_DAYS, |Days(d)| d);
    let latest = latest_point(&state, id).await?;
    let today = Utc::now().timestamp_millis().div_euclid(DAY_MS) * DAY_MS;
    // One day more than asked: the first day's change is from the day before it.
    let first_ms = today - days * DAY_MS;
    // The windows' starting values and the daily table are read at once, each its own read.
    let pool = state.reads.pool();
    let starts = latest.into_iter().flat_map(|to| {
        WINDOWS.map(|(window, seconds)| async move {
            let start_ms = to.slot_ms - seconds * 1000;
            let before = series::read::points(pool, id, start_ms - LOOKBACK_MS, start_ms).await?;
            Ok::<_, ApiError>(
                before
                    .last()
                    .map(|&from| window_growth(window, seconds, from.into(), to.into())),
            )
        })
    });
    let (windows, closes) =
        futures_util::future::try_join(futures_util::future::try_join_all(starts), async {
            series::read::buckets(pool, id, first_ms, today + DAY_MS - 1, DAY_MS)
                .await
                .map_err(ApiError::from)
        })
        .await?;
    let windows: Vec<WindowGrowth> = windows.into_iter().flatten().collect();
    let closes: Vec<(i64, i32, i32)> = closes
        .iter()
        .map(|b| (b.time * 1000, b.follower_count.last, b.following_count.last))
        .collect();
    let answer = GrowthAnswer {
        influencer_id: id,
        latest: latest.map(Value::from),
        windows,
        days: daily_gains(&closes, first_ms + DAY_MS, today),
    };
    Ok(respond(format, answer, |a| Json(a).into_response()))
}

impl ToCsv for GrowthAnswer {
    /// The daily gains table, a row a day.
    fn table(&self) -> Table {
        let mut t = Table::new(
            format!("growth-{}", self.influencer_id),
            &[
                "day",
                "closed",
                "follower_count",
                "following_count",
                "follower_change",
                "following_change",
            ],
        );
        for d in &self.days {
            t.push(vec![
                d.day.clone(),
                d.closed.to_string(),
                d.follower_count.to_string(),
                d.following_count.to_string(),
                opt(d.follower_change),
                opt(d.following_change),
            ]);
        }
        t
    }
}

fn window_growth(window: &'static str, seconds: i64, from: Value, to: Value) -> WindowGrowth {
    WindowGrowth {
        window,
        seconds,
        followers: change_of_counts(from.follower_count, to.follower_count),
        following: change_of_counts(from.following_count, to.following_count),
        ratio: change_of_ratios(from.follower_ratio, to.follower_ratio),
        from,
        to,
    }
}

/// The daily table from each day's close `(day start ms, followers, following)`, in day
/// order: the days from `first_ms` on (a close before it only gives the first day's change),
/// today's marked as not closed.
pub(crate) fn daily_gains(
    closes: &[(i64, i32, i32)],
    first_ms: i64,
    today_ms: i64,
) -> Vec<DailyGain> {
    let mut out = Vec::new();
    let mut previous: Option<&(i64, i32, i32)> = None;
    for close in closes {
        let &(day_ms, followers, following) = close;
        if day_ms >= first_ms {
            let day_before = previous.filter(|p| p.0 == day_ms - DAY_MS);
            out.push(DailyGain {
                day: DateTime::<Utc>::from_timestamp_millis(day_ms)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
                closed: day_ms < today_ms,
                follower_count: followers,
                following_count: following,
                follower_change: day_before.map(|p| i64::from(followers) - i64::from(p.1)),
                following_change: day_before.map(|p| i64::from(following) - i64::from(p.2)),
            });
        }
        previous = Some(close);
    }
    out
}

/// The influencer's latest stored point; a 404 for an id never registered.
pub(crate) async fn latest_point(
    state: &ApiState,
    id: i64,
) -> Result<Option<SeriesPoint>, ApiError> {
    let row = sqlx::query!(
        r#"select (extract(epoch from l.slot) * 1000)::bigint as "slot_ms?",
                l.follower_count as "follower_count?", l.following_count as "following_count?"
         from influencers i left join influencer_latest l using (influencer_id)
         where i.influencer_id = $1"#,
        id,
    )
    .fetch_optional(state.reads.pool())
    .await?
    .ok_or_else(|| ApiError::never_tracked(id))?;
    Ok(
        match (row.slot_ms, row.follower_count, row.following_count) {
            (Some(slot_ms), Some(follower_count), Some(following_count)) => Some(SeriesPoint {
                slot_ms,
                follower_count,
                following_count,
            }),
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_absolute_and_in_percent_of_where_it_started() {
        let c = change_of_counts(200, 250);
        assert_eq!((c.change, c.percent), (Some(50), Some(25.0)));
        let c = change_of_counts(0, 7);
        assert_eq!((c.change, c.percent), (Some(7), None));
        let c = change_of_counts(i32::MAX, i32::MIN);
        assert_eq!(c.change, Some(-(1_i64 << 32) + 1));
        let c = change_of_ratios(Some(2.0), Some(2.5));
        assert_eq!((c.change, c.percent), (Some(0.5), Some(25.0)));
        let c = change_of_ratios(None, Some(2.5));
        assert_eq!((c.change, c.percent), (None, None));
        assert_eq!(percent(1.0, 3.0), 33.33);
    }

    #[test]
    fn daily_gains_change_only_from_the_day_before() {
        let day = |n: i64| 20_000 * DAY_MS + n * DAY_MS;
        let closes = [
            (day(0), 100, 10),
            (day(1), 130, 11),
            (day(3), 90, 12), // day 2 has no point
            (day(4), 95, 12),
        ];
        let gains = daily_gains(&closes, day(1), day(4));
        let got: Vec<_> = gains
            .iter()
            .map(|g| {
                (
                    g.closed,
                    g.follower_count,
                    g.follower_change,
                    g.following_change,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (true, 130, Some(30), Some(1)),
                (true, 90, None, None),
                (false, 95, Some(5), Some(0)),
            ]
        );
        assert_eq!(gains[0].day, "2024-10-05");
    }
}
