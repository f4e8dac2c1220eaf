-- Who is tracked, as every poller knows it: the registry is the truth, read incrementally.
--   tracking_changed_at: when the current tracked/untracked state was decided (the poller's
--       fetch time for "the upstream does not know it", the moment of `untrack` or of tracking
--       again). A decision older than the current state is stale and changes nothing: a
--       backlogged "gone" never untracks an influencer tracked again after it.
--   tracking_xid: the transaction that wrote that state. Pollers read the changes since the
--       oldest transaction still running at their last read (pg_snapshot_xmin), so no change
--       is missed whatever order transactions commit in.
-- Both stay null for an influencer that was never untracked: only changes are indexed, and a
-- million new registrations cost the pollers nothing.
alter table influencers
    add column tracking_changed_at timestamptz,
    add column tracking_xid xid8;

update influencers
   set tracking_changed_at = untracked_at, tracking_xid = pg_current_xact_id()
 where untracked_at is not null;

create index influencers_tracking_changes on influencers (tracking_xid)
    where tracking_xid is not null;
