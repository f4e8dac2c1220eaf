-- Hour segments keep no summary: only whose they are, their hour, how many points, how late
-- their polls ran, and the encoded points.
--
-- A summary answers a bucket of a day or more that covers its segment whole, without decoding
-- it. Hour segments only hold the current day (a closed day's hours become one day segment),
-- a long range has at most 24 of them, and 60 points decode in a few microseconds: readers
-- decode them (src/series/read.rs) and the summary's 17 columns, about 1.8 bytes a point of
-- the hour tier's 7.1, are not stored. The period ends an hour after it starts.
--
-- The hour tier only holds recent hours, so its rows are copied into the new table here.

drop view all_segments;

alter table influencer_hour_segments rename to influencer_hour_segments_0003;
alter index influencer_hour_segments_influencer_period
    rename to influencer_hour_segments_0003_influencer_period;

-- 8-byte columns first, then 4-byte ones, then data: no alignment padding.
create table influencer_hour_segments (
    influencer_id    bigint not null,
    period_start     timestamptz not null,
    points           integer not null check (points > 0),
    lateness_max_ms  integer not null,
    lateness_p99_ms  integer not null,
    -- About 225 bytes for an hour at one poll a minute, kept in the row; pco output, which
    -- compression cannot shrink, so never tried.
    data             bytea not null
);
alter table influencer_hour_segments alter column data set storage external;
select create_hypertable('influencer_hour_segments', by_range('period_start', interval '1 day'),
                         create_default_indexes => false);
create unique index influencer_hour_segments_influencer_period
    on influencer_hour_segments (influencer_id, period_start desc);

insert into influencer_hour_segments
    select influencer_id, period_start, points, lateness_max_ms, lateness_p99_ms,
           data_head || data_tail
    from influencer_hour_segments_0003;
drop table influencer_hour_segments_0003;

-- Both cold tables as one (hour segments with no summary: nulls).
create view all_segments as
    select influencer_id, period_start, period_end, first_slot, last_slot, follower_sum,
           following_sum, ratio_min, ratio_max, ratio_sum, points, ratio_points, follower_min,
           follower_max, follower_last, following_min, following_max, following_last,
           lateness_max_ms, lateness_p99_ms, data_head || data_tail as data
    from influencer_segments
    union all
    select influencer_id, period_start, period_start + interval '1 hour', null, null, null,
           null, null, null, null, points, null, null, null, null, null, null, null,
           lateness_max_ms, lateness_p99_ms, data
    from influencer_hour_segments;
