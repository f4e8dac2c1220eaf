-- The sink's probe of a database it could not write to: one row it writes. A database that
-- answers reads but refuses writes (read-only after a failover, SQLSTATE 25006; out of disk,
-- 53100) passed a `select 1`, and the sink went back to consuming, to fail again; a write is
-- what the sink needs, so a write is what it asks before it consumes again.
create table sink_probe (
    only_row  boolean primary key default true check (only_row),
    probed_at timestamptz not null
);
