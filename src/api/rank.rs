//! `GET /influencer_analytics/{id}/rank`: where an influencer stood by followers at each UTC
//! day's close (for the retention) and at each hour of the last 48, from the rank history
//! (`series::ranks`): one small read a moment, never a ranking of everyone.

use axum::{Json, extract::State, response::IntoResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState,
    csv::{Format, Table, ToCsv, opt, respond},
    error::{ApiError, Problem},
    params::{Epoch, InfluencerId, Query, bounds},
};
use crate::series::{
    DAY_MS,
    ranks::{self, Kind, RankAt},
};

/// Without start_time, the history covers this long before end_time: more than the default
/// retention.
const DEFAULT_SPAN_SECONDS: i64 = 400 * 86_400;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RankQuery {
    /// Epoch seconds, inclusive; default end_time - 400 days; not after end_time.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 32_503_680_000_i64)]
    pub start_time: Option<Epoch>,
    /// Epoch seconds, inclusive; default now.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 32_503_680_000_i64)]
    pub end_time: Option<Epoch>,
    /// `json` (default) or `csv` (also by `Accept: text/csv`).
    #[param(value_type = Option<crate::api::csv::Format>)]
    pub format: Option<crate::api::csv::Format>,
}

/// Where the influencer stood at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RankPoint {
    /// The moment (epoch seconds): a day's close (the next day's 00:00 UTC), or the hour.
    pub time: i64,
    /// For a day's close: the day, `YYYY-MM-DD` (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// 1 = most followers; ties share a rank.
    pub rank: u32,
    /// The share of ranked influencers with fewer followers, in percent (to the hundredth).
    pub percentile: f64,
    /// How many influencers were ranked then.
    pub ranked: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RankAnswer {
    pub influencer_id: i64,
    pub start_time: i64,
    pub end_time: i64,
    /// At each UTC day's close within the range (ranked from everyone's last point of the
    /// day), oldest first.
    pub days: Vec<RankPoint>,
    /// At each hour within the range and the last 48 hours (ranked from everyone's latest
    /// value then), oldest first.
    pub hours: Vec<RankPoint>,
    /// How far behind the primary database this answer can be, in seconds: the read
    /// replica's replay lag when it answered (DATABASE_READ_URL), 0 from the primary.
    pub staleness_seconds: f64,
}

/// An influencer's rank history by followers.
#[utoipa::path(get, path = "/influencer_analytics/{id}/rank", tag = "influencers",
    params(InfluencerId, RankQuery),
    responses(
        (status = 200, content((RankAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rank(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    InfluencerId { id }: InfluencerId,
    Query(query): Query<RankQuery>,
) -> Result<axum::response::Response, ApiError> {
    let format = Format::of(query.format, &headers);
    let now = Utc::now().timestamp();
    let (start, end) = bounds(query.start_time, query.end_time, now, DEFAULT_SPAN_SECONDS)?;
    let read = state.reads.target();
    let registered: bool = sqlx::query_scalar!(
        r#"select exists (select 1 from influencers where influencer_id = $1) as "registered!""#,
        id
    )
    .fetch_one(read.pool)
    .await?;
    if !registered {
        return Err(ApiError::never_tracked(id));
    }
    // A day is stored at its start and answered at its close, a day later.
    let (start_ms, end_ms) = (start.saturating_mul(1000), end.saturating_mul(1000));
    let history = ranks::history(read.pool, id, start_ms - DAY_MS, end_ms).await?;
    let (days, hours) = split(&history, start_ms, end_ms);
    let answer = RankAnswer {
        influencer_id: id,
        start_time: start,
        end_time: end,
        days,
        hours,
        staleness_seconds: read.staleness_seconds(),
    };
    Ok(respond(format, answer, |a| Json(a).into_response()))
}

impl ToCsv for RankAnswer {
    /// A row a moment: the days' closes, then the hours.
    fn table(&self) -> Table {
        let mut t = Table::new(
            format!("rank-{}", self.influencer_id),
            &["kind", "time", "day", "rank", "percentile", "ranked"],
        );
        let rows = self
            .days
            .iter()
            .map(|p| ("day", p))
            .chain(self.hours.iter().map(|p| ("hour", p)));
        for (kind, p) in rows {
            t.push(vec![
                kind.to_string(),
                p.time.to_string(),
                opt(p.day.as_ref()),
                p.rank.to_string(),
                p.percentile.to_string(),
                p.ranked.to_string(),
            ]);
        }
        t
    }
}

/// The days and the hours of a history whose moments (a day at its close) fall within
/// `start_ms..=end_ms`.
fn split(history: &[RankAt], start_ms: i64, end_ms: i64) -> (Vec<RankPoint>, Vec<RankPoint>) {
    let (mut days, mut hours) = (Vec::new(), Vec::new());
    for r in history {
        let (time_ms, list) = match r.kind {
            Kind::Day => (r.at_ms + DAY_MS, &mut days),
            Kind::Hour => (r.at_ms, &mut hours),
        };
        if time_ms < start_ms || time_ms > end_ms {
            continue;
        }
        list.push(RankPoint {
            time: time_ms.div_euclid(1000),
            day: (r.kind == Kind::Day).then(|| {
                DateTime::<Utc>::from_timestamp_millis(r.at_ms)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default()
            }),
            rank: r.standing.rank,
            percentile: f64::from(r.standing.percentile) / 100.0,
            ranked: r.ranked,
        });
    }
    (days, hours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::ranks::Standing;

    #[test]
    fn days_are_answered_at_their_close_and_both_ends_are_inclusive() {
        let day = 20_000 * DAY_MS;
        let at = |kind, at_ms, rank, percentile| RankAt {
            kind,
            at_ms,
            standing: Standing { rank, percentile },
            ranked: 3,
        };
        let history = [
            at(Kind::Day, day - DAY_MS, 1, 6_667),
            at(Kind::Day, day, 3, 0),
            at(Kind::Hour, day + DAY_MS, 2, 3_333),
            at(Kind::Hour, day + DAY_MS + 3_600_000, 2, 3_333),
        ];
        let (days, hours) = split(&history, day, day + DAY_MS);
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].time, day / 1000);
        assert_eq!(days[0].day.as_deref(), Some("2024-10-03"));
        assert_eq!((days[0].rank, days[0].percentile), (1, 66.67));
        assert_eq!((days[1].rank, days[1].percentile), (3, 0.0));
        assert_eq!(hours.len(), 1);
        assert_eq!(
            (hours[0].time, hours[0].day.clone()),
            ((day + DAY_MS) / 1000, None)
        );
        let (days, hours) = split(&history, day + 1, day + DAY_MS - 1);
        assert!(days.is_empty() && hours.is_empty());
    }
}
