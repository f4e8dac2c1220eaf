//! The registry: who is tracked, and since when. It is the one truth about tracking; every
//! poller keeps a view of its changes ([`Registry`]) instead of trusting what it alone saw.
//!
//! - [`track`] registers ids and puts the new ones, and the ones tracked again, into the
//!   schedule, each with a stretch of tracking (`tracking_periods`) from its first slot;
//! - [`untrack`] stops tracking (`untrack` on the command line, `DELETE /influencers/{id}`):
//!   the stretch closes with its reason and time, the history stays, tracking again is allowed;
//! - the upstream saying an influencer is gone is the sink's to record, with the time the
//!   poller decided it: a decision older than the influencer's current state changes nothing.
//!
//! Every change of state stamps `tracking_changed_at` (when it was decided, strictly after the
//! state it replaces) and `tracking_xid` (the transaction that wrote it), so pollers read the
//! changes incrementally and a later decision always wins over an earlier one.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use sqlx::PgPool;

use crate::{
    queue::Broker,
    schedule::{SlotGrid, lead_for, now_ms, plan_batches},
};

/// What tracking a list of ids did, id by id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// Registered now.
    pub new: Vec<i64>,
    /// Were registered but not tracked (untracked, or the upstream did not know them), and
    /// are tracked again.
    pub retracked: Vec<i64>,
    pub already_tracked: Vec<i64>,
    /// Schedule messages published for the new and the re-tracked.
    pub schedule_messages: u64,
}

/// Registers `ids` and schedules the ones that were not tracked: registry first, schedule
/// second (if publishing fails half-way, the reconciler schedules the rest within a few
/// intervals). `progress` is told how many ids each step registered.
pub(crate) async fn track(
    pool: &PgPool,
    broker: &Broker,
    interval: Duration,
    ids: &[i64],
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Tracked> {
    let mut tracked = Tracked::default();
    for chunk in ids.chunks(10_000) {
        let new = sqlx::query_scalar!(
            "insert into influencers (influencer_id, username)
             select id, 'influencer-' || id from unnest($1::bigint[]) as id
             on conflict do nothing
             returning influencer_id",
            chunk,
        )
        .fetch_all(pool)
        .await
        .context("cannot register influencers")?;
        let retracked = sqlx::query_scalar!(
            "update influencers set tracked = true, untracked_reason = null, untracked_at = null,
                 scheduled_at = now(),
                 tracking_changed_at = greatest(now(), tracking_changed_at + interval '1 millisecond'),
                 tracking_xid = pg_current_xact_id()
             where influencer_id = any($1) and not tracked
             returning influencer_id",
            chunk,
        )
        .fetch_all(pool)
        .await
        .context("cannot track influencers again")?;
        let scheduled: HashSet<i64> = new.iter().chain(&retracked).copied().collect();
        tracked
            .already_tracked
            .extend(chunk.iter().filter(|id| !scheduled.contains(id)).copied());
        tracked.new.extend(new);
        tracked.retracked.extend(retracked);
        progress(chunk.len() as u64);
    }
    let to_schedule: Vec<i64> = tracked
        .new
        .iter()
        .chain(&tracked.retracked)
        .copied()
        .collect();
    // Each stretch of tracking starts at the time its first slot is planned from: /gaps
    // expects no slot before it.
    let from_ms = now_ms() + lead_for(interval).as_millis() as i64;
    for chunk in to_schedule.chunks(100_000) {
        sqlx::query!(
            "insert into tracking_periods (influencer_id, expected_from)
             select unnest($1::bigint[]), $2
             on conflict do nothing",
            chunk,
            crate::series::at(from_ms),
        )
        .execute(pool)
        .await
        .context("cannot record when tracking starts")?;
    }
    tracked.schedule_messages = schedule_from(broker, interval, &to_schedule, from_ms).await?;
    Ok(tracked)
}

/// What untracking a list of ids did, id by id.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Untracked {
    /// Were tracked; their stretch of tracking is closed now.
    pub untracked: Vec<i64>,
    /// Registered but not tracked already (nothing changed).
    pub not_tracked: Vec<i64>,
    /// Not registered.
    pub unknown: Vec<i64>,
}

/// Stops tracking `ids` for `reason`: out of the tracked set (the ranking and the average
/// leave them out from their next run), the stretch of tracking closed (`/gaps` expects no
/// slot after it), the points kept. Pollers drop their schedule entries when they next come.
pub async fn untrack(pool: &PgPool, ids: &[i64], reason: &str) -> anyhow::Result<Untracked> {
    let mut report = Untracked::default();
    for chunk in ids.chunks(10_000) {
        let rows = sqlx::query!(
            r#"with asked as (select distinct unnest($1::bigint[]) as id),
             stopped as (
                 update influencers i set tracked = false, untracked_reason = $2,
                     untracked_at = now(),
                     tracking_changed_at = greatest(now(), i.tracking_changed_at + interval '1 millisecond'),
                     tracking_xid = pg_current_xact_id()
                 from asked
                 where i.influencer_id = asked.id and i.tracked
                 returning i.influencer_id, i.untracked_at
             ), closed as (
                 update tracking_periods p set stopped_at = s.untracked_at, stop_reason = $2
                 from stopped s
                 where p.influencer_id = s.influencer_id and p.stopped_at is null
             )
             select asked.id as "id!", s.influencer_id is not null as "stopped!",
                    exists (select 1 from influencers i where i.influencer_id = asked.id) as "known!"
             from asked left join stopped s on s.influencer_id = asked.id
             order by asked.id"#,
            chunk,
            reason,
        )
        .fetch_all(pool)
        .await
        .context("cannot untrack influencers")?;
        for row in rows {
            let id = row.id;
            match (row.stopped, row.known) {
                (true, _) => report.untracked.push(id),
                (false, true) => report.not_tracked.push(id),
                (false, false) => report.unknown.push(id),
            }
        }
    }
    Ok(report)
}

/// Puts influencers into the schedule at their next slot (the reconciler's way back in),
/// through the delay queues.
pub(crate) async fn enter_schedule(
    broker: &Broker,
    interval: Duration,
    pks: &[i64],
) -> anyhow::Result<u64> {
    let from_ms = now_ms() + lead_for(interval).as_millis() as i64;
    schedule_from(broker, interval, pks, from_ms).await
}

/// Puts influencers into the schedule at their first slot at or after `from_ms`.
async fn schedule_from(
    broker: &Broker,
    interval: Duration,
    pks: &[i64],
    from_ms: i64,
) -> anyhow::Result<u64> {
    let grid = SlotGrid::new(interval);
    let lead = lead_for(interval).as_millis() as i64;
    let batches = plan_batches(pks, &grid, from_ms);
    for batch in &batches {
        let earliest = batch
            .earliest_slot_ms()
            .expect("planned batches are not empty");
        let delay = (earliest - now_ms() - lead).max(0) as u64;
        broker
            .publish_after(&batch.encode(), Duration::from_millis(delay))
            .await?;
    }
    Ok(batches.len() as u64)
}

/// One decision about an influencer: tracked or not, decided at `at_ms` (epoch ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    tracked: bool,
    at_ms: i64,
}

/// What one poll process knows of the registry's changes: the decisions it read, and the ones
/// it made itself (the upstream said an influencer is gone) before the registry records them.
/// The later decision wins, wherever it was made.
#[derive(Debug, Default)]
pub(crate) struct TrackingView {
    decisions: HashMap<i64, Decision>,
    /// Transactions from this id on may have written changes not read yet (none read: `None`).
    unread_from_xid: Option<i64>,
}

impl TrackingView {
    /// Learns that `pk` was (or was not) tracked from `at_ms`; an earlier decision than the
    /// one known changes nothing.
    pub(crate) fn learn(&mut self, pk: i64, tracked: bool, at_ms: i64) {
        let known = self
            .decisions
            .entry(pk)
            .or_insert(Decision { tracked, at_ms });
        if at_ms >= known.at_ms {
            *known = Decision { tracked, at_ms };
        }
    }

    /// Whether the latest decision known about `pk` is that it is not tracked.
    pub fn untracked(&self, pk: i64) -> bool {
        self.decisions.get(&pk).is_some_and(|d| !d.tracked)
    }
}

/// A poll process's way to the registry: its [`TrackingView`], kept up to date from the
/// database, and asked again before any schedule entry is dropped.
#[derive(Clone)]
pub struct Registry {
    pool: PgPool,
    view: Arc<Mutex<TrackingView>>,
}

impl Registry {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            view: Arc::default(),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, TrackingView> {
        self.view.lock().expect("tracking view lock")
    }

    /// Records this process's own decision that `pk` is gone, made at `at_ms`.
    pub(crate) fn learn_gone(&self, pk: i64, at_ms: i64) {
        self.view().learn(pk, false, at_ms);
    }

    /// Reads the registry's changes since the last read (all of them the first time); returns
    /// how many rows were read. Every transaction that had not committed at the last read has
    /// an id at or above that read's snapshot xmin, so none is missed.
    pub(crate) async fn read_changes(&self) -> Result<usize, sqlx::Error> {
        let from = self.view().unread_from_xid.unwrap_or(0);
        // The read's snapshot xmin, then a changed row's id, tracked and decision time (none
        // when nothing changed).
        let rows = sqlx::query!(
            r#"with s as (select pg_snapshot_xmin(pg_current_snapshot())::text::bigint as next)
             select s.next as "next!", i.influencer_id as "pk?", i.tracked as "tracked?",
                    (extract(epoch from i.tracking_changed_at) * 1000)::bigint as at_ms
             from s left join influencers i on i.tracking_xid >= ($1::bigint)::text::xid8"#,
            from,
        )
        .fetch_all(&self.pool)
        .await?;
        let mut view = self.view();
        let mut read = 0;
        for row in rows {
            view.unread_from_xid = Some(row.next);
            if let (Some(pk), Some(tracked)) = (row.pk, row.tracked) {
                view.learn(pk, tracked, row.at_ms.unwrap_or(i64::MIN));
                read += 1;
            }
        }
        Ok(read)
    }

    /// Of `pks`, the ones not tracked: those the view says are not, asked again of the
    /// registry. A registry that does not answer drops nobody (polling one influencer too many
    /// costs a request; dropping a tracked one loses its series until the reconciler notices).
    pub(crate) async fn untracked_of(&self, pks: impl Iterator<Item = i64>) -> HashSet<i64> {
        let candidates: Vec<i64> = {
            let view = self.view();
            pks.filter(|&pk| view.untracked(pk)).collect()
        };
        if candidates.is_empty() {
            return HashSet::new();
        }
        let rows = sqlx::query!(
            "select influencer_id, tracked,
                    (extract(epoch from tracking_changed_at) * 1000)::bigint as at_ms
             from influencers where influencer_id = any($1)",
            &candidates,
        )
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    influencers = candidates.len(),
                    "cannot ask the registry whether influencers are still tracked; they are polled"
                );
                return HashSet::new();
            }
        };
        let mut view = self.view();
        for row in rows {
            view.learn(
                row.influencer_id,
                row.tracked,
                row.at_ms.unwrap_or(i64::MIN),
            );
        }
        candidates
            .into_iter()
            .filter(|&pk| view.untracked(pk))
            .collect()
    }

    /// Reads the registry's changes every `every`, for good (a failed read is tried again at
    /// the next turn; the view stays as it was meanwhile).
    pub(crate) async fn watch(self, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.read_changes().await {
                Ok(read) if read > 0 => {
                    tracing::debug!(read, "read the registry's tracking changes")
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(
                    error = format!("{e:#}"),
                    "cannot read the registry's tracking changes; the view stays"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_later_decision_wins_wherever_it_was_made() {
        let mut view = TrackingView::default();
        assert!(!view.untracked(7), "an influencer never changed is tracked");
        view.learn(7, false, 1_000);
        assert!(view.untracked(7));
        // The registry's older row (tracked since before the gone) changes nothing...
        view.learn(7, true, 500);
        assert!(view.untracked(7));
        // ...its later one (tracked again) wins.
        view.learn(7, true, 2_000);
        assert!(!view.untracked(7));
        // A backlogged decision older than that changes nothing either.
        view.learn(7, false, 1_500);
        assert!(!view.untracked(7));
        // A row never changed since registration loses to any decision.
        view.learn(8, false, 10);
        view.learn(8, true, i64::MIN);
        assert!(view.untracked(8));
    }
}
