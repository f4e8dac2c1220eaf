//! `GET /influencer_analytics/movers`: who gained or lost the most, across everyone, over a
//! window ending now (1 h to 365 d) or between two past days' closes.
//!
//! An answer compares two snapshots of everyone ([`crate::series::Snapshot`]): for a window
//! ending now, the newest mark the movers job took of every tracked influencer's latest value
//! (once a minute: `as_of`) against an older mark (1 h and 24 h) or a day close (7 d and
//! longer: the close of the last day that ended before the window's start); between past days,
//! the two days' closes. The pairing ([`board::Board`]) and each order are computed once per
//! pair of snapshots and kept ([`Boards`]), so a page is a binary search and a slice.
//!
//! An influencer without a value near either end (not polled then, not tracked yet) is left
//! out and counted in `stale`, never guessed.

pub mod board;

use std::{collections::VecDeque, future::Future, sync::Arc};

use axum::{Json, extract::State, response::IntoResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use utoipa::{IntoParams, ToSchema};

use self::board::{Board, By, Direction, Metric, Side};
use super::{
    ApiState,
    csv::{Format, Table, ToCsv, opt, respond},
    error::{ApiError, Problem},
    growth::Value,
    params::{Day, KeyCursor, Limit, MinFollowers, Query},
};
use crate::{
    jobs::movers as marks,
    series::{self, DAY_MS, SeriesPoint, Snapshot, at, closes},
};

/// The windows ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
pub enum Window {
    #[serde(rename = "1h")]
    Hour,
    #[default]
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
    #[serde(rename = "90d")]
    Quarter,
    #[serde(rename = "365d")]
    Year,
}

impl Window {
    fn millis(self) -> i64 {
        let days = match self {
            Window::Hour => return series::HOUR_MS,
            Window::Day => 1,
            Window::Week => 7,
            Window::Month => 30,
            Window::Quarter => 90,
            Window::Year => 365,
        };
        days * DAY_MS
    }

    /// How far before the window's start its starting mark may be: marks are taken each
    /// minute and kept an hour, then one each ten minutes for a day.
    fn mark_slack_ms(self) -> Option<i64> {
        match self {
            Window::Hour => Some(5 * 60_000),
            Window::Day => Some(15 * 60_000),
            _ => None,
        }
    }
}

/// Followers an influencer must have at the window's start when `min_followers` is not given:
/// a percent change from a tiny base is noise (10 to 30 followers is +200%).
pub const DEFAULT_MIN_FOLLOWERS: i32 = 1_000;

/// Movers a page holds when `limit` is not given.
const DEFAULT_LIMIT: i64 = 20;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MoversQuery {
    /// A window ending now: `1h`, `24h` (default), `7d`, `30d`, `90d` or `365d`. Not with
    /// start_day and end_day.
    #[param(value_type = Option<Window>)]
    pub window: Option<Window>,
    /// With end_day instead of a window: from this UTC day's close (`YYYY-MM-DD`)...
    #[param(value_type = Option<String>, format = Date)]
    pub start_day: Option<Day>,
    /// ... to this later day's close.
    #[param(value_type = Option<String>, format = Date)]
    pub end_day: Option<Day>,
    /// `followers` (default), `following` or `ratio`.
    #[param(value_type = Option<Metric>)]
    pub metric: Option<Metric>,
    /// `absolute` (default) or `percent` (of the starting value).
    #[param(value_type = Option<By>)]
    pub by: Option<By>,
    /// `gainers` (default: change above 0, largest first) or `losers` (below 0, largest fall
    /// first).
    #[param(value_type = Option<Direction>)]
    pub direction: Option<Direction>,
    /// Only influencers with at least this many followers at the start; default 1000.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 2_147_483_647_i64)]
    pub min_followers: Option<MinFollowers>,
    /// Movers per page, 1 to 1000; default 20.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<Limit>,
    /// The next_cursor of the previous page (of the same query).
    #[param(value_type = Option<String>, pattern = r"^-?[0-9]{1,20}(\.[0-9]{1,20})?_[0-9]{1,18}$")]
    pub cursor: Option<KeyCursor>,
    /// Only the members of this watchlist (`compared` and `stale` count them).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
    pub watchlist: Option<String>,
    /// `json` (default) or `csv` (also by `Accept: text/csv`).
    #[param(value_type = Option<crate::api::csv::Format>)]
    pub format: Option<crate::api::csv::Format>,
}

/// One mover.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MoverRow {
    pub influencer_id: i64,
    pub username: String,
    /// The value at the start, and when it was taken.
    pub from: Value,
    /// The value at the end, and when it was taken.
    pub to: Value,
    /// The metric's change from `from` to `to`.
    pub change: f64,
    /// The change in percent of the start's value (to the hundredth); absent from 0.
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MoversAnswer {
    /// The window ending now, or absent between two days.
    pub window: Option<Window>,
    pub start_day: Option<String>,
    pub end_day: Option<String>,
    pub metric: Metric,
    pub by: By,
    pub direction: Direction,
    pub min_followers: i32,
    /// The moment the end's values stand for: the newest mark (a minute old at most while the
    /// jobs run), or the end day's end.
    pub as_of: DateTime<Utc>,
    /// The moment the start's values stand for: the mark or the day's end nearest before the
    /// window's start.
    pub from_as_of: DateTime<Utc>,
    /// Influencers with a value near both ends, whether or not they moved.
    pub compared: usize,
    /// Influencers left out: no value near one of the ends (not polled then, not tracked yet).
    pub stale: usize,
    pub movers: Vec<MoverRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// How far behind the primary database this answer can be, in seconds: the read
    /// replica's replay lag when it answered (DATABASE_READ_URL), 0 from the primary.
    pub staleness_seconds: f64,
}

/// The top movers across every tracked influencer over a window, by the change of a count or
/// of the ratio.
///
/// Either a `window` ending now, or `start_day` and `end_day` (both, the first before the
/// second) and no window: otherwise a 400 titled "Invalid day range". A 404 when the snapshots
/// a window needs are not there (yet): the jobs take a mark a minute, and a day's closes are
/// written when compaction merges the day.
#[utoipa::path(get, path = "/influencer_analytics/movers", tag = "population",
    params(MoversQuery),
    responses(
        (status = 200, content((MoversAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn movers(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    Query(query): Query<MoversQuery>,
) -> Result<axum::response::Response, ApiError> {
    let format = Format::of(query.format, &headers);
    let span = Span::of(&query)?;
    let (from, to) = match span {
        Span::Window(window) => window_sources(&state, window).await?,
        Span::Days(start, end) => (Source::Close(start.0), Source::Close(end.0)),
    };
    let members = super::watchlists::members_if(&state, query.watchlist.as_deref()).await?;
    let staleness_seconds = state.reads.target().staleness_seconds();
    let tolerance_ms = 3 * state.interval.as_millis() as i64;
    let board = state
        .movers
        .board(state.reads.pool(), from, to, tolerance_ms)
        .await?;
    let order = (
        query.metric.unwrap_or_default(),
        query.by.unwrap_or_default(),
        query.direction.unwrap_or_default(),
    );
    let min_followers = query
        .min_followers
        .map_or(DEFAULT_MIN_FOLLOWERS, |MinFollowers(n)| n);
    let Limit(limit) = query.limit.unwrap_or(Limit(DEFAULT_LIMIT));
    let after = query.cursor.map(|KeyCursor(key, id)| (key, id));
    let (page, compared, stale) = {
        let board = board.clone();
        tokio::task::spawn_blocking(move || {
            page_of(
                &board,
                order,
                min_followers,
                after,
                limit,
                members.as_deref(),
            )
        })
        .await
        .expect("paging movers does not panic")
    };
    let ids: Vec<i64> = page.iter().map(|m| m.influencer_id).collect();
    let names = usernames(&state, &ids).await?;
    let next_cursor = (page.len() as i64 == limit)
        .then(|| page.last().map(|m| KeyCursor::text(m.key, m.influencer_id)))
        .flatten();
    let movers = mover_rows(page, &names, order.0);
    let (window, start_day, end_day) = match span {
        Span::Window(w) => (Some(w), None, None),
        Span::Days(start, end) => (None, Some(start.name()), Some(end.name())),
    };
    let answer = MoversAnswer {
        window,
        start_day,
        end_day,
        metric: order.0,
        by: order.1,
        direction: order.2,
        min_followers,
        as_of: at(board.to.at_ms),
        from_as_of: at(board.from.at_ms),
        compared,
        stale,
        movers,
        next_cursor,
        staleness_seconds,
    };
    Ok(respond(format, answer, |a| Json(a).into_response()))
}

/// A page's movers as answered: both values with their times, the change of `metric`.
fn mover_rows(
    page: Vec<board::Mover>,
    names: &std::collections::HashMap<i64, String>,
    metric: Metric,
) -> Vec<MoverRow> {
    let value = |(time_ms, followers, following): board::Value| {
        Value::from(SeriesPoint {
            slot_ms: time_ms,
            follower_count: followers,
            following_count: following,
        })
    };
    page.into_iter()
        .map(|m| MoverRow {
            influencer_id: m.influencer_id,
            username: names.get(&m.influencer_id).cloned().unwrap_or_default(),
            from: value(m.from),
            to: value(m.to),
            change: board::change(metric, By::Absolute, m.from, m.to).unwrap_or_default(),
            percent: board::change(metric, By::Percent, m.from, m.to),
        })
        .collect()
}

/// A page of a board (of a watchlist's members, if given), and how many were compared and
/// stale: everyone, or within a watchlist its members (stale: no value near an end).
fn page_of(
    board: &board::Board,
    order: (Metric, By, Direction),
    min_followers: i32,
    after: Option<(f64, i64)>,
    limit: i64,
    members: Option<&[i64]>,
) -> (Vec<board::Mover>, usize, usize) {
    let page = board.page_within(order, min_followers, after, limit as usize, members);
    match members {
        Some(members) => {
            let compared = board.compared_among(members);
            (page, compared, members.len() - compared)
        }
        None => (page, board.compared(), board.stale),
    }
}

impl ToCsv for MoversAnswer {
    /// A row a mover: both values of the metric with their times, the change.
    fn table(&self) -> Table {
        let mut t = Table::new(
            "movers",
            &[
                "influencer_id",
                "username",
                "from_time",
                "from_value",
                "to_time",
                "to_value",
                "change",
                "percent",
            ],
        );
        let value = |v: &Value| match self.metric {
            Metric::Followers => v.follower_count.to_string(),
            Metric::Following => v.following_count.to_string(),
            Metric::Ratio => opt(v.follower_ratio),
        };
        for m in &self.movers {
            t.push(vec![
                m.influencer_id.to_string(),
                m.username.clone(),
                m.from.time.to_string(),
                value(&m.from),
                m.to.time.to_string(),
                value(&m.to),
                m.change.to_string(),
                opt(m.percent),
            ]);
        }
        t
    }
}

/// What a query compares.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Span {
    Window(Window),
    Days(Day, Day),
}

impl Span {
    fn of(query: &MoversQuery) -> Result<Self, ApiError> {
        let invalid = |detail: &str| ApiError::bad_request("Invalid day range", detail);
        match (query.window, query.start_day, query.end_day) {
            (window, None, None) => Ok(Span::Window(window.unwrap_or_default())),
            (None, Some(start), Some(end)) if start.0 < end.0 => Ok(Span::Days(start, end)),
            (None, Some(start), Some(end)) => Err(invalid(&format!(
                "start_day ({}) must be before end_day ({})",
                start.name(),
                end.name()
            ))),
            (Some(_), _, _) => Err(invalid(
                "give either a window (ending now) or start_day and end_day, not both",
            )),
            _ => Err(invalid("start_day and end_day go together: give both")),
        }
    }
}

/// A snapshot an answer reads: a movers mark (its time) or a day's closes (its start), epoch ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Mark(i64),
    Close(i64),
}

impl Source {
    /// The moment its values stand for.
    fn at_ms(self) -> i64 {
        match self {
            Source::Mark(ms) => ms,
            Source::Close(day_ms) => day_ms + DAY_MS,
        }
    }

    async fn read(self, pool: &sqlx::PgPool) -> Result<Snapshot, ApiError> {
        match self {
            Source::Mark(ms) => marks::read(pool, at(ms)).await.map_err(|e| match e {
                marks::MarkError::Database(e) => e.into(),
                // Dropped between choosing it and reading it: the next request chooses again.
                marks::MarkError::Gone(_) => ApiError::Unavailable(format!("{e}; try again")),
                e => ApiError::Internal(e.into()),
            }),
            Source::Close(day_ms) => match closes::day(pool, day_ms).await {
                Ok(Some(snapshot)) => Ok(snapshot),
                Ok(None) => Err(ApiError::NotFound(format!(
                    "no day closes for {}: a day has them once compaction has merged it (after it ends), until RETENTION",
                    Day(day_ms).name()
                ))),
                Err(closes::ClosesError::Database(e)) => Err(e.into()),
                Err(e) => Err(ApiError::Internal(e.into())),
            },
        }
    }
}

/// The two snapshots of a window ending now.
async fn window_sources(state: &ApiState, window: Window) -> Result<(Source, Source), ApiError> {
    let start = window.mark_slack_ms().map(|slack| (window.millis(), slack));
    let (newest, start_mark) = marks::newest_and_start(state.reads.pool(), start).await?;
    let Some(newest) = newest else {
        return Err(ApiError::NotFound(
            "no movers mark yet: the jobs (in run, sink or jobs processes) take one a minute"
                .into(),
        ));
    };
    let to = newest.timestamp_millis();
    let from = match start {
        Some(_) => start_mark.map(|t| Source::Mark(t.timestamp_millis())),
        None => {
            // The close of the last day that ended by the window's start, or the day before.
            let edge = to - window.millis();
            let last_ended = edge.div_euclid(DAY_MS) * DAY_MS - DAY_MS;
            closes::latest_day_at_or_before(state.reads.pool(), last_ended)
                .await?
                .filter(|&day| day >= last_ended - DAY_MS)
                .map(Source::Close)
        }
    };
    let from = from.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no snapshot of everyone's values from {} ago yet (marks are kept from when the jobs first ran: an hour each minute, a day each ten minutes; longer windows start at a day close)",
            window_name(window)
        ))
    })?;
    Ok((from, Source::Mark(to)))
}

fn window_name(window: Window) -> String {
    serde_json::to_value(window)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The usernames of `ids` (those registered), from the names the API keeps where it can: a
/// page of movers is asked for again and again within a minute.
async fn usernames(
    state: &ApiState,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, String>, ApiError> {
    let mut names = std::collections::HashMap::with_capacity(ids.len());
    let mut unknown = Vec::new();
    for &id in ids {
        match state.usernames.get(&id) {
            Some(name) => {
                names.insert(id, name.to_string());
            }
            None => unknown.push(id),
        }
    }
    if unknown.is_empty() {
        return Ok(names);
    }
    let rows = sqlx::query!(
        "select influencer_id, username from influencers where influencer_id = any($1)",
        &unknown,
    )
    .fetch_all(state.reads.pool())
    .await?;
    for row in rows {
        state
            .usernames
            .insert(row.influencer_id, row.username.as_str().into());
        names.insert(row.influencer_id, row.username);
    }
    Ok(names)
}

/// Snapshots and boards an API process keeps: a few of each, the newest (each minute's mark
/// is compared by every window; a day's closes serve a day).
#[derive(Clone, Default)]
pub struct Boards {
    snapshots: Memo<(bool, i64), Arc<Snapshot>>,
    boards: Memo<(bool, i64, bool, i64), Arc<Board>>,
}

/// Snapshots kept (about 24 bytes an influencer decoded: 24 MB each at 1,000,000).
const SNAPSHOTS_KEPT: usize = 8;
/// Boards kept (8 bytes an influencer, and 16 per order asked for).
const BOARDS_KEPT: usize = 8;

impl Boards {
    async fn snapshot(
        &self,
        pool: &sqlx::PgPool,
        source: Source,
    ) -> Result<Arc<Snapshot>, ApiError> {
        self.snapshots
            .get_or_try_init(key_of(source), SNAPSHOTS_KEPT, async {
                source.read(pool).await.map(Arc::new)
            })
            .await
    }

    async fn board(
        &self,
        pool: &sqlx::PgPool,
        from: Source,
        to: Source,
        tolerance_ms: i64,
    ) -> Result<Arc<Board>, ApiError> {
        let (f, t) = (key_of(from), key_of(to));
        self.boards
            .get_or_try_init((f.0, f.1, t.0, t.1), BOARDS_KEPT, async {
                let from_side = Side {
                    snapshot: self.snapshot(pool, from).await?,
                    at_ms: from.at_ms(),
                };
                let to_side = Side {
                    snapshot: self.snapshot(pool, to).await?,
                    at_ms: to.at_ms(),
                };
                let board = tokio::task::spawn_blocking(move || {
                    Board::new(from_side, to_side, tolerance_ms)
                })
                .await
                .expect("pairing snapshots does not panic");
                Ok(Arc::new(board))
            })
            .await
    }
}

fn key_of(source: Source) -> (bool, i64) {
    match source {
        Source::Mark(ms) => (true, ms),
        Source::Close(ms) => (false, ms),
    }
}

/// A key and its value, computed or being computed.
type Entry<K, V> = (K, Arc<OnceCell<V>>);

/// The last few values computed, by key; callers asking for a key being computed wait for
/// that computation instead of repeating it.
#[derive(Clone)]
struct Memo<K, V> {
    held: Arc<std::sync::Mutex<VecDeque<Entry<K, V>>>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Self {
            held: Default::default(),
        }
    }
}

impl<K: PartialEq + Copy, V: Clone> Memo<K, V> {
    async fn get_or_try_init<F>(&self, key: K, kept: usize, init: F) -> Result<V, ApiError>
    where
        F: Future<Output = Result<V, ApiError>>,
    {
        let cell = {
            let mut held = self.held.lock().expect("the memo's lock is not poisoned");
            match held.iter().find(|(k, _)| *k == key) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    held.push_back((key, cell.clone()));
                    while held.len() > kept {
                        held.pop_front();
                    }
                    cell
                }
            }
        };
        cell.get_or_try_init(|| init).await.cloned()
    }
}
