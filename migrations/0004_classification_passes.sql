-- One row per daily classification pass. A pass that was stopped (crash, shutdown) has no
-- finished_at and is resumed by the next `classify`: it asks only for the influencers that
-- have no verdict in that pass yet (suspicious_classifications.pass_id).
create table classification_passes (
    pass_id      bigserial primary key,
    started_at   timestamptz not null default now(),
    finished_at  timestamptz,
    -- influencers the pass had to classify, and how many it has classified so far
    influencers  bigint not null default 0,
    classified   bigint not null default 0,
    -- influencers skipped because no point was stored for them yet
    skipped      bigint not null default 0
);

-- "Which influencers already have a verdict in this pass?"
create index suspicious_classifications_pass on suspicious_classifications (pass_id, influencer_id);
