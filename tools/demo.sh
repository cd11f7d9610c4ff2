#!/usr/bin/env bash
# `make demo`: a real Envoy with the guard, the tokenhub-admin sidecar's
# store and bundle, and an echo upstream, all on loopback. Prints curl
# commands to try; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

LISTEN_PORT=${LISTEN_PORT:-10000}
ADMIN_PORT=${ADMIN_PORT:-9901}
UPSTREAM_PORT=${UPSTREAM_PORT:-8081}
DEMO=$PWD/.demo
ADMIN=$PWD/target/release/tokenhub-admin
ECHO=$PWD/target/release/echo-upstream
WASM=$PWD/target/wasm32-wasip1/release/tokenhub_guard.wasm
ENVOY=$(tools/envoy-path)

pids=()
cleanup() {
    trap - INT TERM EXIT
    echo; echo "demo: stopping"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    exit 0
}
trap cleanup INT TERM EXIT

for port in "$LISTEN_PORT" "$ADMIN_PORT" "$UPSTREAM_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "demo: port $port is in use; set LISTEN_PORT, ADMIN_PORT or UPSTREAM_PORT" >&2
        exit 1
    fi
done

# A fresh demo store every run: nothing from a previous run leaks in.
rm -rf "$DEMO"
mkdir -p "$DEMO/bundle"
export TOKENHUB_HOME=$DEMO/admin
admin() { "$ADMIN" "$@"; }

admin init --ecds-file "$DEMO/bundle/guard.yaml" --wasm "$WASM" --bundle-key-out "$DEMO/bundle.key" >/dev/null
admin tenant add demo --name "Demo Inc" --region eu >/dev/null
admin subaccount add demo research >/dev/null
printf 'sk-demo-upstream-secret' | admin provider set openai --path-prefix /v1/ --header authorization --format 'Bearer {secret}' >/dev/null
admin ip allow --tenant demo 127.0.0.1/32 ::1/128 >/dev/null
json_key() { sed -E 's/.*"key":"([^"]+)".*/\1/'; }
KEY=$(admin --json key create --tenant demo --sub-account research --name demo-key | json_key)
# A well-formed key that no longer exists: created, then deleted.
GONE=$(admin --json key create --tenant demo --name deleted-key | json_key)
admin key delete "${GONE:4:12}" >/dev/null
# The demo key with its last character changed: a typo.
TYPO=${KEY%?}x; [[ $TYPO == "$KEY" ]] && TYPO=${KEY%?}y
admin publish

sed -e "s|{{LISTEN_PORT}}|$LISTEN_PORT|g" -e "s|{{ADMIN_PORT}}|$ADMIN_PORT|g" \
    -e "s|{{UPSTREAM_PORT}}|$UPSTREAM_PORT|g" -e "s|{{BUNDLE_DIR}}|$DEMO/bundle|g" \
    -e "s|{{WASM_PATH}}|$WASM|g" -e "s|{{ACCESS_LOG}}|$DEMO/access.log|g" \
    envoy/local/envoy.yaml.tmpl >"$DEMO/envoy.yaml"

"$ECHO" --port "$UPSTREAM_PORT" >"$DEMO/echo.log" 2>&1 &
pids+=($!)
TOKENHUB_BUNDLE_KEY=$(cat "$DEMO/bundle.key") "$ENVOY" -c "$DEMO/envoy.yaml" --concurrency 2 \
    --disable-hot-restart --file-flush-interval-msec 1000 --log-level warn \
    --component-log-level wasm:info >"$DEMO/envoy.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null || { echo "demo: Envoy did not start; see $DEMO/envoy.log" >&2; tail -20 "$DEMO/envoy.log" >&2; exit 1; }

URL=http://127.0.0.1:$LISTEN_PORT/v1/chat/completions
cat <<MSG

TokenHub Guard demo is running (Ctrl-C stops it).
  Envoy listener  127.0.0.1:$LISTEN_PORT and [::1]:$LISTEN_PORT
  Envoy admin     http://127.0.0.1:$ADMIN_PORT  (try /stats/prometheus | grep tokenhub)
  Echo upstream   127.0.0.1:$UPSTREAM_PORT (answers with the headers it received)
  Files           $DEMO (store, bundle, envoy.log, access.log)
  Demo key        $KEY  (tenant demo, sub-account research, allowed from 127.0.0.1 and ::1)

Allowed: the upstream sees the provider credential and the authoritative tenant headers, not your key:
  curl -s $URL -H 'Authorization: Bearer $KEY' -d '{}'

Wrong key (401): a deleted key, then a mistyped one (its checksum fails before any lookup):
  curl -s $URL -H 'Authorization: Bearer $GONE' -d '{}'
  curl -s $URL -H 'Authorization: Bearer $TYPO' -d '{}'

Wrong IP (403): the same key from 127.0.0.2, outside the tenant's allowlist:
  curl -s --interface 127.0.0.2 $URL -H 'Authorization: Bearer $KEY' -d '{}'

Spoofed tenant (403): the key belongs to tenant demo:
  curl -s $URL -H 'Authorization: Bearer $KEY' -H 'x-tokenhub-tenant: other' -d '{}'

Administer it live (another shell):
  export TOKENHUB_HOME=$DEMO/admin
  $ADMIN key list
  $ADMIN key disable <KEY_ID> && $ADMIN publish     # the key gets 401 within a second
MSG
wait -n "${pids[@]}" || true
echo "demo: a process exited unexpectedly; see $DEMO/envoy.log" >&2
exit 1
