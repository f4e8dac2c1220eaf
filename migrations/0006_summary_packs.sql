-- The summaries of an influencer's day segments move out of the day rows into packs of 28
-- days, one row per influencer and 28-day span.
--
-- A bucketed long range (a year at step=1d) answers whole day segments from their summaries.
-- Read from the day rows, that was 365 rows of 17 columns from 14 chunks: PostgreSQL fetched
-- a heap tuple for each (about half the box's CPU for that range, perf), and the API decoded
-- 6,205 values one by one. A pack holds the summaries of every day segment of one influencer
-- whose period starts in one 28-day span of `influencer_segments`' chunk grid: a year is 14
-- rows of one value each.
--
-- Every write of day segments updates the packs of the spans it touches in the same
-- transaction (src/series/pack.rs), so a reader's snapshot sees a pack and its days agree.
-- The spans are the chunks of `influencer_segments` (28 days on the Unix epoch's grid), so
-- retention, which drops whole chunks older than one cutoff in one transaction, drops a span's
-- days and its pack together.
--
-- `days`: one entry per day segment in period order, 88 bytes each, big-endian (as
-- PostgreSQL's int4send, int8send and float8send write them; src/series/pack.rs reads and
-- writes them):
--   int4  period start, seconds after the pack's period start
--   int4  period length, seconds
--   int4  first slot, milliseconds after the period start
--   int4  last slot, milliseconds after the period start
--   int8  follower_sum, int8 following_sum
--   float8 ratio_min, ratio_max, ratio_sum (0 when ratio_points is 0: no ratio)
--   int4  points, ratio_points, follower_min, follower_max, follower_last, following_min,
--         following_max, following_last
-- About 2.4 kB a row once its span has passed, kept in it and never compressed (`plain`):
-- every read decodes it.
create table influencer_summary_packs (
    influencer_id  bigint not null,
    period_start   timestamptz not null,
    days           bytea not null check (octet_length(days) % 88 = 0 and octet_length(days) > 0)
);
alter table influencer_summary_packs alter column days set storage plain;
select create_hypertable('influencer_summary_packs', by_range('period_start', interval '28 days'),
                         create_default_indexes => false);
create unique index influencer_summary_packs_influencer_period
    on influencer_summary_packs (influencer_id, period_start desc);

-- The day segments stored so far, packed from their summary columns.
create function pg_temp.pack_start(t timestamptz) returns timestamptz
    language sql immutable as $$
    select time_bucket(interval '28 days', t, timestamptz '1970-01-01 00:00:00+00')
$$;
create function pg_temp.pack_entry(s influencer_segments) returns bytea
    language sql immutable as $$
    select int4send(extract(epoch from s.period_start - pg_temp.pack_start(s.period_start))::int4)
        || int4send(extract(epoch from s.period_end - s.period_start)::int4)
        || int4send((extract(epoch from s.first_slot - s.period_start) * 1000)::int4)
        || int4send((extract(epoch from s.last_slot - s.period_start) * 1000)::int4)
        || int8send(s.follower_sum) || int8send(s.following_sum)
        || float8send(coalesce(s.ratio_min, 0)) || float8send(coalesce(s.ratio_max, 0))
        || float8send(coalesce(s.ratio_sum, 0))
        || int4send(s.points) || int4send(s.ratio_points)
        || int4send(s.follower_min) || int4send(s.follower_max) || int4send(s.follower_last)
        || int4send(s.following_min) || int4send(s.following_max) || int4send(s.following_last)
$$;
insert into influencer_summary_packs (influencer_id, period_start, days)
    select influencer_id, pg_temp.pack_start(period_start),
           string_agg(pg_temp.pack_entry(s), ''::bytea order by period_start)
    from influencer_segments s
    group by influencer_id, pg_temp.pack_start(period_start);
drop function pg_temp.pack_entry(influencer_segments);
drop function pg_temp.pack_start(timestamptz);

-- The day rows keep whose they are, their period, how many points, how late their polls ran
-- and the points. Dropping a column leaves the rows written before as they are (no rewrite of
-- the cold tier); rows written after carry no value for it.
drop view all_segments;
alter table influencer_segments
    drop column first_slot, drop column last_slot, drop column follower_sum,
    drop column following_sum, drop column ratio_min, drop column ratio_max,
    drop column ratio_sum, drop column ratio_points, drop column follower_min,
    drop column follower_max, drop column follower_last, drop column following_min,
    drop column following_max, drop column following_last;

-- Both cold tables as one: their segments, one row each.
create view all_segments as
    select influencer_id, period_start, period_end, points, lateness_max_ms, lateness_p99_ms,
           data_head || data_tail as data
    from influencer_segments
    union all
    select (b.block << 6) + m, b.period_start, b.period_start + interval '1 hour',
           b.points[m + 1], b.lateness_max_ms[m + 1], b.lateness_p99_ms[m + 1],
           hour_member_bytes(b.data_head, b.data_tail, b.offsets[m + 1], b.offsets[m + 2])
    from influencer_hour_blocks b cross join generate_series(0, 63) m
    where b.points[m + 1] > 0;
