//! The command tree (clap). Each group's `after_help` shows real examples.

use crate::admin::actions::access::Level;
use crate::admin::actions::auditing::{AuditQuery, UsageQuery};
use crate::admin::actions::identities::{Identity, Mapping};
use crate::admin::actions::keys::{KeySpec, Scopes};
use crate::admin::store::admins::Role;
use crate::admin::store::policy::DEFAULT_SUB_ACCOUNT;
use crate::admin::AdminError;
use crate::core::bundle::schema::{QuotaDoc, TokenBudgetDoc};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new store (and a master key file if none exists).
    Init(InitArgs),
    /// Tenants: the unit of isolation.
    #[command(subcommand, after_help = TENANT_HELP)]
    Tenant(TenantCmd),
    /// Sub-accounts: departments inside a tenant, each with its own limits.
    #[command(subcommand, name = "subaccount", after_help = SUB_HELP)]
    SubAccount(SubAccountCmd),
    /// API keys: create, rotate, disable, delete.
    #[command(subcommand, after_help = KEY_HELP)]
    Key(KeyCmd),
    /// IP allowlists (CIDR, IPv4 and IPv6) for a tenant, sub-account or key.
    #[command(subcommand, after_help = IP_HELP)]
    Ip(IpCmd),
    /// Rate limits (requests per minute and per day) and token budgets
    /// (tokens per minute and per day, dollars per month) for a tenant,
    /// sub-account or key.
    #[command(subcommand, after_help = QUOTA_HELP)]
    Quota(QuotaCmd),
    /// Token prices per provider and model, that monthly dollar budgets are charged by.
    #[command(subcommand, after_help = PRICE_HELP)]
    Price(PriceCmd),
    /// OIDC identities (Google, GitHub, Microsoft…) mapped to a tenant.
    #[command(subcommand, after_help = OIDC_HELP)]
    Oidc(OidcCmd),
    /// Upstream providers and their secrets.
    #[command(subcommand, after_help = PROVIDER_HELP)]
    Provider(ProviderCmd),
    /// Seal the policy and write it where Envoy watches (atomic rename).
    Publish(PublishArgs),
    /// What is published: version, time, file, checksum; whether 2FA is on.
    Status,
    /// Unattended start-up step (containers, pods): re-publish the committed
    /// policy and optionally write the bundle key; changes no policy, needs
    /// only the master key, audited as `system`.
    Sync {
        /// Also write the bundle key (Envoy's TOKENHUB_BUNDLE_KEY) here, mode 0600.
        #[arg(long)]
        bundle_key_out: Option<PathBuf>,
    },
    /// Write the bundle key (Envoy's TOKENHUB_BUNDLE_KEY) to a 0600 file.
    BundleKey {
        #[arg(long)]
        out: PathBuf,
    },
    /// Incident response: revoke a leaked key now.
    #[command(subcommand, after_help = INCIDENT_HELP)]
    Incident(IncidentCmd),
    /// Admin accounts (platform or tenant admins) and their API tokens.
    #[command(subcommand, after_help = ADMIN_HELP)]
    Admin(AdminCmd),
    /// Two-factor authentication (TOTP apps, recovery codes) for the acting admin.
    #[command(subcommand, name = "2fa", after_help = TWOFA_HELP)]
    TwoFa(TwoFaCmd),
    /// The hash-chained audit log: tail, search, verify.
    #[command(subcommand, after_help = AUDIT_HELP)]
    Audit(AuditCmd),
    /// Review traffic from Envoy's access log: requests, denials by reason,
    /// client IPs, first and last seen, per tenant, sub-account and key.
    #[command(after_help = USAGE_HELP)]
    Usage(UsageArgs),
    /// Access-log retention (GDPR): drops old lines, cuts old client
    /// addresses (needs no store).
    #[command(subcommand)]
    Logs(LogsCmd),
    /// Run the admin HTTP service (JSON API; see docs/admin-api.md).
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Run Envoy's rate limit service for the global quota mode: limits
    /// from the published bundle, counters in Redis (needs no store).
    #[command(after_help = crate::admin::ratelimit::RATELIMIT_HELP)]
    Ratelimit(crate::admin::ratelimit::RatelimitArgs),
}

impl Command {
    /// Commands that change the store (and so need a 2FA code when the
    /// acting admin has 2FA): used to decide whether to prompt for one.
    pub fn mutates(&self) -> bool {
        match self {
            Self::Init(_)
            | Self::Status
            | Self::Serve(_)
            | Self::Ratelimit(_)
            | Self::Audit(_)
            | Self::Usage(_)
            | Self::Logs(_)
            | Self::Sync { .. } => false,
            Self::Tenant(c) => !matches!(c, TenantCmd::List | TenantCmd::Show { .. }),
            Self::SubAccount(c) => !matches!(c, SubAccountCmd::List { .. }),
            Self::Key(c) => !matches!(c, KeyCmd::List { .. } | KeyCmd::Show { .. }),
            Self::Ip(c) => !matches!(c, IpCmd::List { .. }),
            Self::Quota(c) => !matches!(
                c,
                QuotaCmd::Show { .. }
                    | QuotaCmd::Mode { mode: None }
                    | QuotaCmd::Metering { soft_limit_percent: None, default_output_tokens: None }
            ),
            Self::Provider(c) => !matches!(c, ProviderCmd::List),
            Self::Price(c) => !matches!(c, PriceCmd::List),
            Self::Oidc(c) => !matches!(c, OidcCmd::List),
            Self::Admin(AdminCmd::List) | Self::Admin(AdminCmd::Token(TokenCmd::List { .. })) => false,
            Self::TwoFa(TwoFaCmd::Status) => false,
            _ => true,
        }
    }
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The ECDS file Envoy watches (written by `publish`): JSON, or binary
    /// protobuf when named `*.pb`, which Envoy reads without its JSON
    /// parser (~2 s saved per reload at 1 000 000 keys; use it past
    /// ~100 000 keys, with the same path in Envoy's config_discovery).
    #[arg(long)]
    pub ecds_file: Option<PathBuf>,
    /// Absolute path of tokenhub_guard.wasm as Envoy sees it.
    #[arg(long)]
    pub wasm: Option<PathBuf>,
    /// Also write the new bundle key to this file (mode 0600).
    #[arg(long)]
    pub bundle_key_out: Option<PathBuf>,
    /// Use the bundle key in this file (base64 of 32 bytes, e.g. from
    /// `openssl rand -base64 32`; mode 0600, or a mounted secret) instead
    /// of a new random one: the gateways of a scaled-out deployment get
    /// the same file from their own Secret (README, "Scale out").
    #[arg(long, value_name = "FILE")]
    pub bundle_key_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Add a tenant (with a `default` sub-account).
    Add {
        id: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Data region, e.g. eu or us; routes traffic to that region's upstream.
        #[arg(long, default_value = "")]
        region: String,
    },
    List,
    Show {
        id: String,
    },
    /// Refuse every key of the tenant (after publish).
    Disable {
        id: String,
    },
    Enable {
        id: String,
    },
    SetRegion {
        id: String,
        region: String,
    },
    /// Whether the tenant's provider gets the client's IP address in
    /// `x-forwarded-for` (default: withheld; a provider is a third party).
    ClientAddress {
        id: String,
        #[arg(value_enum)]
        action: ClientAddress,
    },
    /// How long the tenant's access-log lines are kept and when their
    /// client addresses are cut to /24 (IPv4) or /48 (IPv6), applied by
    /// `logs prune` and `usage`; --truncate-at-write makes the gateway log
    /// only the network (after publish). No option: the platform's defaults.
    LogRetention {
        id: String,
        /// Days its lines are kept (default: the platform's, 30).
        #[arg(long)]
        retain_days: Option<u64>,
        /// Days after which its client addresses are cut (default: the platform's, 7).
        #[arg(long, conflicts_with = "truncate_at_write")]
        truncate_ips_after_days: Option<u64>,
        /// The gateway writes only the network of its clients' addresses.
        #[arg(long)]
        truncate_at_write: bool,
    },
    /// Everything held about the tenant, as one JSON document (a data
    /// subject's or a data-protection officer's request; audited, needs 2FA):
    /// tenant, sub-accounts, key metadata (never secrets or hashes),
    /// allowlists, quotas, OIDC mappings, its admins, their audit lines.
    Export {
        id: String,
        /// Write it here (atomically, mode 0600) instead of to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also report the tenant's traffic from this Envoy access log.
        #[arg(long)]
        access_log: Option<PathBuf>,
    },
    /// Erases the tenant for good (platform admin, 2FA): sub-accounts,
    /// keys, allowlists, quotas, provider secrets, OIDC mappings and its
    /// admins leave the store (publish to drop them from the gateways), and
    /// its audit lines keep their place in the chain with every personal
    /// field replaced by `[erased]` (`audit verify` still passes).
    Erase {
        id: String,
        /// The tenant's id again: erasure cannot be undone.
        #[arg(long)]
        confirm: String,
        /// A rotated access-log file to drop the tenant's lines from
        /// (repeatable; Envoy's live log is refused: rotate it first).
        #[arg(long = "access-log")]
        access_log: Vec<PathBuf>,
    },
    /// Models the tenant's keys may use: exact names or `prefix*`, comma
    /// separated; no --models = any model.
    SetModels {
        id: String,
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ClientAddress {
    /// Send the address the guard saw (the TCP peer) to the provider.
    Forward,
    /// Send no client address (the default).
    Withhold,
}

#[derive(Subcommand, Debug)]
pub enum SubAccountCmd {
    Add {
        tenant: String,
        id: String,
    },
    List {
        tenant: String,
    },
    Disable {
        tenant: String,
        id: String,
    },
    Enable {
        tenant: String,
        id: String,
    },
    /// Models the sub-account's keys may use (narrows the tenant's list):
    /// exact names or `prefix*`, comma separated; no --models = any model.
    SetModels {
        tenant: String,
        id: String,
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a key; it is printed once and never stored in clear.
    Create(KeyCreate),
    /// List keys (never secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    Show {
        id: String,
    },
    /// New secret, same key id; the old secret works for --grace (e.g. 24h, 0 for none).
    Rotate {
        id: String,
        #[arg(long, default_value = "0s")]
        grace: String,
    },
    Disable {
        id: String,
    },
    Enable {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Replace a key's scopes (no flags = unrestricted).
    SetScopes {
        id: String,
        #[command(flatten)]
        scopes: ScopeArgs,
    },
    /// Set or clear a key's expiry.
    SetExpiry {
        id: String,
        /// Expire after this long from now, e.g. 30d.
        #[arg(long, conflicts_with = "never", required_unless_present = "never")]
        r#in: Option<String>,
        #[arg(long)]
        never: bool,
    },
}

/// `--role` values (clap's view of `Role`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    /// Everything, including tenants, providers and other admins.
    Platform,
    /// One tenant's sub-accounts, keys, allowlists and quotas.
    Tenant,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Platform => Role::Platform,
            RoleArg::Tenant => Role::Tenant,
        }
    }
}

/// Scopes of a key: methods and path prefixes (none = any).
#[derive(Args, Debug, Default, Clone)]
pub struct ScopeArgs {
    /// Allowed HTTP methods, comma separated (default: any).
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Allowed path prefixes, comma separated (default: any).
    #[arg(long, value_delimiter = ',')]
    pub paths: Vec<String>,
    /// Allowed models, comma separated: exact names or `prefix*` (default:
    /// any; with a list, the request body is read for its model).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
}

impl ScopeArgs {
    pub fn scopes(&self) -> Scopes {
        Scopes { methods: self.methods.clone(), paths: self.paths.clone(), models: self.models.clone() }
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct KeyCreate {
    #[arg(long)]
    pub tenant: String,
    #[arg(long, default_value = DEFAULT_SUB_ACCOUNT)]
    pub sub_account: String,
    /// A label to recognise the key by (not secret).
    #[arg(long, default_value = "")]
    pub name: String,
    /// Expire after this long, e.g. 90d.
    #[arg(long)]
    pub expires_in: Option<String>,
    #[command(flatten)]
    pub scopes: ScopeArgs,
}

impl KeyCreate {
    pub fn spec(&self) -> KeySpec {
        KeySpec {
            tenant: self.tenant.clone(),
            sub_account: Some(self.sub_account.clone()),
            name: self.name.clone(),
            expires_in: self.expires_in.clone(),
            scopes: self.scopes.scopes(),
        }
    }
}

/// Whom an OIDC mapping is for: `oidc unmap`, and the first three
/// arguments of `oidc map`.
#[derive(Args, Debug, Clone, Default)]
pub struct IdentityArgs {
    /// The token issuer (`iss`), e.g. https://accounts.google.com.
    #[arg(long)]
    pub issuer: String,
    /// The claim that identifies the person or workload (`sub`, `email`…).
    #[arg(long, default_value = "sub")]
    pub claim: String,
    /// The claim's value, e.g. the subject id or the email address.
    #[arg(long)]
    pub value: String,
}

impl IdentityArgs {
    pub fn identity(&self) -> Identity {
        Identity { issuer: self.issuer.clone(), claim: self.claim.clone(), value: self.value.clone() }
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct MapArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[arg(long)]
    pub tenant: String,
    #[arg(long, default_value = DEFAULT_SUB_ACCOUNT)]
    pub sub_account: String,
    #[command(flatten)]
    pub scopes: ScopeArgs,
}

impl MapArgs {
    pub fn mapping(&self) -> Mapping {
        let Identity { issuer, claim, value } = self.identity.identity();
        Mapping {
            issuer,
            claim,
            value,
            tenant: self.tenant.clone(),
            sub_account: self.sub_account.clone(),
            scopes: self.scopes.scopes(),
        }
    }
}

/// `--since` and `--until` of `audit search` and `usage`.
#[derive(Args, Debug, Clone, Default)]
pub struct TimeArgs {
    /// From: unix seconds, 2025-01-31, 2025-01-31T12:00:00Z, or an age like 24h.
    #[arg(long)]
    pub since: Option<String>,
    /// Until (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct SearchArgs {
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub actor: Option<String>,
    /// An action (`key.rotate`) or a family ending in a dot (`key.`, `2fa.`, `auth.`).
    #[arg(long)]
    pub action: Option<String>,
    #[command(flatten)]
    pub time: TimeArgs,
    /// Only refusals (denied, auth failures, lockouts, errors).
    #[arg(long)]
    pub failures: bool,
}

impl SearchArgs {
    pub fn query(&self) -> AuditQuery {
        AuditQuery {
            tenant: self.tenant.clone(),
            key_id: self.key.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            since: self.time.since.clone(),
            until: self.time.until.clone(),
            failures: self.failures,
        }
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct UsageArgs {
    /// Envoy's JSON access log (metadata only; see envoy/local/envoy.yaml.tmpl).
    #[arg(long, env = "TOKENHUB_ACCESS_LOG", required_unless_present = "current")]
    pub access_log: Option<PathBuf>,
    /// This month's totals (UTC) of the metered requests (credentials with
    /// a token or dollar budget), from the global quota mode's counters in
    /// Redis instead of the access log (no --per-model, --per-day or time
    /// range).
    #[arg(long)]
    pub current: bool,
    /// With --current: the Redis `tokenhub-admin ratelimit` counts in. A URL
    /// with a password belongs in the environment variable
    /// (TOKENHUB_REDIS_URL), never on the command line.
    #[arg(long, env = "TOKENHUB_REDIS_URL", hide_env_values = true, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    /// One row per key (default), sub-account or tenant.
    #[arg(long, value_enum, default_value = "key")]
    pub by: UsageLevelArg,
    /// One row per model too.
    #[arg(long)]
    pub per_model: bool,
    /// One row per day (UTC) too.
    #[arg(long)]
    pub per_day: bool,
    /// Print CSV (RFC 4180, a header line; the same columns as --json).
    #[arg(long)]
    pub csv: bool,
    #[command(flatten)]
    pub time: TimeArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

/// `usage --by` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UsageLevelArg {
    #[default]
    Key,
    SubAccount,
    Tenant,
}

impl From<UsageLevelArg> for crate::admin::usage::Level {
    fn from(l: UsageLevelArg) -> Self {
        match l {
            UsageLevelArg::Key => Self::Key,
            UsageLevelArg::SubAccount => Self::SubAccount,
            UsageLevelArg::Tenant => Self::Tenant,
        }
    }
}

/// How long access-log lines and client addresses are kept (docs/gdpr.md).
#[derive(Args, Debug, Clone)]
pub struct RetentionArgs {
    /// Lines older than this many days are dropped (`usage` ignores them).
    #[arg(long, env = "TOKENHUB_LOG_RETAIN_DAYS", default_value_t = crate::admin::retention::DEFAULT_RETAIN_DAYS)]
    pub retain_days: u64,
    /// Client addresses older than this many days are cut to /24 (IPv4) or
    /// /48 (IPv6); 0 = every line.
    #[arg(long, env = "TOKENHUB_LOG_TRUNCATE_IPS_AFTER_DAYS", default_value_t = crate::admin::retention::DEFAULT_TRUNCATE_IPS_AFTER_DAYS)]
    pub truncate_ips_after_days: u64,
}

impl Default for RetentionArgs {
    fn default() -> Self {
        Self {
            retain_days: crate::admin::retention::DEFAULT_RETAIN_DAYS,
            truncate_ips_after_days: crate::admin::retention::DEFAULT_TRUNCATE_IPS_AFTER_DAYS,
        }
    }
}

impl RetentionArgs {
    pub fn days(&self) -> crate::admin::actions::auditing::RetentionDays {
        crate::admin::actions::auditing::RetentionDays {
            retain: self.retain_days,
            truncate_ips_after: self.truncate_ips_after_days,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum LogsCmd {
    /// Rewrites rotated access-log files (atomically, same mode and owner)
    /// without their lines older than --retain-days and with client
    /// addresses older than --truncate-ips-after-days cut to their network.
    /// Refuses a file a process holds open (Envoy's live log: rotate it
    /// first, then prune the rotated file).
    Prune {
        /// A rotated access-log file; repeatable.
        #[arg(long = "access-log", required = true)]
        access_log: Vec<PathBuf>,
        #[command(flatten)]
        retention: RetentionArgs,
        /// Also drop every line of this tenant, whatever its age (after
        /// `tenant erase`).
        #[arg(long)]
        drop_tenant: Option<String>,
        /// Apply the platform's rules to every line, without reading the
        /// tenants' own (`tenant log-retention`) from the store.
        #[arg(long)]
        ignore_tenant_rules: bool,
    },
}

impl UsageArgs {
    pub fn query(&self) -> UsageQuery {
        UsageQuery {
            access_log: self.access_log.clone().unwrap_or_default(),
            tenant: self.tenant.clone(),
            key: self.key.clone(),
            since: self.time.since.clone(),
            until: self.time.until.clone(),
            retention: Some(self.retention.days()),
            grouping: crate::admin::usage::Grouping {
                level: self.by.into(),
                per_model: self.per_model,
                per_day: self.per_day,
            },
            csv: self.csv,
        }
    }
}

/// Which level a command is about: a tenant, one of its sub-accounts, or a key.
#[derive(Args, Debug, Clone, Default)]
pub struct TargetArgs {
    #[arg(long, required_unless_present = "key")]
    pub tenant: Option<String>,
    #[arg(long, requires = "tenant")]
    pub sub_account: Option<String>,
    #[arg(long, conflicts_with_all = ["tenant", "sub_account"])]
    pub key: Option<String>,
}

impl TargetArgs {
    pub fn level(&self) -> Result<Level, AdminError> {
        Level::parse(self.tenant.clone(), self.sub_account.clone(), self.key.clone())
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct QuotaArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Requests per minute (omit for no per-minute limit).
    #[arg(long)]
    pub per_minute: Option<u64>,
    /// Requests per day (omit for no daily limit).
    #[arg(long)]
    pub per_day: Option<u64>,
    /// Tokens (input + output) per minute; the request and response bodies
    /// of the credentials it applies to are then read for usage.
    #[arg(long)]
    pub tokens_per_minute: Option<u64>,
    /// Tokens (input + output) per day.
    #[arg(long)]
    pub tokens_per_day: Option<u64>,
    /// Dollars per calendar month (UTC), e.g. 50 or 12.50, charged by the
    /// price table (`tokenhub-admin price set`).
    #[arg(long, value_name = "USD")]
    pub monthly_budget: Option<String>,
}

impl QuotaArgs {
    pub fn quota(&self) -> QuotaDoc {
        QuotaDoc { per_minute: self.per_minute, per_day: self.per_day }
    }

    pub fn budget(&self) -> Result<TokenBudgetDoc, AdminError> {
        Ok(TokenBudgetDoc {
            tokens_per_minute: self.tokens_per_minute,
            tokens_per_day: self.tokens_per_day,
            monthly_budget_nano_usd: self
                .monthly_budget
                .as_deref()
                .map(|t| crate::admin::actions::prices::dollars(t, "--monthly-budget"))
                .transpose()?,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum PriceCmd {
    /// Set the price of a model (an exact name or a `prefix*` pattern) at a
    /// provider, in dollars per million tokens.
    Set {
        #[arg(long)]
        provider: String,
        #[arg(long)]
        model: String,
        /// Dollars per million input tokens.
        #[arg(long, value_name = "USD")]
        input: String,
        /// Dollars per million cached input tokens (default 0).
        #[arg(long, value_name = "USD", default_value = "0")]
        cached_input: String,
        /// Dollars per million output tokens.
        #[arg(long, value_name = "USD")]
        output: String,
    },
    /// The price table.
    List,
    /// Remove one price.
    Remove {
        #[arg(long)]
        provider: String,
        #[arg(long)]
        model: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum IpCmd {
    /// Add CIDRs to the list and enable it.
    Allow {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(required = true)]
        cidrs: Vec<String>,
    },
    /// Remove CIDRs from the list.
    Deny {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(required = true)]
        cidrs: Vec<String>,
    },
    List {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Enforce the list (an empty enabled list refuses every address).
    Enable {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Stop enforcing the list (any address).
    Disable {
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuotaCmd {
    /// Set the limits of one level (a window left out has no limit there).
    Set(QuotaArgs),
    /// The level's own limits and the effective ones (strictest of key, sub-account, tenant).
    Show {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Remove the level's limits.
    Clear {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Where quotas are counted: `local` (the guard in each Envoy, the
    /// default) or `global` (the rate limit service, counters in Redis,
    /// shared by every replica). Without a value: show the current mode.
    Mode {
        #[arg(value_enum)]
        mode: Option<QuotaModeArg>,
    },
    /// How token and dollar budgets meter requests: the soft limit (share
    /// of a budget past which a request is flagged in a metric and the
    /// access log) and the output tokens reserved for a request that states
    /// no `max_tokens`. Without options: show them.
    Metering {
        /// 1-100 (default 80).
        #[arg(long, value_name = "PERCENT")]
        soft_limit_percent: Option<u8>,
        /// Output tokens reserved at admission when the request body states
        /// no `max_tokens`/`max_completion_tokens`/`max_output_tokens` (default 1024).
        #[arg(long, value_name = "TOKENS")]
        default_output_tokens: Option<u64>,
    },
}

/// `quota mode` values (clap's view of `QuotaMode`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaModeArg {
    /// Counted by the guard, per Envoy (exact among its workers).
    Local,
    /// Counted by `tokenhub-admin ratelimit` in Redis, across all Envoys.
    Global,
}

impl From<QuotaModeArg> for crate::core::bundle::schema::QuotaMode {
    fn from(m: QuotaModeArg) -> Self {
        match m {
            QuotaModeArg::Local => Self::Local,
            QuotaModeArg::Global => Self::Global,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ProviderCmd {
    /// Define a provider and set its secret (read from stdin or --secret-file).
    Set {
        id: String,
        #[arg(long)]
        path_prefix: String,
        #[arg(long, default_value = "authorization")]
        header: String,
        #[arg(long, default_value = "Bearer {secret}")]
        format: String,
        /// Set this tenant's own secret instead of the platform default.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Endpoints the platform's secret may serve: the stateless ones of
        /// `openai` or `anthropic` under --path-prefix, or `none`. Default:
        /// unchanged; for a new platform secret, the preset named like the
        /// provider. Everything else needs the tenant's own secret.
        #[arg(long, value_name = "openai|anthropic|none")]
        shared_preset: Option<String>,
        /// One more endpoint the platform's secret may serve: "METHOD /path"
        /// (exact) or "METHOD /path/*" (below it). Repeatable.
        #[arg(long, value_name = "METHOD PATH")]
        shared_endpoint: Vec<String>,
    },
    List,
    Remove {
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Write to this ECDS file from now on (as `init --ecds-file`: `*.pb`
    /// is binary protobuf, anything else JSON).
    #[arg(long)]
    pub ecds_file: Option<PathBuf>,
    /// The module path Envoy loads, from now on (as `init --wasm`).
    #[arg(long)]
    pub wasm: Option<PathBuf>,
    /// Publish only the changes since the published base bundle (a delta),
    /// whatever its size. By default a delta is chosen for a base of 10 000
    /// keys or more when few keys changed.
    #[arg(long, conflicts_with = "full")]
    pub delta: bool,
    /// Publish the whole bundle (it becomes the base of later deltas).
    #[arg(long)]
    pub full: bool,
}

#[derive(Subcommand, Debug)]
pub enum IncidentCmd {
    /// Disable the key (and its previous secret), publish now, show its audit trail.
    Revoke { key_id: String },
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Add an admin (the first one needs no 2FA and must be a platform admin).
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The tenant a tenant admin manages.
        #[arg(long)]
        tenant: Option<String>,
    },
    List,
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    Remove {
        name: String,
    },
    /// Removes the account and makes every audit line it wrote or that
    /// names it unreadable (`[erased]`; `audit verify` still passes).
    Erase {
        name: String,
        /// The admin's name again: erasure cannot be undone.
        #[arg(long)]
        confirm: String,
    },
    /// Tokens for the admin HTTP service.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token for NAME; printed once, only its hash is kept.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    List {
        name: String,
    },
    Revoke {
        name: String,
        token_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TwoFaCmd {
    /// Generate a TOTP secret: otpauth:// URI and QR code to scan.
    Enroll {
        /// Also write the QR code as a PNG (mode 0600).
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Activate 2FA with a code from the app; prints ten recovery codes.
    Verify,
    /// Replace the recovery codes (the old ones stop working).
    RecoveryCodes,
    /// Remove another admin's 2FA (lost phone); platform admins only.
    Reset { name: String },
    /// The acting admin's 2FA state.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum OidcCmd {
    /// Map an identity (issuer + claim value) to a tenant and sub-account.
    Map(MapArgs),
    /// Remove a mapping.
    Unmap(IdentityArgs),
    List,
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// The last entries.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        n: usize,
    },
    Search(SearchArgs),
    /// Check every line's MAC and the chain; names any edited, removed, inserted or moved line.
    Verify,
    /// After a deliberate restore of store.enc or audit.log from a backup:
    /// record in the log how they disagree and bind them again. Needs only
    /// the master key (audited as `system`); refuses when they agree.
    Rebind,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (loopback only unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: String,
    /// Accept a non-loopback listen address (put TLS and a firewall in front).
    #[arg(long)]
    pub allow_remote: bool,
    /// Also be the control plane of several gateways: push every publish to
    /// each Envoy that subscribes over xDS (ECDS, gRPC) on this address.
    /// Off a loopback address it needs the three --xds-* TLS files (mTLS).
    #[arg(long, value_name = "IP:PORT")]
    pub xds_listen: Option<String>,
    /// PEM certificate the xDS server presents (the gateways pin its name).
    #[arg(long, value_name = "FILE", requires_all = ["xds_key", "xds_client_ca"])]
    pub xds_cert: Option<PathBuf>,
    /// PEM private key of that certificate (mode 0600 or stricter).
    #[arg(long, value_name = "FILE", requires = "xds_cert")]
    pub xds_key: Option<PathBuf>,
    /// PEM CA that signed the gateways' client certificates: a peer without
    /// one it signed gets no TLS session, so not even the sealed bundle.
    #[arg(long, value_name = "FILE", requires = "xds_cert")]
    pub xds_client_ca: Option<PathBuf>,
    /// Prometheus metrics of the gateways' xDS state (plain HTTP, no
    /// secrets: node ids and bundle versions).
    #[arg(long, value_name = "IP:PORT", requires = "xds_listen")]
    pub metrics_listen: Option<String>,
    /// A further HOST[:PORT] the browser console at /console/ is reached by
    /// (e.g. behind a TLS proxy); requests naming another Host, and form
    /// posts from another Origin, are refused. Loopback names always work.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub console_host: Vec<String>,
    /// Envoy's JSON access log, for `GET /v1/usage` and the console's usage
    /// page (the same report as `tokenhub-admin usage --access-log`); without
    /// it both answer that no access log is configured.
    #[arg(long, value_name = "FILE", env = "TOKENHUB_ACCESS_LOG")]
    pub access_log: Option<PathBuf>,
}

impl ServeArgs {
    /// The service's own options (the API and xDS know nothing of clap).
    pub fn options(&self) -> crate::admin::api::ServeOptions {
        crate::admin::api::ServeOptions {
            listen: self.listen.clone(),
            allow_remote: self.allow_remote,
            xds_listen: self.xds_listen.clone(),
            xds_cert: self.xds_cert.clone(),
            xds_key: self.xds_key.clone(),
            xds_client_ca: self.xds_client_ca.clone(),
            metrics_listen: self.metrics_listen.clone(),
            console_host: self.console_host.clone(),
            access_log: self.access_log.clone(),
        }
    }
}

const TENANT_HELP: &str = "Examples:
  tokenhub-admin tenant add acme --name 'Acme Inc' --region eu
  tokenhub-admin tenant list
  tokenhub-admin tenant disable acme && tokenhub-admin publish";

const SUB_HELP: &str = "Examples:
  tokenhub-admin subaccount add acme research
  tokenhub-admin key create --tenant acme --sub-account research
  tokenhub-admin subaccount disable acme research";

const KEY_HELP: &str = "Examples:
  tokenhub-admin key create --tenant acme --sub-account research --name ci --expires-in 90d --methods POST --paths /v1/chat/
  tokenhub-admin key list --tenant acme
  tokenhub-admin key rotate Ab12Cd34Ef56 --grace 24h     # old secret keeps working for a day
  tokenhub-admin key disable Ab12Cd34Ef56
The key is printed once (stdout); only a hash is stored. Changes apply on `publish`.";

const IP_HELP: &str = "Examples:
  tokenhub-admin ip allow --tenant acme 203.0.113.0/24 2001:db8::/32
  tokenhub-admin ip allow --tenant acme --sub-account research 203.0.113.7/32
  tokenhub-admin ip deny --key Ab12Cd34Ef56 198.51.100.0/24
  tokenhub-admin ip disable --tenant acme
A request must be inside the tenant's, the sub-account's and the key's lists (each enabled one).";

const QUOTA_HELP: &str = "Examples:
  tokenhub-admin quota set --tenant acme --per-minute 600 --per-day 100000
  tokenhub-admin quota set --tenant acme --sub-account research --per-minute 100
  tokenhub-admin quota set --key Ab12Cd34Ef56 --per-day 5000
  tokenhub-admin quota set --key Ab12Cd34Ef56 --tokens-per-minute 20000 --monthly-budget 50
  tokenhub-admin quota show --key Ab12Cd34Ef56
  tokenhub-admin quota mode global      # count in Redis, shared by every Envoy
  tokenhub-admin quota metering --soft-limit-percent 90 --default-output-tokens 512
A tenant's own quota is set by platform admins; tenant admins divide it among sub-accounts and keys.";

const PRICE_HELP: &str = "Examples:
  tokenhub-admin price set --provider openai --model gpt-4o --input 2.50 --cached-input 1.25 --output 10
  tokenhub-admin price set --provider anthropic --model 'claude-3-5-haiku*' --input 0.80 --output 4
  tokenhub-admin price list
  tokenhub-admin price remove --provider openai --model gpt-4o
Prices are dollars per million tokens (steps of $0.001). An exact model name wins over a pattern, a longer
pattern over a shorter one; the model the response names is priced, else the one the request named.
A request against a monthly dollar budget for a model without a price is refused (403 model_not_priced).";

const PROVIDER_HELP: &str = "Examples:
  tokenhub-admin provider set openai --path-prefix /v1/ --header authorization --format 'Bearer {secret}' < openai.secret
  tokenhub-admin provider set anthropic --path-prefix /anthropic/ --header x-api-key --format '{secret}' --secret-file anthropic.secret
  tokenhub-admin provider set openai --path-prefix /v1/ --tenant acme --secret-file acme-openai.secret
  tokenhub-admin provider set llm --path-prefix /llm/ --shared-endpoint 'POST /llm/generate' < llm.secret
The secret is never an argument: stdin or --secret-file.
The platform's secret serves only the endpoints listed as shared (for `openai` and `anthropic`, their
stateless ones by default); files, batches, assistants, stored responses and the like need the tenant's
own secret (--tenant), else clients get 403 provider_credential_required.";

const INCIDENT_HELP: &str = "Example (a key leaked):
  tokenhub-admin incident revoke Ab12Cd34Ef56          # disabled + published: Envoy refuses it within seconds
  tokenhub-admin key create --tenant acme --sub-account research   # the replacement
  tokenhub-admin audit search --key Ab12Cd34Ef56";

const ADMIN_HELP: &str = "Examples:
  tokenhub-admin admin add alice --role platform                       # the first admin (bootstrap)
  tokenhub-admin --as alice 2fa enroll && tokenhub-admin --as alice 2fa verify
  tokenhub-admin --as alice --otp 123456 admin add bob --role tenant --tenant acme
  tokenhub-admin --as alice --otp 123456 admin token create alice --label ops   # for `serve`";

const TWOFA_HELP: &str = "Examples:
  tokenhub-admin --as alice 2fa enroll --png alice-2fa.png
  tokenhub-admin --as alice 2fa verify          # prompts for the code (or --otp, --otp-stdin, TOKENHUB_OTP)
  tokenhub-admin --as alice 2fa recovery-codes  # new set; the old ones stop working
Once any admin has verified 2FA, every command must name an admin (--as or TOKENHUB_ADMIN) and every change
needs a current code or a recovery code. A code works once; 5 wrong codes in a row lock the admin for 15 minutes.";

const AUDIT_HELP: &str = "Examples:
  tokenhub-admin audit tail -n 50
  tokenhub-admin audit search --key Ab12Cd34Ef56
  tokenhub-admin audit search --tenant acme --action key. --since 24h
  tokenhub-admin audit search --failures --since 2025-01-31
  tokenhub-admin audit verify       # exit 5 and the line numbers if anything was edited, removed or moved";

const SERVE_HELP: &str = "Example:
  TOKENHUB_HOME=/var/lib/tokenhub tokenhub-admin serve --listen 127.0.0.1:8081
  curl -H \"authorization: Bearer $TOKEN\" http://127.0.0.1:8081/v1/keys
  curl -X POST -H \"authorization: Bearer $TOKEN\" -H \"x-tokenhub-otp: 123456\" http://127.0.0.1:8081/v1/incident/revoke/Ab12Cd34Ef56
Every change is published at once. See docs/admin-api.md.

Control plane for several gateways (README, \"Scale out\"): Envoys subscribe to
the bundle over xDS; certificates from tools/xds-certs.sh (or your CA):
  tokenhub-admin serve --xds-listen 0.0.0.0:18000 \\
      --xds-cert xds/server.crt --xds-key xds/server.key --xds-client-ca xds/ca.crt \\
      --metrics-listen 0.0.0.0:9102
  tokenhub-admin status     # every gateway: version acknowledged, last refusal, last seen";

const USAGE_HELP: &str = "Examples:
  tokenhub-admin usage --access-log /var/log/envoy/access.json
  tokenhub-admin usage --tenant acme --since 24h
  tokenhub-admin usage --key Ab12Cd34Ef56 --since 2026-01-31T00:00:00Z --json
  TOKENHUB_REDIS_URL=redis://127.0.0.1:6379 tokenhub-admin usage --current --by tenant
Rows with tenant '-' are requests the guard could not attribute (missing,
malformed or unknown keys): a burst there is someone guessing keys.";

const OIDC_HELP: &str = "Examples:
  tokenhub-admin oidc map --issuer https://accounts.google.com --value 110169484474386276334 --tenant acme --sub-account research
  tokenhub-admin oidc map --issuer https://token.actions.githubusercontent.com --claim repository_id --value 123456789 --tenant acme --methods POST
  tokenhub-admin oidc list
Envoy's jwt_authn filter verifies the token (issuer, audience, signature, expiry); the guard maps the
verified identity through these entries. Changes apply on `publish`.
GitHub Actions: map the numeric `repository_id` (or `repository_owner_id`), never a name claim
(`repository`, `sub`): a deleted or renamed repository's name can be taken by someone else.";
