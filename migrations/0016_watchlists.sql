-- Watchlists (issue 40): named lists of influencers that people follow together (a
-- campaign's creators, a competitor set). Members are registered influencers; the API keeps a
-- list to at most 100,000 of them. Deleting a list deletes its memberships.
create table watchlists (
    name       text primary key check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    created_at timestamptz not null default now()
);

create table watchlist_members (
    watchlist     text not null references watchlists (name) on delete cascade,
    influencer_id bigint not null references influencers (influencer_id),
    added_at      timestamptz not null default now(),
    primary key (watchlist, influencer_id)
);

-- The lists an influencer is on.
create index watchlist_members_by_influencer on watchlist_members (influencer_id);
