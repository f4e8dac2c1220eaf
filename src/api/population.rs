//! Answers about all influencers: the average followerCount, the leaderboard, the suspicious.

use axum::{Json, extract::State, http::HeaderMap, response::IntoResponse, response::Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    ApiState,
    csv::{Format, Table, ToCsv, respond},
    error::{ApiError, Problem},
    params::{Cursor, Limit, Query, RangeQuery, SuspiciousQuery, TimeRange, TopQuery},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct AveragePoint {
    pub time: i64,
    pub avg_follower_count: f64,
    pub influencers: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AverageAnswer {
    pub start_time: i64,
    pub end_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    /// The newest stored average (once a minute), whatever the range.
    pub current: Option<AveragePoint>,
    pub points: Vec<AveragePoint>,
}

/// `GET /influencer_analytics/average?start_time&end_time[&step]`: the average followerCount
/// across tracked influencers, one point a minute (or per step, weighted by influencers).
///
/// A range whose start_time is after its end_time, or that holds more than 10,000 minutes or
/// buckets, is a 400 (the latter names a step that fits).
#[utoipa::path(get, path = "/influencer_analytics/average", tag = "population",
    params(RangeQuery),
    responses(
        (status = 200, content((AverageAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn average(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    let format = Format::of(query.format, &headers);
    // The average is stored once a minute.
    let range = TimeRange::from_query(&query, Utc::now().timestamp(), 60)?;
    // Times come back as timestamptz and become epoch seconds here: `extract(epoch ...)` is
    // numeric in PostgreSQL, about a third of a day's grouped statement (3.4 ms against 2.4).
    let point = |time: DateTime<Utc>, avg_follower_count, influencers| AveragePoint {
        time: time.timestamp(),
        avg_follower_count,
        influencers,
    };
    let points: Vec<AveragePoint> = match range.step {
        // One stored row per minute already: no grouping to do.
        None => sqlx::query!(
            "select bucket, avg_follower_count, influencer_count
             from average_followers where bucket >= $1 and bucket <= $2
             order by bucket",
            range.start_at(),
            range.end_at(),
        )
        .fetch_all(state.reads.pool())
        .await?
        .into_iter()
        .map(|row| point(row.bucket, row.avg_follower_count, row.influencer_count))
        .collect(),
        Some(step) => sqlx::query!(
            r#"select time_bucket(make_interval(secs => $3), bucket) as "bucket!",
                    sum(avg_follower_count * influencer_count)
                        / nullif(sum(influencer_count), 0) as "avg_follower_count!",
                    max(influencer_count) as "influencer_count!"
             from average_followers where bucket >= $1 and bucket <= $2
             group by 1 order by 1"#,
            range.start_at(),
            range.end_at(),
            step as f64,
        )
        .fetch_all(state.reads.pool())
        .await?
        .into_iter()
        .map(|row| point(row.bucket, row.avg_follower_count, row.influencer_count))
        .collect(),
    };
    let current = sqlx::query!(
        "select bucket, avg_follower_count, influencer_count
         from average_followers order by bucket desc limit 1",
    )
    .fetch_optional(state.reads.pool())
    .await?
    .map(|row| point(row.bucket, row.avg_follower_count, row.influencer_count));
    let answer = AverageAnswer {
        start_time: range.start,
        end_time: range.end,
        step: range.step,
        current,
        points,
    };
    Ok(respond(format, answer, |a| Json(a).into_response()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ranked {
    pub rank: i32,
    pub influencer_id: i64,
    pub username: String,
    pub follower_count: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopAnswer {
    pub influencers: Vec<Ranked>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// When the ranking was computed (refreshed once a minute).
    pub ranked_at: Option<DateTime<Utc>>,
}

/// `GET /influencer_analytics/top?limit&cursor`: the leaderboard by followerCount; with
/// `watchlist`, of its members (404 if there is no such list).
#[utoipa::path(get, path = "/influencer_analytics/top", tag = "population",
    params(TopQuery),
    responses(
        (status = 200, content((TopAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn top(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(page): Query<TopQuery>,
) -> Result<Response, ApiError> {
    let format = Format::of(page.format, &headers);
    let json = |a: TopAnswer| Json(a).into_response();
    let Limit(limit) = page.limit.unwrap_or(Limit(10));
    let Cursor([after_rank, after_id]) = page.cursor.unwrap_or(Cursor([0, 0]));
    let members = super::watchlists::members_if(&state, page.watchlist.as_deref()).await?;
    let Some(ranking) = state.ranking.current(state.reads.pool()).await? else {
        let answer = TopAnswer {
            influencers: Vec::new(),
            next_cursor: None,
            ranked_at: None,
        };
        return Ok(respond(format, answer, json));
    };
    let page = match &members {
        Some(members) => ranking.page_among(members, (after_rank, after_id), limit as usize),
        None => ranking.page((after_rank, after_id), limit as usize),
    };
    let ids: Vec<i64> = page.iter().map(|e| e.1).collect();
    let names: std::collections::HashMap<i64, String> = sqlx::query!(
        "select influencer_id, username from influencers where influencer_id = any($1)",
        &ids,
    )
    .fetch_all(state.reads.pool())
    .await?
    .into_iter()
    .map(|row| (row.influencer_id, row.username))
    .collect();
    let influencers: Vec<Ranked> = page
        .into_iter()
        .map(|(rank, influencer_id, follower_count)| Ranked {
            rank: i32::try_from(rank).unwrap_or(i32::MAX),
            influencer_id,
            username: names.get(&influencer_id).cloned().unwrap_or_default(),
            follower_count,
        })
        .collect();
    let ranked_at = Some(ranking.ranked_at);
    let next_cursor = (influencers.len() as i64 == limit)
        .then(|| {
            influencers
                .last()
                .map(|r| format!("{}.{}", r.rank, r.influencer_id))
        })
        .flatten();
    let answer = TopAnswer {
        influencers,
        next_cursor,
        ranked_at,
    };
    Ok(respond(format, answer, json))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Suspect {
    pub influencer_id: i64,
    pub username: String,
    /// Which classifiers say suspicious: "mockstagram", "spike", "churn".
    pub sources: Vec<String>,
    pub decided_at: DateTime<Utc>,
    /// Per source that flagged it, the numbers behind the verdict (see `latest`).
    #[schema(value_type = Object)]
    pub reasons: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuspiciousAnswer {
    pub influencers: Vec<Suspect>,
    pub next_cursor: Option<String>,
}

/// `GET /influencer_analytics/suspicious?limit&cursor`: influencers a classifier currently
/// calls suspicious, by id.
#[utoipa::path(get, path = "/influencer_analytics/suspicious", tag = "population",
    params(SuspiciousQuery),
    responses(
        (status = 200, content((SuspiciousAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn suspicious(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(page): Query<SuspiciousQuery>,
) -> Result<Response, ApiError> {
    let format = Format::of(page.format, &headers);
    let Limit(limit) = page.limit.unwrap_or(Limit(100));
    let Cursor([after_id]) = page.cursor.unwrap_or(Cursor([0]));
    let influencers = sqlx::query_as!(
        Suspect,
        r#"select v.influencer_id as "influencer_id!", i.username,
                array_agg(v.source order by v.source) as "sources!",
                max(v.decided_at) as "decided_at!",
                jsonb_object_agg(v.source, coalesce(v.detail, '{}'::jsonb)) as "reasons!"
         from current_verdicts v join influencers i using (influencer_id)
         where v.suspicious and v.influencer_id > $1
         group by v.influencer_id, i.username
         order by v.influencer_id
         limit $2"#,
        after_id,
        limit,
    )
    .fetch_all(state.reads.pool())
    .await?;
    let next_cursor = (influencers.len() as i64 == limit)
        .then(|| influencers.last().map(|s| s.influencer_id.to_string()))
        .flatten();
    let answer = SuspiciousAnswer {
        influencers,
        next_cursor,
    };
    Ok(respond(format, answer, |a| Json(a).into_response()))
}

impl ToCsv for AverageAnswer {
    fn table(&self) -> Table {
        let mut t = Table::new("average", &["time", "avg_follower_count", "influencers"]);
        for p in &self.points {
            t.push(vec![
                p.time.to_string(),
                p.avg_follower_count.to_string(),
                p.influencers.to_string(),
            ]);
        }
        t
    }
}

impl ToCsv for TopAnswer {
    fn table(&self) -> Table {
        let mut t = Table::new(
            "top",
            &["rank", "influencer_id", "username", "follower_count"],
        );
        for r in &self.influencers {
            t.push(vec![
                r.rank.to_string(),
                r.influencer_id.to_string(),
                r.username.clone(),
                r.follower_count.to_string(),
            ]);
        }
        t
    }
}

impl ToCsv for SuspiciousAnswer {
    /// A row an influencer; `sources` separated by `;`, `reasons` as their JSON.
    fn table(&self) -> Table {
        let mut t = Table::new(
            "suspicious",
            &[
                "influencer_id",
                "username",
                "sources",
                "decided_at",
                "reasons",
            ],
        );
        for s in &self.influencers {
            t.push(vec![
                s.influencer_id.to_string(),
                s.username.clone(),
                s.sources.join(";"),
                s.decided_at.to_rfc3339(),
                s.reasons.to_string(),
            ]);
        }
        t
    }
}
