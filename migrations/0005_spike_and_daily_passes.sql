-- A classification pass has two stages, each resumable on its own:
--   * mockstagram: one is_suspicious question per influencer (progress: `classified`);
--   * spike: this project's follower-jump detector over the day before the pass started,
--     scanned in influencer_id order (progress: `spike_cursor`, the last id scanned).
-- The pass is finished when both stages are.
alter table classification_passes
    add column mockstagram_finished_at timestamptz,
    add column spike_cursor            bigint not null default 0,
    add column spike_judged            bigint not null default 0,
    add column spike_flagged           bigint not null default 0,
    add column spike_finished_at       timestamptz,
    -- Set when a newer day's pass replaced this one before it finished.
    add column superseded_by           bigint references classification_passes (pass_id);

-- Passes finished before this migration finished both of what they had.
update classification_passes
   set mockstagram_finished_at = finished_at, spike_finished_at = finished_at
 where finished_at is not null;
