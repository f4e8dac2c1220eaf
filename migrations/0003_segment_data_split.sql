-- A segment's encoded points in two parts, so that TOAST wastes no space on them.
--
-- PostgreSQL stores an out-of-line value in chunks of 1,996 bytes, four to a page. A day of one
-- influencer is about 4.5 kB: two whole chunks and a short third one, and the pages of whole
-- chunks cannot take the short ones, so a fifth of the TOAST heap was empty (bench storage:
-- 0.66 of the day's 4.07 bytes a point). Now the codec's output is split (src/series/store.rs):
--   data_head  the leading whole multiple of 1,996 bytes, stored out of line (storage external:
--              never compressed, it is pco output already), so it fills whole chunks;
--   data_tail  the rest (under 1,996 bytes), kept in the row (storage plain: never compressed
--              nor moved), where rows of any size pack well.
-- An hour segment (about 250 bytes) is all tail. The segment is data_head || data_tail; the
-- view all_segments answers it as `data`. Rows written before this migration have it all in
-- data_head and an empty tail, which reads the same.
alter table influencer_segments rename column data to data_head;
alter table influencer_segments add column data_tail bytea not null default '';
alter table influencer_segments alter column data_tail set storage plain;

alter table influencer_hour_segments rename column data to data_head;
alter table influencer_hour_segments add column data_tail bytea not null default '';
alter table influencer_hour_segments alter column data_tail set storage plain;

drop view all_segments;
create view all_segments as
    select influencer_id, period_start, period_end, first_slot, last_slot, follower_sum,
           following_sum, ratio_min, ratio_max, ratio_sum, points, ratio_points, follower_min,
           follower_max, follower_last, following_min, following_max, following_last,
           lateness_max_ms, lateness_p99_ms, data_head || data_tail as data
    from influencer_segments
    union all
    select influencer_id, period_start, period_end, first_slot, last_slot, follower_sum,
           following_sum, ratio_min, ratio_max, ratio_sum, points, ratio_points, follower_min,
           follower_max, follower_last, following_min, following_max, following_last,
           lateness_max_ms, lateness_p99_ms, data_head || data_tail as data
    from influencer_hour_segments;
