#!/usr/bin/env bash
# Starts the Docker Compose demo: creates its secrets once (openssl), then
# `docker compose up --build`. Arguments go to `docker compose up` (e.g. -d).
#   envoy/docker/up.sh            # foreground; Ctrl-C stops it
#   envoy/docker/up.sh --secrets  # only create the secrets
set -euo pipefail
cd "$(dirname "$0")"

SECRETS=secrets

# The directory is 0700, so on the host only its owner can read what is in
# it. The files themselves are 0644 because Compose bind-mounts them as
# they are, and the containers run as uid 65532, not as you.
make_secrets() {
    mkdir -p "$SECRETS"
    chmod 0700 "$SECRETS"
    if [[ ! -s $SECRETS/master.key ]]; then
        openssl rand -base64 32 >"$SECRETS/master.key"
        echo "up.sh: new master key in $SECRETS/master.key: back it up; without it the store cannot be opened" >&2
    fi
    if [[ ! -s $SECRETS/tls.crt || ! -s $SECRETS/tls.key ]]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
            -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
            -keyout "$SECRETS/tls.key" -out "$SECRETS/tls.crt" 2>/dev/null
        echo "up.sh: new self-signed certificate $SECRETS/tls.crt (localhost, 127.0.0.1, ::1)" >&2
    fi
    chmod 0644 "$SECRETS"/master.key "$SECRETS"/tls.crt "$SECRETS"/tls.key
}

make_secrets
[[ ${1:-} == --secrets ]] && exit 0
docker compose version >/dev/null 2>&1 || { echo "up.sh: needs Docker with the Compose plugin (docker compose)" >&2; exit 1; }
exec docker compose -f docker-compose.yaml up --build "$@"
