-- Fencing tokens of work held under a session advisory lock (compaction). The lock sits on one
-- idle connection; if that session ends (idle_session_timeout, pg_terminate_backend, a network
-- drop) the holder's work goes on through other connections while another process takes the
-- lock. So each holder, once it has the lock, takes the next token of its key, and every
-- transaction of its work starts by reading the token under a share lock and stops when it is
-- no longer its own (db::Fence): a new holder's increment waits for the old holder's
-- transaction in flight, and every later one of the old holder's is refused.
create table work_fences (
    lock_key bigint primary key,
    token    bigint not null
);
