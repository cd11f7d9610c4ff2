//! A fixed policy, written as a plain model the oracles read directly, and
//! rendered to the bundle JSON the core compiles. Key strings and stored
//! hashes are computed here from their documented formats (CRC32 in six
//! base62 digits; SHA-256 over a domain tag, the key id, a zero byte and the
//! secret), not by the core's own functions.

use std::net::IpAddr;
use std::sync::OnceLock;
use tokenhub_guard::core::bundle::{self, BundleKey, Policy};

pub const NOW: u64 = 1_800_000_000;
/// The bundle key every target opens with.
pub const BUNDLE_KEY: [u8; 32] = [0x42; 32];
pub const FIXTURE_VERSION: u64 = 41;

pub fn bundle_key() -> BundleKey {
    BundleKey::from_bytes(BUNDLE_KEY)
}

/// `thk_` + id + secret + CRC32(id ‖ secret) as six base62 digits, most
/// significant first (the test kit's oracle of the format).
pub use tokenhub_testkit::keys::forge_key as key_string;
/// Hex SHA-256 of the stored form of a secret (the test kit's oracle).
pub use tokenhub_testkit::keys::{base62, stored_hash};

// ---------------------------------------------------------------- CIDR model

/// A network as the oracle sees it: IPv4 or IPv6 bits and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    V4(u32, u8),
    V6(u128, u8),
}

const MAPPED_PREFIX: u128 = 0xffff_u128 << 32;

/// Reads `addr` or `addr/len` (decimal `len` without leading zeros) with
/// the standard library's address parser (which refuses IPv4 octets with
/// leading zeros, as octal or decimal is ambiguous); `None` when malformed
/// or host bits are set. An IPv4-mapped IPv6 network of length ≥ 96 means
/// the IPv4 network.
pub fn model_rule(text: &str) -> Option<Rule> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => {
            let digits = !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit());
            if !digits || (l.len() > 1 && l.starts_with('0')) {
                return None;
            }
            (a.parse::<IpAddr>().ok()?, Some(l.parse::<u16>().ok()?))
        }
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    match addr {
        IpAddr::V4(a) => {
            let len = len.unwrap_or(32);
            let bits = u32::from(a);
            (len <= 32 && bits & !mask32(len as u8) == 0).then_some(Rule::V4(bits, len as u8))
        }
        IpAddr::V6(a) => {
            let len = len.unwrap_or(128);
            let bits = u128::from(a);
            if len > 128 || bits & !mask128(len as u8) != 0 {
                return None;
            }
            if len >= 96 && bits >> 32 == MAPPED_PREFIX >> 32 {
                Some(Rule::V4(bits as u32, (len - 96) as u8))
            } else {
                Some(Rule::V6(bits, len as u8))
            }
        }
    }
}

/// The most a parser may read into a text: `model_rule` after dropping
/// leading zeros from IPv4 octets and the prefix length, i.e. reading them
/// as decimal (never octal), and after reading a `::` that stands for no
/// group at all (eight groups besides it) as a plain separator.
pub fn model_rule_decimal(text: &str) -> Option<Rule> {
    fn strip(n: &str) -> &str {
        let t = n.trim_start_matches('0');
        if t.is_empty() && !n.is_empty() {
            "0"
        } else {
            t
        }
    }
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let (head, quad) = match addr.rfind(':') {
        Some(i) => addr.split_at(i + 1),
        None => ("", addr),
    };
    let quad = if quad.contains('.') {
        quad.split('.')
            .map(|o| if o.bytes().all(|b| b.is_ascii_digit()) { strip(o) } else { o })
            .collect::<Vec<_>>()
            .join(".")
    } else {
        quad.to_string()
    };
    let mut head = head.to_string();
    let quad_groups = match quad.len() {
        0 => 0,
        _ if quad.contains('.') => 2,
        _ => 1,
    };
    if head.contains("::") && head.split(':').filter(|g| !g.is_empty()).count() + quad_groups == 8 {
        head = if let Some(rest) = head.strip_prefix("::") { rest.to_string() } else { head.replacen("::", ":", 1) };
    }
    let len = len.map(|l| if l.bytes().all(|b| b.is_ascii_digit()) { strip(l) } else { l });
    model_rule(&match len {
        Some(l) => format!("{head}{quad}/{l}"),
        None => format!("{head}{quad}"),
    })
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// A client address as rules see it: IPv4-mapped IPv6 is the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if u128::from(v6) >> 32 == MAPPED_PREFIX >> 32 => {
            IpAddr::V4(std::net::Ipv4Addr::from(u128::from(v6) as u32))
        }
        other => other,
    }
}

pub fn rule_contains(rule: Rule, ip: IpAddr) -> bool {
    match (rule, canonical(ip)) {
        (Rule::V4(net, len), IpAddr::V4(a)) => u32::from(a) & mask32(len) == net,
        (Rule::V6(net, len), IpAddr::V6(a)) => u128::from(a) & mask128(len) == net,
        _ => false,
    }
}

// ---------------------------------------------------------------- policy model

pub struct List {
    pub enabled: bool,
    pub cidrs: &'static [&'static str],
}

pub struct ScopeM {
    pub methods: &'static [&'static str],
    pub prefixes: &'static [&'static str],
}

pub struct SubM {
    pub id: &'static str,
    pub active: bool,
    pub allow: Option<List>,
    pub scopes: Option<ScopeM>,
}

pub struct TenantM {
    pub id: &'static str,
    pub region: &'static str,
    pub active: bool,
    pub allow: Option<List>,
    /// (provider id, the tenant's own upstream secret).
    pub own: &'static [(&'static str, &'static str)],
    pub subs: &'static [SubM],
}

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

/// The model as bundle JSON (schema 1), with quotas so the whole compiler
/// is exercised.
pub fn fixture_json() -> Vec<u8> {
    let tenants: Vec<_> = TENANTS
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "name": t.id.to_uppercase(),
                "status": if t.active { "active" } else { "disabled" },
                "region": t.region,
                "ip_allowlist": list_json(&t.allow),
                "quota": { "per_minute": 600, "per_day": 100000 },
                "provider_secrets": t.own.iter().map(|(p, s)| (p.to_string(), serde_json::json!(s))).collect::<serde_json::Map<_, _>>(),
                "sub_accounts": t.subs.iter().map(|s| serde_json::json!({
                    "id": s.id,
                    "status": if s.active { "active" } else { "disabled" },
                    "ip_allowlist": list_json(&s.allow),
                    "scopes": scopes_json(&s.scopes),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let keys: Vec<_> = KEYS
        .iter()
        .map(|k| {
            serde_json::json!({
                "id": k.id,
                "tenant": TENANTS[k.tenant].id,
                "sub_account": TENANTS[k.tenant].subs[k.sub].id,
                "hash": stored_hash(k.id, k.secret),
                "previous": k.prev.map(|(s, until)| serde_json::json!({ "hash": stored_hash(k.id, s), "valid_until": until })),
                "status": if k.active { "active" } else { "disabled" },
                "expires_at": k.expires,
                "scopes": scopes_json(&k.scopes),
                "ip_allowlist": list_json(&k.allow),
                "quota": { "per_minute": 60 },
            })
        })
        .collect();
    let providers: Vec<_> = PROVIDERS
        .iter()
        .map(|p| {
            serde_json::json!({ "id": p.id, "path_prefix": p.prefix, "header": p.header, "format": p.format, "secret": p.secret, "shared_endpoints": p.shared })
        })
        .collect();
    let oidc: Vec<_> = PRINCIPALS
        .iter()
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
        "version": FIXTURE_VERSION,
        "issued_at": NOW,
        "tenants": tenants,
        "keys": keys,
        "providers": providers,
        "oidc": oidc,
    });
    strip_nulls(&mut doc);
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
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

/// Rules of a list, parsed by the model's parser.
pub fn rules(list: &List) -> Vec<Rule> {
    list.cidrs.iter().map(|c| model_rule(c).unwrap_or_else(|| panic!("fixture CIDR {c:?}"))).collect()
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
