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
#
# TOKENHUB_SETUP_ROLE picks the Kubernetes scale-out shape
# (envoy/k8s/scale-out):
#   gateway        step 1 only: a gateway holds no store and no master key
#                  (its bundle key and xDS certificate come from its Secret)
#   control-plane  steps 2 and 3, the store created with the bundle key
#                  from TOKENHUB_BUNDLE_KEY_FILE (the file the gateways'
#                  Secret holds too) and checked against it on every start;
#                  no module copy (the gateways load it)
#   unset          all of the above, one node (Compose, envoy/k8s)
set -eu

ROLE=${TOKENHUB_SETUP_ROLE:-single}
WASM_SRC=${WASM_SRC:-/usr/local/share/tokenhub/tokenhub_guard.wasm}
WASM_DIR=${WASM_DIR:-/opt/tokenhub/wasm}
BUNDLE_DIR=${BUNDLE_DIR:-/var/lib/tokenhub/bundle}
KEYS_DIR=${KEYS_DIR:-/run/tokenhub/keys}

log() { echo "tokenhub-setup: $*" >&2; }

case $ROLE in
    single | gateway | control-plane) ;;
    *) log "TOKENHUB_SETUP_ROLE=$ROLE: expected gateway, control-plane or unset"; exit 2 ;;
esac

if [ "$ROLE" != control-plane ]; then
    # Copy then rename: Envoy never sees a half-written module.
    cp "$WASM_SRC" "$WASM_DIR/.tokenhub_guard.wasm.tmp"
    mv -f "$WASM_DIR/.tokenhub_guard.wasm.tmp" "$WASM_DIR/tokenhub_guard.wasm"
fi
if [ "$ROLE" = gateway ]; then
    log "gateway: module in $WASM_DIR"
    exit 0
fi

: "${TOKENHUB_HOME:?set TOKENHUB_HOME (the store directory)}"
: "${TOKENHUB_MASTER_KEY_FILE:?set TOKENHUB_MASTER_KEY_FILE (the mounted master key)}"
if [ "$ROLE" = control-plane ]; then
    : "${TOKENHUB_BUNDLE_KEY_FILE:?set TOKENHUB_BUNDLE_KEY_FILE (the mounted bundle key the gateways hold too)}"
fi

if [ -f "$TOKENHUB_HOME/store.enc" ]; then
    log "store found in $TOKENHUB_HOME"
elif [ "$ROLE" = control-plane ]; then
    log "no store in $TOKENHUB_HOME: creating one with the bundle key from $TOKENHUB_BUNDLE_KEY_FILE"
    tokenhub-admin init --ecds-file "$BUNDLE_DIR/guard.json" --wasm "$WASM_DIR/tokenhub_guard.wasm" \
        --bundle-key-file "$TOKENHUB_BUNDLE_KEY_FILE"
else
    log "no store in $TOKENHUB_HOME: creating one"
    tokenhub-admin init --ecds-file "$BUNDLE_DIR/guard.json" --wasm "$WASM_DIR/tokenhub_guard.wasm"
fi

# `sync` re-publishes the committed policy and writes the bundle key. It
# changes no policy and needs only the master key, so it works unattended
# even once admins have 2FA (audited as `system`).
rm -f "$KEYS_DIR/bundle.key" "$KEYS_DIR/.setup-done"
tokenhub-admin sync --bundle-key-out "$KEYS_DIR/bundle.key"

if [ "$ROLE" = control-plane ]; then
    # The gateways' Secret must hold the store's key, or every gateway
    # refuses every push (and answers 503). Compared in the shell, never
    # printed; the copy in the memory volume is removed either way.
    stored=$(cat "$KEYS_DIR/bundle.key")
    given=$(cat "$TOKENHUB_BUNDLE_KEY_FILE")
    rm -f "$KEYS_DIR/bundle.key"
    if [ "$stored" != "$given" ]; then
        log "the store in $TOKENHUB_HOME seals with another bundle key than $TOKENHUB_BUNDLE_KEY_FILE:" \
            "put the store's key in the Secret (tokenhub-admin bundle-key --out FILE) or restore the matching store"
        exit 1
    fi
    log "control plane: store and bundle key agree; bundle published into $BUNDLE_DIR"
fi

if [ "${TOKENHUB_SETUP_HOLD:-0}" = 1 ]; then
    : >"$KEYS_DIR/.setup-done"
    log "done; holding the keys volume until stopped"
    trap 'exit 0' TERM INT
    while :; do
        sleep 3600 &
        wait $! || true
    done
fi
