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
        (
            Box::new(|d| d.keys[0].budget = Some(TokenBudgetDoc { tokens_per_minute: Some(0), ..Default::default() })),
            "keys[0].budget.tokens_per_minute",
        ),
        (
            Box::new(|d| d.tenants[0].budget = Some(TokenBudgetDoc { tokens_per_day: Some(0), ..Default::default() })),
            "tenants[0].budget.tokens_per_day",
        ),
        (
            Box::new(|d| {
                d.tenants[0].sub_accounts[1].budget =
                    Some(TokenBudgetDoc { monthly_budget_nano_usd: Some(0), ..Default::default() })
            }),
            "tenants[0].sub_accounts[1].budget.monthly_budget_nano_usd",
        ),
        (Box::new(|d| d.soft_limit_percent = Some(0)), "soft_limit_percent"),
        (Box::new(|d| d.soft_limit_percent = Some(101)), "soft_limit_percent"),
        (Box::new(|d| d.prices = vec![price("azure", "gpt-4o")]), "prices[0].provider: no provider \"azure\""),
        (Box::new(|d| d.prices = vec![price("openai", "")]), "prices[0].model"),
        (Box::new(|d| d.prices = vec![price("openai", "gpt-*-mini")]), "prices[0].model"),
        (Box::new(|d| d.prices = vec![price("openai", "gpt 4o")]), "prices[0].model"),
        (
            Box::new(|d| d.prices = vec![price("openai", "gpt-4o"), price("openai", "gpt-4o")]),
            "prices[1]: a second price",
        ),
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

fn price(provider: &str, model: &str) -> PriceDoc {
    PriceDoc { provider: provider.into(), model: model.into(), input: 1, cached_input: 0, output: 2 }
}

#[test]
fn prices_pick_the_exact_model_then_the_longest_prefix_per_provider() {
    let mut doc = base_doc();
    let p = |provider: &str, model: &str, input| PriceDoc { input, ..price(provider, model) };
    doc.prices = vec![
        p("openai", "gpt-*", 1),
        p("openai", "gpt-4o*", 2),
        p("openai", "gpt-4o", 3),
        p("anthropic", "claude-*", 4),
        p("openai", "*", 5),
    ];
    let policy = compile(&doc).unwrap();
    let openai = policy.providers.iter().position(|q| q.id == "openai").unwrap();
    let anthropic = policy.providers.iter().position(|q| q.id == "anthropic").unwrap();
    let input = |provider, model| policy.price_for(provider, model).map(|p| p.input);
    assert_eq!(input(openai, "gpt-4o"), Some(3));
    assert_eq!(input(openai, "gpt-4o-mini"), Some(2));
    assert_eq!(input(openai, "gpt-3.5-turbo"), Some(1));
    assert_eq!(input(openai, "o3"), Some(5), "a bare * prices every model of the provider");
    assert_eq!(input(anthropic, "claude-sonnet-4"), Some(4));
    assert_eq!(input(anthropic, "gpt-4o"), None, "prices are per provider");
    assert_eq!(policy.soft_limit_percent, 80, "the default soft limit");
    assert_eq!(policy.default_output_tokens, 1_024, "the default output reservation");
}

#[test]
fn metering_settings_are_validated() {
    let mut doc = base_doc();
    doc.soft_limit_percent = Some(95);
    doc.default_output_tokens = Some(256);
    let policy = compile(&doc).unwrap();
    assert_eq!((policy.soft_limit_percent, policy.default_output_tokens), (95, 256));
    for bad in [0, tokenhub_guard::core::models::MAX_OUTPUT_CAP + 1] {
        doc.default_output_tokens = Some(bad);
        let err = compile(&doc).unwrap_err();
        assert!(err.contains("default_output_tokens"), "{err}");
    }
    doc.default_output_tokens = None;
    for bad in [0, 101] {
        doc.soft_limit_percent = Some(bad);
        assert!(compile(&doc).unwrap_err().contains("soft_limit_percent"));
    }
}

#[test]
fn budgets_become_metered_limits_with_their_own_counters() {
    use tokenhub_guard::core::budget::{metered_limits_for, Meter};
    use tokenhub_guard::core::quota::{all_counters, limits_for, DAY, MINUTE, MONTH};
    let mut doc = base_doc();
    doc.tenants[0].budget = Some(TokenBudgetDoc { monthly_budget_nano_usd: Some(5_000_000_000), ..Default::default() });
    doc.tenants[0].sub_accounts[0].budget =
        Some(TokenBudgetDoc { tokens_per_day: Some(1_000_000), ..Default::default() });
    doc.keys[0].budget = Some(TokenBudgetDoc { tokens_per_minute: Some(10_000), ..Default::default() });
    doc.keys[0].quota = Some(QuotaDoc { per_minute: Some(10_000), per_day: None });
    assert!(!keys::is_plain(&doc.keys[0]), "a key with a budget is not a plain record");
    let policy = compile(&doc).unwrap();
    let (id, _, _) = make_key(1, 0);
    let key = policy.keys.iter().find(|k| k.id() == id).unwrap();
    let sub = &policy.sub_accounts[key.sub_account];
    let tenant = &policy.tenants[sub.tenant];
    let metered = metered_limits_for(Some(key), sub, tenant);
    let got: Vec<_> = metered.iter().map(|m| (m.limit.limit, m.limit.window, m.meter)).collect();
    assert_eq!(
        got,
        [(10_000, MINUTE, Meter::Tokens), (1_000_000, DAY, Meter::Tokens), (5_000_000_000, MONTH, Meter::Cost)]
    );
    // A request quota of the same size never shares a counter with tokens.
    let requests = limits_for(Some(key), sub, tenant);
    assert!(requests.iter().all(|r| metered.iter().all(|m| m.limit.counter != r.counter)));
    let counters = all_counters(&policy);
    assert!(metered.iter().all(|m| counters.contains(&m.limit.counter)), "every budget counter is created");
    // Another key of the same sub-account: its sub-account and tenant budgets.
    let (other, _, _) = make_key(2, 0);
    let other = policy.keys.iter().find(|k| k.id() == other).unwrap();
    let sales = &policy.sub_accounts[other.sub_account];
    assert_eq!(metered_limits_for(Some(other), sales, tenant).len(), 1, "only acme's dollars");
    // A tenant with no budget: not metered.
    let (globex_key, _, _) = make_key(3, 0);
    let globex_key = policy.keys.iter().find(|k| k.id() == globex_key).unwrap();
    let ops = &policy.sub_accounts[globex_key.sub_account];
    assert!(metered_limits_for(Some(globex_key), ops, &policy.tenants[ops.tenant]).is_empty());
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
    // And back: the same document, plain keys in id order after the rest,
    // a record's hash being the prefix it stores (32 hex digits).
    let mut again = tokenhub_guard::core::bundle::pack::unpack(&packed).unwrap();
    again.keys.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want = doc.clone();
    want.keys.sort_by(|a, b| a.id.cmp(&b.id));
    for k in want.keys.iter_mut().filter(|k| keys::is_plain(k)) {
        k.hash.truncate(2 * keys::RECORD_HASH_LEN);
    }
    assert_eq!(again, want);
    assert!(compile(&again).unwrap_err().contains(".hash: expected 64 hex digits"), "a prefix is not a hash");
}

#[test]
fn a_damaged_key_table_is_refused_by_record() {
    let key = BundleKey::from_bytes([3; 32]);
    let packed = pack(&mixed_doc()).unwrap().to_vec();
    let table = tokenhub_guard::core::bundle::pack::split(&packed).1.unwrap();
    let r = keys::RECORD_LEN;
    assert_eq!(r, 37);
    let sub_at = 12 + keys::RECORD_HASH_LEN;
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(Damage, &str)> = vec![
        (Box::new(|p| p.truncate(p.len() - 1)), "whole number of 37-byte records"),
        (Box::new(move |p| p.copy_within(table..table + 12, table + r)), "record 1: ids are not strictly ascending"),
        (Box::new(move |p| p[table] = b'!'), "record 0: the id is not 12 base62"),
        (Box::new(move |p| p[table + sub_at] = 3), "record 0: sub-account index out of range"),
        (Box::new(move |p| p[table + r - 1] = 2), "record 0: unknown flags"),
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

/// The plaintext an earlier `pack` wrote for `doc`: its JSON part (schema
/// 1), NUL, 57-byte records (id ‖ SHA-256 ‖ sub-account u32 LE ‖ expiry u64
/// LE, u64::MAX = never ‖ flags). Written here by hand, from the layout
/// itself, not with this build's code.
fn packed_in_57_byte_records(doc: &BundleDoc) -> Vec<u8> {
    let mut json_part = doc.clone();
    json_part.keys.retain(|k| !keys::is_plain(k));
    let subs: Vec<(String, String)> =
        doc.tenants.iter().flat_map(|t| t.sub_accounts.iter().map(move |s| (t.id.clone(), s.id.clone()))).collect();
    let mut plain: Vec<&KeyDoc> = doc.keys.iter().filter(|k| keys::is_plain(k)).collect();
    plain.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = serde_json::to_vec(&json_part).unwrap();
    assert_eq!(json_part.schema, 1);
    out.push(0);
    let count = plain.len();
    for k in plain {
        let sub = subs.iter().position(|s| (s.0.as_str(), s.1.as_str()) == (&k.tenant, &k.sub_account)).unwrap();
        out.extend_from_slice(k.id.as_bytes());
        out.extend_from_slice(&tokenhub_guard::core::secret::hash_from_hex(&k.hash).unwrap());
        out.extend_from_slice(&(sub as u32).to_le_bytes());
        out.extend_from_slice(&k.expires_at.unwrap_or(u64::MAX).to_le_bytes());
        out.push(u8::from(k.status == Status::Active));
    }
    assert_eq!(out.len() - out.iter().position(|&b| b == 0).unwrap() - 1, count * 57);
    out
}

#[test]
fn a_bundle_packed_in_the_other_record_layout_is_refused_both_ways() {
    let key = BundleKey::from_bytes([3; 32]);
    let doc = mixed_doc();
    // 57-byte records (an earlier tokenhub-admin) in this build: refused,
    // saying why, never read as 37-byte records.
    let old = packed_in_57_byte_records(&doc);
    let err = open_and_compile(seal_packed(&old, &key, 7), &key).unwrap_err();
    assert!(matches!(err, BundleError::Invalid(_)), "{err:?}");
    let err = err.to_string();
    assert!(
        err.contains("packed by an earlier tokenhub-admin (57-byte records") && err.contains("publish again"),
        "{err}"
    );
    assert!(pack::unpack(&old).is_err());
    // As a delta's base: no delta is packed on it (the publish goes full),
    // and a delta joined to it is refused with the base.
    assert_eq!(delta::pack_delta(&changed(&doc), &old, 7, &[0; 32]).err(), Some(NoDelta::Layout));
    let (base, base_sealed) = delta_base(&key);
    let (delta_sealed, _) = delta_for(&changed(&base), &base_sealed, &key, 8);
    let old_base = seal_packed(&packed_in_57_byte_records(&base), &key, BASE_VERSION);
    let err = open_and_compile(delta::join(&delta_sealed, &old_base).unwrap(), &key).unwrap_err().to_string();
    assert!(err.contains("packed by an earlier tokenhub-admin"), "{err}");
    // A delta in 57-byte records on a base in 37: refused.
    let mut old_delta = changed(&base);
    old_delta.version = 8;
    old_delta.base = Some(BaseRef {
        version: BASE_VERSION,
        fingerprint: tokenhub_guard::core::secret::to_hex(&seal::fingerprint(&base_sealed)),
    });
    let config = delta::join(&seal_packed(&packed_in_57_byte_records(&old_delta), &key, 8), &base_sealed).unwrap();
    let (_, state) = delta::load(base_sealed.clone(), &key, None).unwrap();
    let err = delta::load(config, &key, Some(&state)).unwrap_err().to_string();
    assert!(err.contains("packed by an earlier tokenhub-admin"), "{err}");
    // JSON alone (no records to misread) still opens, in schema 1.
    let json = serde_json::to_vec(&doc).unwrap();
    assert_eq!(open_and_compile(seal_packed(&json, &key, 7), &key).unwrap().keys.len(), 4);
    // This build's plaintext in a build that reads 57-byte records: its JSON
    // part says schema 2, which that build's compile refuses first (the
    // same check as this build's, before any record is read).
    let new = pack(&doc).unwrap();
    let (json_len, _) = pack::split(&new);
    let json_part = schema::parse(&new[..json_len]).unwrap();
    assert_eq!(json_part.schema, pack::PACKED_SCHEMA);
    assert!(compile(&json_part).unwrap_err().contains("schema: 2 is not supported"));
    // Another schema with records: refused.
    let mut other = new.to_vec();
    other.splice(..json_len, serde_json::to_vec(&BundleDoc { schema: 3, ..json_part.clone() }).unwrap());
    let err = open_and_compile(seal_packed(&other, &key, 7), &key).unwrap_err().to_string();
    assert!(err.contains("schema: 3 is not supported"), "{err}");
}

#[test]
fn a_record_keeps_a_hash_prefix_and_an_expiry_a_u32_holds() {
    let mut doc = base_doc();
    let last = u64::from(u32::MAX) - 1;
    doc.keys[0].expires_at = Some(last);
    doc.keys[1].expires_at = Some(last + 1);
    doc.keys[2].expires_at = Some(u64::MAX - 1);
    assert!(keys::is_plain(&doc.keys[0]));
    assert!(!keys::is_plain(&doc.keys[1]) && !keys::is_plain(&doc.keys[2]));
    let key = BundleKey::from_bytes([3; 32]);
    let packed = pack(&doc).unwrap();
    // Past 2106: in the JSON part, exact, with the whole hash.
    let (json_len, table) = pack::split(&packed);
    assert_eq!(packed.len() - table.unwrap(), keys::RECORD_LEN);
    assert_eq!(schema::parse(&packed[..json_len]).unwrap().keys.len(), 2);
    let policy = open_and_compile(seal_packed(&packed, &key, 7), &key).unwrap();
    for (k, len) in doc.keys.iter().zip([keys::RECORD_HASH_LEN, 32, 32]) {
        let got = policy.keys.get(k.id.as_bytes()).unwrap();
        assert_eq!(got.expires_at, k.expires_at, "{}", k.id);
        assert_eq!(got.stored_hash(), &tokenhub_guard::core::secret::hash_from_hex(&k.hash).unwrap()[..len]);
    }
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
    assert!(policy.tenants[0].limits.models.as_ref().is_some_and(|m| m.allows("gpt-4o-mini")));
    assert!(policy.sub_accounts[1].limits.models.is_some());
    assert!(policy.sub_accounts[0].limits.models.is_none());
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

// ------------------------------------------------------------ deltas

use tokenhub_guard::core::bundle::delta::{self, NoDelta};

const BASE_VERSION: u64 = 7;

/// A base with keys 1-3 plain and key 4 limited, sealed (binary).
fn delta_base(key: &BundleKey) -> (BundleDoc, Vec<u8>) {
    let mut doc = mixed_doc();
    doc.keys[1].status = Status::Active;
    doc.keys[2].expires_at = None;
    let sealed = seal_packed(&pack(&doc).unwrap(), key, BASE_VERSION);
    (doc, sealed)
}

fn delta_for(doc: &BundleDoc, base_sealed: &[u8], key: &BundleKey, version: u64) -> (Vec<u8>, usize) {
    let plain = seal::open(base_sealed, key).unwrap();
    let mut doc = doc.clone();
    doc.version = version;
    let (packed, records) = delta::pack_delta(&doc, &plain, BASE_VERSION, &seal::fingerprint(base_sealed)).unwrap();
    (seal_packed(&packed, key, version), records)
}

/// Key 1 revoked, key 2 disabled, key 5 created, key 3 now limited.
fn changed(doc: &BundleDoc) -> BundleDoc {
    let mut doc = doc.clone();
    doc.keys.retain(|k| k.id != make_key(1, 0).0);
    doc.keys.iter_mut().find(|k| k.id == make_key(2, 0).0).unwrap().status = Status::Disabled;
    doc.keys.iter_mut().find(|k| k.id == make_key(3, 0).0).unwrap().quota =
        Some(QuotaDoc { per_minute: Some(9), per_day: None });
    doc.keys.push(key_doc(5, "acme", "sales"));
    doc
}

#[test]
fn a_delta_revokes_disables_adds_and_limits_keys_on_an_untouched_base() {
    let key = BundleKey::from_bytes([3; 32]);
    let (doc, base_sealed) = delta_base(&key);
    let new = changed(&doc);
    let (delta_sealed, records) = delta_for(&new, &base_sealed, &key, 8);
    // Removal of 1, change of 2, addition of 5; key 3 moved to the
    // limited keys (found there first: no removal record).
    assert_eq!(records, 3);
    let config = delta::join(&delta_sealed, &base_sealed).unwrap();
    assert_eq!(delta::peek_header(&config).unwrap().version, 8);
    let (full, base_state) = delta::load(base_sealed.clone(), &key, None).unwrap();
    let (policy, same_base) = delta::load(config.clone(), &key, Some(&base_state)).unwrap();
    assert!(std::sync::Arc::ptr_eq(&same_base.table, &base_state.table), "the base was loaded again");
    let uncached = open_and_compile(&config, &key).unwrap();
    for p in [&policy, &uncached] {
        assert_eq!(p.version, 8);
        assert!(p.keys.get(make_key(1, 0).0.as_bytes()).is_none(), "revoked key still known");
        assert!(!p.keys.get(make_key(2, 0).0.as_bytes()).unwrap().active);
        assert_eq!(p.keys.get(make_key(3, 0).0.as_bytes()).unwrap().quota().and_then(|q| q.per_minute), Some(9));
        assert!(p.keys.get(make_key(4, 0).0.as_bytes()).unwrap().quota().is_some());
        assert!(p.keys.get(make_key(5, 0).0.as_bytes()).unwrap().active);
        assert_eq!(p.keys.iter().count(), 4, "{:?}", p.keys.iter().map(|k| k.id().to_string()).collect::<Vec<_>>());
        assert_eq!(p.keys.len(), 4);
        assert_eq!(p.keys.iter().count(), 4);
    }
    // The base itself is untouched.
    assert!(full.keys.get(make_key(1, 0).0.as_bytes()).is_some());
    assert!(full.keys.get(make_key(5, 0).0.as_bytes()).is_none());
    // The same decisions as the new document published in full.
    let direct = compile(&new).unwrap();
    for n in 1..=6 {
        let id = make_key(n, 0).0;
        assert_eq!(
            format!("{:?}", direct.keys.get(id.as_bytes())),
            format!("{:?}", policy.keys.get(id.as_bytes())),
            "key {n}"
        );
    }
}

#[test]
fn a_delta_for_another_base_or_not_newer_or_alone_or_damaged_is_refused() {
    let key = BundleKey::from_bytes([3; 32]);
    let (doc, base_sealed) = delta_base(&key);
    let (delta_sealed, _) = delta_for(&changed(&doc), &base_sealed, &key, 8);
    // The same base content sealed again (another nonce): another base.
    let other_base = seal::to_binary(&seal(&pack(&doc).unwrap(), &key, BASE_VERSION, [2; 12]).unwrap()).unwrap();
    let err = open_and_compile(delta::join(&delta_sealed, &other_base).unwrap(), &key).unwrap_err().to_string();
    assert!(err.contains("applies to base version 7") && err.contains("publish again"), "{err}");
    let (_, state) = delta::load(base_sealed.clone(), &key, None).unwrap();
    let err = delta::load(delta::join(&delta_sealed, &other_base).unwrap(), &key, Some(&state)).unwrap_err();
    assert!(err.to_string().contains("applies to base version 7"), "{err}");
    // Not newer than its base.
    let (stale, _) = delta_for(&changed(&doc), &base_sealed, &key, BASE_VERSION);
    let err = open_and_compile(delta::join(&stale, &base_sealed).unwrap(), &key).unwrap_err().to_string();
    assert!(err.contains("not newer than its base"), "{err}");
    // A delta alone is no bundle.
    let err = open_and_compile(&delta_sealed, &key).unwrap_err().to_string();
    assert!(err.contains("without its base"), "{err}");
    // Damaged: a flipped byte in the delta, a truncated container.
    let mut config = delta::join(&delta_sealed, &base_sealed).unwrap();
    config[20] ^= 1;
    assert!(open_and_compile(&config, &key).is_err());
    let config = delta::join(&delta_sealed, &base_sealed).unwrap();
    for cut in [4, 8, 9 + delta_sealed.len()] {
        assert!(open_and_compile(&config[..cut], &key).is_err(), "cut at {cut}");
    }
    assert_ne!(delta::fingerprint(&config), seal::fingerprint(&base_sealed));
}

#[test]
fn a_delta_that_would_renumber_the_bases_sub_accounts_is_not_packed() {
    let key = BundleKey::from_bytes([3; 32]);
    let (doc, base_sealed) = delta_base(&key);
    let plain = seal::open(&base_sealed, &key).unwrap();
    let mut new = doc.clone();
    new.tenants.swap(0, 1);
    let got = delta::pack_delta(&new, &plain, BASE_VERSION, &seal::fingerprint(&base_sealed));
    assert_eq!(got.err(), Some(NoDelta::Renumbered));
    // A new sub-account at the end keeps the numbering.
    new = doc.clone();
    new.tenants[1].sub_accounts.push(SubAccountDoc { id: "extra".into(), ..Default::default() });
    new.keys.push(key_doc(6, "globex", "extra"));
    assert!(delta::pack_delta(&new, &plain, BASE_VERSION, &seal::fingerprint(&base_sealed)).is_ok());
}

#[test]
fn a_delta_is_checked_against_a_base_summary_alone() {
    let key = BundleKey::from_bytes([3; 32]);
    let doc = mixed_doc();
    let base_sealed = seal_packed(&pack(&doc).unwrap(), &key, 7);
    let (_, base) = delta::load(base_sealed.clone(), &key, None).unwrap();
    let mut new = doc.clone();
    new.version = 8;
    new.keys.retain(|k| k.id != make_key(1, 0).0);
    let plain = seal::open(&base_sealed, &key).unwrap();
    let (packed, _) = delta::pack_delta(&new, &plain, 7, &seal::fingerprint(&base_sealed)).unwrap();
    let config = delta::join(&seal_packed(&packed, &key, 8), &base_sealed).unwrap();
    let checked = delta::check_deferred(&config, &key, &base.summary()).unwrap().unwrap();
    assert_eq!(checked.version, 8);
    assert!(checked.keys.get(make_key(4, 0).0.as_bytes()).is_some(), "the limited keys are there");
    // Another base, or a summary that renumbers sub-accounts: not accepted.
    let mut other = base.summary();
    other.fingerprint = "00".repeat(32);
    assert!(delta::check_deferred(&config, &key, &other).is_none());
    let mut renumbered = base.summary();
    renumbered.sub_accounts.swap(0, 1);
    assert!(delta::check_deferred(&config, &key, &renumbered).unwrap().is_err());
    let mut older = base.summary();
    older.version = 6;
    assert!(delta::check_deferred(&config, &key, &older).unwrap().is_err());
    assert!(delta::check_deferred(&base_sealed, &key, &base.summary()).is_none());
}
