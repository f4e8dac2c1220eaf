-- The sink updates influencer_latest for every point (16,700 rows/s at the target scale).
-- Rank now comes from influencer_ranks (0003), so nothing reads influencer_latest by
-- follower_count any more: without that index, and with room left in each page, the update
-- is a HOT update (no index entry written, the old version pruned in place).
drop index if exists influencer_latest_follower_count;
alter table influencer_latest set (fillfactor = 70);

-- create_hypertable made a default index on (slot desc). No query here reads points by time
-- across influencers (the API, the spike detector and the dashboard all go by influencer,
-- through the unique (influencer_id, slot) index), so it only cost every insert an index
-- entry and about 11-20 bytes per point.
drop index if exists influencer_metrics_slot_idx;

-- Chunks of influencer_metrics whose index the sink has compacted (rebuilt packed) once their
-- hour was over; see src/sink/compact.rs.
create table compacted_chunks (
    chunk_name    text primary key,
    compacted_at  timestamptz not null default now()
);
