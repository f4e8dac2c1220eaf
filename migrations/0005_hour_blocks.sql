-- Hour segments in blocks: one row per 64 consecutive influencers and hour instead of one per
-- influencer and hour.
--
-- A row of its own cost an hour segment about 1.6 bytes a point beside its 3.7 of encoded
-- points (bench storage, 10,000 influencers: 5.50 in all): the tuple header, line pointer and
-- key columns, about 0.9, and its entry in the unique index, about 0.63. A block row carries
-- those once for 64 influencers. Member i of block b is influencer b * 64 + i (ids as
-- `influencer_id >> 6` and `influencer_id & 63`, so negative ids fall in blocks too); its
-- point count, lateness figures and byte range are element i + 1 of the arrays. A member with
-- no segment that hour has 0 points and an empty byte range.
--
-- The members' encoded points one after the other (about 14 kB at one poll a minute) are
-- split as a day segment's are (migration 0003): `data_head`, the leading whole TOAST chunks
-- (1,996 bytes each), out of line and uncompressed (`external`), so that four fill a page;
-- stored whole, each block's last short chunk left most of a page's end empty (bench storage:
-- 0.4 bytes a point). `data_tail`, the rest, stays in the row. A reader of one influencer
-- takes `substring` of its byte range, which PostgreSQL fetches from the one or two TOAST
-- chunks holding it, not the whole row (src/series/read.rs). The arrays are compressed in
-- the row if it grows past 2 kB, never moved out of it (`main`): every reader looks at them.
--
-- The hour tier only holds recent hours, so its rows are copied into blocks here.

drop view all_segments;

create table influencer_hour_blocks (
    -- influencer_id >> 6: members are block * 64 + 0 .. 63.
    block            bigint not null,
    period_start     timestamptz not null,
    -- 64 elements each: member i at [i + 1]. 0 points: no segment.
    points           integer[] not null,
    lateness_max_ms  integer[] not null,
    lateness_p99_ms  integer[] not null,
    -- 65 elements: member i's bytes are data[offsets[i + 1], offsets[i + 2]) (0-based,
    -- end exclusive).
    offsets          integer[] not null,
    -- The members' bytes are data_head || data_tail.
    data_head        bytea not null,
    data_tail        bytea not null,
    check (cardinality(points) = 64 and cardinality(lateness_max_ms) = 64
           and cardinality(lateness_p99_ms) = 64 and cardinality(offsets) = 65)
);
alter table influencer_hour_blocks alter column data_head set storage external,
                                   alter column data_tail set storage plain,
                                   alter column points set storage main,
                                   alter column lateness_max_ms set storage main,
                                   alter column lateness_p99_ms set storage main,
                                   alter column offsets set storage main;
select create_hypertable('influencer_hour_blocks', by_range('period_start', interval '1 day'),
                         create_default_indexes => false);
create unique index influencer_hour_blocks_block_period
    on influencer_hour_blocks (block, period_start desc);

insert into influencer_hour_blocks
    select block, period_start, points, lateness_max_ms, lateness_p99_ms, offsets,
           substring(data for octet_length(data) / 1996 * 1996),
           substring(data from octet_length(data) / 1996 * 1996 + 1)
    from (select block, period_start,
                 array_agg(points order by member) as points,
                 array_agg(lateness_max_ms order by member) as lateness_max_ms,
                 array_agg(lateness_p99_ms order by member) as lateness_p99_ms,
                 array[0] || array_agg(data_end order by member) as offsets,
                 string_agg(data, ''::bytea order by member) as data
          from (select k.block, k.period_start, m.member,
                       coalesce(s.points, 0) as points,
                       coalesce(s.lateness_max_ms, 0) as lateness_max_ms,
                       coalesce(s.lateness_p99_ms, 0) as lateness_p99_ms,
                       coalesce(s.data, ''::bytea) as data,
                       (sum(coalesce(octet_length(s.data), 0))
                            over (partition by k.block, k.period_start order by m.member))::integer
                           as data_end
                from (select distinct influencer_id >> 6 as block, period_start
                      from influencer_hour_segments) k
                cross join generate_series(0, 63) m(member)
                left join influencer_hour_segments s
                       on s.influencer_id = (k.block << 6) + m.member
                      and s.period_start = k.period_start) members
          group by block, period_start) blocks;
drop table influencer_hour_segments;

-- The bytes of a member whose range is [from_byte, to_byte) in head || tail, cut from the
-- part or parts it lies in without joining them: PostgreSQL then fetches only the TOAST
-- chunks of the head that hold it (`octet_length` of an out-of-line value reads the TOAST
-- pointer). A one-statement SQL function: the planner writes it inline.
create function hour_member_bytes(head bytea, tail bytea, from_byte integer, to_byte integer)
    returns bytea language sql immutable parallel safe as $$
    select case
        when to_byte <= octet_length(head)
            then substring(head from from_byte + 1 for to_byte - from_byte)
        when from_byte >= octet_length(head)
            then substring(tail from from_byte - octet_length(head) + 1 for to_byte - from_byte)
        else substring(head from from_byte + 1) || substring(tail for to_byte - octet_length(head))
    end
$$;

-- Both cold tables as one: an hour block's members with a segment, one row each (no
-- summary: nulls).
create view all_segments as
    select influencer_id, period_start, period_end, first_slot, last_slot, follower_sum,
           following_sum, ratio_min, ratio_max, ratio_sum, points, ratio_points, follower_min,
           follower_max, follower_last, following_min, following_max, following_last,
           lateness_max_ms, lateness_p99_ms, data_head || data_tail as data
    from influencer_segments
    union all
    select (b.block << 6) + m, b.period_start, b.period_start + interval '1 hour', null, null,
           null, null, null, null, null, b.points[m + 1], null, null, null, null, null, null,
           null, b.lateness_max_ms[m + 1], b.lateness_p99_ms[m + 1],
           hour_member_bytes(b.data_head, b.data_tail, b.offsets[m + 1], b.offsets[m + 2])
    from influencer_hour_blocks b cross join generate_series(0, 63) m
    where b.points[m + 1] > 0;
