-- When each influencer was tracked: one row per stretch from its first scheduled slot to when
-- tracking stopped (null while it goes on). /gaps expects slots only inside these, so a stretch
-- untracked and tracked again, or the moments between registering and the first scheduled
-- slot, never count as missing.
--   expected_from: the time the schedule planned the influencer's first slot from (`seed`:
--                  the moment it scheduled, plus the poller's lead); the first slot of its grid
--                  at or after it is the first one expected.
--   stopped_at, stop_reason: when and why tracking stopped (the upstream said it is gone).
create table tracking_periods (
    influencer_id bigint not null,
    expected_from timestamptz not null,
    stopped_at    timestamptz,
    stop_reason   text,
    primary key (influencer_id, expected_from),
    check (stopped_at is null or stop_reason is not null)
);

-- At most one stretch goes on per influencer.
create unique index tracking_periods_open on tracking_periods (influencer_id) where stopped_at is null;

-- The influencers registered before: one stretch each, from when they were added (their first
-- scheduled slot was not recorded) to when tracking stopped.
insert into tracking_periods (influencer_id, expected_from, stopped_at, stop_reason)
    select influencer_id, added_at, untracked_at,
           case when untracked_at is null then null else coalesce(untracked_reason, 'untracked') end
    from influencers
    where tracked or untracked_at is not null;
