-- The schema of influencer-analytics. Column names of influencer_metrics are a public contract:
-- dashboards (Grafana), psql users and the project's checks read them.
--
-- It works on TimescaleDB's Apache-2 edition (what Debian ships): no compression, continuous
-- aggregates or background-job policies are required.

create extension if not exists timescaledb;

-- The registry: every influencer we were ever asked to track. A row is never deleted, so a
-- point can always be traced to who it belongs to; an influencer that leaves the schedule keeps
-- its row with tracked = false and the reason.
create table influencers (
    influencer_id   bigint primary key check (influencer_id > 0),
    username        text not null,
    added_at        timestamptz not null default now(),
    tracked         boolean not null default true,
    -- why and when tracking stopped, e.g. 'upstream answered InfluencerNotFoundError'
    untracked_reason text,
    untracked_at    timestamptz,
    check (tracked or untracked_reason is not null)
);

-- One row per influencer per poll. `slot` is the scheduled time of the poll (offset(pk) plus a
-- whole number of intervals), not when the answer came: a redelivered or retried fetch of the
-- same slot lands on the same key and is stored once. `fetched_at` is when the upstream
-- answered, so fetched_at - slot is how late the poll ran.
--
-- Row layout: three 8-byte columns then two 4-byte ones, so no alignment padding.
-- 32 bytes of data + 24 bytes of tuple header + 4 bytes of line pointer.
create table influencer_metrics (
    influencer_id   bigint not null,
    slot            timestamptz not null,
    fetched_at      timestamptz not null,
    follower_count  integer not null check (follower_count >= 0),
    following_count integer not null check (following_count >= 0)
);

-- chunk_time_interval = 1 hour. At the target scale (1,000,000 influencers each minute, about
-- 16,700 rows/s) a chunk holds 60 million rows: about 3.6 GB of heap and 2.4 GB of index at
-- the ~100 bytes a row measured here. TimescaleDB's advice is that the chunks being written,
-- with their indexes, fit in about a quarter of memory (6 GB of this 24 GB box); inserts land
-- at random influencer ids, so the whole index of the open chunk is the working set. A range
-- query of one day touches 24 chunks, which planning handles in well under a millisecond each.
select create_hypertable('influencer_metrics', by_range('slot', interval '1 hour'));

-- Unique on (influencer_id, slot): a point delivered twice is stored once. It also serves the
-- API's main query, "one influencer, a time range", as an index range scan per chunk.
-- (A unique index on a hypertable must include the time column; this one does.)
create unique index influencer_metrics_influencer_slot
    on influencer_metrics (influencer_id, slot desc);

-- Latest values per influencer, maintained by the sink on every batch, so "latest", rank and
-- the average never scan the hypertable. Only a newer slot replaces an older one.
create table influencer_latest (
    influencer_id   bigint primary key references influencers (influencer_id),
    slot            timestamptz not null,
    fetched_at      timestamptz not null,
    follower_count  integer not null,
    following_count integer not null
);

-- Rank by followerCount reads this index.
create index influencer_latest_follower_count on influencer_latest (follower_count desc, influencer_id);

-- The average followerCount across all tracked influencers, one row per minute, written by a
-- job once a minute from influencer_latest. Small (525,600 rows a year): 30-day chunks.
create table average_followers (
    bucket              timestamptz not null,
    avg_follower_count  double precision not null,
    influencer_count    bigint not null,
    primary key (bucket)
);
select create_hypertable('average_followers', by_range('bucket', interval '30 days'));

-- Suspicious classifications, one row per verdict (history). `source` says who decided:
-- 'mockstagram' (the upstream's is_suspicious) or 'spike' (this project's follower-jump
-- detector). `pass_id` groups the verdicts of one daily pass; `detail` keeps the numbers
-- behind a verdict (the counts sent, a z-score...). At 1,000,000 influencers a day this is
-- 1,000,000 rows a day: 7-day chunks.
create table suspicious_classifications (
    influencer_id   bigint not null references influencers (influencer_id),
    decided_at      timestamptz not null,
    pass_id         bigint,
    source          text not null check (source in ('mockstagram', 'spike')),
    suspicious      boolean not null,
    follower_count  integer,
    following_count integer,
    detail          jsonb
);
select create_hypertable('suspicious_classifications', by_range('decided_at', interval '7 days'));
create index suspicious_classifications_influencer
    on suspicious_classifications (influencer_id, decided_at desc);
