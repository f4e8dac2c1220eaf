//! `GET /influencer_analytics/{id}` (a time range of points, raw or bucketed) and
//! `GET /influencer_analytics/{id}/latest`.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{model::follower_ratio, series};

use super::{
    ApiState,
    csv::{Format, Table, ToCsv, opt, respond},
    error::{ApiError, Problem},
    params::{InfluencerId, NoQuery, Query, RangeQuery, TimeRange},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct RangeAnswer {
    pub influencer_id: i64,
    pub username: String,
    pub start_time: i64,
    pub end_time: i64,
    /// Bucket width in seconds; absent for raw points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    /// `RawPoint`s without `step`, `Bucket`s with it; ascending time.
    #[schema(schema_with = points_schema)]
    pub points: Points,
}

/// `anyOf`, not the `oneOf` an untagged enum would get: an empty list is both.
fn points_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::{
        Ref,
        schema::{AnyOfBuilder, ArrayBuilder},
    };
    AnyOfBuilder::new()
        .item(ArrayBuilder::new().items(Ref::from_schema_name("RawPoint")))
        .item(ArrayBuilder::new().items(Ref::from_schema_name("Bucket")))
        .description(Some(
            "RawPoints without step, Buckets with it; ascending time",
        ))
        .build()
        .into()
}

/// About how many bytes a bucket takes in JSON (three statistics of four numbers each).
const BUCKET_JSON_BYTES: usize = 384;

/// A float as serde_json writes it (shortest form; null for a non-finite value).
fn write_float(out: &mut Vec<u8>, value: f64) {
    serde_json::to_writer(out, &value).expect("a float serializes");
}

/// `key` (the JSON text before the value: `{"name":` or `,"name":`), then an integer.
fn write_int(out: &mut Vec<u8>, number: &mut itoa::Buffer, key: &[u8], value: impl itoa::Integer) {
    out.extend_from_slice(key);
    out.extend_from_slice(number.format(value).as_bytes());
}

/// `value` written by `write`, or `null`.
fn write_or_null<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(value) => write(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

impl Bucket {
    /// The bucket as serde_json writes it (`RangeAnswer::to_json`).
    fn write_json(&self, out: &mut Vec<u8>, number: &mut itoa::Buffer) {
        write_int(out, number, b"{\"time\":", self.time);
        write_int(out, number, b",\"samples\":", self.samples);
        out.extend_from_slice(b",\"follower_count\":");
        self.follower_count.write_json(out, |out, v| {
            out.extend_from_slice(number.format(v).as_bytes())
        });
        out.extend_from_slice(b",\"following_count\":");
        self.following_count.write_json(out, |out, v| {
            out.extend_from_slice(number.format(v).as_bytes())
        });
        out.extend_from_slice(b",\"follower_ratio\":");
        write_or_null(out, self.follower_ratio.as_ref(), |out, stats| {
            stats.write_json(out, write_float)
        });
        out.push(b'}');
    }
}

impl<T: Copy> Stats<T> {
    /// `{"avg","min","max","last"}`, each value written by `value`.
    fn write_json(&self, out: &mut Vec<u8>, mut value: impl FnMut(&mut Vec<u8>, T)) {
        out.extend_from_slice(b"{\"avg\":");
        write_float(out, self.avg);
        out.extend_from_slice(b",\"min\":");
        value(out, self.min);
        out.extend_from_slice(b",\"max\":");
        value(out, self.max);
        out.extend_from_slice(b",\"last\":");
        value(out, self.last);
        out.push(b'}');
    }
}

/// About how many bytes a raw point takes in JSON (`{"time":1767225600,"follower_count":…}`).
const RAW_POINT_JSON_BYTES: usize = 96;

impl RangeAnswer {
    /// The answer as JSON: the bytes serde_json writes for it (a test holds the two equal),
    /// written directly for raw points. A day of them is about 130 kB, and through serde
    /// about half of what serving it cost the API: every key of every point checked for
    /// characters to escape, and the buffer grown by doubling from 128 bytes.
    ///
    /// Buckets are written directly too: a year at `step=1d` is 365 of them, about 140 kB.
    pub fn to_json(&self) -> Vec<u8> {
        let capacity = match &self.points {
            Points::Raw(points) => points.len() * RAW_POINT_JSON_BYTES,
            Points::Buckets(buckets) => buckets.len() * BUCKET_JSON_BYTES,
        };
        let mut out = Vec::with_capacity(192 + capacity);
        let mut number = itoa::Buffer::new();
        write_int(
            &mut out,
            &mut number,
            b"{\"influencer_id\":",
            self.influencer_id,
        );
        out.extend_from_slice(b",\"username\":");
        serde_json::to_writer(&mut out, &self.username).expect("a string serializes");
        write_int(&mut out, &mut number, b",\"start_time\":", self.start_time);
        write_int(&mut out, &mut number, b",\"end_time\":", self.end_time);
        if let Some(step) = self.step {
            write_int(&mut out, &mut number, b",\"step\":", step);
        }
        out.extend_from_slice(b",\"points\":[");
        match &self.points {
            Points::Raw(points) => {
                write_list(&mut out, points, |out, p| p.write_json(out, &mut number))
            }
            Points::Buckets(buckets) => {
                write_list(&mut out, buckets, |out, b| b.write_json(out, &mut number))
            }
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// `items` separated by commas, each written by `write`.
fn write_list<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
}

impl RawPoint {
    /// The point as serde_json writes it (`RangeAnswer::to_json`).
    fn write_json(&self, out: &mut Vec<u8>, number: &mut itoa::Buffer) {
        write_int(out, number, b"{\"time\":", self.time);
        write_int(out, number, b",\"follower_count\":", self.follower_count);
        write_int(out, number, b",\"following_count\":", self.following_count);
        out.extend_from_slice(b",\"follower_ratio\":");
        write_or_null(out, self.follower_ratio, write_float);
        out.push(b'}');
    }
}

impl axum::response::IntoResponse for RangeAnswer {
    fn into_response(self) -> axum::response::Response {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            self.to_json(),
        )
            .into_response()
    }
}

/// The points of a range answer: raw, or in buckets.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Points {
    Raw(Vec<RawPoint>),
    Buckets(Vec<Bucket>),
}

/// One stored point: `time` is the slot, in epoch seconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct RawPoint {
    pub time: i64,
    pub follower_count: i32,
    pub following_count: i32,
    pub follower_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Stats<T> {
    pub avg: f64,
    pub min: T,
    pub max: T,
    pub last: T,
}

/// One `time_bucket` of points; each statistic is `{"avg","min","max","last"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Bucket {
    pub time: i64,
    pub samples: i64,
    #[schema(value_type = Object)]
    pub follower_count: Stats<i32>,
    #[schema(value_type = Object)]
    pub following_count: Stats<i32>,
    #[schema(value_type = Option<Object>)]
    pub follower_ratio: Option<Stats<f64>>,
}

impl<T> From<series::Stats<T>> for Stats<T> {
    fn from(s: series::Stats<T>) -> Self {
        Self {
            avg: s.avg,
            min: s.min,
            max: s.max,
            last: s.last,
        }
    }
}

impl From<series::BucketStats> for Bucket {
    fn from(b: series::BucketStats) -> Self {
        Self {
            time: b.time,
            samples: b.samples,
            follower_count: b.follower_count.into(),
            following_count: b.following_count.into(),
            follower_ratio: b.follower_ratio.map(Stats::from),
        }
    }
}

/// The registry name of an influencer (kept once read: [`super::USERNAMES_KEPT`]), or 404.
async fn username(state: &ApiState, id: i64) -> Result<String, ApiError> {
    if let Some(name) = state.usernames.get(&id) {
        return Ok(name.to_string());
    }
    let name: String = sqlx::query_scalar!(
        "select username from influencers where influencer_id = $1",
        id
    )
    .fetch_optional(state.reads.pool())
    .await?
    .ok_or_else(|| ApiError::never_tracked(id))?;
    state.usernames.insert(id, name.as_str().into());
    Ok(name)
}

impl From<crate::series::SeriesPoint> for RawPoint {
    fn from(p: crate::series::SeriesPoint) -> Self {
        Self {
            time: p.slot_ms.div_euclid(1000),
            follower_count: p.follower_count,
            following_count: p.following_count,
            follower_ratio: follower_ratio(p.follower_count, p.following_count),
        }
    }
}

/// Points of one influencer over a time range, raw or in buckets.
///
/// A range whose start_time is after its end_time, or that holds more than 10,000 raw points or
/// buckets, is a 400 (the latter names a step that fits).
#[utoipa::path(get, path = "/influencer_analytics/{id}", tag = "influencers",
    params(InfluencerId, RangeQuery),
    responses(
        (status = 200, content((RangeAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn range(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    InfluencerId { id }: InfluencerId,
    Query(query): Query<RangeQuery>,
) -> Result<axum::response::Response, ApiError> {
    let format = Format::of(query.format, &headers);
    // Who first: an influencer never tracked is a 404 whatever range was asked for.
    let username = username(&state, id).await?;
    let range = TimeRange::from_query(&query, Utc::now().timestamp(), state.interval_seconds())?;
    let (start_ms, end_ms) = range.window_ms();
    let points = match range.step {
        None => Points::Raw(
            series::read::points(state.reads.pool(), id, start_ms, end_ms)
                .await?
                .into_iter()
                .map(RawPoint::from)
                .collect(),
        ),
        Some(step) => Points::Buckets(
            series::read::buckets(state.reads.pool(), id, start_ms, end_ms, step * 1000)
                .await?
                .into_iter()
                .map(Bucket::from)
                .collect(),
        ),
    };
    let answer = RangeAnswer {
        influencer_id: id,
        username,
        start_time: range.start,
        end_time: range.end,
        step: range.step,
        points,
    };
    Ok(respond(
        format,
        answer,
        axum::response::IntoResponse::into_response,
    ))
}

impl ToCsv for RangeAnswer {
    /// A row a raw point, or a bucket with each statistic a column.
    fn table(&self) -> Table {
        let name = format!("influencer-{}", self.influencer_id);
        match &self.points {
            Points::Raw(points) => {
                let header = &[
                    "time",
                    "follower_count",
                    "following_count",
                    "follower_ratio",
                ];
                let mut t = Table::new(name, header);
                for p in points {
                    let (followers, following) = (p.follower_count, p.following_count);
                    let time = p.time.to_string();
                    let ratio = opt(p.follower_ratio);
                    t.push(vec![
                        time,
                        followers.to_string(),
                        following.to_string(),
                        ratio,
                    ]);
                }
                t
            }
            Points::Buckets(buckets) => {
                let mut t = Table::new(name, BUCKET_COLUMNS);
                for b in buckets {
                    let mut row = vec![b.time.to_string(), b.samples.to_string()];
                    for s in [&b.follower_count, &b.following_count] {
                        row.extend([s.avg.to_string(), s.min.to_string(), s.max.to_string()]);
                        row.push(s.last.to_string());
                    }
                    let r = b.follower_ratio.as_ref();
                    row.extend([opt(r.map(|s| s.avg)), opt(r.map(|s| s.min))]);
                    row.extend([opt(r.map(|s| s.max)), opt(r.map(|s| s.last))]);
                    t.push(row);
                }
                t
            }
        }
    }
}

/// The columns of a bucketed range in CSV.
const BUCKET_COLUMNS: &[&str] = &[
    "time",
    "samples",
    "follower_count_avg",
    "follower_count_min",
    "follower_count_max",
    "follower_count_last",
    "following_count_avg",
    "following_count_min",
    "following_count_max",
    "following_count_last",
    "follower_ratio_avg",
    "follower_ratio_min",
    "follower_ratio_max",
    "follower_ratio_last",
];

#[derive(Debug, Serialize, ToSchema)]
pub struct Latest {
    pub influencer_id: i64,
    pub username: String,
    pub tracked: bool,
    pub untracked_reason: Option<String>,
    /// The slot of the latest point, epoch seconds; absent before the first point.
    pub time: Option<i64>,
    pub fetched_at: Option<DateTime<Utc>>,
    pub follower_count: Option<i32>,
    pub following_count: Option<i32>,
    pub follower_ratio: Option<f64>,
    pub rank: Option<Rank>,
    /// The latest verdict of each classifier that has judged this influencer.
    pub suspicious: Vec<Verdict>,
    /// How far behind the primary database this answer can be, in seconds: the read
    /// replica's replay lag when it answered (DATABASE_READ_URL), 0 from the primary.
    pub staleness_seconds: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rank {
    /// 1 = most followers; ties share a rank.
    pub rank: i32,
    /// Influencers ranked.
    pub of: i64,
    /// Share of ranked influencers with fewer followers, in percent.
    pub percentile: f64,
    /// The followerCount the rank was computed from.
    pub follower_count: i32,
    /// When the ranking was computed (it is refreshed once a minute).
    pub ranked_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Verdict {
    /// Who decided: "mockstagram" (the upstream's is_suspicious ratio rule), "spike" (this
    /// project's follower-jump detector) or "churn" (its follow/unfollow seesaw detector).
    pub source: String,
    pub suspicious: bool,
    pub decided_at: DateTime<Utc>,
    /// The numbers behind the verdict: the counts sent upstream, or the spike's robust
    /// z-score, the change (from, to, at) and the spread it was compared with.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// The registry row of an influencer with its latest point and rank, each absent until there
/// is one.
struct LatestRow {
    username: String,
    tracked: bool,
    untracked_reason: Option<String>,
    slot: Option<DateTime<Utc>>,
    fetched_at: Option<DateTime<Utc>>,
    follower_count: Option<i32>,
    following_count: Option<i32>,
}

/// An influencer's latest values, rank by followerCount and suspicious verdicts.
#[utoipa::path(get, path = "/influencer_analytics/{id}/latest", tag = "influencers",
    params(InfluencerId),
    responses(
        (status = 200, body = Latest),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn latest(
    State(state): State<ApiState>,
    InfluencerId { id }: InfluencerId,
    _: Query<NoQuery>,
) -> Result<Json<Latest>, ApiError> {
    let read = state.reads.target();
    let row = sqlx::query_as!(
        LatestRow,
        r#"select i.username, i.tracked, i.untracked_reason, l.slot as "slot?",
                l.fetched_at as "fetched_at?", l.follower_count as "follower_count?",
                l.following_count as "following_count?"
         from influencers i
         left join influencer_latest l using (influencer_id)
         where i.influencer_id = $1"#,
        id,
    )
    .fetch_optional(read.pool)
    .await?;
    let row = row.ok_or_else(|| ApiError::never_tracked(id))?;
    let suspicious = sqlx::query_as!(
        Verdict,
        "select source, suspicious, decided_at, detail from current_verdicts
         where influencer_id = $1 order by source",
        id,
    )
    .fetch_all(read.pool)
    .await?;
    let ranking = state.ranking.current(read.pool).await?;
    let rank = ranking.as_deref().and_then(|ranking| {
        let standing = ranking.standing(id)?;
        let of = ranking.len() as i64;
        Some(Rank {
            rank: i32::try_from(standing.rank).unwrap_or(i32::MAX),
            of,
            percentile: (standing.fewer as f64 * 10_000.0 / of as f64).round() / 100.0,
            follower_count: standing.follower_count,
            ranked_at: ranking.ranked_at,
        })
    });
    let ratio = match (row.follower_count, row.following_count) {
        (Some(f), Some(g)) => follower_ratio(f, g),
        _ => None,
    };
    Ok(Json(Latest {
        influencer_id: id,
        username: row.username,
        tracked: row.tracked,
        untracked_reason: row.untracked_reason,
        time: row.slot.map(|t| t.timestamp()),
        fetched_at: row.fetched_at,
        follower_count: row.follower_count,
        following_count: row.following_count,
        follower_ratio: ratio,
        rank,
        suspicious,
        staleness_seconds: read.staleness_seconds(),
    }))
}

#[cfg(test)]
mod tests;
