//! The security page's incident response, end to end: a key works
//! through real Envoy → `tokenhub-admin incident revoke KEY_ID` → the same
//! key gets 401 within 2 s (no restart) → a new key works → the audit log
//! shows the chain of events and `audit verify` passes.
//!
//! Needs the filter (`make wasm`), the sidecar (`cargo build --features
//! admin --bin tokenhub-admin`) and Envoy (`make bootstrap`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tokenhub_integration::{paths, Admin, EchoUpstream, Envoy, EnvoyOptions, Response};

const TENANT: &str = "acme-incident";
const PROVIDER_SECRET: &str = "sk-upstream.Incident~Secret:9090";
/// The promise: a revoked key is refused within this long.
const REVOKE_LIMIT: Duration = Duration::from_secs(2);

fn call(envoy: &Envoy, key: &str) -> Response {
    envoy.get("/v1/models", &[("authorization", &format!("Bearer {key}"))])
}

/// Polls `ok` every 20 ms from `start` until `limit`; returns when it held.
fn within(start: Instant, limit: Duration, mut ok: impl FnMut() -> bool) -> Option<Duration> {
    loop {
        if ok() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn incident_revoke_refuses_the_key_within_2s_and_leaves_an_audit_trail() {
    let admin = Admin::init(&paths::built_guard_wasm());
    admin.json(&["tenant", "add", TENANT]);
    admin.set_provider(&["openai", "--path-prefix", "/v1/"], PROVIDER_SECRET);
    let leaked = admin.create_key(TENANT, &["--name", "leaked-in-a-repo"]);
    let version = admin.publish()["version"].as_u64().unwrap();

    let echo = EchoUpstream::start().expect("echo upstream");
    let envoy = Envoy::start(EnvoyOptions::new(echo.port()).publisher(&admin));
    envoy.wait_for_stat("wasmcustom.tokenhub.bundle_version", |v| v == version, Duration::from_secs(10));
    let pid = envoy.pid();

    // 1. The key works.
    assert_eq!(call(&envoy, &leaked.key).status, 200);
    let upstream = echo.take_requests();
    assert_eq!(upstream.len(), 1);
    assert_eq!(upstream[0].header("authorization"), Some(format!("Bearer {PROVIDER_SECRET}").as_str()));

    // 2. Incident: one command disables and publishes.
    let start = Instant::now();
    let revoked = admin.json(&["incident", "revoke", &leaked.key_id]);
    let command_took = start.elapsed();
    assert_eq!(revoked["status"], "disabled");
    let mut last = None;
    let refused_after = within(start, REVOKE_LIMIT, || {
        let resp = call(&envoy, &leaked.key);
        let refused = resp.status == 401;
        last = Some(resp);
        refused
    })
    .unwrap_or_else(|| panic!("the revoked key was still served {REVOKE_LIMIT:?} after `incident revoke`: {last:?}"));
    let body = last.unwrap().json();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    echo.take_requests();

    // 3. A replacement key works, after the usual publish.
    let replacement = admin.create_key(TENANT, &["--name", "replacement"]);
    let start = Instant::now();
    admin.publish();
    within(start, REVOKE_LIMIT, || call(&envoy, &replacement.key).status == 200)
        .unwrap_or_else(|| panic!("the replacement key was not accepted within {REVOKE_LIMIT:?}"));
    assert_eq!(call(&envoy, &leaked.key).status, 401, "the leaked key stays refused");
    assert_eq!(envoy.pid(), pid, "a reload, not a restart");

    // 4. The audit trail: what `incident revoke` printed, and the log itself.
    let trail: Vec<&str> = revoked["audit"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(trail, ["key.create", "incident.revoke"]);
    let log = admin.json(&["audit", "search", "--tenant", TENANT]);
    let actions: Vec<(&str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"]["key_id"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(
        actions,
        [
            ("tenant.add", "-"),
            ("key.create", leaked.key_id.as_str()),
            ("incident.revoke", leaked.key_id.as_str()),
            ("key.create", replacement.key_id.as_str()),
        ]
    );
    let verified = admin.json(&["audit", "verify"]);
    assert_eq!(verified["ok"], true);
    let text = std::fs::read_to_string(admin.home().join("audit.log")).unwrap();
    for secret in [leaked.key.as_str(), replacement.key.as_str(), PROVIDER_SECRET] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }
    println!(
        "incident revoke: the command took {command_took:?}; the key was refused {refused_after:?} after it started"
    );
}
