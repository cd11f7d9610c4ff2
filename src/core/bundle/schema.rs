//! The bundle's JSON schema (version 1). Parsing is strict: unknown fields
//! are errors, so a typo in a policy never silently widens access.

pub use crate::core::wipe::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleDoc {
    /// Schema of this document; the filter refuses any other.
    pub schema: u32,
    /// Publish counter, strictly increasing; the filter refuses rollbacks.
    pub version: u64,
    /// Unix seconds when the bundle was published (metadata only).
    #[serde(default)]
    pub issued_at: u64,
    #[serde(default)]
    pub tenants: Vec<TenantDoc>,
    #[serde(default)]
    pub keys: Vec<KeyDoc>,
    #[serde(default)]
    pub providers: Vec<ProviderDoc>,
    #[serde(default)]
    pub oidc: Vec<OidcPrincipalDoc>,
    /// Where quotas are counted (absent = `local`).
    #[serde(default, skip_serializing_if = "QuotaMode::is_local")]
    pub quota_mode: QuotaMode,
    /// Token prices per provider and model, for monthly dollar budgets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<PriceDoc>,
    /// Share of a token or dollar budget (1-100) past which a request is
    /// flagged (metric, access-log field); absent = 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_limit_percent: Option<u8>,
    /// Output tokens a metered request's reservation counts when its body
    /// states no `max_tokens` (or the like); absent = 1 024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_output_tokens: Option<u64>,
    /// A delta's base (see `super::delta`): its records are changes since
    /// that bundle, which must be the one it is delivered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
}

/// The bundle a delta applies to: its version and `seal::fingerprint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRef {
    pub version: u64,
    pub fingerprint: String,
}

/// A model's token prices, in nano-dollars per token (dollars per million
/// tokens × 1 000; `tokenhub-admin price set` takes dollars per million).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceDoc {
    /// A provider id of `providers`.
    pub provider: String,
    /// An exact model name, or a `prefix*` pattern (the longest prefix wins,
    /// an exact name before any pattern).
    pub model: String,
    pub input: u64,
    #[serde(default)]
    pub cached_input: u64,
    pub output: u64,
}

/// Token and spend limits of a key, sub-account or tenant (metered
/// requests: the request and response bodies are read for usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBudgetDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Dollars per calendar month (UTC), in nano-dollars (10⁻⁹ USD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget_nano_usd: Option<u64>,
}

impl TokenBudgetDoc {
    pub fn is_empty(&self) -> bool {
        self.tokens_per_minute.is_none() && self.tokens_per_day.is_none() && self.monthly_budget_nano_usd.is_none()
    }
}

/// Where the quotas of `quota set` are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaMode {
    /// By the guard, in Envoy's shared data: exact among the workers of one
    /// Envoy, each Envoy counting on its own.
    #[default]
    Local,
    /// By the rate limit service (`tokenhub-admin ratelimit`, counters in
    /// Redis), reached through Envoy's `envoy.filters.http.ratelimit` placed
    /// after the guard: exact across every replica. The guard counts nothing.
    Global,
}

impl QuotaMode {
    pub fn is_local(&self) -> bool {
        *self == Self::Local
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Global => "global",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    Disabled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpAllowlistDoc {
    pub enabled: bool,
    #[serde(default)]
    pub cidrs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopesDoc {
    /// Allowed HTTP methods (upper case); empty or absent = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Allowed path prefixes; empty or absent = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_prefixes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDoc {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: Status,
    #[serde(default)]
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<IpAllowlistDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaDoc>,
    /// Token and dollar limits (absent = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<TokenBudgetDoc>,
    /// Allowed models: exact names and `prefix*` patterns; empty or absent
    /// = any model (the request body is then never read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Provider id → this tenant's own upstream secret (overrides the
    /// provider's default secret).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provider_secrets: BTreeMap<String, Secret>,
    #[serde(default)]
    pub sub_accounts: Vec<SubAccountDoc>,
    /// Send the client's address to the provider (`x-forwarded-for`). Off by
    /// default: a provider is a third party (GDPR minimisation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_client_address: bool,
    /// How long its lines stay in the access logs the admin manages, and
    /// when their client addresses are cut to their network (absent = the
    /// platform's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_retention: Option<LogRetentionDoc>,
}

/// A tenant's access-log retention. A field left out takes the platform's
/// default (`tokenhub-admin logs prune`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRetentionDoc {
    /// Days its lines are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_days: Option<u64>,
    /// Days after which its client addresses are cut to /24 (IPv4) or /48
    /// (IPv6); 0 = at write time: the gateway logs only the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_ips_after_days: Option<u64>,
}

impl LogRetentionDoc {
    /// The gateway itself logs only the network of the client's address.
    pub fn truncates_at_write(&self) -> bool {
        self.truncate_ips_after_days == Some(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubAccountDoc {
    pub id: String,
    #[serde(default)]
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<IpAllowlistDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<ScopesDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaDoc>,
    /// Token and dollar limits (absent = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<TokenBudgetDoc>,
    /// Allowed models: exact names and `prefix*` patterns; empty or absent
    /// = any model (the request body is then never read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousSecretDoc {
    /// Hex SHA-256 of the previous secret (see `core::secret::hash_secret`).
    pub hash: String,
    /// Unix seconds after which the previous secret is refused.
    pub valid_until: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDoc {
    pub id: String,
    pub tenant: String,
    pub sub_account: String,
    /// Hex SHA-256 of the current secret.
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousSecretDoc>,
    #[serde(default)]
    pub status: Status,
    /// Unix seconds; absent = never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<ScopesDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<IpAllowlistDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaDoc>,
    /// Token and dollar limits (absent = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<TokenBudgetDoc>,
    /// Allowed models: exact names and `prefix*` patterns; empty or absent
    /// = any model (the request body is then never read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderDoc {
    pub id: String,
    /// Requests whose path starts with this prefix go to this provider;
    /// the longest matching prefix wins.
    pub path_prefix: String,
    /// Header to inject, e.g. `authorization` or `x-api-key`.
    pub header: String,
    /// Value template with exactly one `{secret}`, e.g. `Bearer {secret}`.
    pub format: String,
    /// The platform's default upstream secret for this provider (a tenant
    /// may override it); absent means every tenant must bring its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// The endpoints the platform's `secret` may serve, as `"METHOD /path"`
    /// (exact path) or `"METHOD /path/*"` (anything below it); `*` as the
    /// method means any. Every other endpoint under `path_prefix` needs the
    /// tenant's own provider secret (403 `provider_credential_required`):
    /// objects a provider keeps (files, batches, assistants, stored
    /// responses…) live under the credential that made them, so on a shared
    /// credential every tenant could read every other's. Only stateless
    /// endpoints belong here (see `super::shared`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_endpoints: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcPrincipalDoc {
    pub issuer: String,
    /// Claim whose value identifies the principal (`sub` by default).
    #[serde(default = "default_claim")]
    pub claim: String,
    pub value: String,
    pub tenant: String,
    pub sub_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<ScopesDoc>,
}

fn default_claim() -> String {
    "sub".to_string()
}

/// Strict parse; the error message names the field and position, never a
/// value (Envoy logs it when the filter refuses a bundle).
pub fn parse(json: &[u8]) -> Result<BundleDoc, String> {
    serde_json::from_slice(json).map_err(|e| crate::core::redact::serde_error_naming_fields(&e))
}
