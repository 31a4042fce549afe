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

# secret NAME → prints the secret kept in $FRAMECAST_RUN_DIR/secrets/NAME, generating it on
# first use (24 random bytes, hex, after a letter: nats-server reads a value starting with a
# digit as a number). The folder is 0700 and each file 0600; secrets are never logged.
secret() {
  local dir="$FRAMECAST_RUN_DIR/secrets" file
  file="$dir/$1"
  if [ ! -s "$file" ]; then
    ( umask 077; mkdir -p "$dir"; printf 'k%s' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" > "$file.tmp" && mv "$file.tmp" "$file" )
  fi
  cat "$file"
}

# capability_keys → exports FRAMECAST_CAPABILITY_KEYS, the path of the key file capability URLs
# are signed with (`secret capability-keys`: one random key, the file 0600). Every gateway and
# album process of a run must have the same keys: the album service signs the URLs it pushes to
# frames and every gateway verifies them (a gateway or an album process alone refuses to start
# without the file). framecast reads the file itself, so the key never travels in the environment.
capability_keys() {
  secret capability-keys >/dev/null || die "could not read or create the secret capability-keys"
  export FRAMECAST_CAPABILITY_KEYS="$FRAMECAST_RUN_DIR/secrets/capability-keys"
}

PIDS_FILE=""
MQTT_DYNSEC_ARGS=()
record_pid() { echo "$1 $2" >> "$PIDS_FILE"; }

# nats_passwords → exports FRAMECAST_NATS_<USER>_PASSWORD, the variables
# deploy/nats/cluster/accounts.conf reads, for each of its users (`secret nats-<user>`).
# framecast reads the same variables: `framecast all` connects each role as its own user.
nats_passwords() {
  local user password
  for user in gateway storage album media ops sys; do
    password=$(secret "nats-$user") || die "could not read or create the secret nats-$user"
    export "FRAMECAST_NATS_${user^^}_PASSWORD=$password"
  done
}

# start_nats NAME [--test-account] → sets NATS_PORT, NATS_URL
# One nats-server with JetStream on a free loopback port, data under the run folder, and the
# users and permissions of deploy/nats/cluster/accounts.conf (a copy is included by the
# generated nats.conf, as on the cluster's nodes): no anonymous client, passwords from
# nats_passwords. --test-account adds, to this copy only, an account of its own for the test
# suite's user $FRAMECAST_TEST_NATS_USER (password $FRAMECAST_TEST_NATS_PASSWORD) with every
# permission in it: the NATS wrapper's tests use any subject and stream, and from there they
# reach none of the services' subjects or streams.
start_nats() {
  local name=$1 test_account=0
  [ "${2:-}" = --test-account ] && test_account=1
  local dir="$FRAMECAST_RUN_DIR/$name" attempt top
  top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  mkdir -p "$dir/jetstream"
  nats_passwords
  cp "$top/deploy/nats/cluster/accounts.conf" "$dir/accounts.conf"
  if [ $test_account = 1 ]; then
    [ -n "${FRAMECAST_TEST_NATS_USER:-}" ] && [ -n "${FRAMECAST_TEST_NATS_PASSWORD:-}" ] \
      || die "start_nats --test-account needs FRAMECAST_TEST_NATS_USER and FRAMECAST_TEST_NATS_PASSWORD"
    sed -i "s/^accounts {\$/accounts {\n  # Added by start_nats --test-account: the test suite's own account.\n  TEST { jetstream: enabled, users: [ { user: $FRAMECAST_TEST_NATS_USER, password: \$FRAMECAST_TEST_NATS_PASSWORD } ] }/" \
      "$dir/accounts.conf"
    grep -q "^  TEST { " "$dir/accounts.conf" || die "could not add the test account to $dir/accounts.conf"
  fi
  for attempt in 1 2 3 4 5; do
    NATS_PORT=$(free_port)
    cat > "$dir/nats.conf" <<CONF
# Generated by start_nats (scripts/lib/common.sh): deploy/nats/single.conf on a free loopback
# port with its data in this folder, and the users of deploy/nats/cluster/accounts.conf.
server_name: $name
listen: 127.0.0.1:$NATS_PORT
max_payload: 1MB
jetstream {
  store_dir: "$dir/jetstream"
}
include ./accounts.conf
CONF
    nats-server -c "$dir/nats.conf" >"$dir/server.log" 2>&1 &
    local pid=$!
    if wait_port "$NATS_PORT" 10; then
      record_pid "$pid" "$name"
      NATS_URL="nats://127.0.0.1:$NATS_PORT"
      log "nats-server $name: $NATS_URL (pid $pid; users from deploy/nats/cluster/accounts.conf, passwords in $FRAMECAST_RUN_DIR/secrets/nats-*)"
      return 0
    fi
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  done
  cat "$dir/server.log" >&2; die "nats-server did not start"
}

# The album service's MQTT identity, on every broker the scripts start: it administers the
# brokers' dynamic security (frames' clients and roles) and publishes to frames.
mqtt_identity() {
  export FRAMECAST_MQTT_USER=album
  FRAMECAST_MQTT_PASSWORD=$(secret mqtt-album); export FRAMECAST_MQTT_PASSWORD
}

mosquitto_dynsec_plugin() {
  local p; p=$(ls /usr/lib/*/mosquitto_dynamic_security.so 2>/dev/null | head -1)
  [ -n "$p" ] || die "mosquitto's dynamic-security plugin is missing (Debian package mosquitto)"
  echo "$p"
}

# start_mosquitto NAME [extra config lines] → sets MQTT_PORT and MQTT_WS_PORT
# Two listeners on loopback: MQTT (MQTT_PORT) and MQTT over WebSockets (MQTT_WS_PORT, for the
# browser frame at /frame: the gateway hands it ws://127.0.0.1:MQTT_WS_PORT, FRAMECAST_MQTT_WS_URL);
# the same authentication and authorisation on both (per_listener_settings false).
# No anonymous client: mosquitto's dynamic-security plugin authenticates and authorises every
# client. Its state (data/dynsec.json, 0600) is created on first start with the album service's
# identity (mqtt_identity) and, from MQTT_DYNSEC_ARGS (an array), leaf bridges (--bridge NAME,
# password in FRAMECAST_MQTT_BRIDGE_PASSWORD_<NAME>) or the test suite's identity (--tester
# NAME); the broker keeps it up to date (frames' identities survive restarts).
start_mosquitto() {
  local name=$1; shift
  local dir="$FRAMECAST_RUN_DIR/$name" attempt
  local top; top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  mkdir -p "$dir/data"
  mqtt_identity
  python3 "$top/scripts/lib/mqtt-dynsec-init.py" "$dir/data/dynsec.json" "${MQTT_DYNSEC_ARGS[@]}" \
    || die "could not write the MQTT dynamic-security state for $name"
  # Started as root, mosquitto drops to its own user: without this it cannot save its
  # persistence file (sessions, retained and queued messages) nor the dynamic-security state.
  if [ "$(id -u)" -eq 0 ] && id mosquitto >/dev/null 2>&1; then chown -R mosquitto "$dir/data"; fi
  for attempt in 1 2 3 4 5; do
    MQTT_PORT=$(free_port)
    MQTT_WS_PORT=$(free_port)
    [ "$MQTT_WS_PORT" != "$MQTT_PORT" ] || MQTT_WS_PORT=$(free_port)
    # 0600: a leaf's configuration holds its bridge password.
    install -m 600 /dev/null "$dir/mosquitto.conf"
    {
      echo "per_listener_settings false"
      echo "listener $MQTT_PORT 127.0.0.1"
      echo "listener $MQTT_WS_PORT 127.0.0.1"
      echo "protocol websockets"
      echo "allow_anonymous false"
      echo "plugin $(mosquitto_dynsec_plugin)"
      echo "plugin_opt_config_file $dir/data/dynsec.json"
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
    if wait_port "$MQTT_PORT" 10 && wait_port "$MQTT_WS_PORT" 5; then
      record_pid "$pid" "$name"
      log "mosquitto $name: mqtt://127.0.0.1:$MQTT_PORT, ws://127.0.0.1:$MQTT_WS_PORT (pid $pid)"
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

# The services' PostgreSQL roles (deploy/postgres/roles.sql): framecast_<role>, each with its
# own password, `secret pg-<role>`, and rights on its own schema only.
FRAMECAST_PG_ROLES=(gateway storage album media)

# start_postgres NAME → sets PG_PORT, PG_DIR, PG_CONNINFO (database "framecast"), PGPASSFILE
# Every connection needs a password (scram-sha-256, the local socket included): the superuser
# postgres has `secret postgres`, which libpq clients (framecast, psql, the tests) read from
# $FRAMECAST_RUN_DIR/pgpass (0600, exported as PGPASSFILE), so PG_CONNINFO carries none.
# A persistent data folder made before passwords were required (pg_hba.conf trusting every
# connection) gets the password and scram-sha-256 on its next start (pg_require_passwords).
# The database gets a role per service (pg_service_roles), whose passwords are in the same
# pgpass file: PG_CONNINFO is the administrator's; pg_role_conninfo ROLE / pg_role_users give
# a service's.
start_postgres() {
  local name=$1
  local bin; bin=$(pg_bin); [ -n "$bin" ] || die "PostgreSQL server binaries not found"
  local password; password=$(secret postgres) || die "could not read or create the secret postgres"
  local role role_lines=""
  for role in "${FRAMECAST_PG_ROLES[@]}"; do
    secret "pg-$role" >/dev/null || die "could not read or create the secret pg-$role"
  done
  local temporary=1
  if [ "${FRAMECAST_PERSISTENT:-0}" = 1 ]; then
    PG_DIR="$FRAMECAST_RUN_DIR/$name"; temporary=0; mkdir -p "$PG_DIR"
  else
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/framecast-$name.XXXXXX")
  fi
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PG_DIR"
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    # initdb reads the superuser's password from a file (0600, the postgres user's), removed
    # as soon as initdb is done.
    local pwfile="$PG_DIR/initdb-password" status=0
    ( umask 077; printf '%s\n' "$password" > "$pwfile" )
    [ "$(id -u)" -eq 0 ] && chown postgres "$pwfile"
    as_pg "'$bin/initdb' -D '$PG_DIR/data' --auth=scram-sha-256 --pwfile='$pwfile' --username=postgres -E UTF8 --no-locale" \
      >"$FRAMECAST_RUN_DIR/$name-initdb.log" 2>&1 || status=$?
    rm -f "$pwfile"
    [ $status -eq 0 ] || { cat "$FRAMECAST_RUN_DIR/$name-initdb.log" >&2; die "initdb failed"; }
  fi
  # For TCP on loopback and for the server's socket folder (psql -h "$PG_DIR"): the superuser
  # and each service's role.
  for role in "${FRAMECAST_PG_ROLES[@]}"; do
    role_lines+=$(printf '127.0.0.1:*:*:framecast_%s:%s\n%s:*:*:framecast_%s:%s' "$role" "$(secret "pg-$role")" \
      "${PG_DIR//:/\\:}" "$role" "$(secret "pg-$role")")$'\n'
  done
  ( umask 077; printf '127.0.0.1:*:*:postgres:%s\n%s:*:*:postgres:%s\n%s' "$password" "${PG_DIR//:/\\:}" "$password" \
      "$role_lines" > "$FRAMECAST_RUN_DIR/pgpass" )
  export PGPASSFILE="$FRAMECAST_RUN_DIR/pgpass"
  local trusting=0
  grep -Eq '^[[:space:]]*[^#[:space:]].*[[:space:]]trust[[:space:]]*$' "$PG_DIR/data/pg_hba.conf" && trusting=1
  local attempt
  for attempt in 1 2 3 4 5; do
    PG_PORT=$(free_port)
    if as_pg "'$bin/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/server.log' -w -t 30 \
        -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c max_connections=300 ${FRAMECAST_PG_EXTRA:-}\" start" \
        >/dev/null 2>&1; then
      local pid; pid=$(head -1 "$PG_DIR/data/postmaster.pid")
      if [ $temporary = 1 ]; then echo "$pid $name $PG_DIR" >> "$PIDS_FILE"; else record_pid "$pid" "$name"; fi
      [ $trusting = 1 ] && pg_require_passwords "$bin" "$PG_DIR/data" "$PG_PORT" "$password"
      local exists
      exists=$("$bin/psql" -X -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'framecast'" 2>"$FRAMECAST_RUN_DIR/$name-psql.log") \
        || { cat "$FRAMECAST_RUN_DIR/$name-psql.log" >&2
             die "PostgreSQL refused the password in $FRAMECAST_RUN_DIR/secrets/postgres (a data folder from another run folder? delete $PG_DIR to start afresh)"; }
      [ "$exists" = 1 ] || "$bin/createdb" -w -h 127.0.0.1 -p "$PG_PORT" -U postgres framecast || die "createdb failed"
      pg_service_roles "$bin" "$PG_PORT"
      PG_CONNINFO="host=127.0.0.1 port=$PG_PORT user=postgres dbname=framecast"
      log "postgres $name: $PG_CONNINFO (pid $pid, data $PG_DIR; password in $FRAMECAST_RUN_DIR/secrets/postgres, PGPASSFILE=$PGPASSFILE; a role per service, framecast_<role>, passwords in secrets/pg-<role>)"
      return 0
    fi
  done
  cat "$PG_DIR/server.log" >&2; die "PostgreSQL did not start"
}

# pg_service_roles BIN PORT — runs deploy/postgres/roles.sql as the superuser on the database
# framecast: a role per service (framecast_<role>, password `secret pg-<role>`) owning its
# schema, nothing else for it; the blob store's schema owned by framecast_blobs (no login).
# Idempotent; converts a database made before the roles (its schemas and tables change owner).
# The passwords reach psql through its environment only (never a command line).
pg_service_roles() {
  local bin=$1 port=$2 top role
  top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  (
    for role in "${FRAMECAST_PG_ROLES[@]}"; do
      export "FRAMECAST_POSTGRES_${role^^}_PASSWORD=$(secret "pg-$role")"
    done
    "$bin/psql" -X -w -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d framecast \
      -f "$top/deploy/postgres/roles.sql" >"$FRAMECAST_RUN_DIR/postgres-roles.log" 2>&1
  ) || { cat "$FRAMECAST_RUN_DIR/postgres-roles.log" >&2; die "could not create the services' PostgreSQL roles (deploy/postgres/roles.sql)"; }
}

# pg_role_conninfo ROLE → the conninfo of the service ROLE's own PostgreSQL user
# (framecast_ROLE; libpq reads its password from PGPASSFILE), after start_postgres.
pg_role_conninfo() { echo "host=127.0.0.1 port=$PG_PORT user=framecast_$1 dbname=framecast"; }

# pg_role_users → exports FRAMECAST_POSTGRES_<ROLE>_USER=framecast_<role> for every role:
# `framecast all` then gives each role a pool of its own as that user (FRAMECAST_POSTGRES
# otherwise, for host, port and database).
pg_role_users() {
  local role
  for role in "${FRAMECAST_PG_ROLES[@]}"; do export "FRAMECAST_POSTGRES_${role^^}_USER=framecast_$role"; done
}

# write_ops_env NATS_URLS → $FRAMECAST_RUN_DIR/ops.env (0600): the NATS user ops and the
# PostgreSQL password file, for an operator in another terminal:
#   set -a; . RUN_DIR/ops.env; set +a; framecast ping; psql "$FRAMECAST_POSTGRES"
write_ops_env() {
  ( umask 077; {
    echo "FRAMECAST_NATS_URL=$1"
    echo "FRAMECAST_NATS_USER=ops"
    echo "FRAMECAST_NATS_PASSWORD=$FRAMECAST_NATS_OPS_PASSWORD"
    echo "FRAMECAST_POSTGRES=\"$PG_CONNINFO\""
    echo "PGPASSFILE=$PGPASSFILE"
  } > "$FRAMECAST_RUN_DIR/ops.env" )
}

# pg_require_passwords BIN DATA_DIR PORT PASSWORD — for a running server whose pg_hba.conf
# trusts connections (initialised before passwords were required): sets the superuser's
# password, then switches every `trust` line of pg_hba.conf to scram-sha-256 and reloads.
pg_require_passwords() {
  local bin=$1 data=$2 port=$3 password=$4
  log "postgres: $data accepted connections without a password; setting the postgres password and scram-sha-256 in pg_hba.conf"
  # Through standard input, so the password shows in no process list.
  printf "SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD '%s';\n" "$password" \
    | "$bin/psql" -X -w -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -f - >/dev/null \
    || die "could not set the postgres password in $data"
  # As the postgres user: the file stays its own.
  as_pg "sed -i -E '/^[[:space:]]*#/!s/[[:space:]]trust[[:space:]]*\$/ scram-sha-256/' '$data/pg_hba.conf'" \
    || die "could not switch $data/pg_hba.conf to scram-sha-256"
  "$bin/psql" -X -w -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT pg_reload_conf()" >/dev/null \
    || die "could not reload $data/pg_hba.conf"
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
  # Servers that drop to their own user (mosquitto, PostgreSQL) must reach their folders inside:
  # others may pass through, not list (secrets/ inside is 0700 itself).
  chmod 711 "$FRAMECAST_RUN_DIR"
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
# included as it is (the passwords it reads from the environment: nats_passwords).
# Nodes are supervised (see supervise).
start_nats_cluster() {
  local count=${1:-3} i top
  top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  nats_passwords
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
  # The root knows the album service and one identity per leaf bridge; leaves know the album
  # service, which creates frames' identities on them.
  MQTT_DYNSEC_ARGS=()
  for ((i = 1; i <= count; i++)); do
    MQTT_DYNSEC_ARGS+=(--bridge "leaf-$i")
    export "FRAMECAST_MQTT_BRIDGE_PASSWORD_LEAF_$i=$(secret "mqtt-bridge-leaf-$i")"
  done
  start_mosquitto mqtt-root
  MQTT_DYNSEC_ARGS=()
  MQTT_ROOT_PORT=$MQTT_PORT
  local bridge=()
  mapfile -t bridge < <(sed -n '/^connection /,/^# --- end of bridge/p' "$top/deploy/mosquitto/leaf.conf" \
    | grep -Ev '^[[:space:]]*(#|$)' | grep -Ev '^(address|remote_username|remote_password|remote_clientid) ')
  [ ${#bridge[@]} -gt 3 ] || die "no bridge section found in deploy/mosquitto/leaf.conf"
  MQTT_LEAF_PORTS=()
  for ((i = 1; i <= count; i++)); do
    local password_var="FRAMECAST_MQTT_BRIDGE_PASSWORD_LEAF_$i"
    start_mosquitto "mqtt-leaf-$i" "${bridge[@]}" "address 127.0.0.1:$MQTT_ROOT_PORT" "remote_clientid framecast-leaf-$i" \
      "remote_username leaf-$i" "remote_password ${!password_var}"
    MQTT_LEAF_PORTS+=("$MQTT_PORT")
  done
}
