-- Rank history (issue 39): each influencer's rank and percentile by followers at each UTC
-- day's close (from influencer_day_closes, kept for the retention) and each hour (from the
-- ranking job, kept 48 hours). src/series/ranks.rs describes the layout.
-- * rank_moments: one row a moment, with how many influencers it ranked.
-- * rank_blocks: the moment's ranks, one row per 1,330 consecutive ids (block = floor(id / 1330)).
--   A dense row is 6 bytes an id of the block (rank u32 then percentile in hundredths u16,
--   little-endian; rank 0 = not ranked), read for one influencer with substring(); a sparse
--   row (few ids of the block ranked) holds pco columns and is read whole.
create table rank_moments (
    kind     text not null check (kind in ('day', 'hour')),
    -- A day: its start (00:00 UTC); an hour: the hour.
    at       timestamptz not null,
    ranked   integer not null,
    primary key (kind, at)
);

-- Keyed by block first, so that one influencer's history is one index range; each row on a
-- page of its own, inline (PLAIN: a dense row is 7,980 bytes and fits), so that a moment costs
-- one heap page and no TOAST lookup.
create table rank_blocks (
    kind     text not null,
    block    bigint not null,
    at       timestamptz not null,
    dense    boolean not null,
    data     bytea not null,
    primary key (kind, block, at),
    foreign key (kind, at) references rank_moments (kind, at) on delete cascade
);
create index rank_blocks_moment on rank_blocks (kind, at);
alter table rank_blocks alter column data set storage plain;
