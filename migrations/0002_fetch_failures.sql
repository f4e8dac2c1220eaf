-- Polls that gave no point, so a gap in influencer_metrics always has a reason: a malformed
-- answer, an upstream error after every retry, a time-out. Written by the sink from the point
-- queue, like the points themselves, so a database outage loses none of them.
create table fetch_failures (
    influencer_id   bigint not null,
    slot            timestamptz not null,
    failed_at       timestamptz not null,
    -- a short, stable description, e.g. 'malformed body: missing field `followingCount`'
    reason          text not null
);
-- Failures are rare next to points: 1-day chunks.
select create_hypertable('fetch_failures', by_range('slot', interval '1 day'));
create unique index fetch_failures_influencer_slot on fetch_failures (influencer_id, slot desc);

-- When an influencer was last put into the schedule (by seed or by the reconciler). The
-- reconciler leaves alone whoever was scheduled recently: their first slot may not have come.
alter table influencers add column scheduled_at timestamptz not null default now();
