# Helpers shared by build.sh and smoke.sh. Sourced, never run on its own.
# shellcheck shell=bash

# The tag both scripts default to; Complement is pointed at it with
# COMPLEMENT_BASE_IMAGE.
# shellcheck disable=SC2034 # used by the scripts that source this file
readonly DEFAULT_IMAGE="axon-complement:latest"

log() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
}

die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

# ensure_command COMMAND PACKAGE: installs the Debian PACKAGE when COMMAND is
# missing, so a fresh machine needs no manual preparation.
ensure_command() {
    local command=$1 package=$2
    if command -v "$command" >/dev/null 2>&1; then
        return 0
    fi
    apt_install "$package"
    command -v "$command" >/dev/null 2>&1 ||
        die "'$command' is still missing after installing the '$package' package"
}

# apt_install PACKAGE...: installs Debian packages, or explains why it cannot.
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "need the Debian package(s) $*, but apt-get is not available; install them by hand"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            die "need the Debian package(s) $*; run as root or install them by hand"
        sudo=(sudo)
    fi
    log "installing Debian package(s): $*"
    if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "$@" >&2; then
        log "apt-get install failed; refreshing the package lists and retrying"
        "${sudo[@]}" apt-get update >&2 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "$@" >&2 ||
            die "could not install the Debian package(s) $*"
    fi
}

# ensure_docker: makes sure a Docker engine answers, starting Debian's dockerd
# in the background when none runs (installing docker.io first if needed). The
# daemon is left running for later builds and smoke tests.
ensure_docker() {
    ensure_command docker docker.io
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] ||
        die "no Docker engine answers and starting dockerd needs root; start it (or fix access to its socket) and retry"
    ensure_command dockerd docker.io

    local log_file=${DOCKERD_LOG:-/var/log/axon-complement-dockerd.log}
    # The defaults work on an ordinary Linux host. Inside some sandboxes
    # overlayfs or iptables are unavailable; vfs and no iptables is the
    # fallback that needs neither (published ports then go through
    # docker-proxy, which is all the smoke test needs).
    local attempt
    if [ -n "${DOCKERD_ARGS:-}" ]; then
        attempt=("${DOCKERD_ARGS}")
    else
        attempt=("" "--storage-driver=vfs --iptables=false")
    fi
    local args
    for args in "${attempt[@]}"; do
        log "starting dockerd ${args:-with default options} (log: $log_file)"
        # shellcheck disable=SC2086 # the options are words on purpose
        nohup dockerd $args >>"$log_file" 2>&1 &
        local pid=$!
        if wait_for_docker "$pid" 60; then
            log "dockerd is running as pid $pid; stop it with: kill $pid"
            return 0
        fi
        log "dockerd ${args:-with default options} did not come up; last lines of $log_file:"
        tail -n 15 "$log_file" >&2 || true
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    die "could not start a Docker engine (see $log_file)"
}

# wait_for_docker PID SECONDS: true once `docker info` answers, false if the
# daemon PID exits or the deadline passes first.
wait_for_docker() {
    local pid=$1 deadline=$(($(date +%s) + $2))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if docker info >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}
