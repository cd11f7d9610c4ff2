//! The core's native tests use the test kit's policy fixture
//! (`testkit/src/fixture.rs`, also the fuzz targets'): its `BASIC` data set,
//! parsed by the core, as the base document each test changes.
#![allow(dead_code)]

use tokenhub_guard::core::bundle::schema::{self, BundleDoc, IpAllowlistDoc, KeyDoc};
use tokenhub_guard::core::bundle::shared;
use tokenhub_testkit::fixture::{self, BASIC};
use tokenhub_testkit::keys::{forge_key, stored_hash};

pub const NOW: u64 = fixture::NOW;

/// Key `n` as (id, full key, stored hash). Keys 1, 2, 3 are the base
/// document's (acme/research, acme/sales, globex/ops); any other `n` is an id
/// no bundle holds until a test adds it (`key_doc`). `generation` 0 is the
/// key's secret; any other is another secret under the same id (a
/// rotation's new secret, or a wrong one).
pub fn make_key(n: u32, generation: u32) -> (String, String, String) {
    let base = usize::try_from(n).ok().and_then(|n| n.checked_sub(1)).filter(|&i| i < BASIC.key_count());
    let (id, secret) = match base.map(|i| BASIC.key(i)) {
        Some(k) if generation == 0 => (k.id.to_string(), k.secret.to_string()),
        Some(k) => (k.id.to_string(), format!("S{n:010}G{generation:020}")),
        None => (format!("K{n:011}"), format!("S{n:010}G{generation:020}")),
    };
    let (full, hash) = (forge_key(&id, &secret), stored_hash(&id, &secret));
    (id, full, hash)
}

/// A plain key record of key `n` (see `make_key`).
pub fn key_doc(n: u32, tenant: &str, sub: &str) -> KeyDoc {
    let (id, _, hash) = make_key(n, 0);
    KeyDoc { id, tenant: tenant.into(), sub_account: sub.into(), hash, ..Default::default() }
}

/// acme (eu) with sub-accounts research and sales; globex (us) with ops and
/// its own OpenAI secret; keys 1, 2, 3 (see `make_key`); providers openai
/// and anthropic with the core's presets of shared endpoints, as `provider
/// set` gives them.
pub fn base_doc() -> BundleDoc {
    let mut doc = schema::parse(&BASIC.json()).unwrap();
    for p in &mut doc.providers {
        p.shared_endpoints = shared::expand(&p.path_prefix, shared::preset(&p.id).unwrap());
    }
    doc
}

pub fn allowlist(cidrs: &[&str]) -> Option<IpAllowlistDoc> {
    Some(IpAllowlistDoc { enabled: true, cidrs: cidrs.iter().map(|s| s.to_string()).collect() })
}
