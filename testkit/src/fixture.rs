//! The one fixture of the core's tests and of the fuzz harness: a fixed
//! policy written as a plain model (tenants, sub-accounts, keys, providers,
//! OIDC principals) that the fuzz oracles read directly, rendered to the
//! bundle JSON (schema 1) the core parses and compiles. Key strings and
//! stored hashes come from the test kit's oracle of their documented formats
//! (`keys`), not from the core's own functions; so this module never depends
//! on the guard, and each user parses the JSON with the core itself.
//!
//! Two data sets of the one model: `FULL` (4 tenants, 11 keys in every
//! state, allowlists, scopes, rotations, quotas, OIDC principals: what the
//! fuzz targets check the decision against) and `BASIC` (three plain keys of
//! two tenants and two providers, none of the restrictions: the base
//! document the core's unit tests change one field at a time).

use crate::keys::stored_hash;

/// The clock of every fixture: keys expire and rotations end relative to it.
pub const NOW: u64 = 1_800_000_000;

/// An IP allowlist.
pub struct List {
    pub enabled: bool,
    pub cidrs: &'static [&'static str],
}

/// Scopes: allowed methods and path prefixes (empty: any).
pub struct ScopeM {
    pub methods: &'static [&'static str],
    pub prefixes: &'static [&'static str],
}

/// A sub-account.
pub struct SubM {
    pub id: &'static str,
    pub active: bool,
    pub allow: Option<List>,
    pub scopes: Option<ScopeM>,
}

/// A tenant and its sub-accounts.
pub struct TenantM {
    pub id: &'static str,
    pub region: &'static str,
    pub active: bool,
    pub allow: Option<List>,
    /// (provider id, the tenant's own upstream secret).
    pub own: &'static [(&'static str, &'static str)],
    pub subs: &'static [SubM],
}

/// An API key.
pub struct KeyM {
    pub id: &'static str,
    pub tenant: usize,
    /// Index into the tenant's `subs`.
    pub sub: usize,
    pub secret: &'static str,
    /// (previous secret, valid until).
    pub prev: Option<(&'static str, u64)>,
    pub active: bool,
    pub expires: Option<u64>,
    pub scopes: Option<ScopeM>,
    pub allow: Option<List>,
}

/// An OIDC principal: (issuer, claim, value) → tenant / sub-account.
pub struct PrincipalM {
    pub issuer: &'static str,
    pub claim: &'static str,
    pub value: &'static str,
    pub tenant: usize,
    pub sub: usize,
    pub scopes: Option<ScopeM>,
}

pub const PRINCIPALS: &[PrincipalM] = &[
    PrincipalM {
        issuer: "https://accounts.google.com",
        claim: "sub",
        value: "1234567890",
        tenant: 0,
        sub: 0,
        scopes: Some(ScopeM { methods: &["GET"], prefixes: &[] }),
    },
    PrincipalM {
        issuer: "https://accounts.google.com",
        claim: "email",
        value: "sales@acme.example",
        tenant: 0,
        sub: 1,
        scopes: None,
    },
    PrincipalM { issuer: "https://github.com", claim: "sub", value: "1234567890", tenant: 1, sub: 0, scopes: None },
    PrincipalM {
        issuer: "https://login.microsoftonline.com/x/v2.0",
        claim: "oid",
        value: "ffff-0000",
        tenant: 2,
        sub: 0,
        scopes: None,
    },
];

/// An upstream provider.
pub struct ProviderM {
    pub id: &'static str,
    pub prefix: &'static str,
    pub header: &'static str,
    pub format: &'static str,
    pub secret: Option<&'static str>,
    /// Where the platform's secret may be used ("METHOD /path[/*]").
    pub shared: &'static [&'static str],
}

const fn on(cidrs: &'static [&'static str]) -> Option<List> {
    Some(List { enabled: true, cidrs })
}

pub const PROVIDERS: &[ProviderM] = &[
    ProviderM {
        id: "openai",
        prefix: "/v1/",
        header: "authorization",
        format: "Bearer {secret}",
        secret: Some("sk-platform-openai"),
        shared: &["POST /v1/chat/completions", "GET /v1/models", "GET /v1/models/*", "* /v1/embeddings"],
    },
    ProviderM {
        id: "openai-chat",
        prefix: "/v1/chat",
        header: "authorization",
        format: "Bearer {secret}",
        secret: Some("sk-platform-chat"),
        shared: &["* /v1/chat", "POST /v1/chat/*"],
    },
    ProviderM {
        id: "anthropic",
        prefix: "/anthropic/",
        header: "x-api-key",
        format: "{secret}",
        secret: Some("sk-ant"),
        shared: &["POST /anthropic/v1/messages", "GET /anthropic/v1/models"],
    },
    ProviderM {
        id: "byo",
        prefix: "/byo/v2",
        header: "authorization",
        format: "Token {secret}",
        secret: None,
        shared: &[],
    },
];

pub const TENANTS: &[TenantM] = &[
    TenantM {
        id: "acme",
        region: "eu",
        active: true,
        allow: on(&["10.0.0.0/8", "2001:db8::/32", "::ffff:198.51.100.0/120", "127.0.0.1"]),
        own: &[],
        subs: &[
            SubM { id: "research", active: true, allow: None, scopes: None },
            SubM {
                id: "sales",
                active: true,
                allow: on(&["10.1.0.0/16", "2001:db8::/32"]),
                scopes: Some(ScopeM { methods: &["POST", "GET"], prefixes: &["/v1/chat", "/anthropic/"] }),
            },
            SubM { id: "frozen", active: false, allow: None, scopes: None },
        ],
    },
    TenantM {
        id: "globex",
        region: "us",
        active: true,
        allow: None,
        own: &[("openai", "sk-globex-own"), ("byo", "byo-globex")],
        subs: &[
            SubM { id: "ops", active: true, allow: Some(List { enabled: false, cidrs: &["10.9.9.9"] }), scopes: None },
            SubM { id: "lab", active: true, allow: on(&["0.0.0.0/0"]), scopes: None },
        ],
    },
    TenantM {
        id: "initech",
        region: "ap",
        active: false,
        allow: None,
        own: &[],
        subs: &[SubM { id: "main", active: true, allow: None, scopes: None }],
    },
    TenantM {
        id: "umbrella",
        region: "eu",
        active: true,
        allow: on(&[]),
        own: &[],
        subs: &[SubM { id: "x", active: true, allow: None, scopes: None }],
    },
];

pub const KEYS: &[KeyM] = &[
    key("K0acmeRsrch0", 0, 0, "S0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    KeyM {
        prev: Some(("P1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", NOW + 100)),
        ..key("K1acmeRotat1", 0, 0, "S1cccccccccccccccccccccccccccccc")
    },
    KeyM {
        scopes: Some(ScopeM { methods: &["POST"], prefixes: &["/v1/chat/completions", "/anthropic/v1/messages"] }),
        allow: on(&["10.1.2.0/24", "2001:db8:1::/48"]),
        ..key("K2acmeSales2", 0, 1, "S2dddddddddddddddddddddddddddddd")
    },
    KeyM { active: false, ..key("K3acmeDsbld3", 0, 0, "S3eeeeeeeeeeeeeeeeeeeeeeeeeeeeee") },
    KeyM { expires: Some(NOW + 50), ..key("K4acmeExpir4", 0, 0, "S4ffffffffffffffffffffffffffffff") },
    key("K5acmeFrozn5", 0, 2, "S5gggggggggggggggggggggggggggggg"),
    key("K6globexOps6", 1, 0, "S6hhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"),
    KeyM {
        scopes: Some(ScopeM { methods: &[], prefixes: &["/byo/", "/v1/embeddings"] }),
        ..key("K7globexLab7", 1, 1, "S7iiiiiiiiiiiiiiiiiiiiiiiiiiiiii")
    },
    key("K8initechMa8", 2, 0, "S8jjjjjjjjjjjjjjjjjjjjjjjjjjjjjj"),
    key("K9umbrellaX9", 3, 0, "S9kkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"),
    KeyM {
        prev: Some(("PAllllllllllllllllllllllllllllll", NOW - 1)),
        ..key("KAacmeGraceA", 0, 0, "SAmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm")
    },
];

const fn key(id: &'static str, tenant: usize, sub: usize, secret: &'static str) -> KeyM {
    KeyM { id, tenant, sub, secret, prev: None, active: true, expires: None, scopes: None, allow: None }
}

/// Which part of the model a bundle holds, and how.
pub struct DataSet {
    /// The bundle's version.
    pub version: u64,
    /// Indices into `KEYS`, in the order the bundle lists them (it holds
    /// their tenants and sub-accounts, in model order), or `None` for the
    /// whole model.
    pub keys: Option<&'static [usize]>,
    /// Ids of `PROVIDERS` (tenants' own secrets for other providers are left
    /// out), or `None` for all.
    pub providers: Option<&'static [&'static str]>,
    /// IP allowlists, scopes, quotas and OIDC principals; without them only
    /// the tenancy, the keys' secrets and states, and the providers.
    pub restrictions: bool,
}

/// The whole model: what the fuzz targets run against.
pub const FULL: DataSet = DataSet { version: 41, keys: None, providers: None, restrictions: true };

/// Keys 1, 2, 3 of the unit tests: `K0acmeRsrch0` (acme/research),
/// `K2acmeSales2` (acme/sales), `K6globexOps6` (globex/ops; globex has its
/// own OpenAI secret); providers openai and anthropic; no restrictions.
pub const BASIC: DataSet =
    DataSet { version: 7, keys: Some(&[0, 2, 6]), providers: Some(&["openai", "anthropic"]), restrictions: false };

impl DataSet {
    fn has_key(&self, key: usize) -> bool {
        self.keys.is_none_or(|keys| keys.contains(&key))
    }

    fn has_sub(&self, tenant: usize, sub: usize) -> bool {
        self.keys.is_none()
            || KEYS.iter().enumerate().any(|(i, k)| self.has_key(i) && (k.tenant, k.sub) == (tenant, sub))
    }

    fn has_tenant(&self, tenant: usize) -> bool {
        (0..TENANTS[tenant].subs.len()).any(|sub| self.has_sub(tenant, sub))
    }

    fn has_provider(&self, id: &str) -> bool {
        self.providers.is_none_or(|ids| ids.contains(&id))
    }

    /// How many keys the data set holds.
    pub fn key_count(&self) -> usize {
        self.keys.map_or(KEYS.len(), <[usize]>::len)
    }

    /// The data set's key `i` (in the order of its `keys`; panics past
    /// `key_count`).
    pub fn key(&self, i: usize) -> &'static KeyM {
        let held = self.keys.map_or(i, |keys| keys[i]);
        &KEYS[held]
    }

    /// The data set as bundle JSON (schema 1).
    pub fn json(&self) -> Vec<u8> {
        let rule = |v: serde_json::Value| if self.restrictions { v } else { serde_json::Value::Null };
        let tenants: Vec<_> = TENANTS
            .iter()
            .enumerate()
            .filter(|(t, _)| self.has_tenant(*t))
            .map(|(ti, t)| {
                serde_json::json!({
                    "id": t.id,
                    "name": t.id.to_uppercase(),
                    "status": status(t.active),
                    "region": t.region,
                    "ip_allowlist": rule(list_json(&t.allow)),
                    "quota": rule(serde_json::json!({ "per_minute": 600, "per_day": 100000 })),
                    "provider_secrets": t.own.iter().filter(|(p, _)| self.has_provider(p)).map(|(p, s)| (p.to_string(), serde_json::json!(s))).collect::<serde_json::Map<_, _>>(),
                    "sub_accounts": t.subs.iter().enumerate().filter(|(si, _)| self.has_sub(ti, *si)).map(|(_, s)| serde_json::json!({
                        "id": s.id,
                        "status": status(s.active),
                        "ip_allowlist": rule(list_json(&s.allow)),
                        "scopes": rule(scopes_json(&s.scopes)),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let keys: Vec<_> = (0..self.key_count())
            .map(|i| self.key(i))
            .map(|k| {
                serde_json::json!({
                    "id": k.id,
                    "tenant": TENANTS[k.tenant].id,
                    "sub_account": TENANTS[k.tenant].subs[k.sub].id,
                    "hash": stored_hash(k.id, k.secret),
                    "previous": k.prev.map(|(s, until)| serde_json::json!({ "hash": stored_hash(k.id, s), "valid_until": until })),
                    "status": status(k.active),
                    "expires_at": k.expires,
                    "scopes": rule(scopes_json(&k.scopes)),
                    "ip_allowlist": rule(list_json(&k.allow)),
                    "quota": rule(serde_json::json!({ "per_minute": 60 })),
                })
            })
            .collect();
        let providers: Vec<_> = PROVIDERS
            .iter()
            .filter(|p| self.has_provider(p.id))
            .map(|p| {
                serde_json::json!({ "id": p.id, "path_prefix": p.prefix, "header": p.header, "format": p.format, "secret": p.secret, "shared_endpoints": p.shared })
            })
            .collect();
        let oidc: Vec<_> = PRINCIPALS
            .iter()
            .filter(|o| self.restrictions && self.has_sub(o.tenant, o.sub))
            .map(|o| {
                serde_json::json!({
                    "issuer": o.issuer,
                    "claim": o.claim,
                    "value": o.value,
                    "tenant": TENANTS[o.tenant].id,
                    "sub_account": TENANTS[o.tenant].subs[o.sub].id,
                    "scopes": scopes_json(&o.scopes),
                })
            })
            .collect();
        let mut doc = serde_json::json!({
            "schema": 1,
            "version": self.version,
            "issued_at": NOW,
            "tenants": tenants,
            "keys": keys,
            "providers": providers,
            "oidc": oidc,
        });
        strip_nulls(&mut doc);
        serde_json::to_vec_pretty(&doc).unwrap_or_default()
    }
}

fn status(active: bool) -> &'static str {
    if active {
        "active"
    } else {
        "disabled"
    }
}

fn list_json(l: &Option<List>) -> serde_json::Value {
    match l {
        Some(l) => serde_json::json!({ "enabled": l.enabled, "cidrs": l.cidrs }),
        None => serde_json::Value::Null,
    }
}

fn scopes_json(s: &Option<ScopeM>) -> serde_json::Value {
    match s {
        Some(s) => serde_json::json!({ "methods": s.methods, "path_prefixes": s.prefixes }),
        None => serde_json::Value::Null,
    }
}

/// Drops `null` members (absent optional fields), keeping the JSON minimal.
fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn by_id<'a>(items: &'a Value, id: &Value) -> &'a Value {
        items.as_array().unwrap().iter().find(|x| &x["id"] == id).unwrap()
    }

    /// Every member of `part` is `whole`'s, except the restrictions, which
    /// `part` leaves out; nested lists (sub-accounts) are subsets in turn.
    fn assert_subset(part: &Value, whole: &Value, what: &str) {
        const RESTRICTIONS: [&str; 3] = ["ip_allowlist", "scopes", "quota"];
        for (name, value) in part.as_object().unwrap() {
            assert!(!RESTRICTIONS.contains(&name.as_str()), "{what}.{name}: BASIC holds no restrictions");
            match (name.as_str(), value) {
                ("sub_accounts", Value::Array(subs)) => {
                    for s in subs {
                        assert_subset(s, by_id(&whole[name], &s["id"]), &format!("{what}.{}", s["id"]));
                    }
                }
                ("provider_secrets", Value::Object(own)) => {
                    own.iter().for_each(|(p, s)| assert_eq!(&whole[name][p], s, "{what}.{name}.{p}"))
                }
                _ => assert_eq!(&whole[name], value, "{what}.{name}"),
            }
        }
    }

    #[test]
    fn the_basic_data_set_is_part_of_the_full_one() {
        let full: Value = serde_json::from_slice(&FULL.json()).unwrap();
        let basic: Value = serde_json::from_slice(&BASIC.json()).unwrap();
        for list in ["tenants", "keys", "providers"] {
            let items = basic[list].as_array().unwrap();
            assert!(!items.is_empty(), "{list}");
            for item in items {
                assert_subset(item, by_id(&full[list], &item["id"]), &format!("{list}.{}", item["id"]));
            }
        }
        assert_eq!(basic["keys"].as_array().unwrap().len(), BASIC.key_count());
        assert_eq!(basic["tenants"].as_array().unwrap().len(), 2);
        assert!(basic.get("oidc").is_none_or(|o| o.as_array().is_some_and(Vec::is_empty)));
        assert_eq!(full["keys"].as_array().unwrap().len(), KEYS.len());
        assert_eq!(full["oidc"].as_array().unwrap().len(), PRINCIPALS.len());
        // The model's key `i` of a data set is the one its JSON holds at `i`.
        for i in 0..BASIC.key_count() {
            assert_eq!(basic["keys"][i]["id"], BASIC.key(i).id);
        }
    }
}
