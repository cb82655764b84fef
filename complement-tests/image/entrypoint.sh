#!/bin/sh
# Entry point of the axon-complement image (runs under busybox sh).
#
# Complement starts this once for every container start, including starts of
# containers created from committed ("blueprint") images and restarts of a
# stopped container, so every step here is repeatable:
#   1. issue a fresh TLS certificate for $SERVER_NAME, signed by the CA that
#      Complement places in /complement/ca, and trust that CA;
#   2. configure axon through AXON_* environment variables (anything already
#      set, e.g. passed with COMPLEMENT_SHARE_ENV_PREFIX, wins);
#   3. run axon, forwarding SIGTERM/SIGINT so `docker stop` shuts it down
#      promptly even if axon itself installs no signal handler (a PID 1
#      without a handler ignores SIGTERM and docker waits for its timeout).
set -eu

# Until axon runs, a stop request simply ends the container (as PID 1 the
# shell would otherwise ignore SIGTERM and docker would wait its timeout).
trap 'exit 143' TERM
trap 'exit 130' INT

log() {
    echo "complement-entrypoint: $*" >&2
}

die() {
    echo "complement-entrypoint: error: $*" >&2
    exit 1
}

# Fixed paths, not settings: axon treats every AXON_* variable as a
# configuration key, so the entry point takes no variables of that shape.
ca_dir=/complement/ca
tls_dir=/etc/axon/tls
axon_bin=/usr/local/bin/axon
# Bundle of trusted roots for libraries that read the system store
# (SSL_CERT_FILE is honoured by rustls-native-certs and OpenSSL).
system_bundle=/etc/ssl/certs/ca-certificates.crt

[ -n "${SERVER_NAME:-}" ] ||
    die "SERVER_NAME is not set (Complement sets it to the homeserver name, e.g. hs1)"
echo "$SERVER_NAME" | grep -Eq '^[][A-Za-z0-9.:-]+$' ||
    die "SERVER_NAME '$SERVER_NAME' is not a valid Matrix server name"
[ -r "$ca_dir/ca.crt" ] ||
    die "the Complement CA certificate $ca_dir/ca.crt is missing or unreadable"
[ -r "$ca_dir/ca.key" ] ||
    die "the Complement CA key $ca_dir/ca.key is missing or unreadable"
[ -x "$axon_bin" ] || die "the axon binary $axon_bin is missing or not executable"

# The certificate names the host part of the server name (a server name may
# carry a port, and an IP literal needs an IP subjectAltName, not DNS).
case $SERVER_NAME in
\[*\]*)
    host=${SERVER_NAME#\[}
    host=${host%%\]*}
    san="IP:$host"
    ;;
*)
    host=${SERVER_NAME%:*}
    case $host in
    *[!0-9.]*) san="DNS:$host" ;;
    *) san="IP:$host" ;;
    esac
    ;;
esac

# A new key and certificate at every start: the server name may differ from
# the one a committed image was first started with.
rm -rf "$tls_dir"
mkdir -p "$tls_dir"
chmod 700 "$tls_dir"
cat >"$tls_dir/openssl.cnf" <<EOF
[ req ]
distinguished_name = subject
prompt = no

[ subject ]
CN = $host

[ server_cert ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
EOF
export OPENSSL_CONF="$tls_dir/openssl.cnf"

# P-256 keys are generated instantly and every TLS stack Complement uses
# accepts them; genpkey writes PKCS#8, which rustls loads directly.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$tls_dir/server.key" 2>/dev/null ||
    die "could not generate the TLS private key"
openssl req -new -key "$tls_dir/server.key" -out "$tls_dir/server.csr" ||
    die "could not create the certificate signing request"
# A random serial instead of -CAcreateserial, which would write a serial file
# next to the CA.
serial=$(openssl rand -hex 16) || die "could not generate a certificate serial"
openssl x509 -req -in "$tls_dir/server.csr" \
    -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" -set_serial "0x$serial" \
    -days 7 -sha256 -extfile "$tls_dir/openssl.cnf" -extensions server_cert \
    -out "$tls_dir/server.crt" 2>/dev/null ||
    die "could not sign the TLS certificate with the Complement CA"
rm -f "$tls_dir/server.csr"
cp "$ca_dir/ca.crt" "$tls_dir/complement-ca.crt"
mkdir -p "${system_bundle%/*}"
cp "$ca_dir/ca.crt" "$system_bundle"
export SSL_CERT_FILE="$system_bundle"
log "issued a TLS certificate for $san signed by $ca_dir/ca.crt"

: "${AXON_SERVER_NAME:=$SERVER_NAME}"
: "${AXON_DATA_DIR:=/data}"
: "${AXON_HTTP__ADDRESS:=0.0.0.0:8008}"
: "${AXON_TLS__ENABLED:=true}"
: "${AXON_TLS__ADDRESS:=0.0.0.0:8448}"
: "${AXON_TLS__CERTIFICATE:=$tls_dir/server.crt}"
: "${AXON_TLS__PRIVATE_KEY:=$tls_dir/server.key}"
: "${AXON_FEDERATION__TRUSTED_CA:=$tls_dir/complement-ca.crt}"
# Complement's containers and its own test servers live on private addresses.
: "${AXON_FEDERATION__ALLOW_PRIVATE_ADDRESSES:=true}"
: "${AXON_REGISTRATION__ENABLED:=true}"
: "${AXON_REGISTRATION__SHARED_SECRET:=complement}"
: "${AXON_LOGGING__FILTER:=info}"
# Password hashing at production cost makes every registration and login
# slow; the test suite does thousands of them.
: "${AXON_PASSWORDS__ARGON2_MEMORY_KIB:=1024}"
: "${AXON_PASSWORDS__ARGON2_ITERATIONS:=1}"
# The specification sets no minimum password length and the tests do not
# expect one; they also log in with wrong passwords on purpose, so failed
# logins are not throttled.
: "${AXON_PASSWORDS__MINIMUM_LENGTH:=1}"
: "${AXON_LOGIN__MAX_FAILURES:=0}"
export AXON_SERVER_NAME AXON_DATA_DIR AXON_HTTP__ADDRESS AXON_TLS__ENABLED \
    AXON_TLS__ADDRESS AXON_TLS__CERTIFICATE AXON_TLS__PRIVATE_KEY \
    AXON_FEDERATION__TRUSTED_CA AXON_FEDERATION__ALLOW_PRIVATE_ADDRESSES \
    AXON_REGISTRATION__ENABLED AXON_REGISTRATION__SHARED_SECRET \
    AXON_LOGGING__FILTER AXON_PASSWORDS__ARGON2_MEMORY_KIB \
    AXON_PASSWORDS__ARGON2_ITERATIONS AXON_PASSWORDS__MINIMUM_LENGTH \
    AXON_LOGIN__MAX_FAILURES

mkdir -p "$AXON_DATA_DIR"
log "starting $axon_bin${*:+ $*} with:"
env | grep '^AXON_' | sort | sed 's/^/    /' >&2

"$axon_bin" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT

# `wait` returns early when a trapped signal arrives; keep waiting until the
# child has really exited so its exit status becomes the container's.
while :; do
    status=0
    wait "$child" || status=$?
    kill -0 "$child" 2>/dev/null || break
done
log "axon exited with status $status"
exit "$status"
