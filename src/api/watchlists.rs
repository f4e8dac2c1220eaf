//! Watchlists: named lists of influencers people follow together (a campaign's creators, a
//! competitor set). `POST /watchlists`, `GET /watchlists`, `GET`/`DELETE /watchlists/{name}`,
//! `PUT`/`DELETE /watchlists/{name}/members`. A list's view pages through its members with
//! their latest values, with the list's total and average followers; `GET
//! /watchlists/{name}/series` its followers over time ([`series`]). With `API_KEYS` set,
//! every watchlist endpoint wants a key ([`super::limits`]).

use axum::{
    Json,
    extract::{FromRequestParts, RawPathParams, State},
    http::{StatusCode, request::Parts},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub(crate) mod series;

use super::{
    ApiState,
    error::{ApiError, Problem},
    params::{Cursor, Limit, Query},
    tracking::{JsonBody, Pk, checked_ids},
};

/// The most members a list holds.
pub(crate) const MAX_MEMBERS: i64 = 100_000;
/// Members a page of a list's view holds when `limit` is not given.
const DEFAULT_PAGE: i64 = 100;

/// A watchlist's name: 1 to 64 letters, digits, `_`, `.` or `-`, starting with a letter or a
/// digit (so that it is a path segment as it is).
#[derive(Debug, Clone, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WatchlistName {
    /// The watchlist's name.
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
    pub name: String,
}

pub(crate) fn check_name(raw: &str) -> Result<String, ApiError> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    match ok {
        true => Ok(raw.to_string()),
        false => Err(ApiError::bad_request(
            "Invalid watchlist name",
            format!(
                "a watchlist's name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or a digit; got {:?}",
                raw.chars().take(70).collect::<String>()
            ),
        )),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WatchlistName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::bad_request("Invalid watchlist name", "the path is not valid UTF-8")
            })?;
        let raw = params
            .iter()
            .find(|(name, _)| *name == "name")
            .map(|(_, value)| value)
            .unwrap_or_default();
        Ok(WatchlistName {
            name: check_name(raw)?,
        })
    }
}

/// `POST /watchlists`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWatchlist {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
    pub name: String,
}

/// A watchlist, in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Watchlist {
    pub name: String,
    /// When it was created, epoch seconds.
    pub created_at: i64,
    /// How many influencers it holds.
    pub members: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WatchlistList {
    /// Every watchlist, by name.
    pub watchlists: Vec<Watchlist>,
}

/// The ids of a members request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembersRequest {
    /// Influencer pks, 1 to 2^53-1; at most 100,000 (an id given twice counts once).
    #[schema(value_type = Vec<Pk>, min_items = 1, max_items = 100_000)]
    pub ids: Vec<serde_json::Number>,
}

/// What `PUT /watchlists/{name}/members` did with each id.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct MembersAdded {
    /// Added now.
    pub added: Vec<i64>,
    /// On the list already: nothing changed.
    pub already_members: Vec<i64>,
    /// Not registered influencers: not added (register them with `POST /influencers`).
    pub unknown: Vec<i64>,
}

/// What `DELETE /watchlists/{name}/members` did with each id.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct MembersRemoved {
    pub removed: Vec<i64>,
    /// Not on the list: nothing changed.
    pub not_members: Vec<i64>,
}

/// Creates an empty watchlist.
#[utoipa::path(post, path = "/watchlists", tag = "watchlists",
    request_body = CreateWatchlist,
    responses(
        (status = 201, body = Watchlist),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create(
    State(state): State<ApiState>,
    JsonBody(request): JsonBody<CreateWatchlist>,
) -> Result<impl IntoResponse, ApiError> {
    let name = check_name(&request.name)?;
    let created = sqlx::query_scalar!(
        r#"insert into watchlists (name) values ($1) on conflict do nothing
           returning floor(extract(epoch from created_at))::bigint as "created_at!""#,
        name
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| ApiError::Conflict(format!("a watchlist named {name:?} exists already")))?;
    let watchlist = Watchlist {
        name,
        created_at: created,
        members: 0,
    };
    Ok((StatusCode::CREATED, Json(watchlist)))
}

/// Every watchlist, with how many influencers each holds.
#[utoipa::path(get, path = "/watchlists", tag = "watchlists",
    responses((status = 200, body = WatchlistList)))]
pub(crate) async fn list(State(state): State<ApiState>) -> Result<Json<WatchlistList>, ApiError> {
    let watchlists = sqlx::query_as!(
        Watchlist,
        r#"select w.name, floor(extract(epoch from w.created_at))::bigint as "created_at!",
                  (select count(*) from watchlist_members m where m.watchlist = w.name) as "members!"
           from watchlists w order by w.name"#
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(WatchlistList { watchlists }))
}

/// Deletes a watchlist (its influencers stay registered and tracked); not while webhooks
/// are sent its events (409).
#[utoipa::path(delete, path = "/watchlists/{name}", tag = "watchlists",
    params(WatchlistName),
    responses(
        (status = 204),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    WatchlistName { name }: WatchlistName,
) -> Result<StatusCode, ApiError> {
    let deleted = sqlx::query!("delete from watchlists where name = $1", name)
        .execute(&state.pool)
        .await
        .map_err(|e| match e {
            // webhooks.watchlist: the list's events have endpoints.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                ApiError::Conflict(format!(
                    "webhooks are sent the events of watchlist {name:?}: delete them first (GET /webhooks)"
                ))
            }
            e => e.into(),
        })?
        .rows_affected();
    match deleted {
        0 => Err(no_such_watchlist(&name)),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

pub(crate) fn no_such_watchlist(name: &str) -> ApiError {
    ApiError::NotFound(format!("there is no watchlist named {name:?}"))
}

/// Adds registered influencers to a watchlist (at most 100,000 members a list); ids that are
/// not registered are reported and not added.
#[utoipa::path(put, path = "/watchlists/{name}/members", tag = "watchlists",
    params(WatchlistName),
    request_body = MembersRequest,
    responses(
        (status = 200, body = MembersAdded),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn add_members(
    State(state): State<ApiState>,
    WatchlistName { name }: WatchlistName,
    JsonBody(request): JsonBody<MembersRequest>,
) -> Result<Json<MembersAdded>, ApiError> {
    let ids = checked_ids(request.ids)?;
    let mut tx = state.pool.begin().await?;
    // The list's row locked: two additions to one list count its members one after the other.
    sqlx::query_scalar!(
        "select name from watchlists where name = $1 for update",
        name
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| no_such_watchlist(&name))?;
    let known: Vec<i64> = sqlx::query_scalar!(
        "select influencer_id from influencers where influencer_id = any($1)",
        &ids
    )
    .fetch_all(&mut *tx)
    .await?;
    let added: Vec<i64> = sqlx::query_scalar!(
        "insert into watchlist_members (watchlist, influencer_id)
         select $1, id from unnest($2::bigint[]) id
         on conflict do nothing returning influencer_id",
        name,
        &known
    )
    .fetch_all(&mut *tx)
    .await?;
    let members = sqlx::query_scalar!(
        r#"select count(*) as "members!" from watchlist_members where watchlist = $1"#,
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    if members > MAX_MEMBERS {
        return Err(ApiError::Conflict(format!(
            "the watchlist would hold {members} influencers; a watchlist holds at most {MAX_MEMBERS}"
        )));
    }
    tx.commit().await?;
    let (known, added) = (sorted_set(known), sorted_set(added.clone()));
    Ok(Json(MembersAdded {
        already_members: ids
            .iter()
            .copied()
            .filter(|id| known.contains(id) && !added.contains(id))
            .collect(),
        unknown: ids
            .iter()
            .copied()
            .filter(|id| !known.contains(id))
            .collect(),
        added: ids.into_iter().filter(|id| added.contains(id)).collect(),
    }))
}

fn sorted_set(ids: Vec<i64>) -> std::collections::HashSet<i64> {
    ids.into_iter().collect()
}

/// Removes influencers from a watchlist.
#[utoipa::path(delete, path = "/watchlists/{name}/members", tag = "watchlists",
    params(WatchlistName),
    request_body = MembersRequest,
    responses(
        (status = 200, body = MembersRemoved),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn remove_members(
    State(state): State<ApiState>,
    WatchlistName { name }: WatchlistName,
    JsonBody(request): JsonBody<MembersRequest>,
) -> Result<Json<MembersRemoved>, ApiError> {
    let ids = checked_ids(request.ids)?;
    exists(&state, &name).await?;
    let removed = sorted_set(
        sqlx::query_scalar!(
            "delete from watchlist_members where watchlist = $1 and influencer_id = any($2)
             returning influencer_id",
            name,
            &ids
        )
        .fetch_all(&state.pool)
        .await?,
    );
    Ok(Json(MembersRemoved {
        not_members: ids
            .iter()
            .copied()
            .filter(|id| !removed.contains(id))
            .collect(),
        removed: ids.into_iter().filter(|id| removed.contains(id)).collect(),
    }))
}

/// The ids of a watchlist's members, sorted, for the endpoints that take `watchlist=`: a 400
/// for a name that cannot be one, a 404 for a list that does not exist.
pub(crate) async fn member_ids(state: &ApiState, name: &str) -> Result<Vec<i64>, ApiError> {
    let name = check_name(name)?;
    exists(state, &name).await?;
    Ok(sqlx::query_scalar!(
        "select influencer_id from watchlist_members where watchlist = $1 order by influencer_id",
        name
    )
    .fetch_all(&state.pool)
    .await?)
}

/// [`member_ids`] of the watchlist a query names, if it names one.
pub(crate) async fn members_if(
    state: &ApiState,
    name: Option<&str>,
) -> Result<Option<Vec<i64>>, ApiError> {
    match name {
        Some(name) => Ok(Some(member_ids(state, name).await?)),
        None => Ok(None),
    }
}

/// A 404 unless the watchlist exists.
pub(crate) async fn exists(state: &ApiState, name: &str) -> Result<(), ApiError> {
    let found = sqlx::query_scalar!(
        r#"select exists (select 1 from watchlists where name = $1) as "found!""#,
        name
    )
    .fetch_one(&state.pool)
    .await?;
    match found {
        true => Ok(()),
        false => Err(no_such_watchlist(name)),
    }
}

/// A page of a watchlist's view.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WatchlistQuery {
    /// Members per page, 1 to 1000; default 100.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<Limit>,
    /// The next_cursor of the previous page.
    #[param(value_type = Option<String>, pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<Cursor<1>>,
}

/// A member and its latest stored value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub influencer_id: i64,
    pub username: String,
    pub tracked: bool,
    /// The latest stored value's time, epoch seconds; absent before its first point.
    pub time: Option<i64>,
    pub follower_count: Option<i32>,
    pub following_count: Option<i32>,
}

/// A watchlist's view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WatchlistView {
    pub name: String,
    pub created_at: i64,
    /// Influencers on the list.
    pub members: i64,
    /// Of them, those with a stored point, which the total and the average are over.
    pub with_latest: i64,
    /// Their latest followers, summed.
    pub total_followers: i64,
    /// Their latest followers' mean; absent when none has a point.
    pub average_followers: Option<f64>,
    /// A page of members, by id.
    pub items: Vec<Member>,
    /// Where the next page starts; absent on the last.
    pub next_cursor: Option<String>,
}

/// A watchlist: its members' latest values, a page at a time, and their total and average.
#[utoipa::path(get, path = "/watchlists/{name}", tag = "watchlists",
    params(WatchlistName, WatchlistQuery),
    responses(
        (status = 200, body = WatchlistView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn view(
    State(state): State<ApiState>,
    WatchlistName { name }: WatchlistName,
    Query(query): Query<WatchlistQuery>,
) -> Result<Json<WatchlistView>, ApiError> {
    let limit = query.limit.map_or(DEFAULT_PAGE, |Limit(n)| n);
    let after = query.cursor.map_or(0, |Cursor([id])| id);
    let totals = sqlx::query!(
        r#"select floor(extract(epoch from w.created_at))::bigint as "created_at!",
                  count(m.influencer_id) as "members!",
                  count(l.influencer_id) as "with_latest!",
                  coalesce(sum(l.follower_count), 0)::bigint as "total_followers!",
                  avg(l.follower_count)::float8 as "average_followers?"
           from watchlists w
           left join watchlist_members m on m.watchlist = w.name
           left join influencer_latest l on l.influencer_id = m.influencer_id
           where w.name = $1
           group by w.created_at"#,
        name
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| no_such_watchlist(&name))?;
    let mut items = sqlx::query_as!(
        Member,
        r#"select m.influencer_id, i.username, i.tracked,
                  floor(extract(epoch from l.slot))::bigint as "time?",
                  l.follower_count as "follower_count?", l.following_count as "following_count?"
           from watchlist_members m
           join influencers i using (influencer_id)
           left join influencer_latest l using (influencer_id)
           where m.watchlist = $1 and m.influencer_id > $2
           order by m.influencer_id limit $3"#,
        name,
        after,
        limit + 1
    )
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = (items.len() as i64 > limit).then(|| {
        items.truncate(limit as usize);
        items.last().map_or(0, |m| m.influencer_id).to_string()
    });
    Ok(Json(WatchlistView {
        name,
        created_at: totals.created_at,
        members: totals.members,
        with_latest: totals.with_latest,
        total_followers: totals.total_followers,
        average_followers: totals.average_followers,
        items,
        next_cursor,
    }))
}
