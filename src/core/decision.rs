//! The per-request decision, from request headers (`decide`), then, only
//! for a credential with model allowlists, from the model its body names
//! (`Grant::check_model`). Pure: the filter glue gathers the facts, calls
//! these, and applies the outcome.

use crate::core::apikey::{self, KeyFormatError};
use crate::core::bundle::compile::{Key, Policy, Principal, Provider, Scopes, SubAccount, Tenant};
use crate::core::bundle::shared::PROVIDER_ROUTING_HEADERS;
use crate::core::cidr::AllowList;
use crate::core::errors::DenyReason;
use crate::core::models::{self, ModelRules, ModelScan};
use crate::core::secret::{hash_secret, hashes_equal};
use std::net::IpAddr;

pub const TENANT_HEADER: &str = "x-tokenhub-tenant";
pub const SUB_ACCOUNT_HEADER: &str = "x-tokenhub-sub-account";
pub const KEY_ID_HEADER: &str = "x-tokenhub-key-id";
pub const REGION_HEADER: &str = "x-tokenhub-region";
pub const AUTH_HEADER: &str = "x-tokenhub-auth";
const CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "x-api-key"];

/// Headers that carry a client's address toward the provider. Envoy itself
/// adds none (`skip_xff_append`; the routes remove `x-envoy-external-address`),
/// so these are client- or front-proxy-sent: removed unless the tenant opted in,
/// and then replaced by the address the guard saw.
pub const CLIENT_ADDRESS_HEADERS: [&str; 4] = ["x-forwarded-for", "forwarded", "x-real-ip", "true-client-ip"];

/// The header an opted-in tenant's provider gets the client's address in.
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// What the filter knows about a request. Header names are lower case (as
/// Envoy delivers them); values are raw bytes, since a client may send
/// anything.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
    pub source: Option<IpAddr>,
    /// Unix seconds.
    pub now: u64,
    /// An OIDC identity that Envoy's `jwt_authn` filter verified, if any.
    pub oidc: Option<OidcIdentity<'a>>,
}

/// Claims of a JWT verified by Envoy (`jwt_authn`, payload in dynamic
/// metadata, which clients cannot set). Only the claims the bundle maps.
#[derive(Debug, Clone, Copy)]
pub struct OidcIdentity<'a> {
    pub issuer: &'a str,
    pub claims: &'a [(&'a str, &'a str)],
}

/// How the request proved who it is.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'p> {
    Key(Key<'p>),
    Oidc(&'p Principal),
}

impl<'p> Credential<'p> {
    fn sub_account(&self) -> usize {
        match self {
            Self::Key(k) => k.sub_account,
            Self::Oidc(p) => p.sub_account,
        }
    }

    fn allowlist(&self) -> &'p Option<AllowList> {
        match self {
            Self::Key(k) => k.allowlist(),
            Self::Oidc(_) => &None,
        }
    }

    fn scopes(&self) -> &'p Option<Scopes> {
        match self {
            Self::Key(k) => k.scopes(),
            Self::Oidc(p) => &p.scopes,
        }
    }

    /// The key, when the request used one (quotas per key, key-id header).
    pub fn key(&self) -> Option<Key<'p>> {
        match self {
            Self::Key(k) => Some(*k),
            Self::Oidc(_) => None,
        }
    }
}

/// Whom a request belongs to, once its credential is known.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'p> {
    pub tenant: &'p Tenant,
    pub sub_account: &'p SubAccount,
    pub credential: Credential<'p>,
}

/// A refused request: why, and whom it was for when the credential was
/// identified (so access logs and usage reports name the key, never what
/// the client claimed).
#[derive(Debug, Clone, Copy)]
pub struct Denial<'p> {
    pub reason: DenyReason,
    pub subject: Option<Subject<'p>>,
}

impl Denial<'_> {
    fn anonymous(reason: DenyReason) -> Self {
        Self { reason, subject: None }
    }

    /// The identity headers the filter sets on a refused request (for the
    /// access log): the owner's when the key was identified. An unknown key
    /// id gets the same number of header operations (removals), so a wrong
    /// secret for an existing id costs the same host calls as an id that
    /// does not exist: the time to a 401 does not tell which ids exist.
    /// `None`: nothing to set.
    pub fn identity_headers(&self) -> Option<[(&'static str, Option<&str>); 5]> {
        match (&self.subject, self.reason) {
            (Some(subject), _) => Some(subject.identity_headers()),
            (None, DenyReason::UnknownKey) => Some(IDENTITY_HEADERS.map(|name| (name, None))),
            (None, _) => None,
        }
    }
}

/// The authoritative identity headers, in the order they are set.
const IDENTITY_HEADERS: [&str; 5] = [TENANT_HEADER, SUB_ACCOUNT_HEADER, KEY_ID_HEADER, REGION_HEADER, AUTH_HEADER];

/// An allowed request: who it belongs to and what to inject.
#[derive(Debug)]
pub struct Grant<'p> {
    pub subject: Subject<'p>,
    /// (header name, value) of the provider credential.
    pub inject: (&'p str, &'p str),
    /// The provider the request is routed to (index in `Policy::providers`).
    pub provider: usize,
}

impl<'p> Grant<'p> {
    /// The model allowlists of the key, sub-account and tenant.
    pub fn model_rules(&self) -> [&'p Option<ModelRules>; 3] {
        let key = match self.subject.credential {
            Credential::Key(k) => k.models(),
            Credential::Oidc(_) => &NO_MODELS,
        };
        [key, &self.subject.sub_account.limits.models, &self.subject.tenant.limits.models]
    }

    /// Whether the request body must be read for its model (only then is
    /// it read at all).
    pub fn needs_model(&self) -> bool {
        models::any_rules(&self.model_rules())
    }

    /// The body decision, once the scanner has a result: the model must be
    /// allowed by every level that lists models (the tightest applies).
    /// `None`: the scanner needs more of the body.
    pub fn check_model(&self, scan: &ModelScan) -> Option<Result<(), DenyReason>> {
        models::verdict(&self.model_rules(), scan)
    }
}

static NO_MODELS: Option<ModelRules> = None;

#[derive(Debug)]
pub enum Decision<'p> {
    Allow(Grant<'p>),
    Deny(Denial<'p>),
}

/// The whole decision, in the documented order. Each step returns early
/// with the reason it refused.
pub fn decide<'p>(policy: &'p Policy, req: &RequestFacts<'_>) -> Decision<'p> {
    match decide_inner(policy, req) {
        Ok(grant) => Decision::Allow(grant),
        Err(reason) => Decision::Deny(reason),
    }
}

fn decide_inner<'p>(policy: &'p Policy, req: &RequestFacts<'_>) -> Result<Grant<'p>, Denial<'p>> {
    // A key that exists but failed verification still names its owner in
    // the denial (for the operator's logs; the client sees only the reason).
    let (credential, verified) = match authenticate(policy, req) {
        Ok(credential) => (credential, Ok(())),
        Err((reason, Some(key))) => (Credential::Key(key), Err(reason)),
        Err((reason, None)) => return Err(Denial::anonymous(reason)),
    };
    let (sub_account, tenant) =
        locate(policy, credential.sub_account()).ok_or(Denial::anonymous(DenyReason::FilterFault))?;
    let subject = Subject { tenant, sub_account, credential };
    let deny = |reason| Denial { reason, subject: Some(subject) };
    verified.map_err(deny)?;
    check_status(tenant, sub_account).map_err(deny)?;
    check_ip(req.source, [&tenant.limits.allowlist, &sub_account.limits.allowlist, credential.allowlist()])
        .map_err(deny)?;
    check_claimed_identity(req.headers, tenant, sub_account).map_err(deny)?;
    let path = path_without_query(req.path);
    if !is_normalized(path) {
        return Err(deny(DenyReason::PathNotNormalized));
    }
    check_scopes(req.method, path, [&sub_account.limits.scopes, credential.scopes()]).map_err(deny)?;
    let (provider, inject) = provider_credential(policy, req.method, path, tenant).map_err(deny)?;
    Ok(Grant { subject, inject, provider })
}

/// A refusal, with the key when one was found.
type AuthError<'p> = (DenyReason, Option<Key<'p>>);

/// Steps 1–2: an API key, or an identity Envoy's jwt_authn verified —
/// exactly one of them.
fn authenticate<'p>(policy: &'p Policy, req: &RequestFacts<'_>) -> Result<Credential<'p>, AuthError<'p>> {
    match (req.oidc, extract_credential(req.headers)) {
        (None, Ok(presented)) => verify_key(policy, presented, req.now).map(Credential::Key),
        (None, Err(reason)) => Err((reason, None)),
        (Some(identity), Err(DenyReason::MissingCredential)) => {
            principal(policy, identity).map(Credential::Oidc).map_err(|r| (r, None))
        }
        (Some(_), _) => Err((DenyReason::DuplicateCredential, None)),
    }
}

/// The bundle's principal for the first mapped claim of the identity.
fn principal<'p>(policy: &'p Policy, identity: OidcIdentity<'_>) -> Result<&'p Principal, DenyReason> {
    identity
        .claims
        .iter()
        .find_map(|(claim, value)| {
            policy.oidc.get(&(identity.issuer.to_string(), claim.to_string(), value.to_string()))
        })
        .ok_or(DenyReason::UnknownPrincipal)
}

/// Step 1: exactly one credential, from `authorization: Bearer …` or
/// `x-api-key`. Both headers may be present only if they carry the same key.
fn extract_credential<'h>(headers: &[(&str, &'h [u8])]) -> Result<&'h str, DenyReason> {
    let mut found: Option<&'h [u8]> = None;
    for (name, value) in headers {
        let token = match *name {
            "authorization" => bearer_token(value).ok_or(DenyReason::MalformedCredential)?,
            "x-api-key" => *value,
            _ => continue,
        };
        match found {
            None => found = Some(token),
            Some(_) if is_same_header_twice(headers, name) => return Err(DenyReason::DuplicateCredential),
            Some(prev) if prev != token => return Err(DenyReason::DuplicateCredential),
            Some(_) => {}
        }
    }
    let token = found.ok_or(DenyReason::MissingCredential)?;
    if token.is_empty() {
        return Err(DenyReason::MissingCredential);
    }
    // Envoy joins a repeated header into one comma-separated value; a key
    // never contains a comma.
    if token.contains(&b',') {
        return Err(DenyReason::DuplicateCredential);
    }
    std::str::from_utf8(token).map_err(|_| DenyReason::MalformedCredential)
}

fn is_same_header_twice(headers: &[(&str, &[u8])], name: &str) -> bool {
    headers.iter().filter(|(n, _)| *n == name).count() > 1
}

/// `Bearer <token>`: scheme case-insensitive, one or more spaces (RFC 6750).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    // One or more spaces, nothing else (RFC 6750: `"Bearer" 1*SP token`).
    let token = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
    (!token.is_empty()).then_some(token)
}

/// Step 2: checksum, lookup, constant-time hash comparison (current secret,
/// or the previous one inside its grace period), then status and expiry —
/// status only after the secret is proven, so it never leaks to guessers.
fn verify_key<'p>(policy: &'p Policy, presented: &str, now: u64) -> Result<Key<'p>, AuthError<'p>> {
    let parsed = apikey::parse(presented).map_err(|e| match e {
        KeyFormatError::Checksum => (DenyReason::BadChecksum, None),
        _ if looks_like_jwt(presented) => (DenyReason::InvalidToken, None),
        _ => (DenyReason::MalformedCredential, None),
    })?;
    let hash = hash_secret(parsed.key_id, parsed.secret);
    let key = policy.keys.get(parsed.key_id.as_bytes()).ok_or((DenyReason::UnknownKey, None))?;
    let current = key.is_current_secret(&hash);
    let previous = key.previous.is_some_and(|(prev, until)| hashes_equal(prev, &hash) & (now <= until));
    let refused = |reason| Err((reason, Some(key)));
    if !(current | previous) {
        return refused(DenyReason::WrongSecret);
    }
    if !key.active {
        return refused(DenyReason::KeyDisabled);
    }
    if key.expires_at.is_some_and(|t| now >= t) {
        return refused(DenyReason::KeyExpired);
    }
    Ok(key)
}

/// A bearer token that is a JWT reaches the guard only when Envoy's
/// jwt_authn did not verify it (expired, unknown issuer, bad signature):
/// say so rather than "malformed API key".
fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ")
        && token.split('.').count() == 3
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The credential's sub-account and tenant.
fn locate(policy: &Policy, sub_account: usize) -> Option<(&SubAccount, &Tenant)> {
    let sub = policy.sub_accounts.get(sub_account)?;
    Some((sub, policy.tenants.get(sub.tenant)?))
}

/// Step 3: tenant and sub-account both active.
fn check_status(tenant: &Tenant, sub: &SubAccount) -> Result<(), DenyReason> {
    if !tenant.active {
        return Err(DenyReason::TenantDisabled);
    }
    if !sub.active {
        return Err(DenyReason::SubAccountDisabled);
    }
    Ok(())
}

/// Step 4: the source address must be inside every enabled allowlist
/// (tenant ∩ sub-account ∩ key). Unknown source with any list → refused.
fn check_ip(source: Option<IpAddr>, lists: [&Option<AllowList>; 3]) -> Result<(), DenyReason> {
    for list in lists.into_iter().flatten() {
        match source {
            Some(ip) if list.contains(ip) => {}
            _ => return Err(DenyReason::IpNotAllowed),
        }
    }
    Ok(())
}

/// Step 5: a client may repeat its tenant or sub-account, never claim
/// another one. Compared byte for byte: `ACME` is not `acme`.
fn check_claimed_identity(headers: &[(&str, &[u8])], tenant: &Tenant, sub: &SubAccount) -> Result<(), DenyReason> {
    for (name, value) in headers {
        let expected = match normalized_tokenhub_name(name).as_deref() {
            Some(TENANT_HEADER) => &tenant.id,
            Some(SUB_ACCOUNT_HEADER) => &sub.id,
            _ => continue,
        };
        if *value != expected.as_bytes() {
            return Err(DenyReason::TenantMismatch);
        }
    }
    Ok(())
}

/// Step 6: method and path prefix must be allowed by the sub-account's and
/// the key's scopes (each narrows).
fn check_scopes(method: &str, path: &str, scopes: [&Option<Scopes>; 2]) -> Result<(), DenyReason> {
    for s in scopes.into_iter().flatten() {
        if !s.methods.is_empty() && !s.methods.iter().any(|m| m == method) {
            return Err(DenyReason::MethodNotAllowed);
        }
        if !s.path_prefixes.is_empty() && !s.path_prefixes.iter().any(|p| path_has_prefix(path, p)) {
            return Err(DenyReason::PathNotAllowed);
        }
    }
    Ok(())
}

/// Step 8 (injection part): the provider with the longest matching prefix,
/// and the tenant's own secret for it, or the platform's where the provider
/// shares it for this endpoint (never for stateful ones: see
/// `bundle::shared`).
fn provider_credential<'p>(
    policy: &'p Policy,
    method: &str,
    path: &str,
    tenant: &'p Tenant,
) -> Result<(usize, (&'p str, &'p str)), DenyReason> {
    let (index, provider): (usize, &Provider) = policy
        .providers
        .iter()
        .enumerate()
        .find(|(_, p)| path_has_prefix(path, &p.path_prefix))
        .ok_or(DenyReason::NoProvider)?;
    let value = provider.value_for(index, tenant, method, path).map_err(|shared| {
        if shared {
            DenyReason::SharedCredentialRefused
        } else {
            DenyReason::ProviderNotConfigured
        }
    })?;
    Ok((index, (provider.header.as_str(), value)))
}

/// Segment-aware prefix match: `/v1/chat` matches `/v1/chat` and
/// `/v1/chat/x` but not `/v1/chatty`; a prefix ending in `/` matches below it.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

pub fn path_without_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// Envoy normalizes paths before filters run (normalize_path, merge_slashes,
/// escaped-slash rejection in the shipped configs). Anything that still
/// looks un-normalized means a misconfigured listener or an Envoy that
/// normalizes differently: refuse it rather than match scopes against a
/// path the upstream will read differently. The guard decides this itself,
/// so its decisions do not depend on the Envoy release: a dot segment with
/// path parameters (`..;x`, `.;x`, which servlet-style upstreams resolve as
/// `..` and `.`) is a dot segment too; Envoy 1.39 folds it, 1.36 passes it.
fn is_normalized(path: &str) -> bool {
    if !path.starts_with('/') || path.contains("//") || path.contains('\\') {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00", "%3b"].iter().any(|esc| lower.contains(esc)) {
        return false;
    }
    !path.split('/').any(|seg| matches!(seg.split(';').next(), Some("." | "..")))
}

/// True for the headers the filter removes from every request: the client's
/// credential headers, provider routing headers (`OpenAI-Organization`…,
/// which would steer the platform's credential), client address headers
/// (set again, by the guard, for tenants that opted in), and anything in
/// the `x-tokenhub-` namespace (also spelled with underscores, which some
/// proxies treat as dashes).
pub fn is_stripped_header(name: &str) -> bool {
    CREDENTIAL_HEADERS.contains(&name)
        || is_tokenhub_header(name)
        || PROVIDER_ROUTING_HEADERS.contains(&name)
        || CLIENT_ADDRESS_HEADERS.contains(&name)
}

pub fn is_tokenhub_header(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 11
        && bytes[..11].iter().map(|b| if *b == b'_' { b'-' } else { b.to_ascii_lowercase() }).eq(*b"x-tokenhub-")
}

fn normalized_tokenhub_name(name: &str) -> Option<String> {
    is_tokenhub_header(name).then(|| name.to_ascii_lowercase().replace('_', "-"))
}

impl<'p> Decision<'p> {
    /// The tenant the request was identified as, allowed or not.
    pub fn tenant(&self) -> Option<&'p Tenant> {
        match self {
            Decision::Allow(grant) => Some(grant.subject.tenant),
            Decision::Deny(denial) => denial.subject.map(|s| s.tenant),
        }
    }
}

/// The client address the access log records (filter state
/// `wasm.tokenhub_client`): cut to its network (`cidr::truncate`) for a
/// tenant that asked for it at write time, whole otherwise.
pub fn logged_client(tenant: Option<&Tenant>, source: Option<IpAddr>) -> Option<String> {
    let ip = source?;
    let cut = tenant.is_some_and(|t| t.truncate_client_at_write);
    Some(if cut { crate::core::cidr::truncate(ip) } else { ip }.to_string())
}

impl Subject<'_> {
    /// The client address the provider gets: only for a tenant that opted
    /// in, and only the TCP peer the guard decided on (never a client's claim).
    pub fn forwarded_for(&self, source: Option<IpAddr>) -> Option<String> {
        source.filter(|_| self.tenant.forward_client_address).map(|ip| ip.to_string())
    }

    /// The authoritative identity headers (`None` = must be absent: no key
    /// id for an OIDC identity). Set on every allowed request, and on a
    /// refused one whose owner is known, for the access log.
    pub fn identity_headers(&self) -> [(&'static str, Option<&str>); 5] {
        let (auth, key_id) = match self.credential {
            Credential::Key(k) => ("api_key", Some(k.id())),
            Credential::Oidc(_) => ("oidc", None),
        };
        [
            (TENANT_HEADER, Some(self.tenant.id.as_str())),
            (SUB_ACCOUNT_HEADER, Some(self.sub_account.id.as_str())),
            (KEY_ID_HEADER, key_id),
            (REGION_HEADER, Some(self.tenant.region.as_str())),
            (AUTH_HEADER, Some(auth)),
        ]
    }
}
