#!/bin/sh
# Writes the initial state of mosquitto's dynamic-security plugin for a Framecast broker with
# mosquitto's own tools only (mosquitto, mosquitto_ctrl: Debian's packages, or the
# eclipse-mosquitto image, which has no Python; ../kubernetes/40-mqtt.yaml runs it in an init
# container). It writes the state scripts/lib/mqtt-dynsec-init.py writes (scripts/check-deploy
# checks the two agree):
#
#   dynsec-init.sh FILE [--bridge NAME]...
#
# Passwords come from the environment, never the command line:
#   FRAMECAST_MQTT_USER / FRAMECAST_MQTT_PASSWORD  the album service's identity (user "album"
#       by default) with the roles dynsec-admin (it administers this plugin: frames' clients
#       and roles) and framecast-service (it publishes to frames and reads their telemetry)
#   FRAMECAST_MQTT_BRIDGE_PASSWORD_<NAME>  one per --bridge NAME (NAME upper-cased, "-" as "_"):
#       a leaf broker's bridge, at the root only (role framecast-bridge: what flows down to
#       frames, and their status and heartbeat up)
#   MOSQUITTO_DYNSEC_PLUGIN  the plugin; default /usr/lib/mosquitto_dynamic_security.so (the
#       image) or /usr/lib/<arch>/mosquitto_dynamic_security.so (Debian)
#
# Nothing else may connect until the album service creates it: every frame gets its own client
# and role at registration. The default access denies everything not granted, receiving
# included.
#
# How: with FILE missing, `mosquitto_ctrl dynsec init` writes a one-off administrator (random
# password); a broker on a Unix socket in a private folder loads that file, and the one-off
# administrator sends it the roles, the default access, the album service's client and the
# bridges' clients ($CONTROL/dynamic-security/v1, as the album service does at run time); then
# the album service's identity, proving its password and roles work, deletes the one-off
# administrator. With FILE present, only the bridges it does not know yet are added, by the
# album service's identity (a leaf added to the tree); when that fails (the album service's
# password in FILE is another one), it says so and leaves FILE as it is. The broker keeps FILE
# up to date afterwards (frames' clients and roles survive restarts). FILE is replaced only
# once complete: mode 0600, owned by the user mosquitto when run as root.
set -eu

die() { echo "dynsec-init: $*" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: dynsec-init.sh FILE [--bridge NAME]..." >&2; exit 2; }
file=$1; shift
bridges=""
while [ $# -gt 0 ]; do
  case $1 in
    --bridge)
      [ $# -ge 2 ] || die "--bridge needs a NAME"
      case $2 in ''|*[!A-Za-z0-9_-]*) die "bridge name '$2': letters, digits, '-' and '_' only" ;; esac
      bridges="$bridges $2"; shift 2 ;;
    *) die "unknown argument: $1" ;;
  esac
done
user=${FRAMECAST_MQTT_USER:-album}
password=${FRAMECAST_MQTT_PASSWORD:-}
[ -n "$password" ] || die "FRAMECAST_MQTT_PASSWORD is not set"
[ "$user" != dynsec-init ] || die "dynsec-init is the one-off administrator's name"
[ -d "$(dirname "$file")" ] || die "$(dirname "$file") is not a folder"

variable() { printf 'FRAMECAST_MQTT_BRIDGE_PASSWORD_%s' "$(printf '%s' "$1" | tr 'a-z-' 'A-Z_')"; }
# NAME is letters, digits and "_" only here (checked above), so eval reads just that variable.
bridge_password() { eval "printf '%s' \"\${$(variable "$1"):-}\""; }
knows() { grep -q "\"username\":[[:space:]]*\"$1\"" "$2"; }

missing=""
for name in $bridges; do
  [ -n "$(bridge_password "$name")" ] || die "$(variable "$name") is not set (bridge $name)"
  if [ ! -f "$file" ] || ! knows "$name" "$file"; then missing="$missing $name"; fi
done
if [ -f "$file" ]; then
  [ -n "$missing" ] || exit 0
  fresh=0
else
  fresh=1
fi

plugin=${MOSQUITTO_DYNSEC_PLUGIN:-}
if [ -z "$plugin" ]; then
  for candidate in /usr/lib/mosquitto_dynamic_security.so /usr/lib/*/mosquitto_dynamic_security.so; do
    if [ -f "$candidate" ]; then plugin=$candidate; break; fi
  done
fi
[ -n "$plugin" ] && [ -f "$plugin" ] || die "mosquitto's dynamic-security plugin was not found (set MOSQUITTO_DYNSEC_PLUGIN)"

# A broker started as root drops to the user mosquitto: the folder it writes in (the state,
# its socket) is that user's; mosquitto_ctrl's options file (the password) stays private.
as_root=0
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then as_root=1; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/dynsec-init.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' HUP INT PIPE TERM
chmod 711 "$work"
mkdir -m 700 "$work/broker" "$work/ctrl"
if [ $as_root = 1 ]; then chown mosquitto "$work/broker"; fi
state="$work/broker/dynsec.json"
socket="$work/broker/socket"

# Fresh state: any failure stops here (no FILE is written). Bridges for a present FILE: a
# failure is reported and FILE stays as it is (the broker starts with what it had).
fail() {
  if [ $fresh = 1 ]; then die "$*"; fi
  echo "dynsec-init: warning: $*; $file is unchanged, the bridges$missing are not in it" >&2
  exit 0
}

admin=dynsec-init
if [ $fresh = 1 ]; then
  admin_password=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
  # Two lines on standard input: the password and its confirmation.
  printf '%s\n%s\n' "$admin_password" "$admin_password" | mosquitto_ctrl dynsec init "$state" "$admin" >/dev/null \
    || die "mosquitto_ctrl dynsec init failed"
else
  cp "$file" "$state"
fi
chmod 600 "$state"
if [ $as_root = 1 ]; then chown mosquitto "$state"; fi

cat > "$work/mosquitto.conf" <<CONF
per_listener_settings false
listener 0 $socket
allow_anonymous false
plugin $plugin
plugin_opt_config_file $state
persistence false
log_dest stderr
log_type error
log_type warning
CONF
mosquitto -c "$work/mosquitto.conf" 2>"$work/broker.log" &
pid=$!

# login USER PASSWORD — the identity the next commands use (mosquitto_ctrl and mosquitto_rr read
# their options from $XDG_CONFIG_HOME/mosquitto_ctrl|mosquitto_rr: private files), once the
# broker answers it.
login() {
  ( umask 077; printf -- '--unix %s\n-u %s\n-P %s\n' "$socket" "$1" "$2" > "$work/ctrl/mosquitto_ctrl"
    cp "$work/ctrl/mosquitto_ctrl" "$work/ctrl/mosquitto_rr" )
  tries=0
  while :; do
    out=$(XDG_CONFIG_HOME="$work/ctrl" mosquitto_ctrl dynsec getDefaultACLAccess 2>&1) || true
    case $out in
      *publishClientSend*) return 0 ;;
      *"ot authori"*) fail "$file does not accept $1 with its password" ;;
    esac
    kill -0 "$pid" 2>/dev/null || { pid=""; die "the broker did not start: $(tail -3 "$work/broker.log" | tr '\n' ' ')"; }
    tries=$((tries + 1))
    [ $tries -lt 100 ] || fail "the broker did not answer on $socket"
    sleep 0.1 2>/dev/null || sleep 1
  done
}

# ctrl COMMAND ARGS... — one `mosquitto_ctrl dynsec` command as the identity of `login`.
# mosquitto_ctrl exits 0 even on errors: its output is what tells.
ctrl() {
  out=$(XDG_CONFIG_HOME="$work/ctrl" mosquitto_ctrl dynsec "$@" 2>&1) || true
  out=$(printf '%s\n' "$out" | grep -v -e 'without encryption' -e 'visible on the network' -e '^$') || true
  case $out in
    *rror*|*"ot authori"*) fail "mosquitto_ctrl dynsec $1 ${2:-}: $(printf '%s' "$out" | tr '\n' ' ')" ;;
  esac
}
# commands JSON — plugin commands sent as one message (mosquitto_rr: the command topic, then
# the answer); any command answering an error fails. No secret in JSON (it is an argument).
commands() {
  out=$(XDG_CONFIG_HOME="$work/ctrl" mosquitto_rr -t '$CONTROL/dynamic-security/v1' \
    -e '$CONTROL/dynamic-security/v1/response' -W 10 -m "$1" 2>&1) || true
  case $out in
    *'"responses"'*) ;;
    *) fail "no answer from the plugin: $(printf '%s' "$out" | tr '\n' ' ')" ;;
  esac
  case $out in *'"error"'*) fail "the plugin refused a command: $out" ;; esac
}
# client NAME PASSWORD ROLE... — a client with its roles (the password and its confirmation on
# standard input, a here-document: never in a process list). No client is connected as NAME,
# so adding roles kicks no one (mosquitto drops a client whose roles change).
client() {
  name=$1 secret=$2; shift 2
  ctrl createClient "$name" <<INPUT
$secret
$secret
INPUT
  for role in "$@"; do ctrl addClientRole "$name" "$role"; done
}

if [ $fresh = 1 ]; then
  login "$admin" "$admin_password"
  # Deny everything not granted: publishing, subscribing and receiving (a frame whose role
  # loses an album stops receiving it at once, even on a subscription it already holds). The
  # roles: dynsec-admin, the plugin's own topics (the album service administers frames'
  # clients and roles); framecast-service, every frame topic (the album service publishes them
  # and reads frames' telemetry); framecast-bridge, a leaf's bridge at the root (what flows
  # down to frames, and their status and heartbeat up). As JSON: mosquitto_ctrl 2.0.11's
  # setDefaultACLAccess answers success and changes nothing.
  commands '{"commands": [
    {"command": "setDefaultACLAccess", "acls": [
      {"acltype": "publishClientSend", "allow": false}, {"acltype": "publishClientReceive", "allow": false},
      {"acltype": "subscribe", "allow": false}, {"acltype": "unsubscribe", "allow": true}]},
    {"command": "createRole", "rolename": "dynsec-admin", "acls": [
      {"acltype": "publishClientSend", "topic": "$CONTROL/dynamic-security/#", "allow": true},
      {"acltype": "publishClientReceive", "topic": "$CONTROL/dynamic-security/#", "allow": true},
      {"acltype": "subscribePattern", "topic": "$CONTROL/dynamic-security/#", "allow": true}]},
    {"command": "createRole", "rolename": "framecast-service", "acls": [
      {"acltype": "publishClientSend", "topic": "albums/#", "allow": true},
      {"acltype": "publishClientSend", "topic": "photos/#", "allow": true},
      {"acltype": "publishClientSend", "topic": "frames/#", "allow": true},
      {"acltype": "subscribePattern", "topic": "frames/#", "allow": true},
      {"acltype": "publishClientReceive", "topic": "frames/#", "allow": true},
      {"acltype": "subscribePattern", "topic": "albums/#", "allow": true},
      {"acltype": "publishClientReceive", "topic": "albums/#", "allow": true},
      {"acltype": "subscribePattern", "topic": "photos/#", "allow": true},
      {"acltype": "publishClientReceive", "topic": "photos/#", "allow": true}]},
    {"command": "createRole", "rolename": "framecast-bridge", "acls": [
      {"acltype": "subscribePattern", "topic": "albums/#", "allow": true},
      {"acltype": "subscribePattern", "topic": "photos/#", "allow": true},
      {"acltype": "subscribePattern", "topic": "frames/+/sync", "allow": true},
      {"acltype": "subscribePattern", "topic": "frames/+/command", "allow": true},
      {"acltype": "subscribePattern", "topic": "frames/+/config", "allow": true},
      {"acltype": "publishClientReceive", "topic": "albums/#", "allow": true},
      {"acltype": "publishClientReceive", "topic": "photos/#", "allow": true},
      {"acltype": "publishClientReceive", "topic": "frames/+/sync", "allow": true},
      {"acltype": "publishClientReceive", "topic": "frames/+/command", "allow": true},
      {"acltype": "publishClientReceive", "topic": "frames/+/config", "allow": true},
      {"acltype": "publishClientSend", "topic": "frames/+/status", "allow": true},
      {"acltype": "publishClientSend", "topic": "frames/+/heartbeat", "allow": true}]}]}'
  client "$user" "$password" dynsec-admin framecast-service
fi
# From here on as the album service: its password and roles are checked by using them.
login "$user" "$password"
for name in $missing; do client "$name" "$(bridge_password "$name")" framecast-bridge; done
if [ $fresh = 1 ]; then
  # The one-off administrator and `dynsec init`'s role admin (every topic, $SYS included).
  ctrl deleteClient "$admin"
  ctrl deleteRole admin
fi

kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
for name in "$user" $missing; do knows "$name" "$state" || fail "the broker did not save the client $name"; done
grep -q '"rolename":[[:space:]]*"framecast-bridge"' "$state" || fail "the broker did not save the roles"
! knows "$admin" "$state" || fail "the broker did not save the one-off administrator's removal"

tmp="$file.tmp.$$"
cp "$state" "$tmp"
chmod 600 "$tmp"
if [ $as_root = 1 ]; then chown mosquitto "$tmp"; fi
mv -f "$tmp" "$file"
if [ $fresh = 1 ]; then
  echo "dynsec-init: wrote $file (album service: $user; bridges:${missing:- none})" >&2
else
  echo "dynsec-init: added the bridges$missing to $file" >&2
fi
