//! Real Envoy with the guard filter and no bundle published: the
//! default_config (empty configuration) must fail closed with 503, and the
//! reference ECDS file must be accepted. Needs the built filter
//! (`make wasm`); skipped with a note when it is missing.

use std::time::Duration;
use tokenhub_integration::{addrs, paths, EcdsOutcome, EchoUpstream, Envoy, EnvoyOptions};

/// The filter is built by `make wasm`, which `make test` runs first.
fn guard_built() -> bool {
    let wasm = paths::guard_wasm();
    let built = wasm.is_file();
    if !built {
        eprintln!("skipped: {} not built (make wasm)", wasm.display());
    }
    built
}

fn start() -> (EchoUpstream, Envoy) {
    let echo = EchoUpstream::start().unwrap();
    let envoy = Envoy::start(EnvoyOptions::new(echo.port()));
    (echo, envoy)
}

#[test]
fn no_bundle_fails_closed_with_503() {
    if !guard_built() {
        return;
    }
    let (echo, envoy) = start();
    for src in [addrs::V4_PRIMARY, addrs::V4_OTHER, addrs::V6_LOOPBACK] {
        let lines = tokenhub_integration::get_lines("/v1/models", &[("authorization", "Bearer x")]);
        let resp = envoy.request(src, &lines, b"").unwrap();
        assert_eq!(resp.status, 503, "from {src}: {}", resp.body_text());
        // The error shape OpenAI-compatible clients parse.
        assert!(resp.json()["error"]["code"].is_string(), "{}", resp.body_text());
    }
    assert!(echo.requests().is_empty(), "a request reached the upstream");
}

#[test]
fn reference_ecds_file_is_accepted_and_reloaded() {
    if !guard_built() {
        return;
    }
    let (echo, envoy) = start();
    // An empty configuration is the guard's "no bundle" state: accepted,
    // and still every request 503.
    let ecds = envoy.guard_ecds("");
    assert_eq!(envoy.publish_ecds_and_wait(&ecds), EcdsOutcome::Accepted);
    assert_eq!(envoy.get("/v1/models", &[]).status, 503);
    // Garbage is refused and the previous config keeps serving.
    assert_eq!(envoy.publish_ecds_and_wait("resources: [\n"), EcdsOutcome::Failed);
    assert_eq!(envoy.get("/v1/models", &[]).status, 503);
    assert!(echo.wait_for_requests(1, Duration::from_millis(200)).is_empty());
}

#[test]
fn admin_helpers_work() {
    if !guard_built() {
        return;
    }
    let (_echo, envoy) = start();
    envoy.get("/", &[]);
    envoy.wait_for_stat("http.ingress_http.downstream_rq_5xx", |n| n >= 1, Duration::from_secs(5));
    assert!(envoy.stats_prometheus().contains("envoy_http_downstream_rq_total"));
    assert!(envoy.config_dump()["configs"].is_array());
    assert!(envoy.log_contents().contains("starting main dispatch loop"));
}
