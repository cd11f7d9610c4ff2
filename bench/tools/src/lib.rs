//! Benchmark policies: a `BundleDoc` of any size with the credentials the
//! load generator sends, built from a fixed seed so every run measures the
//! same shape of data.
//!
//! Shape (every bundle, whatever its size):
//! - provider `openai`: `/v1/` → `authorization: Bearer {secret}` (the platform secret);
//! - tenant `t-allow` (region `eu`), sub-account `main`, allowlist of
//!   `cidrs` networks that contain 127.0.0.1 — key `allow`, no quotas;
//! - tenant `t-quota`: the same, with per-minute and per-day quotas on the
//!   tenant and on its key `quota` (4 shared-data counters per request);
//! - tenant `t-elsewhere`: allowlist 192.0.2.0/24 only — key `wrong_ip`
//!   (valid, but the load generator connects from 127.0.0.1);
//! - filler tenants `f00000…` with 100 keys each, up to `keys` keys in all;
//! - with [`add_metered_keys`] (bench-bundle `--metered`), two more keys of
//!   `t-allow`: `metered` (a tokens-per-minute budget no run can spend, so
//!   its request and response bodies are read for usage) and `models` (a
//!   model allowlist, so its request body is read for the model). The
//!   other keys, `allow` included, are the same as without them.
//!
//! With more than one CIDR the allowlist is the adversarial case for the
//! per-prefix-length hash tables: networks at every prefix length /9../32
//! and the client matched only by 127.0.0.0/8, so a lookup probes every
//! length before it hits.

use std::collections::{BTreeMap, HashSet};
use tokenhub_guard::core::apikey;
use tokenhub_guard::core::bundle::schema::{
    BundleDoc, IpAllowlistDoc, KeyDoc, ProviderDoc, QuotaDoc, Status, SubAccountDoc, TenantDoc, TokenBudgetDoc,
    SCHEMA_VERSION,
};
use tokenhub_guard::core::secret::{hash_secret, to_hex};

/// Keys per filler tenant.
pub const KEYS_PER_TENANT: usize = 100;
/// A quota no benchmark can exhaust.
pub const HUGE: u64 = 1_000_000_000_000;

/// The API keys a benchmark presents (full `thk_…` strings).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub allow: String,
    pub quota: String,
    pub wrong_ip: String,
    /// Well-formed (valid checksum) but not in the bundle.
    pub unknown: String,
    /// `allow` with its last character changed: fails the checksum.
    pub bad_checksum: String,
}

impl Credentials {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "allow": self.allow,
            "quota": self.quota,
            "wrong_ip": self.wrong_ip,
            "unknown": self.unknown,
            "bad_checksum": self.bad_checksum,
        })
    }
}

/// splitmix64: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn base62(&mut self, len: usize) -> String {
        apikey::random_base62(len, || self.next_u64() as u8)
    }
}

struct KeyGen {
    rng: Rng,
    used: HashSet<String>,
}

impl KeyGen {
    /// A fresh key: (key document, full key text).
    fn key(&mut self, tenant: &str, quota: Option<QuotaDoc>) -> (KeyDoc, String) {
        let id = loop {
            let id = self.rng.base62(apikey::KEY_ID_LEN);
            if self.used.insert(id.clone()) {
                break id;
            }
        };
        let secret = self.rng.base62(apikey::SECRET_LEN);
        let text = apikey::assemble(&id, &secret).unwrap_or_default();
        let doc = KeyDoc {
            id: id.clone(),
            tenant: tenant.to_string(),
            sub_account: "main".to_string(),
            hash: to_hex(&hash_secret(&id, &secret)),
            status: Status::Active,
            quota,
            ..KeyDoc::default()
        };
        (doc, text)
    }
}

fn allowlist(cidrs: Vec<String>) -> Option<IpAllowlistDoc> {
    Some(IpAllowlistDoc { enabled: true, cidrs })
}

fn tenant(id: &str, cidrs: Vec<String>, quota: Option<QuotaDoc>) -> TenantDoc {
    TenantDoc {
        id: id.to_string(),
        name: id.to_string(),
        status: Status::Active,
        region: "eu".to_string(),
        ip_allowlist: allowlist(cidrs),
        quota,
        provider_secrets: BTreeMap::new(),
        sub_accounts: vec![SubAccountDoc {
            id: "main".to_string(),
            status: Status::Active,
            ..SubAccountDoc::default()
        }],
        ..TenantDoc::default()
    }
}

/// `n` CIDRs whose only match for 127.0.0.1 is 127.0.0.0/8 (for n > 1), the
/// rest spread over prefix lengths /9../32; n == 1 is just 127.0.0.1/32.
pub fn allow_cidrs(n: usize, rng: &mut Rng) -> Vec<String> {
    if n <= 1 {
        return vec!["127.0.0.1/32".to_string()];
    }
    let mut out = vec!["127.0.0.0/8".to_string()];
    let mut seen = HashSet::new();
    let mut i = 0usize;
    while out.len() < n {
        let len = 9 + (i % 24) as u32; // 9..=32
        i += 1;
        let addr = rng.next_u64() as u32;
        if addr >> 24 == 127 || addr >> 24 == 0 {
            continue;
        }
        let net = if len == 32 { addr } else { (addr >> (32 - len)) << (32 - len) };
        if seen.insert((net, len)) {
            let [a, b, c, d] = net.to_be_bytes();
            out.push(format!("{a}.{b}.{c}.{d}/{len}"));
        }
    }
    out
}

/// The benchmark policy with `keys` keys (at least 3) and an allowlist of
/// `cidrs` networks on the allow and quota tenants. `version` goes in the
/// document (tokenhub-admin's publish overwrites it).
pub fn policy(keys: usize, cidrs: usize, version: u64) -> (BundleDoc, Credentials) {
    let mut rng = Rng::new(0x7E5_7B0B_u64 ^ (keys as u64) << 20 ^ cidrs as u64);
    let allow_list = allow_cidrs(cidrs, &mut rng);
    let mut gen = KeyGen { rng, used: HashSet::new() };
    let huge = Some(QuotaDoc { per_minute: Some(HUGE), per_day: Some(HUGE) });

    let mut doc = BundleDoc {
        schema: SCHEMA_VERSION,
        version,
        issued_at: 0,
        providers: vec![ProviderDoc {
            id: "openai".to_string(),
            path_prefix: "/v1/".to_string(),
            header: "authorization".to_string(),
            format: "Bearer {secret}".to_string(),
            secret: Some("sk-bench-upstream-secret".to_string().into()),
            // The benchmark's requests (any method under /v1/) all use the
            // platform secret: the allow path is what is measured.
            shared_endpoints: vec!["* /v1/*".to_string()],
        }],
        ..BundleDoc::default()
    };
    doc.tenants.push(tenant("t-allow", allow_list.clone(), None));
    doc.tenants.push(tenant("t-quota", allow_list, huge));
    doc.tenants.push(tenant("t-elsewhere", vec!["192.0.2.0/24".to_string()], None));

    let (k, allow) = gen.key("t-allow", None);
    doc.keys.push(k);
    let (k, quota) = gen.key("t-quota", huge);
    doc.keys.push(k);
    let (k, wrong_ip) = gen.key("t-elsewhere", None);
    doc.keys.push(k);

    let fillers = keys.saturating_sub(3);
    for i in 0..fillers {
        let t = format!("f{:05}", i / KEYS_PER_TENANT);
        if i % KEYS_PER_TENANT == 0 {
            doc.tenants.push(tenant(&t, vec!["198.51.100.0/24".to_string()], None));
        }
        let (k, _) = gen.key(&t, None);
        doc.keys.push(k);
    }

    // Not in the bundle: ids drawn after every bundle id, so never equal.
    let (_, unknown) = gen.key("none", None);
    let mut bad_checksum = allow.clone();
    let last = bad_checksum.pop().unwrap_or('0');
    bad_checksum.push(if last == 'x' { 'y' } else { 'x' });
    (doc, Credentials { allow, quota, wrong_ip, unknown, bad_checksum })
}

/// The model pattern of the `models` key, and a model it allows.
pub const MODEL_PATTERN: &str = "gpt-4o*";
pub const MODEL: &str = "gpt-4o-mini";

/// The keys [`add_metered_keys`] adds (full `thk_…` strings).
#[derive(Debug, Clone)]
pub struct MeteredCredentials {
    /// `t-allow`, tokens per minute [`HUGE`]: the metered path.
    pub metered: String,
    /// `t-allow`, models [`MODEL_PATTERN`]: the model check only.
    pub models: String,
}

/// Adds the `metered` and `models` keys to a [`policy`] (after every other
/// key, from a seed of their own, so the others stay as they are). `creds`:
/// that policy's credentials (its `unknown` key must stay unknown).
pub fn add_metered_keys(doc: &mut BundleDoc, creds: &Credentials) -> MeteredCredentials {
    let mut used: HashSet<String> = doc.keys.iter().map(|k| k.id.clone()).collect();
    if let Ok(parsed) = apikey::parse(&creds.unknown) {
        used.insert(parsed.key_id.to_string());
    }
    let mut gen = KeyGen { rng: Rng::new(0x3E7E_12ED), used };
    let (mut k, metered) = gen.key("t-allow", None);
    k.budget = Some(TokenBudgetDoc { tokens_per_minute: Some(HUGE), ..TokenBudgetDoc::default() });
    doc.keys.push(k);
    let (mut k, models) = gen.key("t-allow", None);
    k.models = vec![MODEL_PATTERN.to_string()];
    doc.keys.push(k);
    MeteredCredentials { metered, models }
}

/// The decision cases the native microbenchmarks run.
pub const CASES: [&str; 4] = ["allow", "deny-checksum", "deny-unknown", "deny-ip"];

/// Owned request headers: (lower-case name, raw value).
pub type Headers = Vec<(String, Vec<u8>)>;

/// The request headers of one decision case, as Envoy delivers them to the
/// filter (pseudo-headers first, lower-case names), and its client address.
pub fn case_request(creds: &Credentials, case: &str) -> Option<(Headers, std::net::IpAddr)> {
    let key = match case {
        "allow" => &creds.allow,
        "deny-checksum" => &creds.bad_checksum,
        "deny-unknown" => &creds.unknown,
        "deny-ip" => &creds.wrong_ip,
        _ => return None,
    };
    let headers = [
        (":authority", "bench".to_string()),
        (":path", "/v1/chat/completions".to_string()),
        (":method", "POST".to_string()),
        (":scheme", "http".to_string()),
        ("user-agent", "bench/1.0".to_string()),
        ("accept", "*/*".to_string()),
        ("content-type", "application/json".to_string()),
        ("authorization", format!("Bearer {key}")),
        ("x-forwarded-proto", "http".to_string()),
        ("x-request-id", "8b1f2a6e-0d7c-4c1e-9a55-1f5e2b3c4d5e".to_string()),
    ];
    let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    Some((headers.into_iter().map(|(n, v)| (n.to_string(), v.into_bytes())).collect(), ip))
}

/// Runs `decide` once on owned request data, the way the filter does
/// (borrowed views over the header list). Returns whether it allowed.
#[inline(never)]
pub fn decide_once(
    policy: &tokenhub_guard::core::bundle::Policy,
    headers: &[(String, Vec<u8>)],
    ip: std::net::IpAddr,
    now: u64,
) -> bool {
    with_decision(policy, headers, ip, now, |d| matches!(d, tokenhub_guard::core::decision::Decision::Allow(_)))
}

/// The decision's name for reports: `allow`, or the deny reason as Debug
/// prints it (e.g. `UnknownKey`). Not on the measured path.
pub fn decision_label(
    policy: &tokenhub_guard::core::bundle::Policy,
    headers: &[(String, Vec<u8>)],
    ip: std::net::IpAddr,
    now: u64,
) -> String {
    with_decision(policy, headers, ip, now, |d| match d {
        tokenhub_guard::core::decision::Decision::Allow(_) => "allow".to_string(),
        deny => {
            let text = format!("{deny:?}");
            let after = text.split_once("reason: ").map_or(text.as_str(), |(_, r)| r);
            let after = after.strip_prefix("Deny(").unwrap_or(after);
            after.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("deny").to_string()
        }
    })
}

fn with_decision<T>(
    policy: &tokenhub_guard::core::bundle::Policy,
    headers: &[(String, Vec<u8>)],
    ip: std::net::IpAddr,
    now: u64,
    f: impl FnOnce(&tokenhub_guard::core::decision::Decision<'_>) -> T,
) -> T {
    use tokenhub_guard::core::decision::{decide, RequestFacts};
    let view: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let pseudo =
        |name: &str| view.iter().find(|(n, _)| *n == name).and_then(|(_, v)| std::str::from_utf8(v).ok()).unwrap_or("");
    let facts = RequestFacts {
        method: pseudo(":method"),
        path: pseudo(":path"),
        headers: &view,
        source: Some(ip),
        now,
        oidc: None,
    };
    f(&decide(policy, &facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenhub_guard::core::bundle::compile;

    #[test]
    fn policy_compiles_and_has_the_requested_size() {
        for (keys, cidrs) in [(3, 1), (10, 1), (250, 100)] {
            let (doc, creds) = policy(keys, cidrs, 1);
            assert_eq!(doc.keys.len(), keys);
            assert_eq!(doc.tenants[0].ip_allowlist.as_ref().map(|l| l.cidrs.len()), Some(cidrs));
            let p = compile(&doc).expect("compiles");
            assert_eq!(p.keys.len(), keys);
            assert!(apikey::parse(&creds.allow).is_ok());
            assert!(apikey::parse(&creds.unknown).is_ok());
            assert_eq!(apikey::parse(&creds.bad_checksum), Err(apikey::KeyFormatError::Checksum));
        }
    }

    #[test]
    fn metered_keys_leave_the_others_alone() {
        let (plain, creds) = policy(10, 1, 1);
        let (mut doc, same) = policy(10, 1, 1);
        let extra = add_metered_keys(&mut doc, &same);
        assert_eq!(creds.allow, same.allow);
        assert_eq!(doc.keys[..plain.keys.len()], plain.keys[..]);
        assert_eq!(doc.keys.len(), plain.keys.len() + 2);
        let p = compile(&doc).expect("compiles");
        assert_eq!(p.keys.len(), 12);
        for key in [&extra.metered, &extra.models] {
            let id = apikey::parse(key).expect("well formed").key_id;
            assert!(plain.keys.iter().all(|k| k.id != id));
            assert_ne!(apikey::parse(&creds.unknown).expect("well formed").key_id, id);
        }
        let metered = apikey::parse(&extra.metered).expect("well formed").key_id;
        let metered = doc.keys.iter().find(|k| k.id == metered).expect("in the bundle");
        assert_eq!(metered.budget.and_then(|b| b.tokens_per_minute), Some(HUGE));
        assert!(metered.models.is_empty());
    }
}
