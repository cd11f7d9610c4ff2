//! The decision target: arbitrary method, path, headers (names and value
//! bytes), source address and clock against the fixture policy, checked
//! against an independent model of the decision (the steps in README.md, "How it fits together").
//!
//! The model is the oracle for both directions: the core must allow exactly
//! the requests the model allows (same key, tenant, sub-account, injected
//! credential), and deny the others with a reason the model accepts. In
//! particular an `Allow` requires: exactly one credential (repeats of the
//! same key across `authorization` and `x-api-key` only), equal to a policy
//! key's current secret or its previous one inside the grace window; key,
//! sub-account and tenant active and unexpired; the source inside every
//! enabled allowlist; every claimed tenant/sub-account header equal to the
//! key's; a normalized path inside the scopes; a provider for the path.
//! An OIDC identity (verified by Envoy, passed in `RequestFacts::oidc`)
//! stands in for the key only when no credential header is sent, and maps
//! through the bundle's principals by its first mapped claim.

use super::cidr_model::{rule_contains, rules};
use super::fixture::{fixture, Fixture, List, ScopeM, KEYS, NOW, PRINCIPALS, PROVIDERS, TENANTS};
use super::input::{Encoder, Input};
use std::net::IpAddr;
use tokenhub_guard::core::decision::{decide, is_stripped_header, Decision, OidcIdentity, RequestFacts, Subject};
use tokenhub_guard::core::errors::DenyReason;

pub const TIMES: &[u64] = &[NOW, NOW - 1, NOW + 49, NOW + 50, NOW + 51, NOW + 100, NOW + 101, 0, u64::MAX];
pub const METHODS: &[&str] = &["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "post", "", "POST ", "GET\0"];
pub const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/chat",
    "/v1/chatty",
    "/v1/embeddings",
    "/v1/",
    "/v1",
    "/anthropic/v1/messages",
    "/anthropic",
    "/byo/v2/run",
    "/byo/v2",
    "/byo/v3",
    "/",
    "",
    "v1/chat/completions",
    "/v1//chat/completions",
    "/v1/./chat/completions",
    "/v1/chat/../../admin",
    "/v1/%2e%2e/admin",
    "/v1/chat%2Fcompletions",
    "/v1/chat/completions?x=1",
    "/v1/chat/completions#frag",
    "/V1/chat/completions",
    "/v1/chat/completions/",
    "/v1\\chat",
    "/v1/chat/..",
    "/v1/chat/completions?/../..",
    "/v1/chat%00",
    "/v1/chat/completions.",
    "/anthropic/v1/messages/../../v1/chat",
];
pub const SOURCES: &[&str] = &[
    "127.0.0.1",
    "10.1.2.3",
    "10.1.2.255",
    "10.1.3.1",
    "10.1.0.0",
    "10.255.255.255",
    "11.0.0.0",
    "9.255.255.255",
    "198.51.100.7",
    "198.51.101.1",
    "::ffff:10.1.2.3",
    "::ffff:198.51.100.9",
    "::ffff:127.0.0.1",
    "2001:db8::1",
    "2001:db8:1::5",
    "2001:db8:2::5",
    "2001:db9::1",
    "::1",
    "::10.1.2.3",
    "0.0.0.0",
    "255.255.255.255",
    "8.8.8.8",
    "fe80::1",
    "10.9.9.9",
];
pub const NAMES: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-tokenhub-tenant",
    "x-tokenhub-sub-account",
    "x_tokenhub_tenant",
    "X-TokenHub-Tenant",
    "x-tokenhub_sub_account",
    "x-tokenhub-key-id",
    "x-tokenhub-region",
    "x-forwarded-for",
    "cookie",
    "content-type",
    "Authorization",
    "x-api-key2",
    "host",
    ":authority",
];
pub const IDENTS: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "research",
    "sales",
    "frozen",
    "ops",
    "lab",
    "main",
    "x",
    "ACME",
    " acme",
    "acme ",
    "\u{430}cme",
    "",
    "acme\0",
    "acme,globex",
    "eu",
];
pub const ISSUERS: &[&str] = &[
    "https://accounts.google.com",
    "https://github.com",
    "https://login.microsoftonline.com/x/v2.0",
    "http://accounts.google.com",
    "https://accounts.google.com/",
    "",
];
pub const CLAIMS: &[&str] = &["sub", "email", "oid", "Sub", ""];
pub const CLAIM_VALUES: &[&str] =
    &["1234567890", "sales@acme.example", "ffff-0000", "1234567890 ", "SALES@acme.example", "", "0"];

/// (before, after) the token.
pub const WRAPS: &[(&str, &str)] = &[
    ("", ""),
    ("Bearer ", ""),
    ("bearer ", ""),
    ("BEARER  ", ""),
    ("Bearer \t", ""),
    ("Bearer\t", ""),
    ("Bearer ", " "),
    (" ", ""),
    ("Basic ", ""),
    ("Bearer", ""),
    ("Bearer  ", "\r\n"),
    ("Bearer ", ","),
];

/// A decoded request (owned, so a failure can print it).
#[derive(Debug)]
pub struct Req {
    pub now: u64,
    pub method: String,
    pub path: String,
    pub source: Option<IpAddr>,
    /// A verified OIDC identity: issuer and claims.
    pub oidc: Option<(String, Vec<(String, String)>)>,
    pub headers: Vec<(String, Vec<u8>)>,
}

pub fn decode(data: &[u8]) -> Req {
    let fx = fixture();
    let mut input = Input::new(data);
    let now = input.pick(TIMES);
    let m = input.byte();
    let method = match m {
        0..=0xef => METHODS[usize::from(m) % METHODS.len()].to_string(),
        _ => String::from_utf8_lossy(input.bytes(usize::from(m & 0x0f))).into_owned(),
    };
    let p = input.byte();
    let mut path = match p {
        0..=0xdf => PATHS[usize::from(p) % PATHS.len()].to_string(),
        _ => {
            let n = usize::from(input.byte());
            String::from_utf8_lossy(input.bytes(n)).into_owned()
        }
    };
    let suffix = usize::from(input.byte() % 32);
    path.push_str(&String::from_utf8_lossy(input.bytes(suffix)));
    let s = input.byte();
    let source = match s {
        0..=0xdf => SOURCES[usize::from(s) % SOURCES.len()].parse().ok(),
        0xe0..=0xef => Some(IpAddr::from(input.array::<4>())),
        0xf0..=0xfe => Some(IpAddr::from(input.array::<16>())),
        0xff => None,
    };
    let oidc = match input.byte() {
        0..=0xbf => None,
        _ => {
            let issuer = input.pick(ISSUERS).to_string();
            let n = input.byte() % 5;
            let claims =
                (0..n).map(|_| (input.pick(CLAIMS).to_string(), input.pick(CLAIM_VALUES).to_string())).collect();
            Some((issuer, claims))
        }
    };
    let count = input.byte() % 16;
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = input.byte();
        let name = match n {
            0..=0xef => NAMES[usize::from(n) % NAMES.len()].to_string(),
            _ => String::from_utf8_lossy(input.bytes(usize::from(n & 0x0f))).into_owned(),
        };
        let v = input.byte();
        let value = match v {
            0..=0x7f => {
                let mut token = fx.token_pool[usize::from(v) % fx.token_pool.len()].clone().into_bytes();
                let (before, after) = input.pick(WRAPS);
                let op = input.byte();
                let at = usize::from(input.byte()) % (token.len() + 1);
                let c = input.byte();
                match op % 8 {
                    1 if at < token.len() => token[at] = super::fixture::base62(c),
                    2 => token.truncate(at),
                    3 => token.insert(at, c),
                    _ => {}
                }
                [before.as_bytes(), &token, after.as_bytes()].concat()
            }
            0x80..=0xbf => IDENTS[usize::from(v - 0x80) % IDENTS.len()].as_bytes().to_vec(),
            _ => {
                let n = usize::from(input.byte());
                input.bytes(n).to_vec()
            }
        };
        headers.push((name, value));
    }
    Req { now, method, path, source, oidc, headers }
}

/// What the model expects.
#[derive(Debug, PartialEq)]
pub enum Expect {
    /// Allowed for this credential and with this injected header.
    Allow { cred: Cred, inject: (&'static str, String) },
    /// Denied with any of these reasons; `proven` once the credential was
    /// verified (the denial must then name its owner).
    Deny { reasons: Vec<DenyReason>, proven: Option<Cred> },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cred {
    /// Index into `KEYS`.
    Key(usize),
    /// Index into `PRINCIPALS`.
    Oidc(usize),
}

use DenyReason::*;

/// Every reason a credential that is not a proven key may get. A key's
/// status (disabled, expired) is never among them: it is told only to the
/// holder of the secret.
const NOT_PROVEN: [DenyReason; 6] =
    [MissingCredential, DuplicateCredential, MalformedCredential, BadChecksum, UnknownKey, WrongSecret];

fn deny(reasons: &[DenyReason]) -> Expect {
    Expect::Deny { reasons: reasons.to_vec(), proven: None }
}

fn deny_for(cred: Cred, reasons: &[DenyReason]) -> Expect {
    Expect::Deny { reasons: reasons.to_vec(), proven: Some(cred) }
}

/// `Bearer` (any case), one or more spaces and nothing else (RFC 6750),
/// then the token; `None` if the value is not a bearer credential.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    if value.len() < 7 || !value[..6].eq_ignore_ascii_case(b"bearer") || value[6] != b' ' {
        return None;
    }
    let token = &value[7..];
    let start = token.iter().position(|b| *b != b' ').unwrap_or(token.len());
    let token = &token[start..];
    (!token.is_empty()).then_some(token)
}

fn in_lists(source: Option<IpAddr>, lists: [&Option<List>; 3]) -> bool {
    lists
        .into_iter()
        .flatten()
        .filter(|l| l.enabled)
        .all(|l| source.is_some_and(|ip| rules(l).iter().any(|r| rule_contains(*r, ip))))
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && (prefix.ends_with('/') || path.as_bytes()[prefix.len()] == b'/'))
}

fn normalized(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.starts_with('/')
        && !path.contains("//")
        && !path.contains('\\')
        // A dot segment, also with path parameters (`..;x`).
        && !path.split('/').any(|s| {
            let name = &s[..s.find(';').unwrap_or(s.len())];
            name == "." || name == ".."
        })
        && !["%2e", "%2f", "%5c", "%00", "%3b"].iter().any(|e| lower.contains(e))
}

pub fn model(fx: &Fixture, r: &Req) -> Expect {
    // 1. Exactly one credential.
    let auth: Vec<&[u8]> = r.headers.iter().filter(|(n, _)| n == "authorization").map(|(_, v)| v.as_slice()).collect();
    let xkey: Vec<&[u8]> = r.headers.iter().filter(|(n, _)| n == "x-api-key").map(|(_, v)| v.as_slice()).collect();
    // A verified OIDC identity is the credential when no key is sent (an
    // empty x-api-key counts as none); both at once is a conflict.
    if let Some((issuer, claims)) = &r.oidc {
        let no_key = auth.is_empty() && (xkey.is_empty() || xkey == [b"".as_slice()]);
        if !no_key {
            return deny(&[DuplicateCredential]);
        }
        let found = claims
            .iter()
            .find_map(|(c, v)| PRINCIPALS.iter().position(|p| p.issuer == issuer && p.claim == c && p.value == v));
        return match found {
            Some(pi) => {
                let p = &PRINCIPALS[pi];
                after_credential(r, Cred::Oidc(pi), p.tenant, p.sub, &None, &p.scopes)
            }
            None => deny(&[UnknownPrincipal]),
        };
    }
    if auth.len() > 1 || xkey.len() > 1 {
        return deny(&NOT_PROVEN);
    }
    let mut tokens: Vec<&[u8]> = Vec::new();
    for v in &auth {
        match bearer(v) {
            Some(t) => tokens.push(t),
            None => return deny(&NOT_PROVEN),
        }
    }
    tokens.extend(&xkey);
    if tokens.windows(2).any(|w| w[0] != w[1]) {
        return deny(&NOT_PROVEN);
    }
    // 2. The token is a policy key with its current secret, or its previous
    //    one inside the grace window; then status and expiry.
    let Some(token) = tokens.first() else { return deny(&NOT_PROVEN) };
    let proven = KEYS.iter().enumerate().position(|(i, k)| {
        *token == fx.current[i].as_bytes()
            || k.prev
                .is_some_and(|(_, until)| r.now <= until && fx.previous[i].as_deref().map(str::as_bytes) == Some(token))
    });
    let Some(ki) = proven else { return deny(&NOT_PROVEN) };
    let key = &KEYS[ki];
    if !key.active {
        return deny_for(Cred::Key(ki), &[KeyDisabled]);
    }
    if key.expires.is_some_and(|t| r.now >= t) {
        return deny_for(Cred::Key(ki), &[KeyExpired]);
    }
    after_credential(r, Cred::Key(ki), key.tenant, key.sub, &key.allow, &key.scopes)
}

/// Steps 3-8, for a proven credential of (tenant, sub-account) with its own
/// allowlist and scopes.
fn after_credential(
    r: &Req,
    cred: Cred,
    tenant: usize,
    sub: usize,
    allow: &Option<List>,
    scopes: &Option<ScopeM>,
) -> Expect {
    // 3. Owner status.
    let tenant = &TENANTS[tenant];
    let sub = &tenant.subs[sub];
    let deny = |reasons: &[DenyReason]| deny_for(cred, reasons);
    if !tenant.active {
        return deny(&[TenantDisabled]);
    }
    if !sub.active {
        return deny(&[SubAccountDisabled]);
    }
    // 4. Source address in every enabled list.
    if !in_lists(r.source, [&tenant.allow, &sub.allow, allow]) {
        return deny(&[IpNotAllowed]);
    }
    // 5. Claimed identity (header names compared case- and '_'-insensitively).
    for (name, value) in &r.headers {
        let name = name.to_ascii_lowercase().replace('_', "-");
        let expected = match name.as_str() {
            "x-tokenhub-tenant" => tenant.id,
            "x-tokenhub-sub-account" => sub.id,
            _ => continue,
        };
        if value.as_slice() != expected.as_bytes() {
            return deny(&[TenantMismatch]);
        }
    }
    // 6. Normalized path, then scopes.
    let path = r.path.split(['?', '#']).next().unwrap_or("");
    if !normalized(path) {
        return deny(&[PathNotNormalized]);
    }
    let mut failed = Vec::new();
    for s in [&sub.scopes, scopes].into_iter().flatten() {
        let ScopeM { methods, prefixes } = s;
        if !methods.is_empty() && !methods.contains(&r.method.as_str()) {
            failed.push(MethodNotAllowed);
        }
        if !prefixes.is_empty() && !prefixes.iter().any(|p| under(path, p)) {
            failed.push(PathNotAllowed);
        }
    }
    if !failed.is_empty() {
        return deny(&failed);
    }
    // 8. The provider with the longest matching prefix; the tenant's own
    //    secret for it, else the platform's.
    let Some(provider) = PROVIDERS.iter().filter(|p| under(path, p.prefix)).max_by_key(|p| p.prefix.len()) else {
        return deny(&[NoProvider]);
    };
    //    The platform's only where the provider shares it for this
    //    method and path ("METHOD /exact" or "METHOD /dir/*", * = any).
    let shares = |entry: &&str| {
        let (m, p) = entry.split_once(' ').unwrap_or(("", ""));
        let method_ok = m == "*" || m == r.method;
        method_ok
            && match p.strip_suffix('*') {
                Some(dir) => path.len() > dir.len() && path.starts_with(dir),
                None => path == p,
            }
    };
    let own = tenant.own.iter().find(|(p, _)| *p == provider.id).map(|(_, s)| *s);
    let secret = match (own, provider.secret) {
        (Some(own), _) => own,
        (None, Some(shared)) if provider.shared.iter().any(shares) => shared,
        (None, Some(_)) => return deny(&[SharedCredentialRefused]),
        (None, None) => return deny(&[ProviderNotConfigured]),
    };
    Expect::Allow { cred, inject: (provider.header, provider.format.replace("{secret}", secret)) }
}

/// Runs the core on the decoded request and compares with the model.
pub fn decision(data: &[u8]) {
    let fx = fixture();
    let r = decode(data);
    check(fx, &r);
}

/// Whom the core says a request belongs to: (key id or OIDC, tenant id,
/// sub-account id).
type Owner = (Option<String>, String, String);

/// The core's outcome in plain terms: Ok((owner, identity headers, injected
/// header)) or Err((reason, owner named in the denial)). The one place that
/// knows the shape of `Decision`.
type Outcome = Result<(Owner, Vec<(String, Option<String>)>, (String, String)), (DenyReason, Option<Owner>)>;

fn owner(s: &Subject<'_>) -> Owner {
    (s.credential.key().map(|k| k.id().to_string()), s.tenant.id.clone(), s.sub_account.id.clone())
}

fn run_core(fx: &Fixture, r: &Req) -> Outcome {
    let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let claims: Vec<(&str, &str)> =
        r.oidc.iter().flat_map(|(_, c)| c.iter().map(|(n, v)| (n.as_str(), v.as_str()))).collect();
    let oidc = r.oidc.as_ref().map(|(issuer, _)| OidcIdentity { issuer, claims: &claims });
    let facts =
        RequestFacts { method: &r.method, path: &r.path, headers: &headers, source: r.source, now: r.now, oidc };
    match decide(&fx.policy, &facts) {
        Decision::Allow(g) => {
            let ids =
                g.subject.identity_headers().iter().map(|(n, v)| (n.to_string(), v.map(str::to_string))).collect();
            Ok((owner(&g.subject), ids, (g.inject.0.to_string(), g.inject.1.to_string())))
        }
        Decision::Deny(d) => Err((d.reason, d.subject.as_ref().map(owner))),
    }
}

/// The model's owner for a credential.
fn model_owner(cred: Cred) -> Owner {
    let (key, tenant, sub) = match cred {
        Cred::Key(i) => (Some(KEYS[i].id.to_string()), KEYS[i].tenant, KEYS[i].sub),
        Cred::Oidc(i) => (None, PRINCIPALS[i].tenant, PRINCIPALS[i].sub),
    };
    (key, TENANTS[tenant].id.to_string(), TENANTS[tenant].subs[sub].id.to_string())
}

pub fn check(fx: &Fixture, r: &Req) -> Expect {
    let got = run_core(fx, r);
    let expected = model(fx, r);
    match (&got, &expected) {
        (Ok((who, ids, injected)), Expect::Allow { cred, inject }) => {
            let want = model_owner(*cred);
            assert_eq!(*who, want, "allowed for the wrong owner: {r:?}");
            let (key_id, tenant, sub) = want;
            let t = TENANTS.iter().find(|t| t.id == tenant).map(|t| t.region.to_string());
            let auth = if key_id.is_some() { "api_key" } else { "oidc" };
            let want_ids: Vec<(String, Option<String>)> = [
                ("x-tokenhub-tenant", Some(tenant)),
                ("x-tokenhub-sub-account", Some(sub)),
                ("x-tokenhub-key-id", key_id),
                ("x-tokenhub-region", t),
                ("x-tokenhub-auth", Some(auth.to_string())),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
            assert_eq!(*ids, want_ids, "wrong identity headers for {r:?}");
            assert_eq!(
                (injected.0.as_str(), injected.1.as_str()),
                (inject.0, inject.1.as_str()),
                "wrong injection: {r:?}"
            );
        }
        (Err((reason, named)), Expect::Deny { reasons, proven }) => {
            assert!(reasons.contains(reason), "denied with {reason:?}, the model expects one of {reasons:?}: {r:?}");
            match (proven, named) {
                // Once the credential is proven, the denial names its owner.
                (Some(cred), _) => assert_eq!(named.as_ref(), Some(&model_owner(*cred)), "denial owner: {r:?}"),
                // Otherwise it may name only the key whose id was presented.
                (None, Some((key_id, tenant, sub))) => {
                    let presented = presented_key_ids(r);
                    let k = KEYS.iter().position(|k| key_id.as_deref() == Some(k.id));
                    assert!(
                        k.is_some_and(|k| presented.contains(&KEYS[k].id)
                            && model_owner(Cred::Key(k)) == (key_id.clone(), tenant.clone(), sub.clone())),
                        "the denial names {key_id:?} ({tenant}/{sub}), not a key the request presented: {r:?}"
                    );
                }
                (None, None) => {}
            }
        }
        (Ok((who, _, _)), Expect::Deny { reasons, .. }) => {
            panic!("ALLOWED ({who:?}) a request the model denies with {reasons:?}: {r:?}")
        }
        (Err((reason, _)), Expect::Allow { cred, .. }) => {
            panic!("denied with {reason:?} a request the model allows for {cred:?}: {r:?}")
        }
    }
    // The filter strips every credential and x-tokenhub-* header it is given.
    for (name, _) in &r.headers {
        let norm = name.to_ascii_lowercase().replace('_', "-");
        let must = norm.starts_with("x-tokenhub-") || name == "authorization" || name == "x-api-key";
        assert!(!must || is_stripped_header(name), "{name:?} would reach the upstream");
    }
    expected
}

/// Key ids of the well-formed keys among the request's credential headers.
fn presented_key_ids(r: &Req) -> Vec<&'static str> {
    let values = r.headers.iter().filter_map(|(n, v)| match n.as_str() {
        "authorization" => bearer(v),
        "x-api-key" => Some(v.as_slice()),
        _ => None,
    });
    let mut ids = Vec::new();
    for v in values {
        ids.extend(KEYS.iter().map(|k| k.id).filter(|id| v.len() == 54 && v[4..16] == *id.as_bytes()));
    }
    ids
}

// ---------------------------------------------------------------- seeds

/// One header of a seed request.
pub enum Value<'a> {
    /// A token from the pool (by text), wrapped (index into `WRAPS`).
    Token(&'a str, usize),
    Ident(&'a str),
    Raw(&'a [u8]),
}

/// Encodes a request for the seed corpus; the decoder reads it back.
pub fn encode(now: u64, method: &str, path: &str, source: &str, headers: &[(&str, Value<'_>)]) -> Vec<u8> {
    encode_with_oidc(now, method, path, source, None, headers)
}

pub fn encode_with_oidc(
    now: u64,
    method: &str,
    path: &str,
    source: &str,
    oidc: Option<(&str, &[(&str, &str)])>,
    headers: &[(&str, Value<'_>)],
) -> Vec<u8> {
    let fx = fixture();
    let mut e = Encoder::default();
    e.index_of(TIMES, &now).index_of(METHODS, &method).index_of(PATHS, &path).byte(0).index_of(SOURCES, &source);
    match oidc {
        None => e.byte(0),
        Some((issuer, claims)) => {
            e.byte(0xc0).index_of(ISSUERS, &issuer).byte(u8::try_from(claims.len()).unwrap_or(0));
            for (c, v) in claims {
                e.index_of(CLAIMS, c).index_of(CLAIM_VALUES, v);
            }
            &mut e
        }
    };
    e.byte(u8::try_from(headers.len()).unwrap_or(0));
    for (name, value) in headers {
        e.index_of(NAMES, name);
        match value {
            Value::Token(t, wrap) => {
                e.index_of(&fx.token_pool, &t.to_string()).byte(u8::try_from(*wrap).unwrap_or(0)).bytes(&[0, 0, 0]);
            }
            Value::Ident(i) => {
                let at = IDENTS.iter().position(|x| x == i).unwrap_or(0);
                e.byte(0x80 + u8::try_from(at).unwrap_or(0));
            }
            Value::Raw(b) => {
                e.byte(0xc0).byte(u8::try_from(b.len()).unwrap_or(0)).bytes(b);
            }
        }
    }
    e.0
}
