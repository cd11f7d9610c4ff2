//! The fuzz targets' fixture: the test kit's policy model (`FULL`, read
//! directly by the oracles), compiled by the core once, with the key strings
//! and sealed bundles the targets draw from.

use std::sync::OnceLock;
use tokenhub_guard::core::bundle::{self, BundleKey, Policy};
pub use tokenhub_testkit::fixture::*;

/// The bundle key every target opens with.
pub const BUNDLE_KEY: [u8; 32] = [0x42; 32];
pub const FIXTURE_VERSION: u64 = FULL.version;

pub fn bundle_key() -> BundleKey {
    BundleKey::from_bytes(BUNDLE_KEY)
}

/// The base62 digit of a byte (the test kit's oracle).
pub use tokenhub_testkit::keys::base62;
/// `thk_` + id + secret + CRC32(id ‖ secret) as six base62 digits, most
/// significant first (the test kit's oracle of the format).
pub use tokenhub_testkit::keys::forge_key as key_string;

/// The whole model as bundle JSON (schema 1), with quotas so the whole
/// compiler is exercised.
pub fn fixture_json() -> Vec<u8> {
    FULL.json()
}

/// Everything the decision target needs, built once.
pub struct Fixture {
    pub policy: Policy,
    /// Per key of `KEYS`: the full key string with its current secret.
    pub current: Vec<String>,
    /// Per key: the full key string with its previous secret, if any.
    pub previous: Vec<Option<String>>,
    /// Credentials the decision decoder draws from: every key's current and
    /// previous strings, each id with a wrong secret (valid checksum), an
    /// unknown id, a secret under another id, and near-keys.
    pub token_pool: Vec<String>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let doc = bundle::schema::parse(&fixture_json()).unwrap_or_else(|e| panic!("fixture JSON: {e}"));
        let policy = bundle::compile(&doc).unwrap_or_else(|e| panic!("fixture does not compile: {e}"));
        let current: Vec<String> = KEYS.iter().map(|k| key_string(k.id, k.secret)).collect();
        let previous: Vec<Option<String>> = KEYS.iter().map(|k| k.prev.map(|(s, _)| key_string(k.id, s))).collect();
        let mut token_pool = Vec::new();
        for (i, k) in KEYS.iter().enumerate() {
            token_pool.push(current[i].clone());
            if let Some(p) = &previous[i] {
                token_pool.push(p.clone());
            }
            // Right id, wrong secret, valid checksum.
            token_pool.push(key_string(k.id, &k.secret.replace('S', "W")));
        }
        // Unknown id; a secret of one key under another key's id.
        token_pool.push(key_string("ZZZZZZZZZZZZ", KEYS[0].secret));
        token_pool.push(key_string(KEYS[6].id, KEYS[0].secret));
        token_pool.push(KEYS[0].secret.to_string());
        token_pool.push(format!("thk_{}{}", KEYS[0].id, KEYS[0].secret));
        Fixture { policy, current, previous, token_pool }
    })
}

/// The sealed bundles a `bundle_open` input may legitimately open to: the
/// only texts that carry a valid tag under `BUNDLE_KEY` (nonces are fixed,
/// so these are deterministic).
pub fn sealed_bundles() -> Vec<String> {
    let key = bundle_key();
    let minimal = br#"{"schema":1,"version":3}"#;
    [
        bundle::seal(&fixture_json(), &key, FIXTURE_VERSION, [1; 12]),
        bundle::seal(minimal, &key, 3, [2; 12]),
        // Header and body disagree on the version: opens, must not compile.
        bundle::seal(minimal, &key, 4, [3; 12]),
        // Authentic, but the body is not a bundle.
        bundle::seal(br#"{"schema":1,"version":5,"tenants":[{"idd":"x"}]}"#, &key, 5, [4; 12]),
    ]
    .into_iter()
    .map(|r| r.unwrap_or_else(|e| panic!("sealing a fixture: {e}")))
    .collect()
}

/// Sealed with another key: must never open.
pub fn foreign_sealed() -> String {
    bundle::seal(&fixture_json(), &BundleKey::from_bytes([7; 32]), FIXTURE_VERSION, [1; 12]).unwrap_or_default()
}
