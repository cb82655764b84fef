#!/usr/bin/env bash
# Smoke test of the axon-complement image: runs it the way Complement does and
# checks the parts of Complement's image contract that Complement itself only
# reports as confusing test failures. All traffic stays on this machine: the
# containers' ports are published on 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"

usage() {
    cat <<'USAGE'
Usage: smoke.sh [--image IMAGE] [--timeout SECONDS] [--plumbing-only] [--no-federation]
  --image IMAGE      image to test (default: $AXON_COMPLEMENT_IMAGE, else
                     axon-complement:latest)
  --timeout SECONDS  how long a start may take before it counts as failed
                     (default 60)
  --plumbing-only    check only what the image itself provides (start-up,
                     /versions, the TLS certificate, restarts); skips the
                     checks that need a working homeserver
  --no-federation    skip the two-server federation check

Checks, in order:
  1. hs1 starts with SERVER_NAME=hs1 and a throwaway CA in /complement/ca and
     answers 200 to GET /_matrix/client/versions;
  2. port 8448 serves a certificate for hs1 that chains to that CA, and the
     container trusts the CA;
  3. shared-secret registration (secret "complement") on
     /_synapse/admin/v1/register creates a user who can log in;
  4. after `docker stop` + `docker start` (Complement's restart) and after
     `docker commit` + a new container from the committed image (Complement's
     blueprints), the server answers again and the user can still log in;
  5. a second server hs2 on the same Docker network: a user of hs1 reads the
     profile of a user of hs2 over federation.
USAGE
}

image=${AXON_COMPLEMENT_IMAGE:-$DEFAULT_IMAGE}
timeout=60
plumbing_only=false
federation=true
while [ $# -gt 0 ]; do
    case $1 in
    --image)
        [ $# -ge 2 ] || die "--image needs a value"
        image=$2
        shift 2
        ;;
    --timeout)
        [ $# -ge 2 ] || die "--timeout needs a value"
        timeout=$2
        shift 2
        ;;
    --plumbing-only)
        plumbing_only=true
        shift
        ;;
    --no-federation)
        federation=false
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case $timeout in
'' | *[!0-9]*) die "--timeout needs a whole number of seconds, not '$timeout'" ;;
esac

ensure_command curl curl
ensure_command openssl openssl
ensure_docker
docker image inspect "$image" >/dev/null 2>&1 ||
    die "image $image not found; build it first with complement-tests/image/build.sh"

run_id="axon-smoke-$$"
work=$(mktemp -d "${TMPDIR:-/tmp}/axon-smoke.XXXXXX")
containers=()
committed_image=""
network=""
cleanup() {
    local status=$?
    if [ ${#containers[@]} -gt 0 ]; then
        docker rm -f "${containers[@]}" >/dev/null 2>&1 || true
    fi
    if [ -n "$committed_image" ]; then
        docker rmi -f "$committed_image" >/dev/null 2>&1 || true
    fi
    if [ -n "$network" ]; then
        docker network rm "$network" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    if [ "$status" -eq 0 ]; then
        log "PASS: $image"
    else
        log "FAIL: $image"
    fi
}
trap cleanup EXIT

# fail CONTAINER MESSAGE: shows the container's log, then stops the test.
fail() {
    local container=$1
    shift
    log "last lines of the log of $container:"
    docker logs --tail 60 "$container" >&2 2>&1 || true
    die "$*"
}

# A throwaway CA in the shape Complement makes: the image must issue its own
# certificate from it at every start.
mkdir -p "$work/ca"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -sha256 \
    -subj "/CN=Axon smoke test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -keyout "$work/ca/ca.key" -out "$work/ca/ca.crt" 2>/dev/null ||
    die "could not create the throwaway CA"
chmod 0644 "$work/ca/ca.key" "$work/ca/ca.crt"

network="$run_id"
docker network create "$network" >/dev/null || die "could not create the Docker network $network"

# start_server NAME SERVER_NAME [IMAGE]: starts a container named NAME the way
# Complement does (SERVER_NAME, the CA in /complement/ca, a network alias
# equal to the server name) with its ports published on loopback.
start_server() {
    local name=$1 server_name=$2 from=${3:-$image}
    containers+=("$name")
    docker run -d --name "$name" \
        --network "$network" --network-alias "$server_name" \
        -e "SERVER_NAME=$server_name" \
        -v "$work/ca:/complement/ca:ro" \
        -p 127.0.0.1::8008 -p 127.0.0.1::8448 \
        "$from" >/dev/null ||
        die "could not start a container from $from"
}

# host_port CONTAINER PORT: the loopback port Docker published PORT on.
host_port() {
    local mapping
    mapping=$(docker port "$1" "$2/tcp" | head -n 1)
    [ -n "$mapping" ] || fail "$1" "port $2 of $1 is not published"
    echo "${mapping##*:}"
}

# wait_ready CONTAINER: waits until /_matrix/client/versions answers 200,
# failing early if the container exits, and checks the answer.
wait_ready() {
    local container=$1 deadline=$(($(date +%s) + timeout)) port="" code=""
    while :; do
        if [ "$(docker inspect -f '{{.State.Running}}' "$container")" != true ]; then
            fail "$container" "$container exited with status $(docker inspect -f '{{.State.ExitCode}}' "$container") before answering /_matrix/client/versions"
        fi
        [ -n "$port" ] || port=$(docker port "$container" 8008/tcp 2>/dev/null | head -n 1 | sed 's/.*://')
        if [ -n "$port" ]; then
            code=$(curl -s -o "$work/versions.json" -w '%{http_code}' --max-time 2 \
                "http://127.0.0.1:$port/_matrix/client/versions" || true)
            [ "$code" = 200 ] && break
        fi
        [ "$(date +%s)" -lt "$deadline" ] ||
            fail "$container" "$container did not answer 200 on /_matrix/client/versions within ${timeout}s (last status: ${code:-none})"
        sleep 0.2
    done
    grep -q '"versions"' "$work/versions.json" ||
        fail "$container" "/_matrix/client/versions answered 200 without a versions list: $(head -c 300 "$work/versions.json")"
    log "$container answers /_matrix/client/versions"
}

# check_tls CONTAINER SERVER_NAME: the federation port must serve a
# certificate for SERVER_NAME signed by the CA, and the container must trust
# that CA for its own outbound connections.
check_tls() {
    local container=$1 server_name=$2 deadline=$(($(date +%s) + timeout)) port
    port=$(host_port "$container" 8448)
    until openssl s_client -connect "127.0.0.1:$port" -servername "$server_name" \
        -verify_hostname "$server_name" -CAfile "$work/ca/ca.crt" -verify_return_error \
        </dev/null >"$work/s_client.txt" 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] ||
            fail "$container" "port 8448 of $container does not serve a certificate for $server_name signed by the CA: $(tail -n 5 "$work/s_client.txt")"
        sleep 0.2
    done
    local trusted
    for trusted in /etc/axon/tls/complement-ca.crt /etc/ssl/certs/ca-certificates.crt; do
        docker exec "$container" cat "$trusted" 2>/dev/null | cmp -s - "$work/ca/ca.crt" ||
            fail "$container" "$container does not trust the Complement CA through $trusted"
    done
    log "$container serves a certificate for $server_name from the CA and trusts the CA"
}

# request METHOD URL [JSON] [TOKEN]: prints the status code; the body goes
# to $work/body.json.
request() {
    local method=$1 url=$2 body=${3:-} token=${4:-}
    local args=(-s -o "$work/body.json" -w '%{http_code}' --max-time 30 -X "$method")
    if [ -n "$body" ]; then
        args+=(-H 'Content-Type: application/json' --data "$body")
    fi
    if [ -n "$token" ]; then
        args+=(-H "Authorization: Bearer $token")
    fi
    curl "${args[@]}" "$url" || echo "000"
}

# json_string KEY: the string value of KEY in $work/body.json (flat objects).
json_string() {
    sed -n "s/.*\"$1\" *: *\"\\([^\"]*\\)\".*/\\1/p" "$work/body.json" | head -n 1
}

# register CONTAINER USER PASSWORD: shared-secret registration as Complement
# does it; prints the new user's access token.
register() {
    local container=$1 user=$2 password=$3 port code nonce mac
    port=$(host_port "$container" 8008)
    local url="http://127.0.0.1:$port/_synapse/admin/v1/register"
    code=$(request GET "$url")
    [ "$code" = 200 ] ||
        fail "$container" "GET /_synapse/admin/v1/register answered $code: $(head -c 300 "$work/body.json")"
    nonce=$(json_string nonce)
    [ -n "$nonce" ] || fail "$container" "no nonce in $(head -c 300 "$work/body.json")"
    mac=$(printf '%s\0%s\0%s\0%s' "$nonce" "$user" "$password" notadmin |
        openssl dgst -sha1 -hmac complement -r | cut -d' ' -f1)
    code=$(request POST "$url" "{\"nonce\":\"$nonce\",\"username\":\"$user\",\"password\":\"$password\",\"admin\":false,\"mac\":\"$mac\"}")
    [ "$code" = 200 ] ||
        fail "$container" "shared-secret registration of $user answered $code: $(head -c 300 "$work/body.json")"
    json_string access_token
}

# login CONTAINER USER PASSWORD: password login; prints the access token.
login() {
    local container=$1 user=$2 password=$3 port code token
    port=$(host_port "$container" 8008)
    code=$(request POST "http://127.0.0.1:$port/_matrix/client/v3/login" \
        "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"$user\"},\"password\":\"$password\"}")
    [ "$code" = 200 ] ||
        fail "$container" "login of $user answered $code: $(head -c 300 "$work/body.json")"
    token=$(json_string access_token)
    [ -n "$token" ] || fail "$container" "login of $user returned no access token"
    echo "$token"
}

# stop_server CONTAINER: docker stop as Complement does, noting whether the
# server honoured SIGTERM (otherwise every blueprint costs the full timeout).
stop_server() {
    local container=$1 start end exit_code
    start=$(date +%s)
    docker stop -t 10 "$container" >/dev/null || fail "$container" "docker stop $container failed"
    end=$(date +%s)
    exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
    if [ "$exit_code" = 137 ]; then
        log "warning: $container ignored SIGTERM and was killed after $((end - start))s"
    else
        log "$container stopped in $((end - start))s with exit status $exit_code"
    fi
}

hs1="$run_id-hs1"
password="smoke-password-1"
start_server "$hs1" hs1
wait_ready "$hs1"
check_tls "$hs1" hs1
if ! $plumbing_only; then
    token=$(register "$hs1" smoke "$password")
    [ -n "$token" ] || fail "$hs1" "shared-secret registration returned no access token"
    login "$hs1" smoke "$password" >/dev/null
    log "shared-secret registration and login work on $hs1"
fi

# Complement's Restart(): stop and start the same container.
stop_server "$hs1"
docker start "$hs1" >/dev/null || fail "$hs1" "docker start $hs1 failed"
wait_ready "$hs1"
check_tls "$hs1" hs1
if ! $plumbing_only; then
    login "$hs1" smoke "$password" >/dev/null
    log "the user registered before the restart can log in after it"
fi

# Complement's blueprints: stop, commit, and run a new container from the
# committed image; the data must come along and the start must be clean.
stop_server "$hs1"
committed_image="$run_id-blueprint:latest"
docker commit "$hs1" "$committed_image" >/dev/null || fail "$hs1" "docker commit $hs1 failed"
docker rm "$hs1" >/dev/null
hs1b="$run_id-hs1-from-commit"
start_server "$hs1b" hs1 "$committed_image"
wait_ready "$hs1b"
check_tls "$hs1b" hs1
if ! $plumbing_only; then
    token=$(login "$hs1b" smoke "$password")
    log "the user registered before the commit can log in from the committed image"
fi

if ! $plumbing_only && $federation; then
    hs2="$run_id-hs2"
    start_server "$hs2" hs2
    wait_ready "$hs2"
    check_tls "$hs2" hs2
    token2=$(register "$hs2" remote "$password")
    port2=$(host_port "$hs2" 8008)
    code=$(request PUT "http://127.0.0.1:$port2/_matrix/client/v3/profile/@remote:hs2/displayname" \
        '{"displayname":"Smoke Remote"}' "$token2")
    [ "$code" = 200 ] || fail "$hs2" "setting a display name on hs2 answered $code: $(head -c 300 "$work/body.json")"
    port1=$(host_port "$hs1b" 8008)
    deadline=$(($(date +%s) + timeout))
    while :; do
        code=$(request GET "http://127.0.0.1:$port1/_matrix/client/v3/profile/@remote:hs2" "" "$token")
        [ "$code" = 200 ] && [ "$(json_string displayname)" = "Smoke Remote" ] && break
        [ "$(date +%s)" -lt "$deadline" ] ||
            fail "$hs1b" "hs1 could not read @remote:hs2's profile over federation (status $code: $(head -c 300 "$work/body.json"))"
        sleep 0.5
    done
    log "hs1 reads hs2's profile over federation (TLS from the shared CA)"
fi
