//! Bundle parse, validate and seal/open, natively.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;
mod common;

use common::*;
use tokenhub_guard::core::bundle::schema::{self, *};
use tokenhub_guard::core::bundle::{compile, keys, open_and_compile, pack, seal, BundleError, BundleKey, SealError};

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

// ------------------------------------------------------------ packed keys

/// The base document with one key of every kind: plain (packed as a
/// record), disabled, expiring, and one with a previous secret and limits
/// (kept in the JSON part).
fn mixed_doc() -> BundleDoc {
    let mut doc = base_doc();
    doc.keys[1].status = Status::Disabled;
    doc.keys[2].expires_at = Some(NOW + 5);
    let mut limited = key_doc(4, "acme", "research");
    limited.previous = Some(PreviousSecretDoc { hash: make_key(4, 9).2, valid_until: NOW });
    limited.quota = Some(QuotaDoc { per_minute: Some(5), per_day: None });
    doc.keys.push(limited);
    doc
}

fn seal_packed(plain: &[u8], key: &BundleKey, version: u64) -> Vec<u8> {
    seal::to_binary(&seal(plain, key, version, [1; 12]).unwrap()).unwrap()
}

#[test]
fn packed_bundles_compile_to_the_same_keys_as_json() {
    let key = BundleKey::from_bytes([3; 32]);
    let doc = mixed_doc();
    let packed = pack(&doc).unwrap();
    // Only the limited key stays in the JSON part.
    let (json_len, table) = tokenhub_guard::core::bundle::pack::split(&packed);
    assert_eq!(packed.len() - table.unwrap(), 3 * keys::RECORD_LEN);
    assert_eq!(schema::parse(&packed[..json_len]).unwrap().keys.len(), 1);
    let from_json = compile(&doc).unwrap();
    let from_packed = open_and_compile(seal_packed(&packed, &key, 7), &key).unwrap();
    assert_eq!(from_packed.keys.len(), 4);
    for k in &doc.keys {
        let (a, b) = (from_json.keys.get(k.id.as_bytes()).unwrap(), from_packed.keys.get(k.id.as_bytes()).unwrap());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
    assert!(from_packed.keys.get(b"K00000000099").is_none());
    // And back: the same document, plain keys in id order after the rest.
    let mut again = tokenhub_guard::core::bundle::pack::unpack(&packed).unwrap();
    again.keys.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want = doc.clone();
    want.keys.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(again, want);
}

#[test]
fn a_damaged_key_table_is_refused_by_record() {
    let key = BundleKey::from_bytes([3; 32]);
    let packed = pack(&mixed_doc()).unwrap().to_vec();
    let table = tokenhub_guard::core::bundle::pack::split(&packed).1.unwrap();
    let r = keys::RECORD_LEN;
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(Damage, &str)> = vec![
        (Box::new(|p| p.truncate(p.len() - 1)), "whole number of 57-byte records"),
        (
            Box::new(move |p| p[table + r..table + r + 12].copy_from_slice(b"K00000000001")),
            "record 1: ids are not strictly ascending",
        ),
        (Box::new(move |p| p[table] = b'!'), "record 0: the id is not 12 base62"),
        (Box::new(move |p| p[table + 44] = 3), "record 0: sub-account index out of range"),
        (Box::new(move |p| p[table + 56] = 2), "record 0: unknown flags"),
    ];
    for (damage, want) in cases {
        let mut plain = packed.clone();
        damage(&mut plain);
        let err = open_and_compile(seal_packed(&plain, &key, 7), &key).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?}, got {err}");
    }
    // An empty table is a table of no keys.
    let mut plain = packed.clone();
    plain.truncate(table);
    assert_eq!(open_and_compile(seal_packed(&plain, &key, 7), &key).unwrap().keys.len(), 1);
    // A JSON key that repeats a packed one is a duplicate too.
    let mut plain = packed.clone();
    let mut doc = schema::parse(&plain[..table - 1]).unwrap();
    doc.keys.push(key_doc(1, "acme", "research"));
    let json = serde_json::to_vec(&doc).unwrap();
    plain.splice(..table - 1, json).for_each(drop);
    let err = open_and_compile(seal_packed(&plain, &key, 7), &key).unwrap_err().to_string();
    assert!(err.contains("keys[1].id: duplicate key id"), "{err}");
}

#[test]
fn both_envelope_forms_open_to_the_same_policy() {
    let key = BundleKey::from_bytes([3; 32]);
    let text = seal(&pack(&base_doc()).unwrap(), &key, 7, [1; 12]).unwrap();
    let binary = seal::to_binary(&text).unwrap();
    assert!(binary.len() < text.len());
    let (a, b) = (open_and_compile(&text, &key).unwrap(), open_and_compile(&binary, &key).unwrap());
    assert_eq!(format!("{:?}", a.keys.iter().collect::<Vec<_>>()), format!("{:?}", b.keys.iter().collect::<Vec<_>>()));
}

#[test]
fn model_lists_compile_and_bad_patterns_name_their_field() {
    let mut doc = base_doc();
    doc.tenants[0].models = vec!["gpt-4o*".into()];
    doc.tenants[0].sub_accounts[1].models = vec!["gpt-4o-mini".into()];
    doc.keys[2].models = vec!["claude-3-5-*".into()];
    let policy = compile(&doc).unwrap();
    assert!(policy.tenants[0].models.as_ref().is_some_and(|m| m.allows("gpt-4o-mini")));
    assert!(policy.sub_accounts[1].models.is_some());
    assert!(policy.sub_accounts[0].models.is_none());
    let (id3, _, _) = make_key(3, 0);
    assert!(policy.keys.get(id3.as_bytes()).unwrap().models().as_ref().is_some_and(|m| m.allows("claude-3-5-haiku")));
    // A round trip through JSON keeps the lists; a key with models is not a packed record.
    let json = serde_json::to_vec(&doc).unwrap();
    assert_eq!(tokenhub_guard::core::bundle::schema::parse(&json).unwrap(), doc);
    let packed = tokenhub_guard::core::bundle::pack(&doc).unwrap();
    let sealed = seal_packed(&packed, &BundleKey::from_bytes([7; 32]), doc.version);
    let opened = tokenhub_guard::core::bundle::open_and_compile(&sealed, &BundleKey::from_bytes([7; 32])).unwrap();
    assert!(opened.keys.get(id3.as_bytes()).unwrap().models().is_some());

    doc.keys[2].models = vec!["claude".into(), "gpt*4".into()];
    assert!(compile_err(&doc).starts_with("keys[2].models[1]:"), "{}", compile_err(&doc));
    doc.keys[2].models.clear();
    doc.tenants[0].sub_accounts[1].models = vec!["*".into()];
    assert!(compile_err(&doc).starts_with("tenants[0].sub_accounts[1].models[0]:"), "{}", compile_err(&doc));
}
