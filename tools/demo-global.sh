#!/usr/bin/env bash
# `make demo-global`: the global quota mode on loopback. Two Envoy replicas
# (envoy/global-ratelimit/envoy.yaml.tmpl, plaintext), Redis (Debian's
# redis-server, no persistence, in the demo directory), the rate limit
# service `tokenhub-admin ratelimit`, an echo upstream, and a bundle in
# global mode with a key limited to 5 requests per minute, shared by both
# replicas. Prints curl commands; Ctrl-C stops everything.
# `tools/demo-global.sh --check`: sends 7 requests alternating between the
# replicas, expects 5 admitted then 429, and stops (exit status = result).
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK=${1:-}
LISTEN_PORTS=(${LISTEN_PORT_1:-10100} ${LISTEN_PORT_2:-10101})
ADMIN_PORTS=(${ADMIN_PORT_1:-9911} ${ADMIN_PORT_2:-9912})
UPSTREAM_PORT=${UPSTREAM_PORT:-8091}
REDIS_PORT=${REDIS_PORT:-6390}
RATELIMIT_PORT=${RATELIMIT_PORT:-8092}
DEMO=$PWD/.demo-global
ADMIN=${TOKENHUB_ADMIN_BIN:-$PWD/target/release/tokenhub-admin}
ECHO=${ECHO_BIN:-$PWD/target/release/echo-upstream}
WASM=$PWD/target/wasm32-wasip1/release/tokenhub_guard.wasm
ENVOY=$(tools/envoy-path)
REDIS=$(command -v redis-server || true)
[[ -n $REDIS ]] || { echo "demo-global: redis-server is missing; run tools/bootstrap.sh" >&2; exit 1; }

pids=()
cleanup() {
    local status=$?
    trap - INT TERM EXIT
    trap '' PIPE
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "demo-global: stopped" 2>/dev/null || true
    exit "$status"
}
trap cleanup INT TERM EXIT

for port in "${LISTEN_PORTS[@]}" "${ADMIN_PORTS[@]}" "$UPSTREAM_PORT" "$REDIS_PORT" "$RATELIMIT_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "demo-global: port $port is in use; set LISTEN_PORT_1/_2, ADMIN_PORT_1/_2, UPSTREAM_PORT, REDIS_PORT or RATELIMIT_PORT" >&2
        exit 1
    fi
done

rm -rf "$DEMO"
mkdir -p "$DEMO/bundle" "$DEMO/redis"
export TOKENHUB_HOME=$DEMO/admin
# The master key lives outside the store's directory (init refuses otherwise).
export TOKENHUB_MASTER_KEY_FILE=$DEMO/master.key
admin() { "$ADMIN" "$@"; }
admin init --ecds-file "$DEMO/bundle/guard.json" --wasm "$WASM" --bundle-key-out "$DEMO/bundle.key" >/dev/null
admin tenant add demo --name "Demo Inc" --region eu >/dev/null
printf 'sk-demo-upstream-secret' | admin provider set openai --path-prefix /v1/ --header authorization --format 'Bearer {secret}' >/dev/null
json_key() { sed -E 's/.*"key":"([^"]+)".*/\1/'; }
KEY=$(admin --json key create --tenant demo --name demo-key | json_key)
admin quota set --key "${KEY:4:12}" --per-minute 5 >/dev/null
admin quota mode global >/dev/null 2>&1
admin publish >/dev/null

# Each child in its own session, so Ctrl-C reaches only this script.
setsid "$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DEMO/redis" \
    >"$DEMO/redis.log" 2>&1 &
REDIS_PID=$!
pids+=($!)
setsid "$ECHO" --port "$UPSTREAM_PORT" >"$DEMO/echo.log" 2>&1 &
pids+=($!)
TOKENHUB_BUNDLE_KEY=$(cat "$DEMO/bundle.key") setsid "$ADMIN" ratelimit --listen "127.0.0.1:$RATELIMIT_PORT" \
    --redis "redis://127.0.0.1:$REDIS_PORT" --bundle-file "$DEMO/bundle/guard.json" >"$DEMO/ratelimit.log" 2>&1 &
pids+=($!)
# A JWKS whose private key was discarded: the config's jwt_authn needs one.
JWKS='{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"unused","n":"r1PJKdvUsyZ1k6vRg08f16wdFBNOyNxU10IeBuSNxbYWbPLc0g8of4nNRC2ng4lbaWRCITGZkexQOyrgjtpH0wL6e-qe03QVsp29ufQWq0gBnkCQJ3glrWjgEZStP2eVjIU7U9YLxfHdzFyXdvung0T1eBnMTD7UnI8wXeppIS6k7lpjcPbGWoefVluxRl77e-Fqr-LYEbCteA25kD1A9BXFUxD4DrN03vskE-QhREfNPvz2Ie6km6Fbdx6fnO0Tc63iVIiyggM3GmkCdshAkpO1YPLazLAr3sYM_r33uEmP0yBXamm7dbGmw2218i6Pm1RaCnQHx7RXmuECTz5mlw","e":"AQAB"}]}'
for i in 0 1; do
    sed -e "s|{{LISTEN_PORT}}|${LISTEN_PORTS[$i]}|g" -e "s|{{ADMIN_PORT}}|${ADMIN_PORTS[$i]}|g" \
        -e "s|{{UPSTREAM_PORT}}|$UPSTREAM_PORT|g" -e "s|{{RATELIMIT_PORT}}|$RATELIMIT_PORT|g" \
        -e "s|{{BUNDLE_DIR}}|$DEMO/bundle|g" -e "s|{{WASM_PATH}}|$WASM|g" \
        -e "s|{{ACCESS_LOG}}|$DEMO/access-$i.log|g" \
        -e "s|{{OIDC_ISSUER}}|https://issuer.tokenhub.invalid|g" -e "s|{{OIDC_JWKS}}|$JWKS|g" \
        envoy/global-ratelimit/envoy.yaml.tmpl >"$DEMO/envoy-$i.yaml"
    TOKENHUB_BUNDLE_KEY=$(cat "$DEMO/bundle.key") setsid "$ENVOY" -c "$DEMO/envoy-$i.yaml" --concurrency 2 \
        --disable-hot-restart --base-id $((7100 + i)) --file-flush-interval-msec 1000 --log-level warn \
        --component-log-level wasm:info >"$DEMO/envoy-$i.log" 2>&1 &
    pids+=($!)
done

for i in 0 1; do
    for _ in $(seq 150); do
        curl -fs "http://127.0.0.1:${ADMIN_PORTS[$i]}/ready" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fs "http://127.0.0.1:${ADMIN_PORTS[$i]}/ready" >/dev/null \
        || { echo "demo-global: Envoy $i did not start; see $DEMO/envoy-$i.log" >&2; tail -20 "$DEMO/envoy-$i.log" >&2; exit 1; }
done
for _ in $(seq 100); do
    grep -q "loaded" "$DEMO/ratelimit.log" && break
    sleep 0.1
done

URL=/v1/chat/completions
if [[ $CHECK == --check ]]; then
    got=()
    for n in 0 1 2 3 4 5 6; do
        port=${LISTEN_PORTS[$((n % 2))]}
        got+=("$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$URL" -H "Authorization: Bearer $KEY" -d '{}')")
    done
    echo "demo-global: statuses over both replicas: ${got[*]}"
    [[ "${got[*]}" == "200 200 200 200 200 429 429" ]] || { echo "demo-global: expected 5 x 200 then 429" >&2; exit 1; }
    exit 0
fi

cat <<MSG

TokenHub Guard, global quota mode, is running (Ctrl-C stops it).
  Envoy replicas  http://127.0.0.1:${LISTEN_PORTS[0]} and http://127.0.0.1:${LISTEN_PORTS[1]} (plaintext)
  Rate limit      tokenhub-admin ratelimit on 127.0.0.1:$RATELIMIT_PORT, Redis on 127.0.0.1:$REDIS_PORT
  Files           $DEMO (store, bundle, logs)
  Key             $KEY  (5 requests per minute, counted once for both replicas)

Alternate between the replicas: 5 are admitted in a minute, then 429 with Retry-After and RateLimit-*:
  for p in ${LISTEN_PORTS[0]} ${LISTEN_PORTS[1]} ${LISTEN_PORTS[0]} ${LISTEN_PORTS[1]} ${LISTEN_PORTS[0]} ${LISTEN_PORTS[1]}; do
    curl -s -i http://127.0.0.1:\$p$URL -H 'Authorization: Bearer $KEY' -d '{}' | grep -iE '^(HTTP|ratelimit|retry)'; done

Stop Redis and every request is refused with 503 (fail closed):
  kill $REDIS_PID
MSG
wait -n "${pids[@]}" || true
echo "demo-global: a process exited unexpectedly; see the logs in $DEMO" >&2
exit 1
