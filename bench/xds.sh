#!/usr/bin/env bash
# `make bench-xds`: the scale-out rows. A bundle of KEYS keys (default
# 100 000) from bench-bundle is served by `tokenhub-admin serve --xds-listen`
# to three gateway Envoys (2 workers each); later versions are renamed into
# place and timed until every gateway runs them. Then the revoke
# propagation test (20 revokes, kept-alive connections). Figures go to
# bench/results/xds.md; no timing is asserted.
#   bench/xds.sh [KEYS]
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-100000}
work=bench/work/xds
rm -rf "$work" && mkdir -p "$work"
(cd bench/tools && cargo build --quiet --release --bin bench-bundle)
wasm=$PWD/target/wasm32-wasip1/release/tokenhub_guard.wasm
bench/tools/target/release/bench-bundle --out "$work/bundle" --keys "$keys" --wasm "$wasm" --republish 5
out=$work/output.txt
: >"$out"
# One gateway alone (as on a machine of its own), then three sharing this machine.
for gateways in 1 3; do
    TOKENHUB_BENCH_GATEWAYS=$gateways TOKENHUB_BIG_BUNDLE=$PWD/$work/bundle \
        cargo test --release -p tokenhub-integration --test xds_e2e -- --include-ignored --test-threads=1 \
        --nocapture a_large_bundle 2>&1 | tee -a "$out" | grep '^xds' || true
done
cargo test --release -p tokenhub-integration --test xds_e2e -- --test-threads=1 --nocapture revokes 2>&1 |
    tee -a "$out" | grep '^xds' || true
[[ $(grep -c 'test result: ok' "$out") == 3 ]] || { echo "bench-xds: the tests failed; see $out" >&2; exit 1; }
{
    echo "# Scale-out: the bundle pushed over xDS"
    echo
    echo "\`make bench-xds\` on $(date -u +%Y-%m-%d), $(nproc) cores, Envoy $("$(tools/envoy-path)" --version | grep -o 'version: [^ ]*' | cut -d' ' -f2 | cut -d/ -f2)."
    echo "Gateway Envoys (\`--concurrency 2\`) and the control plane on one machine: with three, the"
    echo "gateways share its 2 cores (each replica decrypts and indexes the bundle in 3 VMs), so the"
    echo "one-gateway row is what a replica on a machine of its own takes."
    echo
    grep '^xds' "$out" | sed 's/^/- /'
} >bench/results/xds.md
echo "bench-xds: bench/results/xds.md"
