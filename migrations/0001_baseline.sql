-- The schema of influencer-analytics, as one baseline (nothing was deployed before it). From
-- here on migrations only add: a new file for each change, never an edit of an applied one.
--
-- Column names of influencer_metrics are a public contract: dashboards (Grafana), psql users
-- and the project's checks read them. It works on TimescaleDB's Apache-2 edition (what Debian
-- ships): no compression, continuous aggregates or background-job policies are required.

create extension if not exists timescaledb;

-- The registry: every influencer we were ever asked to track. A row is never deleted, so a
-- point can always be traced to who it belongs to; an influencer that leaves the schedule keeps
-- its row with tracked = false and the reason.
create table influencers (
    influencer_id    bigint primary key check (influencer_id > 0),
    username         text not null,
    added_at         timestamptz not null default now(),
    tracked          boolean not null default true,
    -- why and when tracking stopped, e.g. 'upstream answered InfluencerNotFoundError'
    untracked_reason text,
    untracked_at     timestamptz,
    -- When the influencer was last put into the schedule (by seed or by the reconciler). The
    -- reconciler leaves alone whoever was scheduled recently: their first slot may not have come.
    scheduled_at     timestamptz not null default now(),
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
-- 16,700 rows/s) a chunk holds 60 million rows: about 3.6 GB of heap and 1.9 GB of index at
-- the ~92 bytes a point measured here. TimescaleDB's advice is that the chunks being written,
-- with their indexes, fit in about a quarter of memory (6 GB of this 24 GB box); inserts land
-- at random influencer ids, so the whole index of the open chunk is the working set. A range
-- query of one day touches 24 chunks, which planning handles in well under a millisecond each.
--
-- No default index on (slot desc): no query reads points by time across influencers (the API,
-- the spike detector and the dashboard all go by influencer), so it would only cost every
-- insert an index entry and 11-20 bytes a point.
select create_hypertable('influencer_metrics', by_range('slot', interval '1 hour'),
                         create_default_indexes => false);

-- Unique on (influencer_id, slot): a point delivered twice is stored once. It also serves the
-- API's main query, "one influencer, a time range", as an index range scan per chunk.
-- (A unique index on a hypertable must include the time column; this one does.)
create unique index influencer_metrics_influencer_slot
    on influencer_metrics (influencer_id, slot desc);

-- Latest values per influencer, maintained by the sink on every batch (16,700 rows/s at the
-- target scale), so "latest", rank and the average never scan the hypertable. Only a newer slot
-- replaces an older one. No index but the primary key, and room left in each page: the update
-- is a HOT update (no index entry written, the old version pruned in place). Rank is read from
-- influencer_ranks, not from here.
create table influencer_latest (
    influencer_id   bigint primary key references influencers (influencer_id),
    slot            timestamptz not null,
    fetched_at      timestamptz not null,
    follower_count  integer not null,
    following_count integer not null
) with (fillfactor = 70);

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
-- Failures are rare next to points: 1-day chunks (with the default index on slot).
select create_hypertable('fetch_failures', by_range('slot', interval '1 day'));
create unique index fetch_failures_influencer_slot on fetch_failures (influencer_id, slot desc);

-- The average followerCount across all tracked influencers, one row per minute, written by the
-- average job (src/jobs/average.rs) from influencer_latest. Small (525,600 rows a year):
-- 30-day chunks.
create table average_followers (
    bucket              timestamptz not null,
    avg_follower_count  double precision not null,
    influencer_count    bigint not null,
    primary key (bucket)
);
select create_hypertable('average_followers', by_range('bucket', interval '30 days'));

-- Rank by followerCount, rebuilt as a whole once a minute by the ranking job
-- (src/jobs/ranking.rs), so that "what is this influencer's rank" is one primary-key lookup
-- (well under a millisecond at 1,000,000 influencers) instead of counting everyone with more
-- followers on every request. The API states how old the ranking is (ranked_at).
create table influencer_ranks (
    influencer_id   bigint primary key,
    rank            integer not null,       -- 1 = most followers; ties share a rank
    fewer           integer not null,       -- how many ranked influencers have fewer followers
    follower_count  integer not null,       -- the count the rank was computed from
    ranked_at       timestamptz not null
);
-- The leaderboard pages through the ranking in rank order (keyset: rank, influencer_id).
create index influencer_ranks_rank on influencer_ranks (rank, influencer_id);

-- One row: when the current ranking was computed and how many influencers it covers (the job
-- ranks at most once a minute across processes by reading ranked_at).
create table ranking_runs (
    id          boolean primary key default true check (id),
    ranked_at   timestamptz not null,
    influencers bigint not null
);

-- Suspicious classifications, one row per verdict (history). `source` says who decided:
-- 'mockstagram' (the upstream's is_suspicious) or 'spike' (this project's follower-jump
-- detector). `pass_id` groups the verdicts of one daily pass; `detail` keeps the numbers
-- behind a verdict (the counts sent, a z-score...). At 1,000,000 influencers a day this is
-- 2,000,000 rows a day: 7-day chunks (with the default index on decided_at).
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
-- "Which influencers already have a verdict in this pass?"
create index suspicious_classifications_pass on suspicious_classifications (pass_id, influencer_id);

-- The current verdict of each classifier on each influencer, written with every new row of
-- suspicious_classifications (the history). The API's latest and suspicious endpoints read
-- this, never the history.
create table current_verdicts (
    influencer_id   bigint not null references influencers (influencer_id),
    source          text not null check (source in ('mockstagram', 'spike')),
    suspicious      boolean not null,
    decided_at      timestamptz not null,
    detail          jsonb,
    primary key (influencer_id, source)
);
create index current_verdicts_suspicious on current_verdicts (influencer_id) where suspicious;

-- One row per daily classification pass, in two stages, each resumable on its own:
--   * mockstagram: one is_suspicious question per influencer (progress: `classified`); a pass
--     stopped half-way asks only for the influencers without a verdict in it yet
--     (suspicious_classifications.pass_id);
--   * spike: the follower-jump detector over the day before the pass started, scanned in
--     influencer_id order (progress: `spike_cursor`, the last id scanned).
-- The pass is finished (finished_at) when both stages are.
create table classification_passes (
    pass_id      bigserial primary key,
    started_at   timestamptz not null default now(),
    finished_at  timestamptz,
    -- influencers the pass had to classify, and how many it has classified so far
    influencers  bigint not null default 0,
    classified   bigint not null default 0,
    -- influencers skipped because no point was stored for them yet
    skipped      bigint not null default 0,
    mockstagram_finished_at timestamptz,
    spike_cursor            bigint not null default 0,
    spike_judged            bigint not null default 0,
    spike_flagged           bigint not null default 0,
    spike_finished_at       timestamptz,
    -- Set when a newer day's pass replaced this one before it finished.
    superseded_by           bigint references classification_passes (pass_id)
);

-- Chunks of influencer_metrics whose unique index the chunk maintenance job
-- (src/jobs/chunks.rs) has rebuilt packed once their hour was over.
create table compacted_chunks (
    chunk_name    text primary key,
    compacted_at  timestamptz not null default now()
);
