//! Fixtures shared by the native tests of the core.
#![allow(dead_code)]

use tokenhub_guard::core::apikey;
use tokenhub_guard::core::bundle::schema::*;
use tokenhub_guard::core::bundle::shared;
use tokenhub_guard::core::secret::{hash_secret, to_hex};

pub const NOW: u64 = 1_800_000_000;

/// A deterministic key: id from `n`, secret from `n` and `generation`.
pub fn make_key(n: u32, generation: u32) -> (String, String, String) {
    let id = format!("K{n:011}");
    let secret = format!("S{n:010}G{generation:020}");
    let full = apikey::assemble(&id, &secret).unwrap();
    let hash = to_hex(&hash_secret(&id, &secret));
    (id, full, hash)
}

pub fn key_doc(n: u32, tenant: &str, sub: &str) -> KeyDoc {
    let (id, _, hash) = make_key(n, 0);
    KeyDoc { id, tenant: tenant.into(), sub_account: sub.into(), hash, ..Default::default() }
}

/// acme (eu) with sub-accounts research and sales; globex (us) with ops.
/// Key 1: acme/research. Key 2: acme/sales. Key 3: globex/ops.
pub fn base_doc() -> BundleDoc {
    BundleDoc {
        schema: SCHEMA_VERSION,
        version: 7,
        issued_at: NOW,
        tenants: vec![
            TenantDoc {
                id: "acme".into(),
                name: "Acme".into(),
                region: "eu".into(),
                sub_accounts: vec![
                    SubAccountDoc { id: "research".into(), ..Default::default() },
                    SubAccountDoc { id: "sales".into(), ..Default::default() },
                ],
                ..Default::default()
            },
            TenantDoc {
                id: "globex".into(),
                region: "us".into(),
                provider_secrets: [("openai".to_string(), "sk-globex-own".into())].into(),
                sub_accounts: vec![SubAccountDoc { id: "ops".into(), ..Default::default() }],
                ..Default::default()
            },
        ],
        keys: vec![key_doc(1, "acme", "research"), key_doc(2, "acme", "sales"), key_doc(3, "globex", "ops")],
        providers: vec![
            ProviderDoc {
                id: "openai".into(),
                path_prefix: "/v1/".into(),
                header: "authorization".into(),
                format: "Bearer {secret}".into(),
                secret: Some("sk-platform-openai".into()),
                shared_endpoints: shared::expand("/v1/", &shared::OPENAI),
            },
            ProviderDoc {
                id: "anthropic".into(),
                path_prefix: "/anthropic/".into(),
                header: "x-api-key".into(),
                format: "{secret}".into(),
                secret: Some("sk-ant-platform".into()),
                shared_endpoints: shared::expand("/anthropic/", &shared::ANTHROPIC),
            },
        ],
        oidc: vec![],
        quota_mode: Default::default(),
        prices: vec![],
        soft_limit_percent: None,
        default_output_tokens: None,
        base: None,
    }
}

pub fn allowlist(cidrs: &[&str]) -> Option<IpAllowlistDoc> {
    Some(IpAllowlistDoc { enabled: true, cidrs: cidrs.iter().map(|s| s.to_string()).collect() })
}
