# Shared shell helpers for scripts/run, scripts/test and scripts/cluster.
# Source it; it defines functions only. Servers bind to 127.0.0.1, keep their data under
# $FRAMECAST_RUN_DIR, and are stopped by the PIDs recorded when they were started.

FRAMECAST_APT_PACKAGES=(
  pkg-config libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf
  libnats-dev nats-server libmosquitto-dev mosquitto mosquitto-clients libsodium-dev
  libpq-dev postgresql libvips-dev libvips-tools
  plasma-workspace-wallpapers mate-backgrounds
)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Installs the Debian packages that are missing (needs root, or does nothing but complain).
ensure_packages() {
  local missing=()
  local p
  for p in "${FRAMECAST_APT_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install -y ${missing[*]})"
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install failed: ${missing[*]}"
  # Debian starts packaged servers on their default ports; we run our own on free ports.
  # They are not ours to stop, so we only make sure we never depend on them.
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints a TCP port that nothing listens on now (the caller retries if the server then fails).
free_port() {
  local p tries=0
  while :; do
    p=$(( 20000 + RANDOM % 12000 ))
    port_in_use "$p" || { echo "$p"; return 0; }
    tries=$((tries + 1)); [ $tries -gt 200 ] && die "no free port found"
  done
}

wait_port() { # port seconds name
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_in_use "$1" && return 0; sleep 0.1; done
  return 1
}

PIDS_FILE=""
record_pid() { echo "$1 $2" >> "$PIDS_FILE"; }

# start_nats NAME [extra nats-server args...] → sets NATS_PORT, NATS_URL
start_nats() {
  local name=$1; shift
  local dir="$FRAMECAST_RUN_DIR/$name" attempt
  mkdir -p "$dir/jetstream"
  for attempt in 1 2 3 4 5; do
    NATS_PORT=$(free_port)
    nats-server -a 127.0.0.1 -p "$NATS_PORT" -n "$name" -js -sd "$dir/jetstream" "$@" \
      >"$dir/server.log" 2>&1 &
    local pid=$!
    if wait_port "$NATS_PORT" 10; then
      record_pid "$pid" "$name"
      NATS_URL="nats://127.0.0.1:$NATS_PORT"
      log "nats-server $name: $NATS_URL (pid $pid)"
      return 0
    fi
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  done
  cat "$dir/server.log" >&2; die "nats-server did not start"
}

# start_mosquitto NAME [extra config lines] → sets MQTT_PORT
start_mosquitto() {
  local name=$1; shift
  local dir="$FRAMECAST_RUN_DIR/$name" attempt
  mkdir -p "$dir/data"
  # Started as root, mosquitto drops to its own user: without this it cannot save its
  # persistence file (sessions, retained and queued messages) into the data folder.
  if [ "$(id -u)" -eq 0 ] && id mosquitto >/dev/null 2>&1; then chown mosquitto "$dir/data"; fi
  for attempt in 1 2 3 4 5; do
    MQTT_PORT=$(free_port)
    {
      echo "listener $MQTT_PORT 127.0.0.1"
      echo "allow_anonymous true"
      echo "persistence true"
      echo "persistence_location $dir/data/"
      echo "max_queued_messages 10000"
      echo "log_dest stderr"
      echo "log_type error"
      echo "log_type warning"
      local line; for line in "$@"; do echo "$line"; done
    } > "$dir/mosquitto.conf"
    mosquitto -c "$dir/mosquitto.conf" >"$dir/server.log" 2>&1 &
    local pid=$!
    if wait_port "$MQTT_PORT" 10; then
      record_pid "$pid" "$name"
      log "mosquitto $name: mqtt://127.0.0.1:$MQTT_PORT (pid $pid)"
      return 0
    fi
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  done
  cat "$dir/server.log" >&2; die "mosquitto did not start"
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# Runs a command as the postgres user when we are root (initdb refuses root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}

# start_postgres NAME → sets PG_PORT, PG_DIR, PG_CONNINFO (database "framecast")
start_postgres() {
  local name=$1
  local bin; bin=$(pg_bin); [ -n "$bin" ] || die "PostgreSQL server binaries not found"
  local temporary=1
  if [ "${FRAMECAST_PERSISTENT:-0}" = 1 ]; then
    PG_DIR="$FRAMECAST_RUN_DIR/$name"; temporary=0; mkdir -p "$PG_DIR"
  else
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/framecast-$name.XXXXXX")
  fi
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PG_DIR"
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    as_pg "'$bin/initdb' -D '$PG_DIR/data' --auth=trust --username=postgres -E UTF8 --no-locale" \
      >"$FRAMECAST_RUN_DIR/$name-initdb.log" 2>&1 || { cat "$FRAMECAST_RUN_DIR/$name-initdb.log" >&2; die "initdb failed"; }
  fi
  local attempt
  for attempt in 1 2 3 4 5; do
    PG_PORT=$(free_port)
    if as_pg "'$bin/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/server.log' -w -t 30 \
        -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c max_connections=300 ${FRAMECAST_PG_EXTRA:-}\" start" \
        >/dev/null 2>&1; then
      local pid; pid=$(head -1 "$PG_DIR/data/postmaster.pid")
      if [ $temporary = 1 ]; then echo "$pid $name $PG_DIR" >> "$PIDS_FILE"; else record_pid "$pid" "$name"; fi
      as_pg "'$bin/psql' -h 127.0.0.1 -p $PG_PORT -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname = 'framecast'\"" | grep -q 1 \
        || as_pg "'$bin/createdb' -h 127.0.0.1 -p $PG_PORT -U postgres framecast" || die "createdb failed"
      PG_CONNINFO="host=127.0.0.1 port=$PG_PORT user=postgres dbname=framecast"
      log "postgres $name: $PG_CONNINFO (pid $pid, data $PG_DIR)"
      return 0
    fi
  done
  cat "$PG_DIR/server.log" >&2; die "PostgreSQL did not start"
}

# Stops every server this script started (by recorded PID), newest first.
stop_servers() {
  [ -n "$PIDS_FILE" ] && [ -f "$PIDS_FILE" ] || return 0
  local pid name extra
  tac "$PIDS_FILE" | while read -r pid name extra; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      local i; for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    if [ -n "${extra:-}" ] && [ -d "$extra" ] && [ "${FRAMECAST_KEEP_DATA:-0}" != 1 ]; then rm -rf "$extra"; fi
  done
  rm -f "$PIDS_FILE"
  # Supervised processes whose supervisor is gone (it was killed before it could stop them).
  if [ -n "${FRAMECAST_RUN_DIR:-}" ] && [ -d "$FRAMECAST_RUN_DIR/procs" ]; then
    local pidfile
    for pidfile in "$FRAMECAST_RUN_DIR"/procs/*/pid; do
      [ -f "$pidfile" ] || continue
      pid=$(cat "$pidfile"); kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
  fi
  # Servers that tests started themselves keep their data under this run's folder; one left
  # running by a crashed test is ours too (its command line names our unique folder).
  if [ -n "${FRAMECAST_RUN_DIR:-}" ]; then
    local stray
    for stray in $(pgrep -f -- "$FRAMECAST_RUN_DIR/" 2>/dev/null); do
      [ "$stray" = "$$" ] || kill -KILL "$stray" 2>/dev/null
    done
  fi
}

# Creates the run folder and arranges for stop_servers on exit.
#   init_run_dir NAME            a new folder .run/NAME.XXXXXX, removed on exit
#   init_run_dir NAME persistent .run/NAME, kept (data survives restarts); if another copy is
#                                using it, falls back to a new temporary folder
init_run_dir() { # name [persistent]
  local top; top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  mkdir -p "$top/.run"
  FRAMECAST_PERSISTENT=0
  if [ "${2:-}" = persistent ]; then
    local dir="$top/.run/$1" busy=0 pid rest
    if [ -f "$dir/pids" ]; then
      while read -r pid rest; do kill -0 "$pid" 2>/dev/null && busy=1; done < "$dir/pids"
    fi
    if [ $busy = 0 ]; then
      FRAMECAST_PERSISTENT=1; FRAMECAST_RUN_DIR="$dir"; mkdir -p "$dir"
    else
      log "another copy uses $dir; this one keeps its data in a temporary folder"
    fi
  fi
  if [ $FRAMECAST_PERSISTENT = 0 ]; then
    FRAMECAST_RUN_DIR=$(mktemp -d "$top/.run/$1.XXXXXX")
  fi
  PIDS_FILE="$FRAMECAST_RUN_DIR/pids"
  : > "$PIDS_FILE"
  trap 'stop_servers; cleanup_run_dir' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  export FRAMECAST_RUN_DIR
}

cleanup_run_dir() {
  if [ "${FRAMECAST_PERSISTENT:-0}" = 0 ] && [ "${FRAMECAST_KEEP_DATA:-0}" != 1 ] && [ -n "${FRAMECAST_RUN_DIR:-}" ]; then
    rm -rf "$FRAMECAST_RUN_DIR"
  fi
}

# --- Clusters on one machine (scripts/cluster) ---

ALLOCATED_PORTS=" "
# Like free_port, but never the same port twice in this script (several servers are given
# their ports before any of them listens).
alloc_port() {
  local p
  while :; do
    p=$(free_port)
    case "$ALLOCATED_PORTS" in *" $p "*) continue ;; esac
    ALLOCATED_PORTS+="$p "
    echo "$p"; return 0
  done
}

# supervise NAME COMMAND... — runs COMMAND and starts it again whenever it exits (like
# systemd's Restart=always or a Kubernetes restart), until the supervisor is stopped (SIGTERM:
# it stops the process with SIGTERM and exits). Output goes to procs/NAME/log; the current
# PID is in procs/NAME/pid; starts and exits are logged in procs/NAME/events. While the
# file procs/NAME/hold exists a process that exited is not started again: a test kills a
# process with `touch hold; kill -KILL $(cat pid)` and restarts it with `rm hold`.
supervise() {
  local name=$1; shift
  local dir="$FRAMECAST_RUN_DIR/procs/$name"
  mkdir -p "$dir"
  rm -f "$dir/pid" "$dir/hold"
  (
    set +e
    # The shell's own notices ("Killed" when a test SIGKILLs the process) go to the events file.
    exec 2>>"$dir/events"
    child=""
    trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi; exit 0' TERM
    while :; do
      while [ -e "$dir/hold" ]; do sleep 0.1; done
      "$@" >>"$dir/log" 2>&1 &
      child=$!
      echo "$child" > "$dir/pid"
      echo "$(date +%H:%M:%S.%3N) started pid $child" >> "$dir/events"
      wait "$child"
      rc=$?
      echo "$(date +%H:%M:%S.%3N) pid $child exited with status $rc" >> "$dir/events"
      sleep 0.5
    done
  ) &
  record_pid "$!" "$name-supervisor"
  local i
  for ((i = 0; i < 50; i++)); do [ -s "$dir/pid" ] && break; sleep 0.1; done
}

# start_nats_cluster [NODES] → NATS_CLUSTER_URLS (comma separated client URLs),
# NATS_NODE_PORTS / NATS_HTTP_PORTS (arrays, node i at index i-1).
# Each node's config is written from the deploy/nats/cluster layout: loopback ports instead
# of 4222/6222/8222, data under the run folder, and deploy/nats/cluster/accounts.conf
# included as it is (the passwords it reads from the environment are generated here and
# exported: FRAMECAST_NATS_<USER>_PASSWORD). Nodes are supervised (see supervise).
start_nats_cluster() {
  local count=${1:-3} i top
  top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  local user
  for user in GATEWAY STORAGE ALBUM MEDIA OPS SYS; do
    # nats-server reads a variable's value as a config value: starting with a letter keeps
    # it a string (a password starting with a digit would be read as a number and fail).
    export "FRAMECAST_NATS_${user}_PASSWORD=pw$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  done
  NATS_NODE_PORTS=(); NATS_HTTP_PORTS=()
  local cluster_ports=() routes=""
  for ((i = 1; i <= count; i++)); do
    NATS_NODE_PORTS+=("$(alloc_port)"); NATS_HTTP_PORTS+=("$(alloc_port)"); cluster_ports+=("$(alloc_port)")
    routes+="    nats-route://127.0.0.1:${cluster_ports[$((i - 1))]}"$'\n'
  done
  NATS_CLUSTER_URLS=""
  for ((i = 1; i <= count; i++)); do
    local dir="$FRAMECAST_RUN_DIR/nats-$i"
    mkdir -p "$dir/jetstream"
    cp "$top/deploy/nats/cluster/accounts.conf" "$dir/accounts.conf"
    cat > "$dir/nats.conf" <<CONF
# Generated by scripts/cluster from deploy/nats/cluster (loopback ports, local data).
server_name: nats-$i
listen: 127.0.0.1:${NATS_NODE_PORTS[$((i - 1))]}
http: 127.0.0.1:${NATS_HTTP_PORTS[$((i - 1))]}
max_payload: 1MB
jetstream {
  store_dir: "$dir/jetstream"
  max_file_store: 2G
  max_memory_store: 256M
}
cluster {
  name: framecast
  listen: 127.0.0.1:${cluster_ports[$((i - 1))]}
  routes: [
$routes  ]
}
include ./accounts.conf
CONF
    nats-server -t -c "$dir/nats.conf" >/dev/null 2>&1 || { nats-server -t -c "$dir/nats.conf"; die "nats-$i: invalid configuration"; }
    supervise "nats-$i" nats-server -c "$dir/nats.conf"
    NATS_CLUSTER_URLS+="${NATS_CLUSTER_URLS:+,}nats://127.0.0.1:${NATS_NODE_PORTS[$((i - 1))]}"
  done
  for ((i = 1; i <= count; i++)); do
    wait_port "${NATS_NODE_PORTS[$((i - 1))]}" 20 || { cat "$FRAMECAST_RUN_DIR/procs/nats-$i/log" >&2; die "nats-$i did not start"; }
  done
  # JetStream is usable once the nodes elected a meta leader: /healthz answers 200 then.
  local deadline=$((SECONDS + 60)) ok
  while :; do
    ok=0
    for ((i = 1; i <= count; i++)); do
      curl -fsS -o /dev/null "http://127.0.0.1:${NATS_HTTP_PORTS[$((i - 1))]}/healthz" 2>/dev/null && ok=$((ok + 1))
    done
    [ $ok -eq "$count" ] && break
    [ $SECONDS -gt $deadline ] && die "the NATS cluster did not become healthy in 60 s (logs: $FRAMECAST_RUN_DIR/procs/nats-*/log)"
    sleep 0.5
  done
  log "nats cluster: $count nodes, $NATS_CLUSTER_URLS"
}

# start_mosquitto_tree [LEAVES] → MQTT_ROOT_PORT, MQTT_LEAF_PORTS (array).
# A root broker and LEAVES leaf brokers bridged to it; the bridge section (topics,
# directions, QoS, persistent session) is taken from deploy/mosquitto/leaf.conf, only the
# address, credentials and client id are local.
start_mosquitto_tree() {
  local count=${1:-2} i top
  top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  start_mosquitto mqtt-root
  MQTT_ROOT_PORT=$MQTT_PORT
  local bridge=()
  mapfile -t bridge < <(sed -n '/^connection /,/^# --- end of bridge/p' "$top/deploy/mosquitto/leaf.conf" \
    | grep -Ev '^[[:space:]]*(#|$)' | grep -Ev '^(address|remote_username|remote_password|remote_clientid) ')
  [ ${#bridge[@]} -gt 3 ] || die "no bridge section found in deploy/mosquitto/leaf.conf"
  MQTT_LEAF_PORTS=()
  for ((i = 1; i <= count; i++)); do
    start_mosquitto "mqtt-leaf-$i" "${bridge[@]}" "address 127.0.0.1:$MQTT_ROOT_PORT" "remote_clientid framecast-leaf-$i"
    MQTT_LEAF_PORTS+=("$MQTT_PORT")
  done
}
