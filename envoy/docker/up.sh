#!/usr/bin/env bash
# Starts the Docker Compose demo in the background and prints curl examples
# (as `make demo` does). Installs and starts what it needs when missing:
# the Docker engine (Debian docker.io, dockerd), Compose v2
# (tools/docker-lib.sh). Creates the secrets once (openssl).
#
#   envoy/docker/up.sh            # images built by Compose from envoy/docker/Dockerfile
#                                 # (pulls rust, distroless and envoyproxy/envoy)
#   envoy/docker/up.sh --offline  # nothing pulled: local Debian base + host-built
#                                 # binaries (tools/docker-images.sh); `make demo-docker`
#   envoy/docker/up.sh --global   # (with or without --offline) the global quota
#                                 # mode: docker-compose.global.yaml adds Redis and
#                                 # the rate limit service; the bundle is switched
#                                 # to `quota mode global`
#   envoy/docker/up.sh --secrets  # only create the secrets
#   envoy/docker/up.sh --down     # stop and remove everything (containers,
#                                 # volumes with the store, network)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)

SECRETS=${TOKENHUB_SECRETS_DIR:-$PWD/secrets}
PORT=${TOKENHUB_HTTPS_PORT:-8443}
# The containers' user and group (docker-compose.yaml, x-hardening).
RUNTIME_GID=65532
export TOKENHUB_SUBNET_PREFIX=${TOKENHUB_SUBNET_PREFIX:-172.28.53}
GATEWAY_IP=$TOKENHUB_SUBNET_PREFIX.1

log() { echo "up.sh: $*" >&2; }

# Compose bind-mounts secret files as they are (owner, group, mode), and
# the containers run as 65532:65532. So the private keys are root:65532
# 0640: readable by the containers through their group, by nobody else on
# the host but root; tokenhub-admin accepts exactly this layout for a
# mounted master key (a group-readable file whose group is the process's
# own), and refuses anything others can read. The directory is 0700.
# The certificate is public (0644).
make_secrets() {
    mkdir -p "$SECRETS"
    chmod 0700 "$SECRETS"
    (
        umask 077
        if [[ ! -s $SECRETS/master.key ]]; then
            openssl rand -base64 32 >"$SECRETS/master.key"
            log "new master key in $SECRETS/master.key: back it up; without it the store cannot be opened"
        fi
        if [[ ! -s $SECRETS/tls.crt || ! -s $SECRETS/tls.key ]]; then
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
                -subj /CN=localhost -addext "subjectAltName=DNS:localhost,DNS:envoy,IP:127.0.0.1,IP:::1" \
                -keyout "$SECRETS/tls.key" -out "$SECRETS/tls.crt" 2>/dev/null
            log "new self-signed certificate $SECRETS/tls.crt (localhost, envoy, 127.0.0.1, ::1)"
        fi
    )
    local f
    for f in "$SECRETS/master.key" "$SECRETS/tls.key"; do
        [[ $(stat -c %u:%g:%a "$f") == "0:$RUNTIME_GID:640" ]] && continue
        if ! { chown "0:$RUNTIME_GID" "$f" && chmod 0640 "$f"; } 2>/dev/null; then
            log "cannot make $f root:$RUNTIME_GID 0640 (readable by the containers' group only)."
            log "run once as root: chown 0:$RUNTIME_GID $f && chmod 0640 $f"
            return 1
        fi
    done
    [[ $(stat -c %a "$SECRETS/tls.crt") == 644 ]] || chmod 0644 "$SECRETS/tls.crt"
}

# shellcheck source=tools/docker-lib.sh
source "$ROOT/tools/docker-lib.sh"

case ${1:-} in
--secrets)
    make_secrets
    exit 0
    ;;
--down)
    ensure_engine
    ensure_compose
    exec "${COMPOSE[@]}" -f docker-compose.yaml --profile tools down -v --remove-orphans
    ;;
esac
OFFLINE=0 GLOBAL=0
FILES=(-f docker-compose.yaml)
while (($#)); do
    case $1 in
    --offline) OFFLINE=1 ;;
    --global) GLOBAL=1 FILES+=(-f docker-compose.global.yaml) ;;
    *) break ;;
    esac
    shift
done

make_secrets
ensure_engine
ensure_compose
compose() { "${COMPOSE[@]}" "${FILES[@]}" "$@"; }
# How to call Compose here (printed): `docker compose`, or the pinned binary.
DC="${COMPOSE[*]} ${FILES[*]/#docker-compose/$PWD/docker-compose}"

if ((OFFLINE)); then
    TOKENHUB_ENVOY_IMAGE=$("$ROOT/tools/docker-images.sh" | tail -1)
    export TOKENHUB_ENVOY_IMAGE TOKENHUB_CURL_IMAGE=tokenhub/client:${TOKENHUB_IMAGE_TAG:-dev}
    # Debian's redis-server on the offline base (tools/docker-base.sh).
    export TOKENHUB_REDIS_IMAGE=${TOKENHUB_REDIS_IMAGE:-tokenhub/debian-redis:bookworm}
    compose up --detach --no-build --pull never --wait --wait-timeout 180 "$@"
else
    compose up --detach --build --wait --wait-timeout 600 "$@"
fi

# Envoy compiles the module in every worker before it serves: wait for an
# HTTP answer (any status) on the published listener.
for _ in $(seq 120); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$SECRETS/tls.crt" "https://127.0.0.1:$PORT/" || true)
    [[ $code != 000 ]] && break
    sleep 0.5
done
[[ $code != 000 ]] || { log "Envoy does not answer on https://127.0.0.1:$PORT; see: $DC logs envoy"; exit 1; }

# Demo data, once per store: two tenants (eu, us), a provider secret, keys.
admin() { compose exec -T admin tokenhub-admin "$@"; }
json_key() { sed -E 's/.*"key":"([^"]+)".*/\1/'; }
STATE=$SECRETS/demo-keys
if [[ ! -s $STATE ]] || ! admin tenant show demo >/dev/null 2>&1; then
    log "adding the demo tenants and keys"
    admin tenant add demo --name "Demo Inc" --region eu >/dev/null
    admin subaccount add demo research >/dev/null
    printf 'sk-demo-upstream-secret' | admin provider set openai --path-prefix /v1/ --header authorization --format 'Bearer {secret}' >/dev/null
    # Host clients reach Envoy through Docker's port publishing, which makes
    # them all appear from the network's gateway address.
    admin ip allow --tenant demo "$GATEWAY_IP/32" >/dev/null
    admin tenant add globex --name "Globex Corp" --region us >/dev/null
    admin ip allow --tenant globex "$GATEWAY_IP/32" >/dev/null
    # (Their "shown only once" notes on stderr are dropped: the keys are
    # printed below and kept in $STATE, 0600, for the next run.)
    KEY=$(admin --json key create --tenant demo --sub-account research --name demo-key 2>/dev/null | json_key)
    US_KEY=$(admin --json key create --tenant globex --name globex-key 2>/dev/null | json_key)
    # A well-formed key that no longer exists: created, then deleted.
    GONE=$(admin --json key create --tenant demo --name deleted-key 2>/dev/null | json_key)
    admin key delete "${GONE:4:12}" >/dev/null
    admin publish >/dev/null
    (umask 077 && printf 'KEY=%s\nUS_KEY=%s\nGONE=%s\n' "$KEY" "$US_KEY" "$GONE" >"$STATE")
fi
GONE=
# shellcheck disable=SC1090
source "$STATE"
if ((GLOBAL)) && [[ $(admin --json quota mode) != *'"global"'* ]]; then
    log "switching the bundle to the global quota mode (counted in Redis by the rate limit service);"
    log "the demo key gets a limit of 5 requests per minute to show it"
    admin quota set --key "${KEY:4:12}" --per-minute 5 >/dev/null
    admin --publish quota mode global >/dev/null 2>&1
fi
if ((GLOBAL)); then
    # Until the service has loaded the switch (its --poll-ms), neither the
    # guard nor the service counts (docs/global-quotas.md).
    for _ in $(seq 100); do
        compose logs ratelimit 2>/dev/null | grep -q 'quota mode global' && break
        sleep 0.1
    done
fi
TYPO=${KEY%?}x
[[ $TYPO == "$KEY" ]] && TYPO=${KEY%?}y

CERT=$(cd "$SECRETS" && pwd)/tls.crt
URL=https://127.0.0.1:$PORT/v1/chat/completions
C="curl -s --cacert $CERT"
# shellcheck disable=SC2016 # a Go template, not a shell expansion
NET=$(compose ps -q envoy | xargs docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}')
CLIENT=${TOKENHUB_CURL_IMAGE:-curlimages/curl:8.11.1}
cat <<MSG

TokenHub Guard Docker demo is running (envoy/docker/up.sh --down removes it, with its store).
  Envoy listener  https://127.0.0.1:$PORT (TLS 1.3 only, h2 and http/1.1), published from the envoy container
  Certificate     $CERT (self-signed for localhost, envoy, 127.0.0.1, ::1: pass it with --cacert)
  Admin API       127.0.0.1:8081 inside the admin container only: reach it from its network
                  namespace ($DC run --rm -T admin-api ...), or use
                  the CLI there: $DC exec admin tokenhub-admin ...
  Envoy admin     127.0.0.1:9901 inside the envoy container only
  Client address  every host client appears from $GATEWAY_IP (the network's gateway): the demo
                  tenants allow that address; containers on network $NET keep their own
  Demo key        $KEY  (tenant demo, region eu, sub-account research)
  US key          $US_KEY  (tenant globex, region us)

MSG
# shellcheck source=tools/demo-examples.sh
source "$ROOT/tools/demo-examples.sh"
demo_examples
cat <<MSG
$( ((GLOBAL)) && printf '%s\n  %s\n\n' "Global quota mode: the demo key has 5 requests per minute, counted in Redis; the 6th gets 429 with Retry-After:" "for i in 1 2 3 4 5 6; do $C -o /dev/null -w '%{http_code} ' $URL -H 'Authorization: Bearer $KEY' -d '{}'; done; echo")
Wrong IP (403): the same key from a container on the network (its own address, not the gateway's):
  docker run --rm --network $NET -v $CERT:/tls.crt:ro $CLIENT -s --cacert /tls.crt https://envoy:8443/v1/chat/completions -H 'Authorization: Bearer $KEY'

Spoofed tenant (403): the key belongs to tenant demo:
  $C $URL -H 'Authorization: Bearer $KEY' -H 'x-tokenhub-tenant: other'

The access log: metadata only (tenant, key id, client IP, path without query, status, denial reason, bytes, time):
  $DC logs -f envoy

Administer it live:
  $DC exec admin tokenhub-admin key list
  $DC exec admin tokenhub-admin key disable <KEY_ID> --publish   # 401 within a second
MSG
