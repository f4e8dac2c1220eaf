//! `GET /influencer_analytics/search?q=`: influencers whose username starts with `q` (case
//! does not matter), or whose id is `q`, for a search box: the id's own match first, then the
//! usernames in order, each with its latest followers.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState,
    error::{ApiError, Problem},
    params::{Limit, Query},
};

/// Matches an answer holds when `limit` is not given.
const DEFAULT_LIMIT: i64 = 10;
/// The longest `q`.
const MAX_QUERY_CHARS: usize = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The start of a username (case does not matter) or an influencer id; 1 to 100
    /// characters.
    #[param(min_length = 1, max_length = 100)]
    pub q: String,
    /// Matches, 1 to 1000; default 10.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<Limit>,
}

/// One influencer found.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Found {
    pub influencer_id: i64,
    pub username: String,
    pub tracked: bool,
    /// The latest followerCount; absent before the first point.
    pub follower_count: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SearchAnswer {
    pub q: String,
    pub influencers: Vec<Found>,
}

/// Influencers by the start of their username or by id.
#[utoipa::path(get, path = "/influencer_analytics/search", tag = "influencers",
    params(SearchQuery),
    responses(
        (status = 200, body = SearchAnswer),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn search(
    State(state): State<ApiState>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<SearchAnswer>, ApiError> {
    let chars = query.q.chars().count();
    if chars == 0 || chars > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(
            "Invalid q",
            format!("q must be 1 to {MAX_QUERY_CHARS} characters, got {chars}"),
        ));
    }
    let Limit(limit) = query.limit.unwrap_or(Limit(DEFAULT_LIMIT));
    // No username holds a NUL (PostgreSQL's text cannot): such a q matches nothing.
    if query.q.contains('\0') {
        return Ok(Json(SearchAnswer {
            q: query.q,
            influencers: Vec::new(),
        }));
    }
    let mut influencers = Vec::new();
    let id = super::params::parse_id(query.q.trim()).ok();
    if let Some(id) = id {
        influencers.extend(
            sqlx::query_as!(
                Found,
                r#"select i.influencer_id, i.username, i.tracked,
                          l.follower_count as "follower_count?"
                   from influencers i left join influencer_latest l using (influencer_id)
                   where i.influencer_id = $1"#,
                id,
            )
            .fetch_optional(state.reads.pool())
            .await?,
        );
    }
    // Every lowered name that starts with the lowered q sorts (in byte order) from it to just
    // below it followed by the last code point (U+10FFFF).
    let by_name = sqlx::query_as!(
        Found,
        r#"select i.influencer_id, i.username, i.tracked, l.follower_count as "follower_count?"
           from influencers i left join influencer_latest l using (influencer_id)
           where lower(i.username) collate "C" >= lower($1)
             and lower(i.username) collate "C" < (lower($1) || chr(1114111))
           order by lower(i.username) collate "C", i.influencer_id
           limit $2"#,
        query.q,
        limit,
    )
    .fetch_all(state.reads.pool())
    .await?;
    for found in by_name {
        if influencers.len() as i64 == limit {
            break;
        }
        if Some(found.influencer_id) != id {
            influencers.push(found);
        }
    }
    Ok(Json(SearchAnswer {
        q: query.q,
        influencers,
    }))
}
