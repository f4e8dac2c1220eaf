# A three-node RabbitMQ cluster on this machine, sourced by scripts/services:
#
#   scripts/services cluster up            start the three nodes (idempotent) and join them;
#                                          prints the AMQP_URL= to use (the three addresses)
#   scripts/services cluster stop-node N   stop node N (1-3): its Erlang node exits
#   scripts/services cluster start-node N  start node N again; it rejoins the cluster
#   scripts/services cluster status        which nodes answer, and the AMQP_URL
#   scripts/services cluster leader QUEUE  the number of the node leading quorum queue QUEUE
#   scripts/services cluster connections N how many client connections node N holds
#   scripts/services cluster down          stop every node (their data stays for the next up)
#
# Debian's rabbitmq-server, three node names (ia-cluster1..3@localhost), AMQP ports
# CLUSTER_AMQP_PORT .. +2 (5681-5683), distribution ports 20000 above them, one Erlang
# cookie in $CLUSTER_HOME (the nodes and rabbitmqctl share it as their HOME).
# With QUEUE_TYPE=quorum the queues are replicated on all three nodes.

CLUSTER_HOME=${CLUSTER_HOME:-/var/lib/influencer-analytics/cluster}
CLUSTER_AMQP_PORT=${CLUSTER_AMQP_PORT:-5681}
CLUSTER_NODES=(1 2 3)

cluster_node_name() { printf 'ia-cluster%s@localhost' "$1"; }
cluster_port() { printf '%s' $((CLUSTER_AMQP_PORT + $1 - 1)); }

# cluster_rabbit N TOOL ARGS...: RabbitMQ's own scripts as node N.
cluster_rabbit() {
  local n=$1 tool=$2
  shift 2
  (cd "$CLUSTER_HOME/node$n" &&
    HOME=$CLUSTER_HOME RABBITMQ_CONF_ENV_FILE=$CLUSTER_HOME/node$n/rabbitmq-env.conf \
      RABBITMQ_NODENAME=$(cluster_node_name "$n") "/usr/lib/rabbitmq/bin/$tool" "$@")
}

cluster_check_node() {
  [[ ${1:-} =~ ^[123]$ ]] || die "usage: scripts/services cluster stop-node|start-node N, with N of 1, 2, 3"
}

cluster_configure() {
  local n=$1 dir=$CLUSTER_HOME/node$1 port
  port=$(cluster_port "$n")
  mkdir -p "$dir/mnesia" "$dir/log"
  cat >"$dir/rabbitmq-env.conf" <<EOF
NODENAME=$(cluster_node_name "$n")
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=$port
DIST_PORT=$((port + 20000))
MNESIA_BASE=$dir/mnesia
LOG_BASE=$dir/log
CONFIG_FILE=$dir/rabbitmq
ENABLED_PLUGINS_FILE=$dir/enabled_plugins
PID_FILE=$dir/rabbitmq.pid
ERL_EPMD_ADDRESS=127.0.0.1
EOF
  printf '[].\n' >"$dir/enabled_plugins"
  # A node that comes back while its peers run rejoins at once; the first node of a cold
  # start waits for the others at most this long.
  printf 'mnesia_table_loading_retry_timeout = 10000\nmnesia_table_loading_retry_limit = 30\n' >"$dir/rabbitmq.conf"
}

cluster_start_node() {
  local n=$1 port
  port=$(cluster_port "$n")
  if port_open 127.0.0.1 "$port"; then return 0; fi
  if cluster_rabbit "$n" rabbitmqctl -q ping >/dev/null 2>&1; then
    cluster_rabbit "$n" rabbitmqctl -q start_app >>"$CLUSTER_HOME/node$n/log/join.log" 2>&1
  else
    cluster_rabbit "$n" rabbitmq-server -detached >"$CLUSTER_HOME/node$n/log/startup.log" 2>&1 || true
  fi
  wait_port 127.0.0.1 "$port" 120 \
    || die "cluster node $n did not answer at 127.0.0.1:$port within 120 s (see $CLUSTER_HOME/node$n/log)"
}

# Whether node N is a member of node 1's cluster.
cluster_is_member() {
  cluster_rabbit 1 rabbitmqctl -q cluster_status --formatter json 2>/dev/null \
    | grep -q "\"$(cluster_node_name "$1")\""
}

cluster_join() {
  local n=$1
  cluster_is_member "$n" && return 0
  say "cluster: node $n joins $(cluster_node_name 1)"
  cluster_rabbit "$n" rabbitmqctl -q stop_app >>"$CLUSTER_HOME/node$n/log/join.log" 2>&1
  cluster_rabbit "$n" rabbitmqctl -q reset >>"$CLUSTER_HOME/node$n/log/join.log" 2>&1
  cluster_rabbit "$n" rabbitmqctl -q join_cluster "$(cluster_node_name 1)" >>"$CLUSTER_HOME/node$n/log/join.log" 2>&1 \
    || die "node $n could not join the cluster (see $CLUSTER_HOME/node$n/log)"
  cluster_rabbit "$n" rabbitmqctl -q start_app >>"$CLUSTER_HOME/node$n/log/join.log" 2>&1
  wait_port 127.0.0.1 "$(cluster_port "$n")" 60 || die "cluster node $n did not answer after joining"
}

cluster_url() {
  local n urls=()
  for n in "${CLUSTER_NODES[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$(cluster_port "$n")/%2f"); done
  (IFS=,; printf '%s' "${urls[*]}")
}

cluster_up() {
  command -v rabbitmq-server >/dev/null 2>&1 || rabbitmq_up
  mkdir -p "$CLUSTER_HOME"
  if [[ ! -f $CLUSTER_HOME/.erlang.cookie ]]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$CLUSTER_HOME/.erlang.cookie")
  fi
  chmod 400 "$CLUSTER_HOME/.erlang.cookie"
  local n
  for n in "${CLUSTER_NODES[@]}"; do
    cluster_configure "$n"
    # Started together: a node that was stopped last waits for its peers when it comes back.
    cluster_start_node "$n" &
  done
  wait
  for n in "${CLUSTER_NODES[@]}"; do
    port_open 127.0.0.1 "$(cluster_port "$n")" || die "cluster node $n is not answering (see $CLUSTER_HOME/node$n/log)"
  done
  for n in 2 3; do cluster_join "$n"; done
  say "cluster: three RabbitMQ nodes up at 127.0.0.1:$(cluster_port 1)-$(cluster_port 3)"
  say "ready: AMQP_URL=$(cluster_url)"
}

cluster_stop_node() {
  cluster_check_node "$1"
  cluster_rabbit "$1" rabbitmqctl -q stop >/dev/null 2>&1 || true
  local i
  for ((i = 0; i < 120; i++)); do port_open 127.0.0.1 "$(cluster_port "$1")" || break; sleep 0.25; done
  say "cluster: node $1 ($(cluster_node_name "$1"), port $(cluster_port "$1")) stopped"
}

cluster_start_node_cmd() {
  cluster_check_node "$1"
  [[ -f $CLUSTER_HOME/node$1/rabbitmq-env.conf ]] || die "no cluster here yet: run scripts/services cluster up"
  cluster_start_node "$1"
  say "cluster: node $1 up at 127.0.0.1:$(cluster_port "$1")"
}

cluster_status() {
  local n
  for n in "${CLUSTER_NODES[@]}"; do
    if port_open 127.0.0.1 "$(cluster_port "$n")"; then say "cluster: node $n answering at 127.0.0.1:$(cluster_port "$n")"
    else say "cluster: node $n not answering"; fi
  done
  say "cluster: AMQP_URL=$(cluster_url)"
}

# The node (1-3) whose member of quorum queue $1 leads it, asked of the first node answering.
cluster_leader() {
  local queue=${1:-} n leader
  [[ -n $queue ]] || die "usage: scripts/services cluster leader QUEUE"
  for n in "${CLUSTER_NODES[@]}"; do
    port_open 127.0.0.1 "$(cluster_port "$n")" || continue
    leader=$(cluster_rabbit "$n" rabbitmqctl -q list_queues name leader --no-table-headers 2>/dev/null \
      | awk -v q="$queue" '$1 == q { print $2 }')
    [[ -n $leader ]] || die "no quorum queue $queue on the cluster (or it has no leader)"
    [[ $leader =~ ^ia-cluster([123])@ ]] || die "queue $queue is led by $leader, not a node of this cluster"
    printf '%s\n' "${BASH_REMATCH[1]}"
    return 0
  done
  die "no node of the cluster is answering"
}

cluster_connections() {
  cluster_check_node "${1:-}"
  cluster_rabbit "$1" rabbitmqctl -q list_connections --no-table-headers name 2>/dev/null | grep -c . || true
}

cluster_down() {
  local n
  [[ -d $CLUSTER_HOME ]] || { say "cluster: not set up"; return 0; }
  for n in "${CLUSTER_NODES[@]}"; do
    [[ -f $CLUSTER_HOME/node$n/rabbitmq-env.conf ]] && cluster_rabbit "$n" rabbitmqctl -q stop >/dev/null 2>&1 || true
  done
  say "cluster: stopped (its data stays in $CLUSTER_HOME for the next up)"
}

cluster_main() {
  case ${1:-} in
    up) cluster_up ;;
    down) cluster_down ;;
    status) cluster_status ;;
    stop-node) cluster_stop_node "${2:-}" ;;
    start-node) cluster_start_node_cmd "${2:-}" ;;
    leader) cluster_leader "${2:-}" ;;
    connections) cluster_connections "${2:-}" ;;
    *) echo "usage: scripts/services cluster up|down|status|stop-node N|start-node N|leader QUEUE|connections N" >&2; exit 2 ;;
  esac
}
