//! Bundle parse, validate and seal/open, natively.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use common::*;
use tokenhub_guard::core::bundle::schema::{self, *};
use tokenhub_guard::core::bundle::{compile, open_and_compile, seal, BundleError, BundleKey, SealError};

fn compile_err(doc: &BundleDoc) -> String {
    compile(doc).expect_err("expected a validation error")
}

#[test]
fn base_doc_compiles_into_lookup_tables() {
    let p = compile(&base_doc()).unwrap();
    assert_eq!(p.version, 7);
    assert_eq!(p.tenants.len(), 2);
    assert_eq!(p.sub_accounts.len(), 3);
    assert_eq!(p.keys.len(), 3);
    // Longest provider prefix first.
    assert_eq!(p.providers[0].id, "anthropic");
}

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    let json = br#"{"schema":1,"version":1,"tenants":[{"id":"a","sub_accounts":[],"ip_alowlist":{}}]}"#;
    let err = schema::parse(json).unwrap_err();
    assert!(err.contains("ip_alowlist"), "{err}");
}

type Mutation = Box<dyn Fn(&mut BundleDoc)>;

#[test]
fn validation_errors_name_the_field() {
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|d| d.schema = 2), "schema"),
        (Box::new(|d| d.tenants[1].id = "acme".into()), "tenants[1].id: duplicate"),
        (Box::new(|d| d.tenants[0].id = "Acme Corp".into()), "tenants[0].id"),
        (Box::new(|d| d.tenants[0].region = "EU WEST".into()), "tenants[0].region"),
        (Box::new(|d| d.tenants[0].sub_accounts[1].id = "research".into()), "tenants[0].sub_accounts[1].id: duplicate"),
        (Box::new(|d| d.tenants[0].ip_allowlist = allowlist(&["10.0.0.1/8"])), "tenants[0].ip_allowlist.cidrs"),
        (
            Box::new(|d| d.tenants[0].sub_accounts[0].ip_allowlist = allowlist(&["nope"])),
            "tenants[0].sub_accounts[0].ip_allowlist.cidrs",
        ),
        (Box::new(|d| d.keys[2].id = "short".into()), "keys[2].id"),
        (Box::new(|d| d.keys[1].id = d.keys[0].id.clone()), "keys[1].id: duplicate"),
        (Box::new(|d| d.keys[0].tenant = "nobody".into()), "keys[0]: tenant \"nobody\""),
        (Box::new(|d| d.keys[0].sub_account = "ops".into()), "keys[0]: tenant \"acme\" has no sub-account \"ops\""),
        (Box::new(|d| d.keys[0].hash = "xyz".into()), "keys[0].hash"),
        (
            Box::new(|d| d.keys[0].previous = Some(PreviousSecretDoc { hash: "00".into(), valid_until: 1 })),
            "keys[0].previous.hash",
        ),
        (
            Box::new(|d| d.keys[0].scopes = Some(ScopesDoc { methods: vec!["post".into()], path_prefixes: vec![] })),
            "keys[0].scopes.methods[0]",
        ),
        (
            Box::new(|d| d.keys[0].scopes = Some(ScopesDoc { methods: vec![], path_prefixes: vec!["v1".into()] })),
            "keys[0].scopes.path_prefixes[0]",
        ),
        (Box::new(|d| d.keys[0].quota = Some(QuotaDoc { per_minute: Some(0), per_day: None })), "keys[0].quota"),
        (Box::new(|d| d.providers[1].id = "openai".into()), "providers[1].id: duplicate"),
        (Box::new(|d| d.providers[0].format = "Bearer".into()), "providers[0].format"),
        (Box::new(|d| d.providers[0].header = "x-tokenhub-tenant".into()), "providers[0].header"),
        (Box::new(|d| d.providers[0].header = "Authorization".into()), "providers[0].header"),
        (Box::new(|d| d.providers[0].secret = Some("sk\r\nx-evil: 1".into())), "providers[0].secret"),
        (
            Box::new(|d| d.tenants[0].provider_secrets.insert("nope".into(), "s".into()).map(|_| ()).unwrap_or(())),
            "tenants[0].provider_secrets.nope",
        ),
    ];
    for (mutate, expected) in cases {
        let mut doc = base_doc();
        mutate(&mut doc);
        let err = compile_err(&doc);
        assert!(err.starts_with(expected), "expected error starting with {expected:?}, got {err:?}");
    }
}

#[test]
fn provider_secret_never_appears_in_errors() {
    let mut doc = base_doc();
    doc.providers[0].secret = Some("sk-canary-\u{7}".into());
    assert!(!compile_err(&doc).contains("canary"));
}

#[test]
fn seal_open_compile_round_trip() {
    let key = BundleKey::from_bytes([3; 32]);
    let json = serde_json::to_vec(&base_doc()).unwrap();
    let sealed = seal(&json, &key, 7, [1; 12]).unwrap();
    assert!(!sealed.contains("sk-platform-openai"));
    assert!(!sealed.contains("acme"));
    let policy = open_and_compile(&sealed, &key).unwrap();
    assert_eq!(policy.keys.len(), 3);
}

#[test]
fn open_and_compile_reports_each_stage() {
    let key = BundleKey::from_bytes([3; 32]);
    let other = BundleKey::from_bytes([4; 32]);
    let good = seal(&serde_json::to_vec(&base_doc()).unwrap(), &key, 7, [1; 12]).unwrap();
    assert!(matches!(open_and_compile(&good, &other), Err(BundleError::Seal(SealError::WrongKey { .. }))));
    let not_json = seal(b"{not json", &key, 7, [1; 12]).unwrap();
    assert!(matches!(open_and_compile(&not_json, &key), Err(BundleError::Parse(_))));
    let mut bad = base_doc();
    bad.keys[0].tenant = "ghost".into();
    let invalid = seal(&serde_json::to_vec(&bad).unwrap(), &key, 7, [1; 12]).unwrap();
    let err = open_and_compile(&invalid, &key).unwrap_err();
    assert!(err.to_string().contains("keys[0]"), "{err}");
}

#[test]
fn header_and_body_versions_must_agree() {
    let key = BundleKey::from_bytes([3; 32]);
    let sealed = seal(&serde_json::to_vec(&base_doc()).unwrap(), &key, 8, [1; 12]).unwrap();
    let err = open_and_compile(&sealed, &key).unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
}
