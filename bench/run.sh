#!/usr/bin/env bash
# `make bench` (bench/run.sh) and `make bench-smoke` (bench/run.sh --smoke).
# Installs what the benchmark needs (idempotent), builds the no-op Wasm
# filter, the bench tools and the ext_authz comparison service (bench/extauthz,
# a member of the tools' workspace), then runs bench/bench.py with the
# arguments given (`bench/run.sh focus 16` runs a focused subcommand,
# `bench/run.sh metered [--smoke]` the metered-path rows). The
# Makefile builds the guard (.wasm) and tokenhub-admin before calling this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bench: %s\n' "$*" >&2; }

# wrk (saturation load) and valgrind (instruction counts) from Debian.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || { log "need ${missing[*]} and apt-get is not available"; exit 1; }
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# matplotlib for the chart, into the project venv (made by tools/bootstrap.sh).
REQS=bench/requirements.txt
STAMP=.venv/.bench-requirements.sha256
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
    log "installing $REQS into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$want" >"$STAMP"
fi

if (($(nproc) < 2)); then
    log "warning: fewer than 2 CPUs; Envoy and the load generator will share one"
fi

log "building the no-op Wasm filter, the bench tools and the ext_authz service"
(cd bench/noop-filter && cargo build --quiet --target wasm32-wasip1 --release)
(cd bench/tools && cargo build --quiet --release --workspace --bins)
# The same decision driver compiled to the filter's target, timed under
# Node's V8 (bootstrap installs node): the decision's cost inside a Wasm VM.
(cd bench/tools && cargo build --quiet --release --no-default-features --target wasm32-wasip1 --bin decide-count)

exec .venv/bin/python bench/bench.py "$@"
