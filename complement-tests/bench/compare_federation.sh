#!/usr/bin/env bash
# Runs the inbound federation benchmark against Axon and against Synapse in
# one run, with the same workload and the same fake remote server, and
# prints both with how many times Axon is better on each figure. See
# README.md beside this file.
#
#   compare_federation.sh [--axon-bin PATH] [--out DIR] [--transactions N]
#                         [--pdus-per-transaction N] [--warmup-transactions N]
#                         [--latency-events N] [--latency-warmup N]
#                         [--room-version V]
#
#   --axon-bin PATH   benchmark this axon binary instead of building one.
#                     Without it the script runs
#                     `cargo build --release -p axon-homeserver` (a cold
#                     release build compiles RocksDB: about 14 minutes on two
#                     cores).
#   --out DIR         where the CA, Synapse's extra configuration and the two
#                     JSON reports go (default: a new temp dir)
#   workload flags    passed to both runs (see `federation_bench --help`)
#
# federation_bench plays a remote homeserver on 127.0.0.1 (TLS, with a CA it
# generates here): it joins a public room of the target's local user through
# make_join/send_join, sends transactions of 50 signed m.room.message PDUs,
# then single-PDU transactions while the local user long-polls /sync.
# Synapse comes from PyPI through synapse.sh, with its federation API on its
# plain-HTTP listener (--federation) and, through --extra-config, the peer's
# CA trusted for outbound TLS, loopback allowed as a federation address, and
# its per-origin federation rate limiter raised out of the way. Everything
# listens on 127.0.0.1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

log() { echo "compare_federation.sh: $*" >&2; }

axon_bin=""
out=""
workload=()
while (($# > 0)); do
  case "$1" in
    --axon-bin) axon_bin="${2:?--axon-bin needs a path}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --transactions | --pdus-per-transaction | --warmup-transactions | --latency-events | \
      --latency-warmup | --room-version)
      workload+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) log "unknown argument '$1' (see --help)"; exit 2 ;;
  esac
done

cd "$repo"
target_dir="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

if [[ -z $axon_bin ]]; then
  log "building axon in release mode (a cold build compiles RocksDB with" \
    "optimisation: about 14 minutes on two cores; --axon-bin PATH reuses a binary)"
  cargo build --release -p axon-homeserver --bin axon
  axon_bin="$target_dir/release/axon"
fi
if [[ ! -x $axon_bin ]]; then
  log "$axon_bin is not an executable"
  exit 1
fi
axon_bin="$(cd "$(dirname "$axon_bin")" && pwd)/$(basename "$axon_bin")"

log "building the benchmark (release)"
cargo build --release -p axon-complement-tests --bin federation_bench
bench="$target_dir/release/federation_bench"

"$here/synapse.sh" --install-only

if [[ -z $out ]]; then
  out="$(mktemp -d -t axon-federation-bench.XXXXXX)"
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# One CA for both runs: Synapse must trust it before it starts.
"$bench" pki "$out/pki"
cat >"$out/synapse-federation.yaml" <<EOF
# The peer's certificate is checked, against its CA.
federation_verify_certificates: true
federation_custom_ca_list: ["$out/pki/ca.pem"]
# Loopback is blocked by default; the peer is on loopback.
federation_ip_range_blacklist: []
# The per-origin limiter delays an origin's requests past 10 a second:
# raised, so Synapse is measured, not its throttling.
rc_federation:
  window_size: 1000
  sleep_limit: 100000
  sleep_delay: 1
  reject_limit: 100000
  concurrent: 100
EOF

log "axon: $axon_bin"
started=$SECONDS
"$bench" --axon-bin "$axon_bin" --pki "$out/pki" --label axon --json "${workload[@]}" \
  >"$out/axon.json"
axon_s=$((SECONDS - started))

log "synapse"
started=$SECONDS
# The base URL is only known inside synapse.sh, hence the inner shell.
# shellcheck disable=SC2016 # expanded by the inner shell, on purpose
BENCH_OUT="$out/synapse.json" "$here/synapse.sh" --federation \
  --extra-config "$out/synapse-federation.yaml" -- \
  bash -c 'exec "$0" --base-url "$SYNAPSE_URL" "$@" >"$BENCH_OUT"' \
  "$bench" --pki "$out/pki" --label synapse --json "${workload[@]}"
synapse_s=$((SECONDS - started))

echo
echo "Inbound federation, one room, same workload and peer (axon ${axon_s} s," \
  "synapse ${synapse_s} s; reports in $out):"
echo
"$bench" compare "$out/axon.json" "$out/synapse.json"
