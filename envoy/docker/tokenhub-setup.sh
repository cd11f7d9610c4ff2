#!/bin/sh
# One-shot preparation before Envoy starts: the Compose service `setup` and
# the Kubernetes init container `setup` (image target `setup` of
# envoy/docker/Dockerfile). Idempotent: run it on every start.
#
#   1. copy the filter module to where Envoy loads it;
#   2. create the encrypted store on first start (master key from
#      TOKENHUB_MASTER_KEY_FILE, a mounted secret);
#   3. `tokenhub-admin sync`: export the bundle key to a memory-only
#      volume, from which Envoy's command line sets TOKENHUB_BUNDLE_KEY,
#      and re-publish, so Envoy starts with the current bundle (it refuses
#      to start without a guard.json).
#   4. with TOKENHUB_SETUP_HOLD=1 (Docker Compose): mark the work done
#      (KEYS_DIR/.setup-done, the service's health check) and stay,
#      holding the `keys` tmpfs volume: Docker unmounts a tmpfs volume, and
#      loses the bundle key, as soon as no running container mounts it, and
#      a one-shot container would be gone before Envoy starts. (Kubernetes
#      needs none of this: a memory emptyDir lives as long as the pod.)
set -eu

: "${TOKENHUB_HOME:?set TOKENHUB_HOME (the store directory)}"
: "${TOKENHUB_MASTER_KEY_FILE:?set TOKENHUB_MASTER_KEY_FILE (the mounted master key)}"
WASM_SRC=${WASM_SRC:-/usr/local/share/tokenhub/tokenhub_guard.wasm}
WASM_DIR=${WASM_DIR:-/opt/tokenhub/wasm}
BUNDLE_DIR=${BUNDLE_DIR:-/var/lib/tokenhub/bundle}
KEYS_DIR=${KEYS_DIR:-/run/tokenhub/keys}

log() { echo "tokenhub-setup: $*" >&2; }

# Copy then rename: Envoy never sees a half-written module.
cp "$WASM_SRC" "$WASM_DIR/.tokenhub_guard.wasm.tmp"
mv -f "$WASM_DIR/.tokenhub_guard.wasm.tmp" "$WASM_DIR/tokenhub_guard.wasm"

if [ -f "$TOKENHUB_HOME/store.enc" ]; then
    log "store found in $TOKENHUB_HOME"
else
    log "no store in $TOKENHUB_HOME: creating one"
    tokenhub-admin init --ecds-file "$BUNDLE_DIR/guard.json" --wasm "$WASM_DIR/tokenhub_guard.wasm"
fi

# `sync` re-publishes the committed policy and writes the bundle key. It
# changes no policy and needs only the master key, so it works unattended
# even once admins have 2FA (audited as `system`).
rm -f "$KEYS_DIR/bundle.key" "$KEYS_DIR/.setup-done"
tokenhub-admin sync --bundle-key-out "$KEYS_DIR/bundle.key"

if [ "${TOKENHUB_SETUP_HOLD:-0}" = 1 ]; then
    : >"$KEYS_DIR/.setup-done"
    log "done; holding the keys volume until stopped"
    trap 'exit 0' TERM INT
    while :; do
        sleep 3600 &
        wait $! || true
    done
fi
