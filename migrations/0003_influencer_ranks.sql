-- Rank by followerCount, refreshed as a whole once a minute by the sink's jobs, so that
-- "what is this influencer's rank" is one primary-key lookup (well under a millisecond at
-- 1,000,000 influencers) instead of counting everyone with more followers on every request.
-- The API states how old the ranking is (ranked_at).
create table influencer_ranks (
    influencer_id   bigint primary key,
    rank            integer not null,       -- 1 = most followers; ties share a rank
    fewer           integer not null,       -- how many ranked influencers have fewer followers
    follower_count  integer not null,       -- the count the rank was computed from
    ranked_at       timestamptz not null
);

-- One row: how many influencers the current ranking covers.
create table ranking_runs (
    id          boolean primary key default true check (id),
    ranked_at   timestamptz not null,
    influencers bigint not null
);

-- The leaderboard pages through the ranking in rank order (keyset: rank, influencer_id).
create index influencer_ranks_rank on influencer_ranks (rank, influencer_id);

-- The current verdict of each classifier on each influencer ('mockstagram', 'spike'),
-- written with every new row of suspicious_classifications (the history). The API's latest
-- and suspicious endpoints read this, never the history.
create table current_verdicts (
    influencer_id   bigint not null references influencers (influencer_id),
    source          text not null check (source in ('mockstagram', 'spike')),
    suspicious      boolean not null,
    decided_at      timestamptz not null,
    detail          jsonb,
    primary key (influencer_id, source)
);
create index current_verdicts_suspicious on current_verdicts (influencer_id) where suspicious;
