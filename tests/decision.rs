//! The request decision, natively, rule by rule.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;
mod common;

use common::*;
use std::net::IpAddr;
use tokenhub_guard::core::bundle::schema::*;
use tokenhub_guard::core::bundle::{compile, Policy};
use tokenhub_guard::core::decision::{decide, is_stripped_header, Decision, OidcIdentity, RequestFacts};
use tokenhub_guard::core::errors::DenyReason;
use tokenhub_guard::core::secret::{hash_secret, to_hex};
use tokenhub_testkit::providers::{STATEFUL, STATELESS};

struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    source: Option<IpAddr>,
    now: u64,
    /// (issuer, [(claim, value)]) of a JWT verified by Envoy.
    oidc: Option<(String, Vec<(String, String)>)>,
}

fn req(headers: &[(&str, &str)]) -> Req {
    Req {
        method: "POST",
        path: "/v1/chat/completions".into(),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
        source: Some("127.0.0.1".parse().unwrap()),
        now: NOW,
        oidc: None,
    }
}

fn bearer(n: u32) -> String {
    format!("Bearer {}", make_key(n, 0).1)
}

fn run(policy: &Policy, r: &Req) -> Result<Vec<(String, String)>, DenyReason> {
    let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let claims: Vec<(&str, &str)> =
        r.oidc.iter().flat_map(|(_, c)| c.iter().map(|(k, v)| (k.as_str(), v.as_str()))).collect();
    let oidc = r.oidc.as_ref().map(|(iss, _)| OidcIdentity { issuer: iss, claims: &claims });
    let facts = RequestFacts { method: r.method, path: &r.path, headers: &headers, source: r.source, now: r.now, oidc };
    match decide(policy, &facts) {
        Decision::Allow(g) => {
            let mut out: Vec<(String, String)> = g
                .subject
                .identity_headers()
                .iter()
                .filter_map(|(n, v)| v.map(|v| (n.to_string(), v.to_string())))
                .collect();
            out.push((g.inject.0.to_string(), g.inject.1.to_string()));
            Ok(out)
        }
        Decision::Deny(denial) => Err(denial.reason),
    }
}

fn deny(policy: &Policy, r: &Req) -> DenyReason {
    run(policy, r).expect_err("expected a denial")
}

fn policy_with(mutate: impl FnOnce(&mut BundleDoc)) -> Policy {
    let mut doc = base_doc();
    mutate(&mut doc);
    compile(&doc).unwrap()
}

#[test]
fn valid_key_is_allowed_with_authoritative_headers_and_injection() {
    let p = policy_with(|_| {});
    let out = run(&p, &req(&[("authorization", &bearer(1))])).unwrap();
    let (id1, _, _) = make_key(1, 0);
    assert_eq!(
        out,
        vec![
            ("x-tokenhub-tenant".into(), "acme".into()),
            ("x-tokenhub-sub-account".into(), "research".into()),
            ("x-tokenhub-key-id".into(), id1),
            ("x-tokenhub-region".into(), "eu".into()),
            ("x-tokenhub-auth".into(), "api_key".into()),
            ("authorization".into(), "Bearer sk-platform-openai".into()),
        ]
    );
}

#[test]
fn x_api_key_and_scheme_case_are_accepted() {
    let p = policy_with(|_| {});
    let key = make_key(1, 0).1;
    assert!(run(&p, &req(&[("x-api-key", &key)])).is_ok());
    assert!(run(&p, &req(&[("authorization", &format!("bearer {key}"))])).is_ok());
    assert!(run(&p, &req(&[("authorization", &format!("BEARER  {key}"))])).is_ok());
    // The same key in both headers is one credential.
    assert!(run(&p, &req(&[("authorization", &format!("Bearer {key}")), ("x-api-key", &key)])).is_ok());
}

#[test]
fn tenant_own_provider_secret_overrides_platform_secret() {
    let p = policy_with(|_| {});
    let out = run(&p, &req(&[("x-api-key", &make_key(3, 0).1)])).unwrap();
    assert!(out.contains(&("authorization".into(), "Bearer sk-globex-own".into())));
    let mut r = req(&[("x-api-key", &make_key(3, 0).1)]);
    r.path = "/anthropic/v1/messages".into();
    let out = run(&p, &r).unwrap();
    assert!(out.contains(&("x-api-key".into(), "sk-ant".into())));
}

#[test]
fn credential_shapes_are_refused_with_their_reason() {
    let p = policy_with(|_| {});
    let key = make_key(1, 0).1;
    let other = make_key(2, 0).1;
    let cases: Vec<(Vec<(&str, String)>, DenyReason)> = vec![
        (vec![], DenyReason::MissingCredential),
        (vec![("x-api-key", String::new())], DenyReason::MissingCredential),
        (vec![("authorization", "Bearer".into())], DenyReason::MalformedCredential),
        (vec![("authorization", format!("Basic {key}"))], DenyReason::MalformedCredential),
        (vec![("authorization", format!("Bearer\t{key}"))], DenyReason::MalformedCredential),
        (vec![("authorization", format!("Bearer \t{key}"))], DenyReason::MalformedCredential),
        (vec![("authorization", key.clone())], DenyReason::MalformedCredential),
        (vec![("authorization", format!("Bearer {key} "))], DenyReason::MalformedCredential),
        (vec![("authorization", bearer(1)), ("authorization", bearer(1))], DenyReason::DuplicateCredential),
        (vec![("x-api-key", key.clone()), ("x-api-key", key.clone())], DenyReason::DuplicateCredential),
        (vec![("x-api-key", key.clone()), ("x-api-key", "junk".into())], DenyReason::DuplicateCredential),
        (vec![("x-api-key", "junk".into()), ("x-api-key", key.clone())], DenyReason::DuplicateCredential),
        (vec![("authorization", bearer(1)), ("x-api-key", other)], DenyReason::DuplicateCredential),
        (vec![("x-api-key", "sk-not-ours".into())], DenyReason::MalformedCredential),
        // A JWT that Envoy's jwt_authn did not verify.
        (vec![("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln".into())], DenyReason::InvalidToken),
        // What Envoy makes of two `authorization` headers: one joined value.
        (vec![("authorization", format!("Bearer {key},Bearer {key}"))], DenyReason::DuplicateCredential),
        (vec![("x-api-key", format!("{key},{key}"))], DenyReason::DuplicateCredential),
        (vec![("x-api-key", key[..key.len() - 1].into())], DenyReason::MalformedCredential),
    ];
    for (headers, expected) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(deny(&p, &req(&h)), expected, "headers {headers:?}");
    }
    let mut r = req(&[]);
    r.headers = vec![("x-api-key".into(), vec![b't', b'h', 0xff, 0xfe])];
    assert_eq!(deny(&p, &r), DenyReason::MalformedCredential);
}

#[test]
fn key_verification_reasons() {
    let p = policy_with(|d| {
        d.keys[1].status = Status::Disabled;
        d.keys[2].expires_at = Some(NOW);
    });
    let key = make_key(1, 0).1;
    // One character changed: the checksum catches it.
    let mut typo = key.clone().into_bytes();
    typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
    assert_eq!(deny(&p, &req(&[("x-api-key", std::str::from_utf8(&typo).unwrap())])), DenyReason::BadChecksum);
    // Valid checksum, unknown id.
    assert_eq!(deny(&p, &req(&[("x-api-key", &make_key(99, 0).1)])), DenyReason::UnknownKey);
    // Valid checksum and id, wrong secret.
    assert_eq!(deny(&p, &req(&[("x-api-key", &make_key(1, 5).1)])), DenyReason::WrongSecret);
    assert_eq!(deny(&p, &req(&[("x-api-key", &make_key(2, 0).1)])), DenyReason::KeyDisabled);
    assert_eq!(deny(&p, &req(&[("x-api-key", &make_key(3, 0).1)])), DenyReason::KeyExpired);
}

#[test]
fn disabled_key_with_wrong_secret_does_not_reveal_status() {
    let p = policy_with(|d| d.keys[0].status = Status::Disabled);
    assert_eq!(deny(&p, &req(&[("x-api-key", &make_key(1, 9).1)])), DenyReason::WrongSecret);
}

#[test]
fn previous_secret_accepted_until_grace_deadline() {
    let p = policy_with(|d| {
        // Key 1 rotated to generation 1; generation 0 valid until NOW + 60.
        let (id, _, _) = make_key(1, 0);
        let (_, _, new_hash) = make_key(1, 1);
        let old_hash = d.keys[0].hash.clone();
        d.keys[0].hash = new_hash;
        d.keys[0].previous = Some(PreviousSecretDoc { hash: old_hash, valid_until: NOW + 60 });
        assert_eq!(d.keys[0].id, id);
    });
    let old = make_key(1, 0).1;
    let new = make_key(1, 1).1;
    assert!(run(&p, &req(&[("x-api-key", &new)])).is_ok());
    let mut r = req(&[("x-api-key", &old)]);
    r.now = NOW + 60;
    assert!(run(&p, &r).is_ok(), "inside grace");
    r.now = NOW + 61;
    assert_eq!(deny(&p, &r), DenyReason::WrongSecret, "after grace");
    // An unrelated older secret never works.
    assert_eq!(deny(&p, &req(&[("x-api-key", &make_key(1, 7).1)])), DenyReason::WrongSecret);
}

#[test]
fn tenant_and_sub_account_status() {
    let p = policy_with(|d| {
        d.tenants[1].status = Status::Disabled;
        d.tenants[0].sub_accounts[1].status = Status::Disabled;
    });
    assert_eq!(deny(&p, &req(&[("x-api-key", &make_key(3, 0).1)])), DenyReason::TenantDisabled);
    assert_eq!(deny(&p, &req(&[("x-api-key", &make_key(2, 0).1)])), DenyReason::SubAccountDisabled);
    assert!(run(&p, &req(&[("x-api-key", &make_key(1, 0).1)])).is_ok());
}

#[test]
fn ip_allowlists_intersect_across_levels() {
    let p = policy_with(|d| {
        d.tenants[0].ip_allowlist = allowlist(&["127.0.0.0/8", "::1/128"]);
        d.tenants[0].sub_accounts[0].ip_allowlist = allowlist(&["127.0.0.0/30"]);
        d.keys[0].ip_allowlist = allowlist(&["127.0.0.1/32", "127.0.0.3"]);
        // Key 2 (sales): tenant list only. An enabled empty list denies all.
        d.tenants[1].sub_accounts[0].ip_allowlist = allowlist(&[]);
    });
    let k1 = make_key(1, 0).1;
    let k2 = make_key(2, 0).1;
    let at = |key: &str, ip: Option<&str>| {
        let mut r = req(&[("x-api-key", key)]);
        r.source = ip.map(|s| s.parse().unwrap());
        run(&p, &r).err()
    };
    assert_eq!(at(&k1, Some("127.0.0.1")), None);
    assert_eq!(at(&k1, Some("::ffff:127.0.0.1")), None, "v4-mapped v6");
    assert_eq!(at(&k1, Some("127.0.0.3")), None);
    assert_eq!(at(&k1, Some("127.0.0.2")), Some(DenyReason::IpNotAllowed), "not in key list");
    assert_eq!(at(&k1, Some("127.0.0.9")), Some(DenyReason::IpNotAllowed), "not in sub-account list");
    assert_eq!(at(&k1, Some("::1")), Some(DenyReason::IpNotAllowed), "tenant allows, key does not");
    assert_eq!(at(&k1, None), Some(DenyReason::IpNotAllowed), "unknown source fails closed");
    assert_eq!(at(&k2, Some("127.0.0.200")), None);
    assert_eq!(at(&k2, Some("::1")), None);
    assert_eq!(at(&k2, Some("10.0.0.1")), Some(DenyReason::IpNotAllowed));
    assert_eq!(at(&make_key(3, 0).1, Some("127.0.0.1")), Some(DenyReason::IpNotAllowed), "empty list");
}

#[test]
fn claimed_tenant_must_match_the_key() {
    let p = policy_with(|_| {});
    let k = make_key(1, 0).1;
    let with = |extra: &[(&str, &str)]| {
        let mut h = vec![("x-api-key", k.as_str())];
        h.extend_from_slice(extra);
        run(&p, &req(&h)).err()
    };
    assert_eq!(with(&[("x-tokenhub-tenant", "acme")]), None);
    assert_eq!(with(&[("x-tokenhub-tenant", "acme"), ("x-tokenhub-sub-account", "research")]), None);
    assert_eq!(with(&[("x-tokenhub-tenant", "globex")]), Some(DenyReason::TenantMismatch));
    assert_eq!(with(&[("x-tokenhub-tenant", "ACME")]), Some(DenyReason::TenantMismatch));
    assert_eq!(with(&[("x-tokenhub-tenant", " acme")]), Some(DenyReason::TenantMismatch));
    assert_eq!(with(&[("x-tokenhub-tenant", "аcme")]), Some(DenyReason::TenantMismatch), "Cyrillic а");
    assert_eq!(
        with(&[("x-tokenhub-tenant", "acme"), ("x-tokenhub-tenant", "globex")]),
        Some(DenyReason::TenantMismatch)
    );
    assert_eq!(with(&[("x_tokenhub_tenant", "globex")]), Some(DenyReason::TenantMismatch));
    assert_eq!(with(&[("x-tokenhub-sub-account", "sales")]), Some(DenyReason::TenantMismatch));
}

#[test]
fn scopes_narrow_by_method_and_segment_aware_prefix() {
    let p = policy_with(|d| {
        d.tenants[0].sub_accounts[0].scopes =
            Some(ScopesDoc { methods: vec!["GET".into(), "POST".into()], path_prefixes: vec!["/v1/".into()] });
        d.keys[0].scopes = Some(ScopesDoc { methods: vec!["POST".into()], path_prefixes: vec!["/v1/chat".into()] });
    });
    let k = make_key(1, 0).1;
    let at = |method: &'static str, path: &str| {
        let mut r = req(&[("x-api-key", &k)]);
        r.method = method;
        r.path = path.into();
        run(&p, &r).err()
    };
    // In scope; but not an endpoint the platform's credential serves.
    assert_eq!(at("POST", "/v1/chat"), Some(DenyReason::SharedCredentialRefused));
    assert_eq!(at("POST", "/v1/chat/completions?x=1"), None);
    assert_eq!(at("GET", "/v1/chat/completions"), Some(DenyReason::MethodNotAllowed), "key narrows to POST");
    assert_eq!(at("DELETE", "/v1/chat"), Some(DenyReason::MethodNotAllowed));
    assert_eq!(at("POST", "/v1/chatty"), Some(DenyReason::PathNotAllowed));
    assert_eq!(at("POST", "/v1/embeddings"), Some(DenyReason::PathNotAllowed));
    assert_eq!(at("POST", "/V1/chat"), Some(DenyReason::PathNotAllowed), "case matters");
    for bad in [
        "/v1/chat/../embeddings",
        "/v1/chat/%2e%2e/x",
        "/v1//chat",
        "/v1/chat%2Fx",
        "/v1/./chat",
        "v1/chat",
        // Dot segments with path parameters: `..;` is `..` to servlet-style upstreams.
        "/v1/chat/..;/embeddings",
        "/v1/chat/..;x=1/embeddings",
        "/v1/chat/.;/completions",
        "/v1/chat/..;",
        "/v1/chat/..%3b/embeddings",
        "/v1/chat/..%3B/embeddings",
    ] {
        assert_eq!(at("POST", bad), Some(DenyReason::PathNotNormalized), "{bad}");
    }
}

#[test]
fn provider_selection_and_missing_secret() {
    let p = policy_with(|d| {
        d.providers[1].secret = None;
        d.providers[1].shared_endpoints.clear();
    });
    let k = make_key(1, 0).1;
    let mut r = req(&[("x-api-key", &k)]);
    r.path = "/other".into();
    assert_eq!(deny(&p, &r), DenyReason::NoProvider);
    r.path = "/anthropic/v1/messages".into();
    assert_eq!(deny(&p, &r), DenyReason::ProviderNotConfigured);
}

/// The platform's shared credential serves only the stateless endpoints
/// the provider lists; stateful ones (objects kept under the credential)
/// need the tenant's own secret, and get it when the tenant has one.
#[test]
fn stateful_endpoints_never_use_the_shared_credential() {
    let p = policy_with(|_| {});
    let at = |key: u32, method: &'static str, path: &str| {
        let mut r = req(&[("x-api-key", &make_key(key, 0).1)]);
        r.method = method;
        r.path = path.into();
        run(&p, &r)
    };
    // acme (key 1) has no secret of its own.
    for (method, path) in STATELESS {
        assert!(at(1, method, path).is_ok(), "{method} {path} on the shared credential");
    }
    for (method, path) in STATEFUL {
        assert_eq!(at(1, method, path).err(), Some(DenyReason::SharedCredentialRefused), "{method} {path}");
        // globex (key 3) brings its own OpenAI secret: served with it.
        if path.starts_with("/v1/") {
            let out = at(3, method, path).unwrap_or_else(|r| panic!("{method} {path} with own secret: {r:?}"));
            assert!(out.contains(&("authorization".into(), "Bearer sk-globex-own".into())), "{method} {path}");
        }
    }
    assert_eq!(DenyReason::SharedCredentialRefused.status(), 403);
}

#[test]
fn shared_endpoints_are_validated() {
    let err = |mutate: fn(&mut BundleDoc)| {
        let mut doc = base_doc();
        mutate(&mut doc);
        compile(&doc).err().unwrap_or_default()
    };
    assert!(err(|d| d.providers[0].shared_endpoints.clear()).contains("providers[0].shared_endpoints"));
    assert!(err(|d| d.providers[0].shared_endpoints = vec!["POST /anthropic/v1/messages".into()])
        .contains("providers[0].shared_endpoints[0]"));
    assert!(err(|d| d.providers[0].shared_endpoints = vec!["post /v1/files".into()]).contains("upper-case"));
    assert!(err(|d| d.providers[0].secret = None).contains("no platform secret"));
}

/// A wrong secret for an existing key id and an id that does not exist
/// cost the filter the same header operations (host calls): the time to a
/// 401 does not tell which key ids exist. Only the identified owner's
/// values are set; the unknown id's are removals.
#[test]
fn unknown_key_and_wrong_secret_cost_the_same_header_operations() {
    let p = policy_with(|_| {});
    let (_, wrong, _) = make_key(1, 77);
    let denial_for = |key: &str| {
        let headers: Vec<(&str, &[u8])> = vec![("x-api-key", key.as_bytes())];
        let facts = RequestFacts {
            method: "POST",
            path: "/v1/chat/completions",
            headers: &headers,
            source: None,
            now: NOW,
            oidc: None,
        };
        match decide(&p, &facts) {
            Decision::Deny(d) => (d.reason, d.identity_headers().map(|h| h.map(|(n, v)| (n, v.map(str::to_string))))),
            Decision::Allow(_) => panic!("{key} allowed"),
        }
    };
    let (reason, wrong_ops) = denial_for(&wrong);
    assert_eq!(reason, DenyReason::WrongSecret);
    let wrong_ops = wrong_ops.expect("the owner is named for the access log");
    assert!(wrong_ops.iter().any(|(_, v)| v.is_some()));
    // A syntactically valid key whose id is not in the policy.
    let unknown = make_key(999, 0).1;
    let (reason, unknown_ops) = denial_for(&unknown);
    assert_eq!(reason, DenyReason::UnknownKey);
    let unknown_ops = unknown_ops.expect("an unknown id gets the same number of header operations");
    let names = |ops: &[(&'static str, Option<String>)]| ops.iter().map(|(n, _)| *n).collect::<Vec<&str>>();
    assert_eq!(names(&unknown_ops), names(&wrong_ops));
    assert!(unknown_ops.iter().all(|(_, v)| v.is_none()), "no identity is invented for an unknown id");
}

#[test]
fn stripped_headers() {
    for h in [
        "authorization",
        "x-api-key",
        "x-tokenhub-tenant",
        "x-tokenhub-anything",
        "x_tokenhub_tenant",
        "X-TokenHub-Region",
        "openai-organization",
        "openai-project",
    ] {
        assert!(is_stripped_header(h), "{h}");
    }
    for h in ["x-tokenhubx", "content-type", "x-request-id", "x-tokenhu", "openai-beta", "anthropic-version"] {
        assert!(!is_stripped_header(h), "{h}");
    }
}

#[test]
fn hash_of_wrong_key_id_does_not_verify() {
    // A stored hash is bound to its key id: copying key 1's hash onto key 2
    // does not let key 1's secret in under key 2's id.
    let p = policy_with(|d| d.keys[1].hash = to_hex(&hash_secret(&make_key(1, 0).0, "x")));
    assert_eq!(deny(&p, &req(&[("x-api-key", &make_key(2, 0).1)])), DenyReason::WrongSecret);
}

const GOOGLE: &str = "https://accounts.google.com";

fn oidc_policy() -> Policy {
    policy_with(|d| {
        d.oidc = vec![
            OidcPrincipalDoc {
                issuer: GOOGLE.into(),
                claim: "sub".into(),
                value: "1234567890".into(),
                tenant: "acme".into(),
                sub_account: "sales".into(),
                scopes: Some(ScopesDoc { methods: vec!["POST".into()], path_prefixes: vec![] }),
            },
            OidcPrincipalDoc {
                issuer: "https://github.example".into(),
                claim: "email".into(),
                value: "ops@globex.example".into(),
                tenant: "globex".into(),
                sub_account: "ops".into(),
                scopes: None,
            },
        ];
    })
}

fn oidc_req(issuer: &str, claims: &[(&str, &str)]) -> Req {
    let mut r = req(&[]);
    r.oidc = Some((issuer.into(), claims.iter().map(|(c, v)| (c.to_string(), v.to_string())).collect()));
    r
}

#[test]
fn oidc_identity_maps_to_tenant_without_a_key_id() {
    let p = oidc_policy();
    let out = run(&p, &oidc_req(GOOGLE, &[("sub", "1234567890")])).unwrap();
    assert!(out.contains(&("x-tokenhub-tenant".into(), "acme".into())));
    assert!(out.contains(&("x-tokenhub-sub-account".into(), "sales".into())));
    assert!(out.contains(&("x-tokenhub-auth".into(), "oidc".into())));
    assert!(!out.iter().any(|(n, _)| n == "x-tokenhub-key-id"));
    let out = run(&p, &oidc_req("https://github.example", &[("email", "ops@globex.example")])).unwrap();
    assert!(out.contains(&("x-tokenhub-tenant".into(), "globex".into())));
}

#[test]
fn oidc_refusals() {
    let p = oidc_policy();
    assert_eq!(deny(&p, &oidc_req(GOOGLE, &[("sub", "999")])), DenyReason::UnknownPrincipal);
    // Same subject, other issuer: not the same person.
    assert_eq!(
        deny(&p, &oidc_req("https://login.microsoftonline.com/x/v2.0", &[("sub", "1234567890")])),
        DenyReason::UnknownPrincipal
    );
    // The principal's scopes narrow like a key's.
    let mut r = oidc_req(GOOGLE, &[("sub", "1234567890")]);
    r.method = "GET";
    assert_eq!(deny(&p, &r), DenyReason::MethodNotAllowed);
    // A token and an API key at once: refused, whichever would pass.
    let mut both = oidc_req(GOOGLE, &[("sub", "1234567890")]);
    both.headers = vec![("x-api-key".into(), make_key(1, 0).1.into_bytes())];
    assert_eq!(deny(&p, &both), DenyReason::DuplicateCredential);
    // A claimed tenant that disagrees with the identity's.
    let mut spoof = oidc_req(GOOGLE, &[("sub", "1234567890")]);
    spoof.headers = vec![("x-tokenhub-tenant".into(), b"globex".to_vec())];
    assert_eq!(deny(&p, &spoof), DenyReason::TenantMismatch);
}

#[test]
fn denials_name_the_owner_only_once_the_key_is_identified() {
    let p = policy_with(|d| {
        d.keys[1].status = Status::Disabled;
        d.tenants[0].ip_allowlist = allowlist(&["10.0.0.0/8"]);
    });
    let subject_of = |r: &Req| {
        let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let facts = RequestFacts {
            method: r.method,
            path: &r.path,
            headers: &headers,
            source: r.source,
            now: r.now,
            oidc: None,
        };
        match decide(&p, &facts) {
            Decision::Deny(d) => {
                (d.reason, d.subject.map(|s| (s.tenant.id.clone(), s.credential.key().map(|k| k.id().to_string()))))
            }
            Decision::Allow(_) => panic!("expected a denial"),
        }
    };
    let acme = |n| Some(("acme".to_string(), Some(make_key(n, 0).0)));
    // Outside the allowlist: the key is known, so is its owner.
    assert_eq!(subject_of(&req(&[("x-api-key", &make_key(1, 0).1)])), (DenyReason::IpNotAllowed, acme(1)));
    // Wrong secret for an existing key id: named, for the operator.
    assert_eq!(subject_of(&req(&[("x-api-key", &make_key(1, 3).1)])), (DenyReason::WrongSecret, acme(1)));
    assert_eq!(subject_of(&req(&[("x-api-key", &make_key(2, 0).1)])), (DenyReason::KeyDisabled, acme(2)));
    // Nothing identified: nobody named, whatever the client claims.
    let claimed = req(&[("x-api-key", &make_key(77, 0).1), ("x-tokenhub-tenant", "acme")]);
    assert_eq!(subject_of(&claimed), (DenyReason::UnknownKey, None));
    assert_eq!(subject_of(&req(&[])), (DenyReason::MissingCredential, None));
}

/// The grant of an allowed request, then the body decision for `body`.
fn model_verdict(policy: &Policy, key: u32, body: &[u8]) -> (bool, Option<Result<(), DenyReason>>) {
    use tokenhub_guard::core::models::{ModelScanner, DEFAULT_SCAN_BOUND};
    let r = req(&[("authorization", &bearer(key))]);
    let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let facts =
        RequestFacts { method: r.method, path: &r.path, headers: &headers, source: r.source, now: r.now, oidc: None };
    let Decision::Allow(grant) = decide(policy, &facts) else { panic!("headers refused") };
    if !grant.needs_model() {
        return (false, None);
    }
    let mut scanner = ModelScanner::new(DEFAULT_SCAN_BOUND);
    let scan = match scanner.feed(body) {
        tokenhub_guard::core::models::ModelScan::NeedMore => scanner.finish(),
        done => done,
    };
    (true, grant.check_model(&scan))
}

#[test]
fn model_allowlists_the_tightest_level_applies() {
    let p = policy_with(|d| {
        d.tenants[0].models = vec!["gpt-*".into(), "claude-*".into()];
        d.tenants[0].sub_accounts[0].models = vec!["gpt-4o*".into()];
        d.keys[0].models = vec!["gpt-4o-mini".into(), "claude-3-haiku".into()];
        d.keys[1].models = vec!["claude-3-haiku".into()];
    });
    let chat = |m: &str| format!(r#"{{"messages":[],"model":"{m}"}}"#).into_bytes();
    // Key 1 (acme/research): key ∩ sub-account ∩ tenant.
    assert_eq!(model_verdict(&p, 1, &chat("gpt-4o-mini")), (true, Some(Ok(()))));
    assert_eq!(model_verdict(&p, 1, &chat("claude-3-haiku")), (true, Some(Err(DenyReason::ModelNotAllowed))));
    assert_eq!(model_verdict(&p, 1, &chat("gpt-4o")), (true, Some(Err(DenyReason::ModelNotAllowed))));
    // Key 2 (acme/sales): key ∩ tenant.
    assert_eq!(model_verdict(&p, 2, &chat("claude-3-haiku")), (true, Some(Ok(()))));
    assert_eq!(model_verdict(&p, 2, &chat("gpt-4o-mini")), (true, Some(Err(DenyReason::ModelNotAllowed))));
    // Unreadable bodies, for restricted keys.
    for body in [&b"model=gpt-4o-mini"[..], b"{}", b"[]", br#"{"model":"gpt-4o-mini","model":"gpt-4o"}"#] {
        assert_eq!(model_verdict(&p, 1, body), (true, Some(Err(DenyReason::ModelUnreadable))));
    }
    // Key 3 (globex): no rule anywhere, its body is never read.
    assert_eq!(model_verdict(&p, 3, b"not json"), (false, None));
}

#[test]
fn tenant_and_sub_account_model_lists_restrict_their_keys() {
    let p = policy_with(|d| d.tenants[1].sub_accounts[0].models = vec!["gpt-4o-mini".into()]);
    assert_eq!(model_verdict(&p, 3, br#"{"model":"gpt-4o-mini"}"#), (true, Some(Ok(()))));
    assert_eq!(model_verdict(&p, 3, br#"{"model":"o1"}"#), (true, Some(Err(DenyReason::ModelNotAllowed))));
    assert_eq!(model_verdict(&p, 1, b"not json"), (false, None));
}

#[test]
fn model_refusals_are_openai_shaped() {
    assert_eq!(DenyReason::ModelNotAllowed.status(), 403);
    assert_eq!(DenyReason::ModelNotAllowed.parts().1, "model_not_allowed");
    assert_eq!(DenyReason::ModelUnreadable.status(), 400);
}
