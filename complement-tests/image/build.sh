#!/usr/bin/env bash
# Builds the Docker image that Complement runs Axon from, without pulling any
# base image: a root filesystem is assembled from the release `axon` binary,
# the shared libraries it and openssl need, Debian's static busybox and the
# entry point, and handed to `docker import`.
#
# Usage: build.sh [--tag IMAGE] [AXON_BINARY]
#   AXON_BINARY  the axon binary to package (default: $AXON_BINARY, else
#                $CARGO_TARGET_DIR/release/axon, else <repo>/target/release/axon)
#   --tag IMAGE  the image tag to create (default: $AXON_COMPLEMENT_IMAGE,
#                else axon-complement:latest)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"

usage() {
    cat <<'USAGE'
Usage: build.sh [--tag IMAGE] [AXON_BINARY]
  AXON_BINARY  the axon binary to package (default: $AXON_BINARY, else
               $CARGO_TARGET_DIR/release/axon, else <repo>/target/release/axon)
  --tag IMAGE  the image tag to create (default: $AXON_COMPLEMENT_IMAGE,
               else axon-complement:latest)
USAGE
}

image=${AXON_COMPLEMENT_IMAGE:-$DEFAULT_IMAGE}
binary=${AXON_BINARY:-${CARGO_TARGET_DIR:-$repo_root/target}/release/axon}
while [ $# -gt 0 ]; do
    case $1 in
    --tag)
        [ $# -ge 2 ] || die "--tag needs a value"
        image=$2
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
        binary=$1
        shift
        ;;
    esac
done

[ -f "$binary" ] ||
    die "axon binary '$binary' not found; build it with 'cargo build --release -p axon-homeserver' or pass its path"
[ -x "$binary" ] || die "axon binary '$binary' is not executable"

# busybox-static provides the shell and tools inside the image; the dynamic
# `busybox` package would need its libraries copied too, so insist on the
# static one.
busybox=/bin/busybox
if ! [ -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    apt_install busybox-static
fi
[ -x "$busybox" ] || die "$busybox is missing after installing busybox-static"
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked; install Debian's busybox-static package"
fi
ensure_command openssl openssl
openssl_bin=$(command -v openssl)
ensure_docker

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/axon-complement-rootfs.XXXXXX")
cleanup() {
    rm -rf "$rootfs"
}
trap cleanup EXIT

# Programs in the image that need the dynamic loader, and the loader itself
# (its path is fixed in each executable), for the check after the import.
dynamic_programs=()
loader=""

# copy_with_libraries FILE DEST: copies the executable FILE to DEST inside the
# root filesystem, together with every shared library `ldd` resolves for it,
# each at the path the dynamic loader will look for it.
copy_with_libraries() {
    local file=$1 dest=$2
    install -D -m 0755 "$file" "$rootfs$dest"
    local output
    if ! output=$(ldd "$file" 2>&1); then
        case $output in
        *"not a dynamic executable"* | *"statically linked"*)
            log "$file loads no shared libraries"
            return 0
            ;;
        *) die "ldd $file failed: $output" ;;
        esac
    fi
    if grep -q 'not found' <<<"$output"; then
        die "$file needs libraries that are not installed here:"$'\n'"$(grep 'not found' <<<"$output")"
    fi
    local lib
    # Lines look like "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"
    # or, for the loader, "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO
    # has no file.
    while read -r lib; do
        [ -n "$lib" ] || continue
        if ! [ -e "$rootfs$lib" ]; then
            install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
        fi
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$output")
    local program_loader
    program_loader=$(awk '$1 ~ /^\// { print $1; exit }' <<<"$output")
    if [ -n "$program_loader" ]; then
        dynamic_programs+=("$dest")
        loader=$program_loader
    fi
}

log "assembling the root filesystem in $rootfs"
mkdir -p "$rootfs"/{bin,usr/bin,usr/local/bin,etc/axon,etc/ssl/certs,data,complement/ca,root}
install -d -m 1777 "$rootfs/tmp"

install -m 0755 "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done

copy_with_libraries "$binary" /usr/local/bin/axon
copy_with_libraries "$openssl_bin" /usr/bin/openssl
install -m 0755 "$here/entrypoint.sh" "$rootfs/usr/local/bin/complement-entrypoint"

# Minimal system files: root's account for tools that look it up, and name
# resolution through /etc/hosts first (Complement reaches the host as
# host.docker.internal, which only /etc/hosts knows), then DNS.
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"

previous_id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
binary_sha256=$(sha256sum "$binary" | cut -d' ' -f1)
log "importing the root filesystem as $image"
image_id=$(
    tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf - . |
        docker import \
            --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
            --change 'EXPOSE 8008 8448' \
            --change 'WORKDIR /data' \
            --change 'ENTRYPOINT ["/usr/local/bin/complement-entrypoint"]' \
            --change "LABEL org.opencontainers.image.title=axon-complement axon.binary.sha256=$binary_sha256" \
            --message "axon for Complement, binary sha256 $binary_sha256" \
            - "$image"
)

# Prove the image can run what it ships: the loader must resolve every
# library of axon and openssl inside the image, not just on this host.
for program in "${dynamic_programs[@]}"; do
    if ! out=$(docker run --rm --network none --entrypoint "${loader#"$rootfs"}" "$image" --list "$program" 2>&1); then
        die "$program cannot be loaded inside $image: $out"
    fi
    if grep -q 'not found' <<<"$out"; then
        die "$program misses libraries inside $image:"$'\n'"$out"
    fi
done
docker run --rm --network none --entrypoint openssl "$image" version >/dev/null ||
    die "openssl does not run inside $image"

# Each build would otherwise leave the previous image behind untagged. Docker
# refuses (and we ignore) the removal while a container or a committed
# blueprint image still uses it.
if [ -n "$previous_id" ] && [ "$previous_id" != "$image_id" ]; then
    docker rmi "$previous_id" >/dev/null 2>&1 || true
fi

log "built $image ($image_id) from $binary"
