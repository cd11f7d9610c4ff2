#!/usr/bin/env bash
# `make demo`: a real Envoy with the guard (envoy/demo/envoy.yaml.tmpl: TLS
# 1.3 only, eu/us regional upstreams, metadata-only JSON access log), the
# tokenhub-admin sidecar's store and bundle, and two echo upstreams (one per
# region), all on loopback. Prints curl commands to try; Ctrl-C stops
# everything.
set -euo pipefail
cd "$(dirname "$0")/.."

LISTEN_PORT=${LISTEN_PORT:-10000}
ADMIN_PORT=${ADMIN_PORT:-9901}
UPSTREAM_EU_PORT=${UPSTREAM_EU_PORT:-8081}
UPSTREAM_US_PORT=${UPSTREAM_US_PORT:-8082}
DEMO=$PWD/.demo
ADMIN=$PWD/target/release/tokenhub-admin
ECHO=$PWD/target/release/echo-upstream
WASM=$PWD/target/wasm32-wasip1/release/tokenhub_guard.wasm
ENVOY=$(tools/envoy-path)

pids=()
cleanup() {
    # Children first: if the terminal (or a pipe such as `| tee`) is already
    # gone, the echo below must not be what stops this script.
    trap - INT TERM EXIT
    trap '' PIPE
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "demo: stopped" 2>/dev/null || true
    exit 0
}
trap cleanup INT TERM EXIT

for port in "$LISTEN_PORT" "$ADMIN_PORT" "$UPSTREAM_EU_PORT" "$UPSTREAM_US_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "demo: port $port is in use; set LISTEN_PORT, ADMIN_PORT, UPSTREAM_EU_PORT or UPSTREAM_US_PORT" >&2
        exit 1
    fi
done

# A fresh demo store every run: nothing from a previous run leaks in.
rm -rf "$DEMO"
mkdir -p "$DEMO/bundle" "$DEMO/tls"

# A throw-away self-signed certificate for the TLS 1.3 listener. The key is
# created 0600 (umask in the subshell), never world-readable even briefly.
CERT=$DEMO/tls/tls.crt
(
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
        -keyout "$DEMO/tls/tls.key" -out "$CERT" 2>/dev/null
)
chmod 0644 "$CERT"
export TOKENHUB_HOME=$DEMO/admin
# The master key lives outside the store's directory (init refuses otherwise).
export TOKENHUB_MASTER_KEY_FILE=$DEMO/master.key
admin() { "$ADMIN" "$@"; }

admin init --ecds-file "$DEMO/bundle/guard.json" --wasm "$WASM" --bundle-key-out "$DEMO/bundle.key" >/dev/null
admin tenant add demo --name "Demo Inc" --region eu >/dev/null
admin subaccount add demo research >/dev/null
printf 'sk-demo-upstream-secret' | admin provider set openai --path-prefix /v1/ --header authorization --format 'Bearer {secret}' >/dev/null
admin ip allow --tenant demo 127.0.0.1/32 ::1/128 >/dev/null
# A second tenant whose data must stay in the us region.
admin tenant add globex --name "Globex Corp" --region us >/dev/null
admin ip allow --tenant globex 127.0.0.1/32 ::1/128 >/dev/null
json_key() { sed -E 's/.*"key":"([^"]+)".*/\1/'; }
KEY=$(admin --json key create --tenant demo --sub-account research --name demo-key | json_key)
US_KEY=$(admin --json key create --tenant globex --name globex-key | json_key)
# A well-formed key that no longer exists: created, then deleted.
GONE=$(admin --json key create --tenant demo --name deleted-key | json_key)
admin key delete "${GONE:4:12}" >/dev/null
# The demo key with its last character changed: a typo.
TYPO=${KEY%?}x; [[ $TYPO == "$KEY" ]] && TYPO=${KEY%?}y
admin publish

sed -e "s|{{LISTEN_PORT}}|$LISTEN_PORT|g" -e "s|{{ADMIN_PORT}}|$ADMIN_PORT|g" \
    -e "s|{{UPSTREAM_EU_PORT}}|$UPSTREAM_EU_PORT|g" -e "s|{{UPSTREAM_US_PORT}}|$UPSTREAM_US_PORT|g" \
    -e "s|{{BUNDLE_DIR}}|$DEMO/bundle|g" -e "s|{{WASM_PATH}}|$WASM|g" \
    -e "s|{{ACCESS_LOG}}|$DEMO/access.log|g" \
    -e "s|{{TLS_CERT}}|$CERT|g" -e "s|{{TLS_KEY}}|$DEMO/tls/tls.key|g" \
    envoy/demo/envoy.yaml.tmpl >"$DEMO/envoy.yaml"

# Each child in its own session: Ctrl-C reaches only this script, whose
# trap stops them, instead of racing it to kill Envoy first (which used to
# print "a process exited unexpectedly" on every Ctrl-C).
setsid "$ECHO" --port "$UPSTREAM_EU_PORT" >"$DEMO/echo-eu.log" 2>&1 &
pids+=($!)
setsid "$ECHO" --port "$UPSTREAM_US_PORT" >"$DEMO/echo-us.log" 2>&1 &
pids+=($!)
TOKENHUB_BUNDLE_KEY=$(cat "$DEMO/bundle.key") setsid "$ENVOY" -c "$DEMO/envoy.yaml" --concurrency 2 \
    --disable-hot-restart --file-flush-interval-msec 1000 --log-level warn \
    --component-log-level wasm:info >"$DEMO/envoy.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null || { echo "demo: Envoy did not start; see $DEMO/envoy.log" >&2; tail -20 "$DEMO/envoy.log" >&2; exit 1; }

URL=https://127.0.0.1:$LISTEN_PORT/v1/chat/completions
C="curl -s --cacert $CERT"
cat <<MSG

TokenHub Guard demo is running (Ctrl-C stops it).
  Envoy listener  https://127.0.0.1:$LISTEN_PORT and https://[::1]:$LISTEN_PORT (TLS 1.3 only, h2 and http/1.1)
  Certificate     $CERT (self-signed for localhost, 127.0.0.1, ::1: pass it with --cacert)
  Envoy admin     http://127.0.0.1:$ADMIN_PORT  (try /stats/prometheus | grep tokenhub)
  Upstreams       eu 127.0.0.1:$UPSTREAM_EU_PORT, us 127.0.0.1:$UPSTREAM_US_PORT (echo the headers they received)
  Files           $DEMO (store, bundle, envoy.log, access.log)
  Demo key        $KEY  (tenant demo, region eu, sub-account research, allowed from 127.0.0.1 and ::1)
  US key          $US_KEY  (tenant globex, region us)

MSG
# shellcheck source=tools/demo-examples.sh
source tools/demo-examples.sh
demo_examples
cat <<MSG
Wrong IP (403): the same key from 127.0.0.2, outside the tenant's allowlist:
  $C --interface 127.0.0.2 $URL -H 'Authorization: Bearer $KEY'

Stateful provider endpoint (403 provider_credential_required): files, batches, assistants, stored
responses… live under the provider credential that made them, so the platform's shared credential
serves only stateless endpoints; a tenant needs its own provider secret for these:
  $C https://127.0.0.1:$LISTEN_PORT/v1/files -H 'Authorization: Bearer $KEY'

Spoofed tenant (403): the key belongs to tenant demo:
  $C $URL -H 'Authorization: Bearer $KEY' -H 'x-tokenhub-tenant: other'

The access log: metadata only (tenant, key id, client IP, path without query, status, denial reason, bytes, time):
  tail -f $DEMO/access.log

Administer it live (another shell):
  export TOKENHUB_HOME=$DEMO/admin TOKENHUB_MASTER_KEY_FILE=$DEMO/master.key
  $ADMIN key list
  $ADMIN key disable <KEY_ID> && $ADMIN publish     # the key gets 401 within a second
MSG
wait -n "${pids[@]}" || true
echo "demo: a process exited unexpectedly; see $DEMO/envoy.log" >&2
exit 1
