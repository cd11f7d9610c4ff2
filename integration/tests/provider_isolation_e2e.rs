//! Tenants cannot reach each other's data at the provider through the
//! platform's shared credential, through a real Envoy.
//!
//! The fixture's tenant has no provider secret of its own: it is served
//! with the platform's, and only on the stateless endpoints the providers
//! share (the `openai` and `anthropic` presets `tokenhub-admin provider set`
//! applies). Every stateful endpoint family (objects the provider keeps
//! under the credential that made them) is refused with 403
//! `provider_credential_required` and never reaches the upstream; a tenant
//! with its own secret is served with that secret on the same paths.
//! Client-sent provider routing headers never reach the upstream.
//!
//! Needs `make wasm`, `make admin` and `make bootstrap`.

use tokenhub_integration::guard::*;
use tokenhub_integration::providers::{ANTHROPIC_ARGS, STATEFUL, STATELESS};
use tokenhub_integration::{addrs, IssuedKey};

const OWN_TENANT: &str = "own-secret-co";
const OWN_OPENAI: &str = "sk-own.OpenAI~Secret:1111";
const OWN_ANTHROPIC: &str = "ant-own.Anthropic~Secret:2222";

/// The fixture plus a second tenant that brings its own provider secrets.
fn start() -> (Fixture, IssuedKey) {
    let mut own = None;
    let fx = Fixture::start_with(|admin, _| {
        admin.json(&["tenant", "add", OWN_TENANT, "--region", REGION]);
        admin.set_provider(&["openai", "--path-prefix", "/v1/", "--tenant", OWN_TENANT], OWN_OPENAI);
        let mut anthropic = vec!["anthropic"];
        anthropic.extend(ANTHROPIC_ARGS);
        anthropic.extend(["--tenant", OWN_TENANT]);
        admin.set_provider(&anthropic, OWN_ANTHROPIC);
        own = Some(admin.create_key(OWN_TENANT, &[]));
    });
    let own = own.unwrap_or_else(|| panic!("no key for {OWN_TENANT}"));
    (fx, own)
}

fn send(fx: &Fixture, method: &str, path: &str, key: &str) -> tokenhub_integration::Response {
    fx.send(addrs::V4_PRIMARY, method, path, &[("authorization", &bearer(key))])
}

fn own_credential(path: &str) -> (&'static str, String) {
    if path.starts_with("/anthropic/") {
        ("x-api-key", OWN_ANTHROPIC.to_string())
    } else {
        ("authorization", format!("Bearer {OWN_OPENAI}"))
    }
}

fn platform_credential(path: &str) -> (&'static str, String) {
    if path.starts_with("/anthropic/") {
        ("x-api-key", ANTHROPIC_SECRET.to_string())
    } else {
        ("authorization", format!("Bearer {OPENAI_SECRET}"))
    }
}

#[test]
fn stateful_endpoints_need_the_tenants_own_provider_secret() {
    let (fx, own) = start();
    let shared_key = fx.key.key.clone();
    for (method, path) in STATEFUL {
        let resp = fx.expect_denied(SHARED_CREDENTIAL_REFUSED, || send(&fx, method, path, &shared_key));
        let message = resp.json()["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains("own provider credential"), "{method} {path}: {message}");
        // The tenant with its own secret: served, with its secret only.
        let seen = fx.expect_allowed(|| send(&fx, method, path, &own.key));
        let (header, value) = own_credential(path);
        assert_eq!(seen.header_all(header), [value.as_str()], "{method} {path}: {:#?}", seen.headers);
        assert_eq!(seen.path, path);
        let platform = platform_credential(path).1;
        assert!(
            seen.headers.iter().all(|(_, v)| !v.contains(&platform)),
            "{method} {path}: the platform's secret reached the upstream"
        );
    }
}

#[test]
fn stateless_endpoints_use_the_platform_credential() {
    let (fx, own) = start();
    let shared_key = fx.key.key.clone();
    for (method, path) in STATELESS {
        let seen = fx.expect_allowed(|| send(&fx, method, path, &shared_key));
        let (header, value) = platform_credential(path);
        assert_eq!(seen.header_all(header), [value.as_str()], "{method} {path}");
        let seen = fx.expect_allowed(|| send(&fx, method, path, &own.key));
        let (header, value) = own_credential(path);
        assert_eq!(seen.header_all(header), [value.as_str()], "{method} {path}: own secret first");
    }
}

#[test]
fn client_provider_routing_headers_never_reach_the_upstream() {
    let (fx, own) = start();
    for key in [&fx.key.key, &own.key] {
        let auth = bearer(key);
        let headers = [
            ("authorization", auth.as_str()),
            ("OpenAI-Organization", "org-victim"),
            ("openai-project", "proj_victim"),
            ("api-key", "azure-key-of-someone"),
            ("x-goog-user-project", "victim-project"),
            ("openai-beta", "assistants=v2"),
        ];
        let seen = fx.expect_allowed(|| fx.send(addrs::V4_PRIMARY, "POST", "/v1/chat/completions", &headers));
        for name in ["openai-organization", "openai-project", "api-key", "x-goog-user-project"] {
            assert!(seen.header_all(name).is_empty(), "{name} reached the upstream: {:#?}", seen.headers);
        }
        for (_, value) in &seen.headers {
            assert!(!value.contains("victim"), "a client routing value reached the upstream: {value}");
        }
        assert_eq!(seen.header_all("openai-beta"), ["assistants=v2"], "other headers pass unchanged");
    }
}
