-- Movers (issue 39): who gained or lost the most over a window, across everyone. Two kinds of
-- snapshot of everyone's values, each one value per row in the layout of
-- src/series/snapshot.rs (ids, followers, following and the values' times as pco columns,
-- about 7 bytes an influencer):
-- * influencer_day_closes: each influencer's last point of a closed UTC day, written by
--   compaction in the transaction that merges the day's segments, one row per batch of
--   influencers it merges (about 20,000): the 7-day and longer windows and movers between two
--   past days read two days' rows (about 50 each at 1,000,000 influencers).
-- * movers_marks: every tracked influencer's latest value, taken once a minute by the movers
--   job (src/jobs/movers.rs), kept an hour (each minute) and a day (each tenth minute): the
--   1-hour and 24-hour windows.
-- Both are stored uncompressed (EXTERNAL): pco has already compressed them.
create table influencer_day_closes (
    day          timestamptz not null,
    first_id     bigint not null,
    influencers  integer not null,
    data         bytea not null,
    primary key (day, first_id)
);
alter table influencer_day_closes alter column data set storage external;

create table movers_marks (
    marked_at    timestamptz primary key,
    influencers  integer not null,
    data         bytea not null
);
alter table movers_marks alter column data set storage external;
