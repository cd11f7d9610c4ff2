//! One validation pass that turns a `BundleDoc` into a `Policy`: hash maps
//! by key id, compiled CIDR tables, provider header values rendered once.
//! Every error names the offending field, e.g. `keys[3].tenant`.

use super::keys::{encode_record, has_limits, is_plain, KeyIndex, KeyTable, LimitedKey, Record};
use super::schema::{
    BundleDoc, IpAllowlistDoc, QuotaDoc, QuotaMode, ScopesDoc, Status, TokenBudgetDoc, SCHEMA_VERSION,
};
use super::shared::SharedEndpoint;
use crate::core::apikey;
use crate::core::budget::Price;
use crate::core::cidr::AllowList;
use crate::core::models::ModelRules;
use crate::core::secret::hash_from_hex;
use crate::core::wipe::Secret;
use std::collections::{HashMap, HashSet};
use zeroize::Zeroizing;

pub use super::keys::{Key, KeyIdBytes};

/// The compiled, read-only policy the decision runs against.
#[derive(Debug, Default)]
pub struct Policy {
    pub version: u64,
    pub tenants: Vec<Tenant>,
    pub sub_accounts: Vec<SubAccount>,
    pub keys: KeyIndex,
    /// Longest prefix first.
    pub providers: Vec<Provider>,
    pub oidc: HashMap<(String, String, String), Principal>,
    /// Issuer → the claims its principals are mapped by (what the filter
    /// reads from the verified JWT payload).
    pub oidc_claims: HashMap<String, Vec<String>>,
    /// Who counts the quotas: the guard (`Local`) or the rate limit service.
    pub quota_mode: QuotaMode,
    /// (provider index, model rule, price), exact names first, then
    /// patterns by decreasing prefix length (see `price_for`).
    pub prices: Vec<(usize, ModelPattern, Price)>,
    /// Percent of a token or dollar budget past which a request is flagged.
    pub soft_limit_percent: u8,
    /// Output tokens reserved for a metered request that states no cap.
    pub default_output_tokens: u64,
}

/// The soft limit when the bundle states none.
pub const DEFAULT_SOFT_LIMIT_PERCENT: u8 = 80;

/// A price table's model: an exact name or a `prefix*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPattern {
    Exact(String),
    Prefix(String),
}

impl ModelPattern {
    fn matches(&self, model: &str) -> bool {
        match self {
            Self::Exact(m) => m == model,
            Self::Prefix(p) => model.starts_with(p.as_str()),
        }
    }

    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            Self::Exact(_) => (0, std::cmp::Reverse(0)),
            Self::Prefix(p) => (1, std::cmp::Reverse(p.len())),
        }
    }
}

impl Policy {
    /// The price of `model` on the provider at `provider`: its exact entry,
    /// else the longest matching `prefix*`; `None` when unpriced.
    pub fn price_for(&self, provider: usize, model: &str) -> Option<Price> {
        self.prices.iter().find(|(p, pattern, _)| *p == provider && pattern.matches(model)).map(|(_, _, price)| *price)
    }

    /// The highest price of each kind among `provider`'s price-table
    /// entries: what a reservation is priced at before the body names the
    /// model (the global quota mode reserves at request headers). `None`:
    /// the provider has no prices.
    pub fn highest_price(&self, provider: usize) -> Option<Price> {
        self.prices.iter().filter(|(p, _, _)| *p == provider).map(|(_, _, price)| *price).reduce(|a, b| Price {
            input: a.input.max(b.input),
            cached_input: a.cached_input.max(b.cached_input),
            output: a.output.max(b.output),
        })
    }

    /// The price-table entry `price_for` uses for `model` (its name or pattern).
    pub fn price_rule(&self, provider: usize, model: &str) -> Option<&ModelPattern> {
        self.prices
            .iter()
            .find(|(p, pattern, _)| *p == provider && pattern.matches(model))
            .map(|(_, pattern, _)| pattern)
    }
}

#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub region: String,
    pub active: bool,
    /// (No scopes: those are set per sub-account and key.)
    pub limits: Limits,
    /// Per provider index: this tenant's rendered header value, if it brings its own secret.
    pub provider_values: HashMap<usize, Secret>,
    /// The provider gets the client's address in `x-forwarded-for`.
    pub forward_client_address: bool,
    /// The access log gets only the network of the client's address.
    pub truncate_client_at_write: bool,
}

#[derive(Debug)]
pub struct SubAccount {
    pub id: String,
    pub tenant: usize,
    pub active: bool,
    pub limits: Limits,
}

/// What narrows the requests of a tenant, a sub-account or a key, each
/// enforced at its level (`None`: nothing at this level).
#[derive(Debug, Default)]
pub struct Limits {
    pub allowlist: Option<AllowList>,
    pub scopes: Option<Scopes>,
    pub quota: Option<QuotaDoc>,
    pub budget: Option<TokenBudgetDoc>,
    pub models: Option<ModelRules>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    pub methods: Vec<String>,
    pub path_prefixes: Vec<String>,
}

#[derive(Debug)]
pub struct Provider {
    pub id: String,
    pub path_prefix: String,
    pub header: String,
    /// The header value with the platform's secret, if it has one.
    pub default_value: Option<Secret>,
    /// Where the platform's secret may be used (see `super::shared`).
    pub shared: Vec<SharedEndpoint>,
    format: String,
}

#[derive(Debug)]
pub struct Principal {
    pub sub_account: usize,
    pub scopes: Option<Scopes>,
}

/// Validates and compiles. The error names the field that is wrong.
pub fn compile(doc: &BundleDoc) -> Result<Policy, String> {
    compile_with_table(doc, None)
}

/// As `compile`, adopting the packed key records a sealed bundle carries
/// after its JSON: `bytes[start..]` (see `super::pack`).
pub fn compile_with_table(doc: &BundleDoc, table: Option<(Zeroizing<Vec<u8>>, usize)>) -> Result<Policy, String> {
    compile_parts(doc, table, false)
}

/// A delta's policy: its own JSON compiled, its records as an overlay on
/// the base's table (see `super::delta`). The base's sub-accounts must
/// keep their numbers (the base's records carry them).
pub fn compile_delta(
    doc: &BundleDoc,
    base: &super::delta::Base,
    overlay: Option<(Zeroizing<Vec<u8>>, usize)>,
) -> Result<Policy, String> {
    let mut policy = compile_parts(doc, overlay, true)?;
    let ids = super::delta::sub_account_ids(&policy);
    if ids.get(..base.sub_accounts.len()) != Some(base.sub_accounts.as_slice()) {
        return Err("its sub-accounts do not start with the base's, in the base's order; publish in full".into());
    }
    let keys = std::mem::take(&mut policy.keys);
    let (overlay, limited) = keys.into_parts();
    policy.keys = KeyIndex::with_overlay(std::sync::Arc::clone(&base.table), overlay, limited);
    Ok(policy)
}

fn compile_parts(doc: &BundleDoc, table: Option<(Zeroizing<Vec<u8>>, usize)>, overlay: bool) -> Result<Policy, String> {
    if doc.schema != SCHEMA_VERSION {
        return Err(format!("schema: {} is not supported (this build reads {SCHEMA_VERSION})", doc.schema));
    }
    let soft_limit_percent = match doc.soft_limit_percent {
        None => DEFAULT_SOFT_LIMIT_PERCENT,
        Some(p @ 1..=100) => p,
        Some(p) => return Err(format!("soft_limit_percent: {p} must be 1-100 (a share of a budget)")),
    };
    let default_output_tokens = match doc.default_output_tokens {
        None => crate::core::budget::DEFAULT_OUTPUT_RESERVATION,
        Some(n @ 1..=crate::core::models::MAX_OUTPUT_CAP) => n,
        Some(n) => {
            return Err(format!(
                "default_output_tokens: {n} must be 1-{} (output tokens reserved per request)",
                crate::core::models::MAX_OUTPUT_CAP
            ))
        }
    };
    let mut policy = Policy {
        version: doc.version,
        quota_mode: doc.quota_mode,
        soft_limit_percent,
        default_output_tokens,
        ..Policy::default()
    };
    compile_providers(doc, &mut policy)?;
    compile_prices(doc, &mut policy)?;
    compile_tenants(doc, &mut policy)?;
    let packed = match table {
        Some((bytes, start)) if overlay => KeyTable::adopt_overlay(bytes, start, policy.sub_accounts.len())?,
        Some((bytes, start)) => KeyTable::adopt(bytes, start, policy.sub_accounts.len())?,
        None => KeyTable::default(),
    };
    compile_keys(doc, &mut policy, packed)?;
    compile_oidc(doc, &mut policy)?;
    Ok(policy)
}

fn compile_providers(doc: &BundleDoc, policy: &mut Policy) -> Result<(), String> {
    for (i, p) in doc.providers.iter().enumerate() {
        let at = At::root("providers", i);
        check_id(&p.id, at.field("id"))?;
        if policy.providers.iter().any(|q| q.id == p.id) {
            return Err(format!("{at}.id: duplicate provider {:?}", p.id));
        }
        check_path_prefix(&p.path_prefix, at.field("path_prefix"))?;
        check_injected_header(&p.header, at.field("header"))?;
        if p.format.matches("{secret}").count() != 1 {
            return Err(format!("{at}.format: must contain {{secret}} exactly once, e.g. \"Bearer {{secret}}\""));
        }
        let default_value = match &p.secret {
            Some(s) => Some(render(&p.format, s, at.field("secret"))?),
            None => None,
        };
        let shared = compile_shared(p, at)?;
        policy.providers.push(Provider {
            id: p.id.clone(),
            path_prefix: p.path_prefix.clone(),
            header: p.header.clone(),
            default_value,
            shared,
            format: p.format.clone(),
        });
    }
    policy.providers.sort_by_key(|p| std::cmp::Reverse(p.path_prefix.len()));
    Ok(())
}

/// The endpoints the platform's secret may serve. A secret with none would
/// never be used, and endpoints without a secret mean nothing: both are
/// mistakes worth naming.
fn compile_shared(p: &super::schema::ProviderDoc, at: At<'_>) -> Result<Vec<SharedEndpoint>, String> {
    let shared = p
        .shared_endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| SharedEndpoint::parse(e, &p.path_prefix).map_err(|m| format!("{at}.shared_endpoints[{i}]: {m}")))
        .collect::<Result<Vec<_>, _>>()?;
    match (&p.secret, shared.is_empty()) {
        (Some(_), true) => Err(format!(
            "{at}.shared_endpoints: the platform secret may serve no endpoint; list the stateless endpoints \
             it may serve (tokenhub-admin provider set {} --shared-preset openai|anthropic, or --shared-endpoint \
             \"POST /v1/chat/completions\") or remove the platform secret",
            p.id
        )),
        (None, false) => {
            Err(format!("{at}.shared_endpoints: listed, but the provider has no platform secret to share; remove them"))
        }
        _ => Ok(shared),
    }
}

fn compile_tenants(doc: &BundleDoc, policy: &mut Policy) -> Result<(), String> {
    // A set, not a scan of the tenants so far: a bundle of 10 000 tenants
    // would cost 50 million comparisons in every VM on every load.
    let mut seen = std::collections::HashSet::with_capacity(doc.tenants.len());
    for (ti, t) in doc.tenants.iter().enumerate() {
        let at = At::root("tenants", ti);
        check_id(&t.id, at.field("id"))?;
        if !seen.insert(t.id.as_str()) {
            return Err(format!("{at}.id: duplicate tenant {:?}", t.id));
        }
        if !t.region.is_empty() {
            check_id(&t.region, at.field("region"))?;
        }
        let mut provider_values = HashMap::new();
        for (pid, secret) in &t.provider_secrets {
            let secrets = at.field("provider_secrets");
            let field = secrets.field(pid);
            let idx = policy
                .providers
                .iter()
                .position(|p| &p.id == pid)
                .ok_or_else(|| format!("{field}: no provider {pid:?} is defined"))?;
            provider_values.insert(idx, render(&policy.providers[idx].format, secret, field)?);
        }
        let tenant_index = policy.tenants.len();
        policy.tenants.push(Tenant {
            id: t.id.clone(),
            region: t.region.clone(),
            active: t.status == Status::Active,
            limits: compile_limits(t.ip_allowlist.as_ref(), None, t.quota, t.budget, &t.models, at)?,
            provider_values,
            forward_client_address: t.forward_client_address,
            truncate_client_at_write: t.log_retention.is_some_and(|r| r.truncates_at_write()),
        });
        for (si, s) in t.sub_accounts.iter().enumerate() {
            let at = at.item("sub_accounts", si);
            check_id(&s.id, at.field("id"))?;
            if t.sub_accounts.get(..si).unwrap_or_default().iter().any(|u| u.id == s.id) {
                return Err(format!("{at}.id: duplicate sub-account {:?}", s.id));
            }
            policy.sub_accounts.push(SubAccount {
                id: s.id.clone(),
                tenant: tenant_index,
                active: s.status == Status::Active,
                limits: compile_limits(s.ip_allowlist.as_ref(), s.scopes.as_ref(), s.quota, s.budget, &s.models, at)?,
            });
        }
    }
    Ok(())
}

fn compile_keys(doc: &BundleDoc, policy: &mut Policy, packed: KeyTable) -> Result<(), String> {
    let sub_index = sub_account_index(&policy.tenants, &policy.sub_accounts);
    let mut records: Vec<Record> = Vec::new();
    let mut limited = HashMap::new();
    let mut seen = HashSet::new();
    for (i, k) in doc.keys.iter().enumerate() {
        let at = At::root("keys", i);
        let id: KeyIdBytes =
            k.id.as_bytes().try_into().ok().filter(|_| apikey::is_valid_key_id(&k.id)).ok_or_else(|| {
                format!("{at}.id: {:?} is not a key id ({} base62 characters)", k.id, apikey::KEY_ID_LEN)
            })?;
        if !seen.insert(id) || packed.find(&id).is_some() {
            return Err(format!("{at}.id: duplicate key id {:?}", k.id));
        }
        let sub_account = *sub_index
            .get(&(k.tenant.as_str(), k.sub_account.as_str()))
            .ok_or_else(|| format!("{at}: tenant {:?} has no sub-account {:?}", k.tenant, k.sub_account))?;
        let hash = hash_from_hex(&k.hash).ok_or_else(|| format!("{at}.hash: expected 64 hex digits"))?;
        if is_plain(k) {
            let sub = u32::try_from(sub_account).map_err(|_| format!("{at}: too many sub-accounts"))?;
            records.push(encode_record(&id, &hash, sub, k.status, k.expires_at));
            continue;
        }
        let previous = match &k.previous {
            Some(p) => Some((
                hash_from_hex(&p.hash).ok_or_else(|| format!("{at}.previous.hash: expected 64 hex digits"))?,
                p.valid_until,
            )),
            None => None,
        };
        let limits = if has_limits(k) {
            Some(compile_limits(k.ip_allowlist.as_ref(), k.scopes.as_ref(), k.quota, k.budget, &k.models, at)?)
        } else {
            None
        };
        let key = LimitedKey {
            id,
            hash,
            previous,
            sub_account,
            active: k.status == Status::Active,
            expires_at: k.expires_at,
            limits,
        };
        limited.insert(id, key);
    }
    policy.keys = KeyIndex::new(packed, records, limited)?;
    Ok(())
}

fn compile_oidc(doc: &BundleDoc, policy: &mut Policy) -> Result<(), String> {
    let sub_index = sub_account_index(&policy.tenants, &policy.sub_accounts);
    for (i, o) in doc.oidc.iter().enumerate() {
        let at = At::root("oidc", i);
        if !o.issuer.starts_with("https://") {
            return Err(format!("{at}.issuer: must be an https:// URL"));
        }
        if o.claim.is_empty() || o.value.is_empty() {
            return Err(format!("{at}: claim and value must be non-empty"));
        }
        let sub_account = *sub_index
            .get(&(o.tenant.as_str(), o.sub_account.as_str()))
            .ok_or_else(|| format!("{at}: tenant {:?} has no sub-account {:?}", o.tenant, o.sub_account))?;
        let principal = Principal { sub_account, scopes: compile_scopes(o.scopes.as_ref(), at.field("scopes"))? };
        let claims = policy.oidc_claims.entry(o.issuer.clone()).or_default();
        if !claims.contains(&o.claim) {
            claims.push(o.claim.clone());
        }
        let ident = (o.issuer.clone(), o.claim.clone(), o.value.clone());
        if policy.oidc.insert(ident, principal).is_some() {
            return Err(format!("{at}: duplicate principal"));
        }
    }
    Ok(())
}

/// (tenant id, sub-account id) → sub-account index.
fn sub_account_index<'a>(tenants: &'a [Tenant], subs: &'a [SubAccount]) -> HashMap<(&'a str, &'a str), usize> {
    subs.iter()
        .enumerate()
        .filter_map(|(i, s)| Some(((tenants.get(s.tenant)?.id.as_str(), s.id.as_str()), i)))
        .collect()
}

/// A level's limits; errors name the field under `at`.
fn compile_limits(
    allowlist: Option<&IpAllowlistDoc>,
    scopes: Option<&ScopesDoc>,
    quota: Option<QuotaDoc>,
    budget: Option<TokenBudgetDoc>,
    models: &[String],
    at: At<'_>,
) -> Result<Limits, String> {
    Ok(Limits {
        allowlist: compile_allowlist(allowlist, at.field("ip_allowlist"))?,
        scopes: compile_scopes(scopes, at.field("scopes"))?,
        quota: compile_quota(quota, at.field("quota"))?,
        budget: compile_budget(budget, at.field("budget"))?,
        models: compile_models(models, at.field("models"))?,
    })
}

fn compile_allowlist(doc: Option<&IpAllowlistDoc>, at: At<'_>) -> Result<Option<AllowList>, String> {
    match doc {
        Some(d) if d.enabled => {
            AllowList::from_cidrs(d.cidrs.iter().map(String::as_str)).map(Some).map_err(|e| format!("{at}.cidrs: {e}"))
        }
        _ => Ok(None),
    }
}

fn compile_scopes(doc: Option<&ScopesDoc>, at: At<'_>) -> Result<Option<Scopes>, String> {
    let Some(d) = doc else { return Ok(None) };
    for (i, m) in d.methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("{at}.methods[{i}]: {m:?} is not an upper-case HTTP method"));
        }
    }
    for (i, p) in d.path_prefixes.iter().enumerate() {
        check_path_prefix(p, at.item("path_prefixes", i))?;
    }
    Ok(Some(Scopes { methods: d.methods.clone(), path_prefixes: d.path_prefixes.clone() }))
}

fn compile_models(list: &[String], at: At<'_>) -> Result<Option<ModelRules>, String> {
    ModelRules::compile(list).map_err(|(i, e)| format!("{at}[{i}]: {e}"))
}

fn compile_quota(doc: Option<QuotaDoc>, at: At<'_>) -> Result<Option<QuotaDoc>, String> {
    match doc {
        Some(q) if q.per_minute == Some(0) || q.per_day == Some(0) => {
            Err(format!("{at}: a limit of 0 would refuse everything; disable the key instead"))
        }
        Some(q) if q.per_minute.is_none() && q.per_day.is_none() => Ok(None),
        other => Ok(other),
    }
}

fn compile_budget(doc: Option<TokenBudgetDoc>, at: At<'_>) -> Result<Option<TokenBudgetDoc>, String> {
    let Some(b) = doc else { return Ok(None) };
    for (name, value) in [
        ("tokens_per_minute", b.tokens_per_minute),
        ("tokens_per_day", b.tokens_per_day),
        ("monthly_budget_nano_usd", b.monthly_budget_nano_usd),
    ] {
        if value == Some(0) {
            return Err(format!("{at}.{name}: a limit of 0 would refuse everything; disable the key instead"));
        }
    }
    Ok(if b.is_empty() { None } else { Some(b) })
}

/// Longest model name or pattern in a price table.
const MAX_MODEL_LEN: usize = 256;

fn compile_prices(doc: &BundleDoc, policy: &mut Policy) -> Result<(), String> {
    let mut seen = HashSet::new();
    for (i, p) in doc.prices.iter().enumerate() {
        let at = At::root("prices", i);
        let provider = policy
            .providers
            .iter()
            .position(|q| q.id == p.provider)
            .ok_or_else(|| format!("{at}.provider: no provider {:?} (add it first, or fix the id)", p.provider))?;
        let name = p.model.strip_suffix('*').unwrap_or(&p.model);
        if p.model.is_empty()
            || p.model.len() > MAX_MODEL_LEN
            || name.contains('*')
            || !p.model.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "{at}.model: {:?} must be a model name or a prefix* pattern (1-{MAX_MODEL_LEN} visible ASCII characters, * only at the end)",
                p.model
            ));
        }
        if !seen.insert((p.provider.as_str(), p.model.as_str())) {
            return Err(format!("{at}: a second price for provider {:?} model {:?}", p.provider, p.model));
        }
        let pattern = match p.model.strip_suffix('*') {
            Some(prefix) => ModelPattern::Prefix(prefix.to_string()),
            None => ModelPattern::Exact(p.model.clone()),
        };
        let price = Price { input: p.input, cached_input: p.cached_input, output: p.output };
        policy.prices.push((provider, pattern, price));
    }
    policy.prices.sort_by_key(|(_, pattern, _)| pattern.rank());
    Ok(())
}

/// Where in the bundle a value sits (`tenants[3].sub_accounts[0].id`),
/// formatted only into an error message: compiling 10 000 tenants must not
/// format 100 000 paths that no error names (a third of a delta's load).
#[derive(Clone, Copy)]
struct At<'a> {
    parent: Option<&'a At<'a>>,
    name: &'a str,
    index: Option<usize>,
}

impl<'a> At<'a> {
    fn root(name: &'a str, index: usize) -> Self {
        At { parent: None, name, index: Some(index) }
    }

    fn field(&'a self, name: &'a str) -> At<'a> {
        At { parent: Some(self), name, index: None }
    }

    fn item(&'a self, name: &'a str, index: usize) -> At<'a> {
        At { parent: Some(self), name, index: Some(index) }
    }
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}.")?;
        }
        f.write_str(self.name)?;
        match self.index {
            Some(i) => write!(f, "[{i}]"),
            None => Ok(()),
        }
    }
}

/// Ids become header values and metric names: a small safe alphabet.
fn check_id(id: &str, at: At<'_>) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!("{at}: {id:?} must be 1-64 characters of a-z 0-9 - _ . starting with a letter or digit"))
    }
}

fn check_path_prefix(p: &str, at: At<'_>) -> Result<(), String> {
    if p.starts_with('/') && !p.contains(['?', '#', '%', '\\']) && p.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!("{at}: {p:?} must be a path starting with / (no query, fragment, escapes or spaces)"))
    }
}

fn check_injected_header(name: &str, at: At<'_>) -> Result<(), String> {
    let token = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !token || crate::core::decision::is_tokenhub_header(name) || name == "host" {
        return Err(format!("{at}: {name:?} must be a lower-case header name other than host and x-tokenhub-*"));
    }
    Ok(())
}

/// Renders `format` with the secret. Control characters in the secret would
/// allow header injection, so they are refused (the secret is never echoed).
fn render(format: &str, secret: &str, at: At<'_>) -> Result<Secret, String> {
    if secret.is_empty() || secret.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("{at}: the secret is empty or contains control characters"));
    }
    let (before, after) = format.split_once("{secret}").unwrap_or((format, ""));
    // Sized first: a string that grew would leave copies of the secret behind.
    let mut value = String::with_capacity(before.len() + secret.len() + after.len());
    value.extend([before, secret, after]);
    Ok(Secret::from(value))
}

impl Provider {
    /// The header value to inject for a tenant: its own secret; else the
    /// platform's where it may serve `method path`. `Err(true)` = the
    /// platform has a secret but may not share it here; `Err(false)` = no
    /// secret at all.
    pub fn value_for<'a>(
        &'a self,
        index: usize,
        tenant: &'a Tenant,
        method: &str,
        path: &str,
    ) -> Result<&'a str, bool> {
        if let Some(own) = tenant.provider_values.get(&index) {
            return Ok(own);
        }
        match &self.default_value {
            Some(shared) if self.shared.iter().any(|e| e.allows(method, path)) => Ok(shared),
            Some(_) => Err(true),
            None => Err(false),
        }
    }
}
