# A streaming replica of the project's TimescaleDB, sourced by scripts/services:
#
#   scripts/services replica up     make it once (pg_basebackup of the main server, a hot
#                                   standby in the Debian root, port REPLICA_PORT, 5436) and
#                                   start it; a kept one that no longer follows the primary is
#                                   made again; prints the DATABASE_READ_URL= once it streams
#   scripts/services replica stop   stop it (the primary goes on; `serve` reads the primary)
#   scripts/services replica start  start it again; it catches up from the primary's WAL
#   scripts/services replica down   stop it and delete it (the next up makes a new copy)
#
# PostgreSQL's own streaming replication: the primary gets a replication entry in pg_hba.conf
# and a physical replication slot (so the WAL the replica still needs is kept while it is
# stopped); the standby is read-only and serves queries while it replays.

REPLICA_PORT=${REPLICA_PORT:-5436}
REPLICA_SLOT=influencer_analytics_replica

pg_ctl_replica() {
  in_root su postgres -s /bin/sh -c "/usr/lib/postgresql/$PG_VERSION/bin/pg_ctl -D /var/lib/postgresql/$PG_VERSION/replica -o '-c config_file=/etc/postgresql/$PG_VERSION/replica/postgresql.conf' $*"
}

replica_data() { printf '%s' "$TIMESCALEDB_ROOT/var/lib/postgresql/$PG_VERSION/replica"; }

replica_url() {
  local db=${DATABASE_URL##*/}
  printf 'postgres://%s@127.0.0.1:%s/%s' "$db_user" "$REPLICA_PORT" "${db%%\?*}"
}

replica_running() {
  [[ -f $(replica_data)/postmaster.pid ]] && port_open 127.0.0.1 "$REPLICA_PORT"
}

# Only for the primary this script runs in its Debian root.
replica_check_primary() {
  [[ $(id -u) == 0 ]] || die "the replica lives in the Debian root, which needs root"
  chroot_ready || die "no TimescaleDB root at $TIMESCALEDB_ROOT: run scripts/services up first"
  [[ -f $TIMESCALEDB_ROOT/var/lib/postgresql/$PG_VERSION/main/postmaster.pid ]] && port_open 127.0.0.1 "$DB_PORT" \
    || die "the primary (the Debian root's server on port $DB_PORT) is not running: run scripts/services up first"
}

# psql QUERY on the primary (-p DB_PORT) or the replica (-p REPLICA_PORT): one value, unaligned.
replica_psql() {
  local port=$1 query=$2
  in_root su postgres -s /bin/sh -c "psql -At -p $port -h 127.0.0.1 -d postgres -c \"$query\"" 2>/dev/null
}

replica_slot_exists() {
  [[ $(replica_psql "$DB_PORT" "select count(*) from pg_replication_slots where slot_name = '$REPLICA_SLOT'") == 1 ]]
}

# Whether the replica's WAL receiver streams from the primary, waiting up to SECONDS for it.
replica_streaming() {
  local seconds=$1 i
  for ((i = 0; i < seconds * 2; i++)); do
    [[ $(replica_psql "$REPLICA_PORT" "select status from pg_stat_wal_receiver") == streaming ]] && return 0
    sleep 0.5
  done
  return 1
}

replica_log_tail() { tail -n 5 "$TIMESCALEDB_ROOT/var/log/postgresql/replica.log" 2>/dev/null | sed 's/^/    /'; }

# A new physical replication slot for a new copy (the old one's WAL position is of no use to
# it), reserving WAL from now on: a slot made without reserving has no position until the copy
# connects, and a checkpoint in between removes WAL the copy then asks for, which invalidates
# the slot and ends the copy (seen in CI under the tests' writes: "The slot's restart_lsn
# exceeds the limit").
replica_new_slot() {
  in_root su postgres -s /bin/sh -c "psql -q -p $DB_PORT -h 127.0.0.1 -d postgres \
    -c \"select pg_drop_replication_slot(slot_name) from pg_replication_slots
          where slot_name = '$REPLICA_SLOT'\" \
    -c \"select pg_create_physical_replication_slot('$REPLICA_SLOT', true)\"" >/dev/null \
    || die "could not make the replication slot $REPLICA_SLOT on the primary"
}

# pg_basebackup of the primary into the replica's data directory. A copy taken while the
# primary is busy (databases made and dropped, as the tests do) can fail and is taken again,
# twice at most; each failure is shown with the end of its log, kept beside the root.
replica_basebackup() {
  local log=$TIMESCALEDB_ROOT.replica-basebackup.log attempt
  for attempt in 1 2 3; do
    rm -rf "$(replica_data)"
    replica_new_slot
    if in_root su postgres -s /bin/sh -c "pg_basebackup -h 127.0.0.1 -p $DB_PORT -U postgres \
      -D /var/lib/postgresql/$PG_VERSION/replica -X stream -R -S $REPLICA_SLOT" >"$log" 2>&1; then
      return 0
    fi
    cp "$log" "$log.failed-$attempt"
    say "replica: pg_basebackup failed (attempt $attempt of 3; $log.failed-$attempt):"
    tail -n 5 "$log" | sed 's/^/    /'
    sleep 2
  done
  die "pg_basebackup failed three times; see $log"
}

replica_up() {
  replica_check_primary
  # A replica kept from an earlier `up` is used again only if it still follows the primary:
  # one whose slot was dropped, whose WAL the primary no longer has, or that was copied from
  # another server (a new Debian root) would answer forever with what it had, never catching up.
  if [[ -f $(replica_data)/standby.signal ]]; then
    local why=
    if ! replica_slot_exists; then
      why="its replication slot $REPLICA_SLOT is gone from the primary"
    else
      replica_start >/dev/null
      replica_streaming 30 || why="it does not stream from the primary within 30 s"
    fi
    if [[ -n $why ]]; then
      say "replica: $why; making a new copy"
      replica_log_tail
      replica_stop >/dev/null
      rm -rf "$(replica_data)"
    fi
  fi
  if [[ ! -f $(replica_data)/standby.signal ]]; then
    say "replica: copying the primary at port $DB_PORT (pg_basebackup) into a hot standby on port $REPLICA_PORT"
    # chroot_configure wrote the replication line into pg_hba.conf; the primary reads it on reload.
    chroot_configure
    pg_ctl_in_root "reload" >/dev/null
    if [[ ! -d $TIMESCALEDB_ROOT/etc/postgresql/$PG_VERSION/replica ]]; then
      in_root pg_createcluster -p "$REPLICA_PORT" $PG_VERSION replica >/dev/null
    fi
    replica_basebackup
  fi
  local conf=$TIMESCALEDB_ROOT/etc/postgresql/$PG_VERSION/replica
  # A hot standby needs at least the primary's max_connections and max_locks_per_transaction.
  cat >"$conf/conf.d/influencer-analytics.conf" <<EOF
# Written by influencer-analytics scripts/services: a hot standby of the main server.
listen_addresses = '127.0.0.1'
port = $REPLICA_PORT
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 300
max_locks_per_transaction = 512
shared_buffers = 512MB
work_mem = 32MB
dynamic_shared_memory_type = mmap
ssl = off
hot_standby = on
# Long API reads are not cancelled by the primary's vacuum; the primary keeps the rows the
# standby's queries still see.
hot_standby_feedback = on
max_standby_streaming_delay = 30s
EOF
  cp "$TIMESCALEDB_ROOT/etc/postgresql/$PG_VERSION/main/pg_hba.conf" "$conf/pg_hba.conf"
  replica_start
  replica_streaming 60 || {
    replica_log_tail >&2
    die "the replica does not stream from the primary; see $TIMESCALEDB_ROOT/var/log/postgresql/replica.log"
  }
  say "ready: DATABASE_READ_URL=$(replica_url)"
}

replica_start() {
  [[ -f $(replica_data)/standby.signal ]] || die "no replica yet: run scripts/services replica up"
  chroot_start_prepare
  if ! replica_running; then
    pg_ctl_replica "-l /var/log/postgresql/replica.log -w -t 120 start" >/dev/null \
      || die "the replica did not start; see $TIMESCALEDB_ROOT/var/log/postgresql/replica.log"
  fi
  # Replay left paused (by hand, or a test that stopped half-way) is resumed.
  in_root su postgres -s /bin/sh -c "psql -q -p $REPLICA_PORT -h 127.0.0.1 -d postgres -c \
    \"select pg_wal_replay_resume() where pg_is_wal_replay_paused()\"" >/dev/null 2>&1 || true
  say "replica: hot standby up at $(replica_url)"
}

replica_stop() {
  if [[ -f $(replica_data)/postmaster.pid ]]; then pg_ctl_replica "-m fast -w stop" >/dev/null || true; fi
  say "replica: stopped (the primary keeps its WAL in slot $REPLICA_SLOT until it returns)"
}

replica_down() {
  replica_stop
  rm -rf "$(replica_data)"
  if port_open 127.0.0.1 "$DB_PORT"; then
    in_root su postgres -s /bin/sh -c "psql -q -p $DB_PORT -h 127.0.0.1 -d postgres -c \
      \"select pg_drop_replication_slot('$REPLICA_SLOT') from pg_replication_slots
        where slot_name = '$REPLICA_SLOT'\"" >/dev/null 2>&1 || true
  fi
  say "replica: deleted (and its replication slot on the primary)"
}

replica_main() {
  case ${1:-} in
    up) replica_up ;;
    start) replica_start ;;
    stop) replica_stop ;;
    down) replica_down ;;
    *) echo "usage: scripts/services replica up|start|stop|down" >&2; exit 2 ;;
  esac
}
