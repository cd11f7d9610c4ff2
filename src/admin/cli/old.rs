//! Command-line interface. Secrets are read from stdin or files, never from
//! arguments; keys are printed once; `--json` gives scripts stable output.

use super::ops::{self, NewKey, ProviderSpec};
use super::store::{load_master_key, Settings, Store, StoreDoc, StorePaths};
use super::{fsutil, parse_duration, publish, random_key256, unix_now, AdminError};
use crate::core::bundle::schema::*;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::io::Read;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Parser, Debug)]
#[command(
    name = "tokenhub-admin",
    version,
    about = "Administer TokenHub Guard: tenants, sub-accounts, API keys, IP allowlists, quotas, provider secrets; publish the sealed policy bundle that Envoy hot-reloads.",
    after_help = "Quick start:\n  tokenhub-admin init --ecds-file /etc/tokenhub/bundle/guard.yaml --wasm /etc/tokenhub/tokenhub_guard.wasm --bundle-key-out bundle.key\n  tokenhub-admin tenant add acme --name 'Acme Inc' --region eu\n  tokenhub-admin provider set openai --path-prefix /v1/ --header authorization --format 'Bearer {secret}' < openai.secret\n  tokenhub-admin key create --tenant acme\n  tokenhub-admin publish\n\nSecrets are never taken as arguments: the master key comes from TOKENHUB_MASTER_KEY_FILE (a 0600 file) or TOKENHUB_MASTER_KEY, provider secrets from stdin or --secret-file.\nExit codes: 0 ok, 1 I/O or internal error, 2 usage, 3 not found, 4 authentication, 5 corrupt file, 6 policy invalid."
)]
pub struct Cli {
    /// Directory holding the encrypted store, its lock and the audit log.
    #[arg(long, env = "TOKENHUB_HOME", default_value = ".tokenhub", global = true)]
    pub home: PathBuf,
    /// File with the base64 master key (mode 0600). Default: <home>/master.key.
    /// TOKENHUB_MASTER_KEY (the key itself) takes precedence when set.
    #[arg(long, env = "TOKENHUB_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new store (and a master key file if none exists).
    Init(InitArgs),
    /// Tenants: the unit of isolation.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Sub-accounts: departments inside a tenant, each with its own limits.
    #[command(subcommand, name = "subaccount")]
    SubAccount(SubAccountCmd),
    /// API keys: create, rotate, disable, delete.
    #[command(subcommand)]
    Key(KeyCmd),
    /// IP allowlists (CIDR) for a tenant, sub-account or key.
    #[command(subcommand)]
    Ip(IpCmd),
    /// Upstream providers and their secrets.
    #[command(subcommand)]
    Provider(ProviderCmd),
    /// Seal the policy and write it where Envoy watches (atomic rename).
    Publish(PublishArgs),
    /// What is published: version, time, file, checksum.
    Status,
    /// Write the bundle key (Envoy's TOKENHUB_BUNDLE_KEY) to a 0600 file.
    BundleKey {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The ECDS file Envoy watches (written by `publish`).
    #[arg(long)]
    pub ecds_file: Option<PathBuf>,
    /// Absolute path of tokenhub_guard.wasm as Envoy sees it.
    #[arg(long)]
    pub wasm: Option<PathBuf>,
    /// Also write the new bundle key to this file (mode 0600).
    #[arg(long)]
    pub bundle_key_out: Option<PathBuf>,
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
}

#[derive(Subcommand, Debug)]
pub enum SubAccountCmd {
    Add { tenant: String, id: String },
    List { tenant: String },
    Disable { tenant: String, id: String },
    Enable { tenant: String, id: String },
}

#[derive(Args, Debug, Default)]
pub struct ScopeArgs {
    /// Allowed HTTP methods, comma separated (default: any).
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Allowed path prefixes, comma separated (default: any).
    #[arg(long, value_delimiter = ',')]
    pub paths: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a key; it is printed once and never stored in clear.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "default")]
        sub_account: String,
        /// A label to recognise the key by (not secret).
        #[arg(long, default_value = "")]
        name: String,
        /// Expire after this long, e.g. 90d.
        #[arg(long)]
        expires_in: Option<String>,
        #[command(flatten)]
        scopes: ScopeArgs,
    },
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
        #[arg(long, conflicts_with = "never")]
        r#in: Option<String>,
        #[arg(long)]
        never: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    #[arg(long, required_unless_present = "key")]
    pub tenant: Option<String>,
    #[arg(long, requires = "tenant")]
    pub sub_account: Option<String>,
    #[arg(long, conflicts_with_all = ["tenant", "sub_account"])]
    pub key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum IpCmd {
    /// Add CIDRs to the list and enable it.
    Allow {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        cidrs: Vec<String>,
    },
    /// Remove CIDRs from the list.
    Deny {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        cidrs: Vec<String>,
    },
    List {
        #[command(flatten)]
        target: Target,
    },
    Enable {
        #[command(flatten)]
        target: Target,
    },
    Disable {
        #[command(flatten)]
        target: Target,
    },
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
    },
    List,
    Remove {
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[arg(long)]
    pub ecds_file: Option<PathBuf>,
    #[arg(long)]
    pub wasm: Option<PathBuf>,
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> u8 {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => 0,
        Err(e) => {
            if cli.json {
                eprintln!("{}", json!({"error": {"kind": kind(&e), "message": e.to_string()}}));
            } else {
                eprintln!("tokenhub-admin: {e}");
            }
            e.exit_code()
        }
    }
}

fn kind(e: &AdminError) -> &'static str {
    match e {
        AdminError::Usage(_) => "usage",
        AdminError::NotFound(_) => "not_found",
        AdminError::Auth(_) => "auth",
        AdminError::Corrupt(_) => "corrupt",
        AdminError::Invalid(_) => "invalid_policy",
        AdminError::Io(_) => "io",
        AdminError::Internal(_) => "internal",
    }
}

pub fn open_store(cli: &Cli) -> Result<Store, AdminError> {
    let key_file = cli.master_key_file.clone().unwrap_or_else(|| cli.home.join("master.key"));
    Ok(Store::new(StorePaths::new(&cli.home), load_master_key(Some(&key_file))?))
}

fn run(cli: &Cli) -> Result<(), AdminError> {
    let out = Output { json: cli.json };
    match &cli.command {
        Command::Init(args) => init(cli, args, &out),
        Command::Tenant(c) => tenant(&open_store(cli)?, c, &out),
        Command::SubAccount(c) => sub_account(&open_store(cli)?, c, &out),
        Command::Key(c) => key(&open_store(cli)?, c, &out),
        Command::Ip(c) => ip(&open_store(cli)?, c, &out),
        Command::Provider(c) => provider(&open_store(cli)?, c, &out),
        Command::Publish(args) => publish_cmd(&open_store(cli)?, args, &out),
        Command::Status => status(&open_store(cli)?, &out),
        Command::BundleKey { out: path } => {
            let doc = open_store(cli)?.load()?;
            write_secret_file(path, &doc.bundle_key)?;
            out.done(&format!("bundle key written to {}", path.display()), json!({"path": path}));
            Ok(())
        }
    }
}

struct Output {
    json: bool,
}

impl Output {
    fn done(&self, text: &str, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }
}

fn write_secret_file(path: &Path, text: &str) -> Result<(), AdminError> {
    fsutil::write_atomic(path, format!("{text}\n").as_bytes(), 0o600).map_err(|e| AdminError::io(path, e))
}

fn init(cli: &Cli, args: &InitArgs, out: &Output) -> Result<(), AdminError> {
    fsutil::ensure_private_dir(&cli.home).map_err(|e| AdminError::io(&cli.home, e))?;
    let key_file = cli.master_key_file.clone().unwrap_or_else(|| cli.home.join("master.key"));
    let mut created_master = false;
    if std::env::var_os("TOKENHUB_MASTER_KEY").is_none() && !key_file.exists() {
        write_secret_file(&key_file, &random_key256().to_base64())?;
        created_master = true;
    }
    let store = open_store(cli)?;
    let bundle_key = random_key256();
    let doc = StoreDoc {
        bundle_key: bundle_key.to_base64().to_string(),
        policy: BundleDoc { schema: SCHEMA_VERSION, ..Default::default() },
        settings: Settings { ecds_file: args.ecds_file.clone(), wasm_path: args.wasm.clone() },
        ..Default::default()
    };
    store.create(&doc)?;
    if let Some(p) = &args.bundle_key_out {
        write_secret_file(p, &bundle_key.to_base64())?;
    }
    let mut text = format!("store created at {}", store.paths.store().display());
    if created_master {
        text.push_str(&format!(
            "\nnew master key written to {} (mode 0600): back it up; without it the store cannot be opened",
            key_file.display()
        ));
    }
    out.done(
        &text,
        json!({"store": store.paths.store(), "master_key_created": created_master, "bundle_key_id": bundle_key.id()}),
    );
    Ok(())
}

fn tenant(store: &Store, cmd: &TenantCmd, out: &Output) -> Result<(), AdminError> {
    let now = unix_now();
    match cmd {
        TenantCmd::Add { id, name, region } => {
            store.update(|d| ops::add_tenant(d, id, name, region, now))?;
            out.done(&format!("tenant {id} added (with sub-account default)"), json!({"tenant": id}));
        }
        TenantCmd::List => {
            let doc = store.load()?;
            let rows: Vec<_> = doc.policy.tenants.iter().map(|t| tenant_json(&doc, t)).collect();
            if out.json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<24} {:<9} {:<8} {:>5} {:>5}", "TENANT", "STATUS", "REGION", "SUBS", "KEYS");
                for t in &doc.policy.tenants {
                    let keys = doc.policy.keys.iter().filter(|k| k.tenant == t.id).count();
                    println!(
                        "{:<24} {:<9} {:<8} {:>5} {:>5}",
                        t.id,
                        status_str(t.status),
                        t.region,
                        t.sub_accounts.len(),
                        keys
                    );
                }
            }
        }
        TenantCmd::Show { id } => {
            let doc = store.load()?;
            let t = ops::tenant(&doc, id)?;
            println!("{}", serde_json::to_string_pretty(&tenant_json(&doc, t)).unwrap_or_default());
        }
        TenantCmd::Disable { id } | TenantCmd::Enable { id } => {
            let status = if matches!(cmd, TenantCmd::Disable { .. }) { Status::Disabled } else { Status::Active };
            store.update(|d| {
                ops::tenant_mut(d, id)?.status = status;
                Ok(())
            })?;
            out.done(
                &format!("tenant {id} {} (publish to apply)", status_str(status)),
                json!({"tenant": id, "status": status}),
            );
        }
        TenantCmd::SetRegion { id, region } => {
            store.update(|d| {
                ops::tenant_mut(d, id)?.region = region.clone();
                ops::validate(d)
            })?;
            out.done(&format!("tenant {id} region set to {region}"), json!({"tenant": id, "region": region}));
        }
    }
    Ok(())
}

/// A tenant without secrets: provider secrets are shown by provider id only.
fn tenant_json(doc: &StoreDoc, t: &TenantDoc) -> serde_json::Value {
    json!({
        "id": t.id, "name": t.name, "status": t.status, "region": t.region,
        "ip_allowlist": t.ip_allowlist, "quota": t.quota,
        "own_provider_secrets": t.provider_secrets.keys().collect::<Vec<_>>(),
        "sub_accounts": t.sub_accounts,
        "keys": doc.policy.keys.iter().filter(|k| k.tenant == t.id).count(),
        "created_at": doc.tenant_meta.get(&t.id).map(|m| m.created_at),
    })
}

fn status_str(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Disabled => "disabled",
    }
}

fn sub_account(store: &Store, cmd: &SubAccountCmd, out: &Output) -> Result<(), AdminError> {
    match cmd {
        SubAccountCmd::Add { tenant, id } => {
            store.update(|d| ops::add_sub_account(d, tenant, id))?;
            out.done(&format!("sub-account {tenant}/{id} added"), json!({"tenant": tenant, "sub_account": id}));
        }
        SubAccountCmd::List { tenant } => {
            let doc = store.load()?;
            let t = ops::tenant(&doc, tenant)?;
            if out.json {
                println!("{}", json!(t.sub_accounts));
            } else {
                println!("{:<24} {:<9}", "SUB-ACCOUNT", "STATUS");
                for s in &t.sub_accounts {
                    println!("{:<24} {:<9}", s.id, status_str(s.status));
                }
            }
        }
        SubAccountCmd::Disable { tenant, id } | SubAccountCmd::Enable { tenant, id } => {
            let status = if matches!(cmd, SubAccountCmd::Disable { .. }) { Status::Disabled } else { Status::Active };
            store.update(|d| {
                ops::sub_account_mut(d, tenant, id)?.status = status;
                Ok(())
            })?;
            out.done(&format!("sub-account {tenant}/{id} {}", status_str(status)), json!({"status": status}));
        }
    }
    Ok(())
}

fn scopes_from(args: &ScopeArgs) -> Option<ScopesDoc> {
    if args.methods.is_empty() && args.paths.is_empty() {
        return None;
    }
    Some(ScopesDoc {
        methods: args.methods.iter().map(|m| m.trim().to_ascii_uppercase()).collect(),
        path_prefixes: args.paths.iter().map(|p| p.trim().to_string()).collect(),
    })
}

fn key(store: &Store, cmd: &KeyCmd, out: &Output) -> Result<(), AdminError> {
    let now = unix_now();
    match cmd {
        KeyCmd::Create { tenant, sub_account, name, expires_in, scopes } => {
            let expires_at = match expires_in {
                Some(d) => Some(now + parse_duration(d).map_err(AdminError::Usage)?),
                None => None,
            };
            let new = NewKey { tenant, sub_account, name, expires_at, scopes: scopes_from(scopes) };
            let issued = store.update(|d| ops::create_key(d, new, now))?;
            print_issued(&issued, out, "created");
        }
        KeyCmd::Rotate { id, grace } => {
            let grace = parse_duration(grace).map_err(AdminError::Usage)?;
            let issued = store.update(|d| ops::rotate_key(d, id, grace, now))?;
            print_issued(&issued, out, &format!("rotated (previous secret valid for {grace}s; publish to apply)"));
        }
        KeyCmd::List { tenant } => {
            let doc = store.load()?;
            let keys: Vec<_> =
                doc.policy.keys.iter().filter(|k| tenant.as_ref().is_none_or(|t| &k.tenant == t)).collect();
            if out.json {
                println!("{}", serde_json::Value::Array(keys.iter().map(|k| key_json(&doc, k)).collect()));
            } else {
                println!(
                    "{:<13} {:<16} {:<14} {:<9} {:<11} {:<11} {:<11} SCOPES",
                    "KEY ID", "TENANT", "SUB-ACCOUNT", "STATUS", "CREATED", "ROTATED", "EXPIRES"
                );
                for k in keys {
                    let meta = doc.key_meta.get(&k.id);
                    println!(
                        "{:<13} {:<16} {:<14} {:<9} {:<11} {:<11} {:<11} {}",
                        k.id,
                        k.tenant,
                        k.sub_account,
                        status_str(k.status),
                        date(meta.map(|m| m.created_at)),
                        date(meta.and_then(|m| m.last_rotated_at)),
                        date(k.expires_at),
                        scopes_text(k.scopes.as_ref())
                    );
                }
            }
        }
        KeyCmd::Show { id } => {
            let doc = store.load()?;
            let k = doc
                .policy
                .keys
                .iter()
                .find(|k| &k.id == id)
                .ok_or_else(|| AdminError::NotFound(format!("no key {id:?}")))?;
            println!("{}", serde_json::to_string_pretty(&key_json(&doc, k)).unwrap_or_default());
        }
        KeyCmd::Disable { id } | KeyCmd::Enable { id } => {
            let status = if matches!(cmd, KeyCmd::Disable { .. }) { Status::Disabled } else { Status::Active };
            store.update(|d| ops::set_key_status(d, id, status))?;
            out.done(
                &format!("key {id} {} (publish to apply)", status_str(status)),
                json!({"key_id": id, "status": status}),
            );
        }
        KeyCmd::Delete { id } => {
            store.update(|d| {
                ops::key_mut(d, id)?;
                d.policy.keys.retain(|k| &k.id != id);
                d.key_meta.remove(id);
                Ok(())
            })?;
            out.done(&format!("key {id} deleted (publish to apply)"), json!({"key_id": id, "deleted": true}));
        }
        KeyCmd::SetScopes { id, scopes } => {
            store.update(|d| {
                ops::key_mut(d, id)?.scopes = scopes_from(scopes);
                ops::validate(d)
            })?;
            out.done(&format!("key {id} scopes set"), json!({"key_id": id}));
        }
        KeyCmd::SetExpiry { id, r#in, never } => {
            let at = match (r#in, never) {
                (Some(d), _) => Some(now + parse_duration(d).map_err(AdminError::Usage)?),
                (None, true) => None,
                (None, false) => return Err(AdminError::Usage("give --in DURATION or --never".into())),
            };
            store.update(|d| {
                ops::key_mut(d, id)?.expires_at = at;
                Ok(())
            })?;
            out.done(&format!("key {id} expiry set to {}", date(at)), json!({"key_id": id, "expires_at": at}));
        }
    }
    Ok(())
}

fn print_issued(issued: &ops::IssuedKey, out: &Output, what: &str) {
    if out.json {
        println!("{}", json!({"key_id": issued.key_id, "key": issued.key.as_str()}));
    } else {
        println!("key {} {what}", issued.key_id);
        println!("{}", issued.key.as_str());
        eprintln!("This is the only time the key is shown. Store it in a secret manager.");
    }
}

fn key_json(doc: &StoreDoc, k: &KeyDoc) -> serde_json::Value {
    let meta = doc.key_meta.get(&k.id);
    json!({
        "key_id": k.id, "tenant": k.tenant, "sub_account": k.sub_account, "status": k.status,
        "name": meta.map(|m| m.name.as_str()),
        "created_at": meta.map(|m| m.created_at), "last_rotated_at": meta.and_then(|m| m.last_rotated_at),
        "previous_secret_valid_until": k.previous.as_ref().map(|p| p.valid_until),
        "expires_at": k.expires_at, "scopes": k.scopes, "ip_allowlist": k.ip_allowlist, "quota": k.quota,
    })
}

fn scopes_text(s: Option<&ScopesDoc>) -> String {
    match s {
        None => "*".into(),
        Some(s) => {
            let m = if s.methods.is_empty() { "*".into() } else { s.methods.join(",") };
            let p = if s.path_prefixes.is_empty() { "*".into() } else { s.path_prefixes.join(",") };
            format!("{m} {p}")
        }
    }
}

/// Unix seconds as a UTC date (YYYY-MM-DD), or `-`.
fn date(t: Option<u64>) -> String {
    let Some(t) = t else { return "-".into() };
    let days = (t / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The allowlist slot a target names.
fn allowlist_mut<'a>(doc: &'a mut StoreDoc, t: &Target) -> Result<&'a mut Option<IpAllowlistDoc>, AdminError> {
    match (&t.key, &t.tenant, &t.sub_account) {
        (Some(k), _, _) => Ok(&mut ops::key_mut(doc, k)?.ip_allowlist),
        (None, Some(tenant), Some(sub)) => Ok(&mut ops::sub_account_mut(doc, tenant, sub)?.ip_allowlist),
        (None, Some(tenant), None) => Ok(&mut ops::tenant_mut(doc, tenant)?.ip_allowlist),
        (None, None, _) => Err(AdminError::Usage("give --tenant [--sub-account] or --key".into())),
    }
}

/// How an `ip` command changes a list.
enum IpChange<'a> {
    Allow(&'a [String]),
    Deny(&'a [String]),
    Enabled(bool),
}

impl IpChange<'_> {
    fn apply(&self, l: &mut IpAllowlistDoc) {
        match self {
            Self::Allow(cidrs) => {
                l.enabled = true;
                for c in cidrs.iter() {
                    if !l.cidrs.contains(c) {
                        l.cidrs.push(c.clone());
                    }
                }
            }
            Self::Deny(cidrs) => l.cidrs.retain(|c| !cidrs.contains(c)),
            Self::Enabled(on) => l.enabled = *on,
        }
    }
}

fn ip(store: &Store, cmd: &IpCmd, out: &Output) -> Result<(), AdminError> {
    let (target, change) = match cmd {
        IpCmd::Allow { target, cidrs } => {
            ops::check_cidrs(cidrs)?;
            (target, IpChange::Allow(cidrs))
        }
        IpCmd::Deny { target, cidrs } => (target, IpChange::Deny(cidrs)),
        IpCmd::Enable { target } => (target, IpChange::Enabled(true)),
        IpCmd::Disable { target } => (target, IpChange::Enabled(false)),
        IpCmd::List { target } => {
            let mut doc = store.load()?;
            let list = allowlist_mut(&mut doc, target)?.clone().unwrap_or_default();
            if out.json {
                println!("{}", json!(list));
            } else {
                println!("enabled: {}", list.enabled);
                for c in &list.cidrs {
                    println!("{c}");
                }
            }
            return Ok(());
        }
    };
    let list = store.update(|d| {
        let slot = allowlist_mut(d, target)?;
        let mut list = slot.clone().unwrap_or_default();
        change.apply(&mut list);
        *slot = Some(list.clone());
        ops::validate(d)?;
        Ok(list)
    })?;
    if list.enabled && list.cidrs.is_empty() {
        eprintln!("warning: this allowlist is enabled and empty: it now refuses every address");
    }
    out.done(&format!("allowlist: enabled={} cidrs={}", list.enabled, list.cidrs.join(",")), json!(list));
    Ok(())
}

fn provider(store: &Store, cmd: &ProviderCmd, out: &Output) -> Result<(), AdminError> {
    match cmd {
        ProviderCmd::Set { id, path_prefix, header, format, tenant, secret_file } => {
            let secret = read_secret(secret_file.as_deref())?;
            let spec = ProviderSpec {
                id: id.clone(),
                path_prefix: path_prefix.clone(),
                header: header.to_ascii_lowercase(),
                format: format.clone(),
            };
            store.update(|d| ops::set_provider(d, spec, tenant.as_deref(), secret))?;
            out.done(&format!("provider {id} set (publish to apply)"), json!({"provider": id, "tenant": tenant}));
        }
        ProviderCmd::List => {
            let doc = store.load()?;
            let rows: Vec<_> = doc
                .policy
                .providers
                .iter()
                .map(|p| json!({"id": p.id, "path_prefix": p.path_prefix, "header": p.header, "format": p.format, "has_default_secret": p.secret.is_some()}))
                .collect();
            if out.json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<16} {:<20} {:<16} {:<20} SECRET", "PROVIDER", "PATH PREFIX", "HEADER", "FORMAT");
                for p in &doc.policy.providers {
                    println!(
                        "{:<16} {:<20} {:<16} {:<20} {}",
                        p.id,
                        p.path_prefix,
                        p.header,
                        p.format,
                        if p.secret.is_some() { "set" } else { "-" }
                    );
                }
            }
        }
        ProviderCmd::Remove { id } => {
            store.update(|d| {
                if !d.policy.providers.iter().any(|p| &p.id == id) {
                    return Err(AdminError::NotFound(format!("no provider {id:?}")));
                }
                d.policy.providers.retain(|p| &p.id != id);
                for t in &mut d.policy.tenants {
                    t.provider_secrets.remove(id);
                }
                Ok(())
            })?;
            out.done(&format!("provider {id} removed"), json!({"provider": id, "removed": true}));
        }
    }
    Ok(())
}

/// A secret from a file or stdin; trailing newline removed.
fn read_secret(file: Option<&Path>) -> Result<Zeroizing<String>, AdminError> {
    let mut text = Zeroizing::new(String::new());
    match file {
        Some(p) => *text = std::fs::read_to_string(p).map_err(|e| AdminError::io(p, e))?,
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("Paste the secret, then press Enter and Ctrl-D:");
            }
            std::io::stdin().read_to_string(&mut text).map_err(|e| AdminError::Io(format!("stdin: {e}")))?;
        }
    }
    let trimmed = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
    if trimmed.is_empty() {
        return Err(AdminError::Usage("the secret is empty (pipe it on stdin or use --secret-file)".into()));
    }
    Ok(trimmed)
}

pub fn publish_with(
    store: &Store,
    ecds: Option<&Path>,
    wasm: Option<&Path>,
) -> Result<publish::PublishedInfo, AdminError> {
    let now = unix_now();
    store.update(|d| {
        if let Some(p) = ecds {
            d.settings.ecds_file = Some(p.to_path_buf());
        }
        if let Some(p) = wasm {
            d.settings.wasm_path = Some(p.to_path_buf());
        }
        let ecds = d
            .settings
            .ecds_file
            .clone()
            .ok_or_else(|| AdminError::Usage("no ECDS file configured: pass --ecds-file".into()))?;
        let wasm = d
            .settings
            .wasm_path
            .clone()
            .ok_or_else(|| AdminError::Usage("no wasm path configured: pass --wasm".into()))?;
        let p = publish::publish(d, &ecds, &wasm, now)?;
        Ok(publish::PublishedInfo { keys: d.policy.keys.len(), tenants: d.policy.tenants.len(), published: p })
    })
}

fn publish_cmd(store: &Store, args: &PublishArgs, out: &Output) -> Result<(), AdminError> {
    let info = publish_with(store, args.ecds_file.as_deref(), args.wasm.as_deref())?;
    out.done(
        &format!(
            "published bundle version {} ({} tenants, {} keys) to {}",
            info.published.version,
            info.tenants,
            info.keys,
            info.published.path.display()
        ),
        json!({"version": info.published.version, "path": info.published.path, "sha256": info.published.sha256, "tenants": info.tenants, "keys": info.keys}),
    );
    Ok(())
}

fn status(store: &Store, out: &Output) -> Result<(), AdminError> {
    let doc = store.load()?;
    let on_disk = doc.published.as_ref().map(|p| {
        let actual = std::fs::read(&p.path)
            .ok()
            .map(|b| crate::core::secret::to_hex(&<sha2::Sha256 as sha2::Digest>::digest(&b)));
        (p, actual)
    });
    let v = json!({
        "store_revision": doc.revision,
        "tenants": doc.policy.tenants.len(),
        "keys": doc.policy.keys.len(),
        "published": doc.published,
        "published_file_matches": on_disk.as_ref().map(|(p, a)| a.as_deref() == Some(p.sha256.as_str())),
    });
    if out.json {
        println!("{v}");
    } else {
        println!(
            "store revision {} — {} tenants, {} keys",
            doc.revision,
            doc.policy.tenants.len(),
            doc.policy.keys.len()
        );
        match on_disk {
            None => println!("nothing published yet; run `tokenhub-admin publish`"),
            Some((p, actual)) => {
                println!("published version {} at {} to {}", p.version, date(Some(p.at)), p.path.display());
                match actual {
                    Some(a) if a == p.sha256 => println!("the file on disk is the one published"),
                    Some(_) => println!("warning: the file on disk differs from what was published"),
                    None => println!("warning: the published file is missing"),
                }
            }
        }
    }
    Ok(())
}
