#!/usr/bin/env bash
# Keeps a static RocksDB (and snappy) built by the rocksdb crate outside the target dir, so a
# clean target dir or a new toolchain does not pay RocksDB's ~10-minute C++ build again.
#
# Only the dev profile's build is kept: it is compiled at the dev profile's optimisation
# level (-O0), good for tests and unfit for production, so do not export these variables in
# a shell that builds with --release.
#
#   source scripts/rocksdb-env.sh CACHE_DIR         export the variables if a build is saved
#   scripts/rocksdb-env.sh CACHE_DIR --save          save the libraries of the last build
set -euo pipefail

cache=${1:?usage: rocksdb-env.sh CACHE_DIR [--save]}
version=$(awk '/^name = "librocksdb-sys"/ { getline; gsub(/[^0-9a-z.+-]/, "", $3); print $3 }' \
    "$(dirname "${BASH_SOURCE[0]}")/../Cargo.lock")
saved="$cache/librocksdb-sys-$version-dev"

if [[ ${2:-} == --save ]]; then
    [[ -f $saved/librocksdb.a ]] && exit 0
    target=${CARGO_TARGET_DIR:-target}
    built=$(ls -t "$target"/debug/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)
    if [[ -z $built ]]; then
        echo "rocksdb-env: no RocksDB build to save (linked from $saved already?)" >&2
        exit 0
    fi
    out=$(dirname "$built")
    mkdir -p "$saved.tmp"
    cp "$out/librocksdb.a" "$saved.tmp/"
    cp "$(find "$out" -name libsnappy.a | head -n 1)" "$saved.tmp/"
    mv "$saved.tmp" "$saved"
    echo "rocksdb-env: saved RocksDB $version to $saved"
    exit 0
fi

if [[ -f $saved/librocksdb.a && -f $saved/libsnappy.a ]]; then
    export ROCKSDB_LIB_DIR=$saved ROCKSDB_STATIC=1 SNAPPY_LIB_DIR=$saved SNAPPY_STATIC=1
    echo "rocksdb-env: linking the saved RocksDB $version from $saved"
else
    echo "rocksdb-env: no saved RocksDB $version yet; building it from source this time"
fi
