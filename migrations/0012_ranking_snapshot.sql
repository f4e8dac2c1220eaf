-- The ranking as one snapshot a minute instead of a row per influencer. Rebuilding
-- influencer_ranks deleted and inserted every row each minute (at 1,000,000 influencers:
-- 8-52 s of the database a minute, 10 M dead tuples in twelve minutes, 1.2 GB for 1 M live
-- rows). The ranking job now writes the tracked influencers sorted by followers, 12 bytes
-- each (follower_count i32, influencer_id i64, little-endian; most followers first, ties by
-- id), as one value; each API process reads it once when it changes and answers rank,
-- percentile and the leaderboard from memory (jobs::ranking::Ranking).
-- Stored uncompressed (EXTERNAL): the pairs barely compress, and compressing 12 MB a minute
-- would cost more than it saves.
alter table ranking_runs add column entries bytea;
alter table ranking_runs alter column entries set storage external;
drop table influencer_ranks;
