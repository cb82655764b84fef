#!/usr/bin/env bash
# Runs a throwaway Synapse on loopback, the reference the message-send
# benchmark compares Axon with (see README.md beside this file).
#
#   synapse.sh [--install-only] [--federation] [--extra-config FILE]
#              [-- COMMAND [ARGS...]]
#
# Installs matrix-synapse (pinned below) from PyPI into a virtualenv under
# the cache directory, writes a configuration into a fresh temporary
# directory (SQLite, one plain-HTTP client listener on a free 127.0.0.1
# port, open registration without verification, rate limits raised out of
# the way), generates its signing key, starts it and waits until
# /_matrix/client/versions answers.
#
# With a COMMAND, runs it with SYNAPSE_URL set to the base URL, then stops
# Synapse and exits with the command's status. Without one, prints the base
# URL on standard output and keeps Synapse running until interrupted.
# Synapse is stopped, and its directory removed, on any exit (set
# AXON_BENCH_KEEP=1 to keep the directory, with homeserver.log, for a look).
#
#   --federation         also serve the server-server API (and the key
#                        server) on the same plain-HTTP listener, for a
#                        benchmark that plays a remote server and sends its
#                        requests straight to SYNAPSE_URL. Synapse's own
#                        outbound requests still use TLS, as always.
#   --extra-config FILE  append FILE (YAML) to the generated configuration,
#                        for settings a benchmark needs (for instance
#                        federation_custom_ca_list); its keys must not repeat
#                        the ones written here.
#
# Environment:
#   SYNAPSE_METRICS    if set to 1, also serve Prometheus metrics on another
#                      free 127.0.0.1 port; the COMMAND gets its URL in
#                      SYNAPSE_METRICS_URL (sync_bench reads the in-flight
#                      request gauge there)
#   AXON_BENCH_CACHE   where the virtualenv lives (default /var/cache/axon-bench)
#   SYNAPSE_VERSION    the matrix-synapse version to install (default below)
#   AXON_BENCH_KEEP    keep the temporary directory
#
# Needs: python3 with venv, and PyPI.
set -euo pipefail

synapse_version="${SYNAPSE_VERSION:-1.163.2}"
cache="${AXON_BENCH_CACHE:-/var/cache/axon-bench}"
venv="$cache/synapse-venv"
# How long Synapse may take to answer /versions (it takes about 2 s).
ready_timeout_s=60

log() { echo "synapse.sh: $*" >&2; }

install_only=0
federation=0
extra_config=""
command_args=()
while (($# > 0)); do
  case "$1" in
    --install-only) install_only=1; shift ;;
    --federation) federation=1; shift ;;
    --extra-config) extra_config="${2:?--extra-config needs a file}"; shift 2 ;;
    --) shift; command_args=("$@"); break ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) log "unknown argument '$1' (see --help)"; exit 2 ;;
  esac
done

# ---- install ---------------------------------------------------------------
# The stamp records what was installed, so a later run is a cheap check.
stamp="$venv/.axon-bench-stamp"
want_stamp="matrix-synapse==$synapse_version $(python3 --version 2>&1)"
if [[ -f $stamp && "$(cat "$stamp")" == "$want_stamp" ]]; then
  log "matrix-synapse $synapse_version is installed in $venv"
else
  log "installing matrix-synapse $synapse_version into $venv (about 30 s)"
  mkdir -p "$cache"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "matrix-synapse==$synapse_version"
  echo "$want_stamp" >"$stamp"
fi
py="$venv/bin/python"
if ((install_only)); then
  exit 0
fi
if [[ -n $extra_config && ! -r $extra_config ]]; then
  log "--extra-config: cannot read $extra_config"
  exit 2
fi

# ---- configure -------------------------------------------------------------
dir="$(mktemp -d -t axon-bench-synapse.XXXXXX)"
synapse_pid=""
cleanup() {
  local status=$?
  if [[ -n $synapse_pid ]] && kill -0 "$synapse_pid" 2>/dev/null; then
    kill -TERM "$synapse_pid" 2>/dev/null || true
    # Bounded: Synapse stops in about a second; after 20 s it is killed.
    for _ in $(seq 1 200); do
      kill -0 "$synapse_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$synapse_pid" 2>/dev/null || true
    wait "$synapse_pid" 2>/dev/null || true
  fi
  if [[ -n ${AXON_BENCH_KEEP:-} ]]; then
    log "kept $dir"
  else
    rm -rf "$dir"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A loopback port that was free a moment ago.
port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# Metrics (opt-in): a second listener, and the switch that serves them.
metrics_listener=""
metrics_enable=""
metrics_url=""
if [[ ${SYNAPSE_METRICS:-} == 1 ]]; then
  metrics_port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  metrics_url="http://127.0.0.1:$metrics_port/_synapse/metrics"
  metrics_listener="  - port: $metrics_port
    bind_addresses: [\"127.0.0.1\"]
    type: metrics"
  metrics_enable="enable_metrics: true"
fi
secret() { "$py" -c 'import secrets; print(secrets.token_hex(32))'; }
url="http://127.0.0.1:$port"
# The listener's resources: the client API, and with --federation the
# server-server API and the key server too.
resources="[client]"
if ((federation)); then
  resources="[client, federation]"
fi

# Rate limits: every limiter a client-server benchmark can reach, raised so
# that Synapse is measured, not its throttling. Keys as read by
# synapse/config/ratelimiting.py.
high='{per_second: 100000, burst_count: 1000000}'
cat >"$dir/homeserver.yaml" <<EOF
server_name: "127.0.0.1:$port"
pid_file: "$dir/homeserver.pid"
listeners:
  - port: $port
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: $resources
        compress: false
$metrics_listener
$metrics_enable
database:
  name: sqlite3
  args:
    database: "$dir/homeserver.db"
log_config: "$dir/log.yaml"
media_store_path: "$dir/media"
signing_key_path: "$dir/signing.key"
report_stats: false
macaroon_secret_key: "$(secret)"
form_secret: "$(secret)"
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
# Registration is set-up, not measured: cheap password hashes keep it short.
bcrypt_rounds: 4
rc_message: $high
rc_registration: $high
rc_registration_token_validity: $high
rc_login:
  address: $high
  account: $high
  failed_attempts: $high
rc_admin_redaction: $high
rc_joins:
  local: $high
  remote: $high
rc_joins_per_room: $high
rc_invites:
  per_room: $high
  per_user: $high
  per_issuer: $high
rc_room_creation: $high
rc_presence:
  per_user: $high
rc_profile: $high
rc_user_directory: $high
EOF
if [[ -n $extra_config ]]; then
  { echo "# From --extra-config $extra_config"; cat "$extra_config"; } >>"$dir/homeserver.yaml"
fi

# INFO to a file, as a production deployment logs.
cat >"$dir/log.yaml" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "$dir/homeserver.log"
    filters: [context]
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
EOF

"$py" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" --generate-keys \
  >"$dir/generate-keys.log" 2>&1 || {
  log "generating keys failed:"
  cat "$dir/generate-keys.log" >&2
  exit 1
}

# ---- start and wait --------------------------------------------------------
log "starting Synapse on $url (data in $dir)"
started=$SECONDS
"$py" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" \
  >"$dir/stdout.log" 2>&1 &
synapse_pid=$!

# Polls /versions until it answers 200, Synapse exits, or the deadline.
ready=0
deadline=$((SECONDS + ready_timeout_s))
while ((SECONDS < deadline)); do
  if ! kill -0 "$synapse_pid" 2>/dev/null; then
    break
  fi
  if "$py" - "$url/_matrix/client/versions" <<'PY' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
    ready=1
    break
  fi
  sleep 0.2
done
if ((!ready)); then
  log "Synapse did not answer $url/_matrix/client/versions within ${ready_timeout_s} s"
  tail -n 50 "$dir/stdout.log" "$dir/homeserver.log" >&2 2>/dev/null || true
  exit 1
fi
log "Synapse $synapse_version is ready at $url after $((SECONDS - started)) s"

if ((${#command_args[@]} == 0)); then
  echo "$url"
  log "running until interrupted (Ctrl-C stops it)"
  wait "$synapse_pid"
else
  export SYNAPSE_URL="$url"
  if [[ -n $metrics_url ]]; then
    export SYNAPSE_METRICS_URL="$metrics_url"
  fi
  set +e
  "${command_args[@]}"
  status=$?
  set -e
  if ! kill -0 "$synapse_pid" 2>/dev/null; then
    log "Synapse exited during the command; its log:"
    tail -n 50 "$dir/homeserver.log" >&2 2>/dev/null || true
    [[ $status == 0 ]] && status=1
  fi
  exit "$status"
fi
