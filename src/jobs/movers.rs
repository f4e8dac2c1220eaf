//! Marks for the movers: once a minute, every tracked influencer's latest value as one
//! [`Snapshot`] in `movers_marks` (migration 0013), so that "who gained the most in the last
//! hour (or day)" compares two marks instead of a million series. Marks are kept an hour
//! (each minute's: the 1-hour window) and a day (the first of each ten minutes: the 24-hour
//! window); windows of 7 days and more start at a day close (`series::closes`).
//!
//! A mark is taken from `influencer_latest`, the table the sink keeps of each influencer's
//! newest point: at 1,000,000 influencers one read of it a minute and about 7 MB written.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::{JobOutcome, try_lock};
use crate::series::{Snapshot, codec::CodecError};

/// Advisory lock key: "movers" in ASCII.
const LOCK_KEY: i64 = 0x6d6f_7665_7273;

/// Every mark is kept this long (the 1-hour window's start, with room for a late run).
pub const MINUTE_MARKS_KEPT_SECS: i64 = 65 * 60;
/// The first mark of each ten minutes is kept this long (the 24-hour window's start).
pub const TEN_MINUTE_MARKS_KEPT_SECS: i64 = 24 * 3600 + 15 * 60;

/// Takes this minute's mark unless another process is taking it or it is taken; returns how
/// many influencers it holds.
pub async fn mark_if_due(pool: &PgPool) -> Result<JobOutcome<usize>, sqlx::Error> {
    Ok(match take_if_due(pool).await? {
        JobOutcome::Done(mark) => JobOutcome::Done(mark.len()),
        JobOutcome::Busy => JobOutcome::Busy,
        JobOutcome::AlreadyDone => JobOutcome::AlreadyDone,
    })
}

/// As [`mark_if_due`], the mark itself (event detection runs on it, in the process that
/// took it).
pub async fn take_if_due(pool: &PgPool) -> Result<JobOutcome<Snapshot>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !try_lock(&mut tx, LOCK_KEY).await? {
        tx.rollback().await?;
        return Ok(JobOutcome::Busy);
    }
    let done: bool = sqlx::query_scalar!(
        r#"select exists (select 1 from movers_marks where marked_at >= date_trunc('minute', now()))
             as "done!""#,
    )
    .fetch_one(&mut *tx)
    .await?;
    if done {
        tx.rollback().await?;
        return Ok(JobOutcome::AlreadyDone);
    }
    let marked = mark(&mut tx).await?;
    tx.commit().await?;
    Ok(JobOutcome::Done(marked))
}

/// Takes a mark now (whatever is stored this minute) and drops the marks no window needs;
/// returns how many influencers it holds.
pub async fn mark_now(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let marked = mark(&mut tx).await?;
    tx.commit().await?;
    Ok(marked.len())
}

async fn mark(tx: &mut Transaction<'_, Postgres>) -> Result<Snapshot, sqlx::Error> {
    let rows = sqlx::query!(
        "select l.influencer_id, l.follower_count, l.following_count, l.slot
         from influencer_latest l join influencers i using (influencer_id)
         where i.tracked order by l.influencer_id",
    )
    .fetch_all(&mut **tx)
    .await?;
    let bytes = tokio::task::spawn_blocking(move || {
        let mut snapshot = Snapshot::with_capacity(rows.len());
        for row in rows {
            snapshot.push(
                row.influencer_id,
                row.follower_count,
                row.following_count,
                row.slot.timestamp_millis(),
            );
        }
        let bytes = snapshot.encode();
        (snapshot, bytes)
    })
    .await
    .expect("encoding a mark does not panic");
    let (snapshot, bytes) = bytes;
    sqlx::query!(
        // To the millisecond, as readers name a mark.
        "insert into movers_marks (marked_at, influencers, data)
         values (date_trunc('milliseconds', now()), $1, $2)
         on conflict (marked_at) do nothing",
        snapshot.len() as i32,
        bytes,
    )
    .execute(&mut **tx)
    .await?;
    // Older than an hour: only the first mark of each ten minutes stays, for a day.
    sqlx::query!(
        "delete from movers_marks m
         where m.marked_at < now() - make_interval(secs => $1)
           and (m.marked_at < now() - make_interval(secs => $2)
                or exists (select 1 from movers_marks o
                           where o.marked_at < m.marked_at
                             and date_bin('10 minutes', o.marked_at, 'epoch')
                                 = date_bin('10 minutes', m.marked_at, 'epoch')))",
        MINUTE_MARKS_KEPT_SECS as f64,
        TEN_MINUTE_MARKS_KEPT_SECS as f64,
    )
    .execute(&mut **tx)
    .await?;
    Ok(snapshot)
}

/// The newest mark's time and, if `start` is given as `(ms before it, slack ms)`, the newest
/// mark taken from `slack` before that moment to it: a window's two marks, in one statement.
pub async fn newest_and_start(
    pool: &PgPool,
    start: Option<(i64, i64)>,
) -> sqlx::Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>)> {
    let (before_ms, slack_ms) = start.unwrap_or((0, -1));
    let row = sqlx::query!(
        r#"with newest as (select max(marked_at) as at from movers_marks)
           select newest.at as "newest",
                  (select max(marked_at) from movers_marks
                   where $2::bigint >= 0
                     and marked_at <= newest.at - make_interval(secs => $1::bigint / 1000.0)
                     and marked_at >= newest.at - make_interval(secs => ($1::bigint + $2::bigint) / 1000.0))
                    as "start"
           from newest"#,
        before_ms,
        slack_ms,
    )
    .fetch_one(pool)
    .await?;
    Ok((row.newest, row.start))
}

/// The newest mark's time, if any.
pub async fn newest(pool: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    Ok(newest_and_start(pool, None).await?.0)
}

/// Why a mark cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the movers mark of {0} is gone (dropped as no window needs it any more)")]
    Gone(DateTime<Utc>),
    #[error("the movers mark of {at} cannot be decoded: {source}")]
    Damaged {
        at: DateTime<Utc>,
        source: CodecError,
    },
}

/// Every mark taken after `since`, oldest first, with its time.
pub async fn since(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Snapshot)>, MarkError> {
    let rows = sqlx::query!(
        "select marked_at, data from movers_marks where marked_at > $1 order by marked_at",
        since
    )
    .fetch_all(pool)
    .await?;
    let mut marks = Vec::with_capacity(rows.len());
    for row in rows {
        let at = row.marked_at;
        let snapshot = tokio::task::spawn_blocking(move || Snapshot::decode(&row.data))
            .await
            .expect("decoding a mark does not panic")
            .map_err(|source| MarkError::Damaged { at, source })?;
        marks.push((at, snapshot));
    }
    Ok(marks)
}

/// The mark taken at `marked_at`.
pub async fn read(pool: &PgPool, marked_at: DateTime<Utc>) -> Result<Snapshot, MarkError> {
    let bytes = sqlx::query_scalar!(
        "select data from movers_marks where marked_at = $1",
        marked_at
    )
    .fetch_optional(pool)
    .await?
    .ok_or(MarkError::Gone(marked_at))?;
    tokio::task::spawn_blocking(move || Snapshot::decode(&bytes))
        .await
        .expect("decoding a mark does not panic")
        .map_err(|source| MarkError::Damaged {
            at: marked_at,
            source,
        })
}
