#!/usr/bin/env bash
# Runs the message-send benchmark against Axon and against Synapse in one
# run, with the same workload, and prints both with the ratio axon/synapse
# per number of concurrent senders. See README.md beside this file.
#
#   compare.sh [--axon-bin PATH] [--senders LIST]
#              [--messages-per-sender N | --duration SECS] [--warmup N] [--out DIR]
#
#   --axon-bin PATH   benchmark this axon binary instead of building one.
#                     Without it the script runs
#                     `cargo build --release -p axon-homeserver`: the first
#                     release build compiles RocksDB's C++ with optimisation,
#                     about 14 minutes on two cores (later ones take seconds).
#   --senders LIST    concurrent senders per phase (default 1,8,64)
#   --messages-per-sender N   timed messages per sender (default 100)
#   --duration SECS   instead, each phase sends for SECS on both servers
#                     (steadier figures for the 1-sender phase, where 100
#                     messages take axon a fraction of a second)
#   --warmup N        untimed messages per sender per phase (default 5)
#   --out DIR         where the two JSON reports go (default: a new temp dir)
#
# The load generator (send_bench) is always built in release mode; it needs
# no RocksDB and builds in a minute or two. Synapse comes from PyPI through
# synapse.sh (cached virtualenv, SQLite). Everything listens on 127.0.0.1.
# With the defaults the Synapse part takes about 4 minutes, Axon's much less.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

log() { echo "compare.sh: $*" >&2; }

axon_bin=""
out=""
workload=()
while (($# > 0)); do
  case "$1" in
    --axon-bin) axon_bin="${2:?--axon-bin needs a path}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --senders | --messages-per-sender | --duration | --warmup)
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

log "building the load generator (release)"
cargo build --release -p axon-complement-tests --bin send_bench
bench="$target_dir/release/send_bench"

"$here/synapse.sh" --install-only

if [[ -z $out ]]; then
  out="$(mktemp -d -t axon-send-bench.XXXXXX)"
fi
mkdir -p "$out"

log "axon: $axon_bin"
started=$SECONDS
"$bench" --axon-bin "$axon_bin" --label axon --json "${workload[@]}" >"$out/axon.json"
axon_s=$((SECONDS - started))

log "synapse"
started=$SECONDS
# The base URL is only known inside synapse.sh, hence the inner shell.
# shellcheck disable=SC2016 # expanded by the inner shell, on purpose
BENCH_OUT="$out/synapse.json" "$here/synapse.sh" -- \
  bash -c 'exec "$0" --base-url "$SYNAPSE_URL" "$@" >"$BENCH_OUT"' \
  "$bench" --label synapse --json "${workload[@]}"
synapse_s=$((SECONDS - started))

echo
echo "Message sends, one room, same workload (axon ${axon_s} s, synapse ${synapse_s} s;" \
  "reports in $out):"
echo
"$bench" compare "$out/axon.json" "$out/synapse.json"
