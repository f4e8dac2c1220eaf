-- Compaction work set aside after an error that trying again at once does not fix (a segment
-- that cannot be decoded, a value out of range): one closed hour, one day or the late points.
-- The rest of compaction goes on without it; it is tried again at retry_at, later after each
-- failure (jobs::quarantine), and its row goes when it succeeds. `compact --status` lists the
-- rows, the gauge compaction_quarantined counts them, and the alert CompactionQuarantined fires
-- while there is one.
create table compaction_quarantine (
    -- what was set aside: 'hour 2026-12-06 10:00', 'day 2026-12-05' or 'late points'
    work            text primary key,
    -- the last error, as the log has it
    error           text not null,
    failures        integer not null check (failures > 0),
    first_failed_at timestamptz not null,
    failed_at       timestamptz not null,
    retry_at        timestamptz not null
);
