//! Writes outcomes to TimescaleDB in one transaction.
//!
//! Points go into the hot tier through [`series::hot`] (a binary `COPY`; points of hours that
//! closed a while ago into late points). The other tables use `unnest` statements: one statement per table whatever the batch size,
//! no parameter limit. influencer_latest only moves forward: an older slot never replaces a
//! newer one, so batches may arrive in any order.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::{
    events,
    model::{Failure, Gone},
    queue::points::Outcomes,
    series::{self, at},
};

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Points newly stored (duplicates of stored ones are not counted).
    pub points_stored: u64,
    pub failures_stored: u64,
    pub influencers_gone: u64,
}

/// Writes a batch of messages in one transaction. The messages are read in place: their rows
/// go straight into the statements' column arrays, without merging them first.
pub async fn write(pool: &PgPool, batch: &[&Outcomes]) -> Result<WriteReport, sqlx::Error> {
    let late_before = Utc::now().timestamp_millis() - crate::series::LATE_AFTER_MS;
    write_with_cutoff(pool, batch, late_before).await
}

/// [`write`], with points of slots before `late_before_ms` stored as late points (the
/// benchmarks replay past hours as if they were live: `i64::MIN`).
pub(crate) async fn write_with_cutoff(
    pool: &PgPool,
    batch: &[&Outcomes],
    late_before: i64,
) -> Result<WriteReport, sqlx::Error> {
    let points = || batch.iter().flat_map(|o| &o.points);
    let failures: Vec<&Failure> = batch.iter().flat_map(|o| &o.failures).collect();
    let gone: Vec<&Gone> = batch.iter().flat_map(|o| &o.gone).collect();
    let mut tx = pool.begin().await?;
    let mut report = WriteReport::default();
    if points().next().is_some() {
        report.points_stored = series::hot::store(&mut tx, points(), late_before).await?;
        store_latest(&mut tx, &series::hot::Columns::of(points())).await?;
    }
    if !failures.is_empty() {
        report.failures_stored = store_failures(&mut tx, &failures).await?;
    }
    if !gone.is_empty() {
        report.influencers_gone = untrack_gone(&mut tx, &gone).await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// The newest slot of the batch per influencer, where newer than what is stored, with the
/// spike screen's step (migration 0021): each change a candidate by the screen is noted in
/// `spike_candidates` in the same transaction, for the `spikes` role to decide
/// (`jobs::spikes`). Points of influencers not in the registry are stored but have
/// no latest row.
async fn store_latest(tx: &mut PgConnection, all: &series::hot::Columns) -> sqlx::Result<()> {
    sqlx::query!(
        "with latest as (
             insert into influencer_latest as l
                 (influencer_id, slot, fetched_at, follower_count, following_count)
             select distinct on (u.id) u.id, u.slot, u.fetched_at, u.followers, u.following
             from unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::int[], $5::int[])
                  as u(id, slot, fetched_at, followers, following)
             join influencers i on i.influencer_id = u.id
             order by u.id, u.slot desc
             on conflict (influencer_id) do update set
                 slot = excluded.slot,
                 fetched_at = excluded.fetched_at,
                 follower_count = excluded.follower_count,
                 following_count = excluded.following_count,
                 screen_followers = spike_screen_mean(l.screen_followers, l.screen_changes,
                     l.follower_count, excluded.follower_count, l.slot, excluded.slot),
                 screen_following = spike_screen_mean(l.screen_following, l.screen_changes,
                     l.following_count, excluded.following_count, l.slot, excluded.slot),
                 screen_changes = least(l.screen_changes + 1, 10000),
                 screen_hit =
                     case when spike_screen_hit(l.screen_followers, l.screen_changes,
                         l.follower_count, excluded.follower_count, l.slot, excluded.slot)
                     then 1 else 0 end
                   | case when spike_screen_hit(l.screen_following, l.screen_changes,
                         l.following_count, excluded.following_count, l.slot, excluded.slot)
                     then 2 else 0 end
             where l.slot < excluded.slot
             returning l.influencer_id, l.slot, l.screen_hit
         )
         insert into spike_candidates (influencer_id, slot, metrics)
         select influencer_id, slot, screen_hit from latest where screen_hit <> 0
         on conflict do nothing",
        &all.ids,
        &all.slots,
        &all.fetched,
        &all.followers,
        &all.following
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Records failed fetches (one a slot); returns how many were new.
async fn store_failures(tx: &mut PgConnection, failures: &[&Failure]) -> sqlx::Result<u64> {
    let ids: Vec<i64> = failures.iter().map(|f| f.pk).collect();
    let slots: Vec<_> = failures.iter().map(|f| at(f.slot_ms)).collect();
    let failed: Vec<_> = failures.iter().map(|f| at(f.failed_ms)).collect();
    let reasons: Vec<&str> = failures.iter().map(|f| f.reason.as_str()).collect();
    Ok(sqlx::query!(
        "insert into fetch_failures (influencer_id, slot, failed_at, reason)
         select * from unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::text[])
         on conflict do nothing",
        &ids,
        &slots,
        &failed,
        &reasons as &[&str],
    )
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

/// Takes influencers the upstream says are gone out of the registry's tracked set, and closes
/// their stretch of tracking (/gaps expects no slot after it), as of when the poller decided
/// it; unless the influencer's state was decided later (tracked again since: the registry is
/// the truth). Each one untracked is an `untracked` event, logged in the same transaction.
/// Returns how many were untracked.
async fn untrack_gone(tx: &mut PgConnection, gone: &[&Gone]) -> sqlx::Result<u64> {
    let ids: Vec<i64> = gone.iter().map(|g| g.pk).collect();
    let reasons: Vec<&str> = gone.iter().map(|g| g.reason.as_str()).collect();
    let decided: Vec<Option<DateTime<Utc>>> = gone.iter().map(|g| g.decided_ms.map(at)).collect();
    let untracked = sqlx::query!(
        r#"with gone as (
             update influencers i set tracked = false, untracked_reason = u.reason,
                 untracked_at = coalesce(u.decided, now()),
                 tracking_changed_at = coalesce(u.decided, now()),
                 tracking_xid = pg_current_xact_id()
             from unnest($1::bigint[], $2::text[], $3::timestamptz[]) as u(id, reason, decided)
             where i.influencer_id = u.id and i.tracked
               and (i.tracking_changed_at is null
                    or i.tracking_changed_at < coalesce(u.decided, now()))
             returning i.influencer_id, u.reason, i.untracked_at
         ), closed as (
             update tracking_periods p set stopped_at = gone.untracked_at, stop_reason = gone.reason
             from gone
             where p.influencer_id = gone.influencer_id and p.stopped_at is null
         )
         select influencer_id, reason as "reason!",
                (extract(epoch from untracked_at) * 1000)::bigint as "untracked_at_ms!"
         from gone"#,
        &ids,
        &reasons as &[&str],
        // (none: decided when written)
        &decided as &[Option<DateTime<Utc>>],
    )
    .fetch_all(&mut *tx)
    .await?;
    let events: Vec<events::NewEvent> = untracked
        .iter()
        .map(|u| events::NewEvent {
            kind: events::EventType::Untracked,
            influencer_id: u.influencer_id,
            slot_ms: Some(u.untracked_at_ms),
            data: serde_json::json!({"reason": u.reason}),
        })
        .collect();
    events::record_in(tx, &events).await?;
    Ok(untracked.len() as u64)
}

/// The SQLSTATE class sqlx has no error kind for that is about the data: a data exception (a
/// value out of range, a malformed value).
const DATA_EXCEPTION: &str = "22";

/// Whether a write error is about the data (retrying the same rows cannot help) rather than
/// the database being unreachable, busy or misconfigured: an integrity constraint violated
/// (sqlx's error kinds: unique, foreign key, not null, check) or a data exception. A missing
/// table or privilege (SQLSTATE class 42) is not: the same rows will go in once the database is
/// fixed, so the batch is held and retried rather than dead-lettered point by point.
pub fn is_data_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.kind() != sqlx::error::ErrorKind::Other
                || db.code().is_some_and(|c| c.starts_with(DATA_EXCEPTION))
        }
        sqlx::Error::Encode(_) | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => true,
        _ => false,
    }
}
