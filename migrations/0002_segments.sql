-- The cold tier: closed hours, then closed days, of each influencer as one compact segment
-- (src/series). The hot tier stays influencer_metrics; compaction (src/jobs/compaction.rs)
-- moves each closed hour from there into segments and drops its chunk.

-- One row per influencer per closed UTC day (influencer_segments), or per closed hour of a day
-- not yet merged (influencer_hour_segments, same columns). `data` holds the slots and both counts
-- (src/series/codec.rs); the summary columns answer bucketed long ranges without decoding it
-- when a bucket covers the whole segment. `fetched_at` is not kept: per segment, how late the
-- latest poll ran (lateness_max_ms) and its 99th percentile (lateness_p99_ms; for a day, the
-- highest of its hours' p99, an upper bound).
--
-- 8-byte columns first, then 4-byte ones, then data: no alignment padding.
create table influencer_segments (
    influencer_id    bigint not null,
    period_start     timestamptz not null,
    period_end       timestamptz not null,
    first_slot       timestamptz not null,
    last_slot        timestamptz not null,
    follower_sum     bigint not null,
    following_sum    bigint not null,
    -- the follower/following ratio over the points with following_count > 0 (ratio_points);
    -- null when there are none. ratio_sum is summed per hour, then per day, in slot order.
    ratio_min        double precision,
    ratio_max        double precision,
    ratio_sum        double precision,
    points           integer not null check (points > 0),
    ratio_points     integer not null,
    follower_min     integer not null,
    follower_max     integer not null,
    follower_last    integer not null,
    following_min    integer not null,
    following_max    integer not null,
    following_last   integer not null,
    lateness_max_ms  integer not null,
    lateness_p99_ms  integer not null,
    data             bytea not null,
    check (period_start < period_end and first_slot >= period_start and last_slot < period_end)
);
-- 28-day chunks: a year's range touches 14 of them (with 7-day chunks, planning the 53 of a
-- year cost more than reading its 365 rows); retention drops four weeks at a time.
select create_hypertable('influencer_segments', by_range('period_start', interval '28 days'),
                         create_default_indexes => false);
-- One influencer's segments in time order (every read), and one segment per period start.
create unique index influencer_segments_influencer_period
    on influencer_segments (influencer_id, period_start desc);
-- A day's data is about 4.5 kB of pco output, which neither pglz nor lz4 can shrink: store it
-- out of line without trying to.
alter table influencer_segments alter column data set storage external;

-- Hour segments live apart, in 1-day chunks: once a day's hours are merged into day segments
-- its chunk is dropped whole, so the short-lived hour rows leave no dead space among the days.
create table influencer_hour_segments
    (like influencer_segments including constraints including storage);
select create_hypertable('influencer_hour_segments', by_range('period_start', interval '1 day'),
                         create_default_indexes => false);
create unique index influencer_hour_segments_influencer_period
    on influencer_hour_segments (influencer_id, period_start desc);

-- Both cold tables as one, for every reader (filters on it reach both tables' indexes).
create view all_segments as
    select * from influencer_segments
    union all
    select * from influencer_hour_segments;

-- Points that arrive for an hour that had closed (by more than half the settle time) when they
-- reached the sink: a batch held through a database outage, a replay. Kept apart so that a
-- compaction never races a write into the chunk it is about to drop; compaction merges them
-- into their segments. Readers see them as part of the hot tier.
create table late_points (
    influencer_id   bigint not null,
    slot            timestamptz not null,
    fetched_at      timestamptz not null,
    follower_count  integer not null check (follower_count >= 0),
    following_count integer not null check (following_count >= 0),
    primary key (influencer_id, slot)
);

-- UTC days with hour segments not yet merged into day segments (merged_at null), so the day
-- merge never scans the segments to find its work.
create table compaction_days (
    day        timestamptz primary key,
    merged_at  timestamptz
);

-- Chunks are no longer reindexed in place: compaction drops them.
drop table compacted_chunks;
