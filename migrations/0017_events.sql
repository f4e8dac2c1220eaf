-- The event log (issue 40): what happened to an influencer that someone may want to be told
-- about, detected as the data arrives. Webhooks and the live stream read it in id order;
-- writers take a lock so that ids become visible in the order they are given (a reader
-- resuming after id N never misses an id below N). Kept for EVENTS_RETENTION.
create table events (
    id            bigint generated always as identity primary key,
    type          text not null check (type in ('spike', 'following_churn', 'milestone', 'top_n',
                                                'stale', 'recovered', 'verdict', 'untracked')),
    influencer_id bigint not null,
    -- The slot of the point the event is about (for stale: the last point stored).
    slot          timestamptz,
    detected_at   timestamptz not null default now(),
    -- The numbers behind it, by type (docs/events.md).
    data          jsonb not null,
    -- The watchlists the influencer was on when the event was detected.
    watchlists    text[] not null default '{}'
);

create index events_by_influencer on events (influencer_id, id);
create index events_by_detected_at on events (detected_at);
