//! Command-line interface. Secrets are read from stdin or files, never from
//! arguments (the one exception, `--otp`, is a single-use code that expires
//! within a minute); keys and tokens are printed once; `--json` gives
//! scripts stable output; exit codes follow `AdminError::exit_code`.

pub mod commands;
mod dispatch;

use super::actions::Reply;
use super::session::{Claim, Session};
use super::store::{load_master_key, Settings, Store, StoreDoc, StorePaths};
use super::{fsutil, random_key256, unix_now, AdminError};
use crate::core::bundle::schema::{BundleDoc, SCHEMA_VERSION};
use clap::Parser;
use commands::{Command, InitArgs, TwoFaCmd};
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Parser, Debug)]
#[command(
    name = "tokenhub-admin",
    version,
    about = "Administer TokenHub Guard: tenants, sub-accounts, API keys, IP allowlists, quotas, provider secrets, admins with 2FA; publish the sealed policy bundle that Envoy hot-reloads; keep a tamper-evident audit log.",
    after_help = MAIN_HELP
)]
pub struct Cli {
    /// Directory holding the encrypted store, its lock and the audit log.
    #[arg(long, env = "TOKENHUB_HOME", default_value = ".tokenhub", global = true)]
    pub home: PathBuf,
    /// File with the base64 master key (mode 0600), kept outside <home>:
    /// whoever copies or backs up the store's directory must not get the
    /// key that opens it. `init` creates it if missing. TOKENHUB_MASTER_KEY
    /// (the key itself) takes precedence when set.
    #[arg(long, env = "TOKENHUB_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,
    /// The admin you act as (required once 2FA is on).
    #[arg(long = "as", env = "TOKENHUB_ADMIN", global = true, value_name = "NAME")]
    pub as_admin: Option<String>,
    /// A current 2FA code (or a recovery code). Prompted for on a terminal when needed.
    #[arg(long, env = "TOKENHUB_OTP", hide_env_values = true, global = true, value_name = "CODE")]
    pub otp: Option<String>,
    /// Read the 2FA code from the first line of stdin (for scripts; the rest of stdin stays for a secret).
    #[arg(long, global = true, conflicts_with = "otp")]
    pub otp_stdin: bool,
    /// Publish the bundle in the same commit as the change.
    #[arg(long, global = true)]
    pub publish: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

const MAIN_HELP: &str = "Quick start:
  export TOKENHUB_MASTER_KEY_FILE=/etc/tokenhub/master.key   # outside the store's directory; init creates it
  tokenhub-admin init --ecds-file /etc/tokenhub/bundle/guard.json --wasm /etc/tokenhub/tokenhub_guard.wasm --bundle-key-out bundle.key
  tokenhub-admin admin add alice --role platform
  tokenhub-admin --as alice 2fa enroll            # scan the QR code
  tokenhub-admin --as alice 2fa verify            # from now on every change needs a code
  export TOKENHUB_ADMIN=alice
  tokenhub-admin tenant add acme --name 'Acme Inc' --region eu
  tokenhub-admin provider set openai --path-prefix /v1/ --header authorization --format 'Bearer {secret}' < openai.secret
  tokenhub-admin key create --tenant acme
  tokenhub-admin publish

Secrets are never arguments: the master key comes from TOKENHUB_MASTER_KEY_FILE (a 0600 file) or
TOKENHUB_MASTER_KEY, provider secrets from stdin or --secret-file. 2FA codes: prompted on a terminal,
or --otp, --otp-stdin, TOKENHUB_OTP. Every change is recorded in <home>/audit.log.
Exit codes: 0 ok, 1 I/O or internal error, 2 usage, 3 not found, 4 authentication or permission,
5 corrupt file (or a tampered audit log), 6 the policy would be rejected by the filter.";

/// Runs the CLI; returns the process exit code.
pub fn main() -> u8 {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(reply) => {
            print_reply(&cli, &reply);
            0
        }
        Err(e) => {
            if cli.json {
                eprintln!("{}", json!({"error": {"kind": e.kind(), "message": e.to_string()}}));
            } else {
                eprintln!("tokenhub-admin: {e}");
            }
            e.exit_code()
        }
    }
}

fn print_reply(cli: &Cli, reply: &Reply) {
    let mut out = std::io::stdout().lock();
    let _ = if cli.json { writeln!(out, "{}", reply.json) } else { writeln!(out, "{}", reply.text) };
    let _ = out.flush();
    for w in &reply.warnings {
        eprintln!(
            "{}{w}",
            if w.starts_with("This is") || w.starts_with("These") || w.starts_with("The QR") {
                ""
            } else {
                "warning: "
            }
        );
    }
}

/// Where earlier versions put the master key by default: beside the store.
fn legacy_key_file(cli: &Cli) -> PathBuf {
    cli.home.join("master.key")
}

/// How to say where the master key is, and why not in <home>.
const MASTER_KEY_HINT: &str = "set TOKENHUB_MASTER_KEY_FILE (or --master-key-file) to a 0600 file outside the store's directory, e.g. /etc/tokenhub/master.key or a mounted secret, or pass the key itself in TOKENHUB_MASTER_KEY; the key must not live beside store.enc, or whoever copies or backs up that directory can open every secret in it";

pub fn open_store(cli: &Cli) -> Result<Store, AdminError> {
    if std::env::var_os("TOKENHUB_MASTER_KEY").is_none() && cli.master_key_file.is_none() {
        let legacy = legacy_key_file(cli);
        let found = if legacy.exists() {
            format!(
                " ({} is there from an older version: move it out of {}, then point TOKENHUB_MASTER_KEY_FILE at it)",
                legacy.display(),
                cli.home.display()
            )
        } else {
            String::new()
        };
        return Err(AdminError::Usage(format!("no master key: {MASTER_KEY_HINT}{found}")));
    }
    Ok(Store::new(StorePaths::new(&cli.home), load_master_key(cli.master_key_file.as_deref())?))
}

/// Refuses a new master key file inside the store's directory.
fn check_key_outside_home(key_file: &Path, home: &Path) -> Result<(), AdminError> {
    let home = home.canonicalize().map_err(|e| AdminError::io(home, e))?;
    let parent = match key_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = parent.canonicalize().map_err(|e| {
        AdminError::Usage(format!(
            "the master key file's directory {} cannot be used ({e}); create it first (mode 0700)",
            parent.display()
        ))
    })?;
    if dir.starts_with(&home) {
        return Err(AdminError::Usage(format!(
            "refusing to create the master key at {}, inside the store's directory {}: {MASTER_KEY_HINT}",
            key_file.display(),
            home.display()
        )));
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<Reply, AdminError> {
    if let Command::Init(args) = &cli.command {
        return init(cli, args);
    }
    // Needs no store and no master key: only the published file and the bundle key.
    if let Command::Ratelimit(args) = &cli.command {
        crate::admin::ratelimit::run(args)?;
        return Ok(Reply::new("tokenhub-admin ratelimit: stopped", json!({"stopped": true})));
    }
    let store = open_store(cli)?;
    let claim = match &cli.as_admin {
        Some(name) => Claim::Named(name.clone()),
        None => Claim::Anonymous,
    };
    let otp = otp_for(cli, &store)?;
    let session = Session { store: &store, claim, otp, via: "cli", now: unix_now(), auto_publish: cli.publish };
    dispatch::run(&session, &cli.command, cli)
}

/// The 2FA code: `--otp`/TOKENHUB_OTP, the first line of stdin with
/// `--otp-stdin`, or a prompt on a terminal when the command needs one.
fn otp_for(cli: &Cli, store: &Store) -> Result<Option<Zeroizing<String>>, AdminError> {
    if let Some(code) = &cli.otp {
        return Ok(Some(Zeroizing::new(code.trim().to_string())));
    }
    if cli.otp_stdin {
        return read_code_line().map(Some);
    }
    let verifying = matches!(cli.command, Command::TwoFa(TwoFaCmd::Verify));
    if !(cli.command.mutates() && std::io::stdin().is_terminal()) {
        return Ok(None);
    }
    let Some(name) = &cli.as_admin else { return Ok(None) };
    // Ask only when the code will be checked: the admin has 2FA on (or is
    // activating it). Read without the lock: nothing is decided here.
    let has_2fa =
        store.load().ok().and_then(|d| super::accounts::find(&d.admins, name).map(|a| a.second_factor.enabled()));
    if !(verifying || has_2fa == Some(true)) {
        return Ok(None);
    }
    // Not echoed: a code on screen is a code for whoever stands behind you.
    let code = rpassword::prompt_password(format!("2FA code for {name} (or a recovery code): "))
        .map_err(|e| AdminError::Io(format!("terminal: {e}")))?;
    let code = Zeroizing::new(code.trim().to_string());
    if code.is_empty() {
        return Err(AdminError::Usage("no 2FA code entered".into()));
    }
    Ok(Some(code))
}

fn read_code_line() -> Result<Zeroizing<String>, AdminError> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line).map_err(|e| AdminError::Io(format!("stdin: {e}")))?;
    let code = Zeroizing::new(line.trim().to_string());
    if code.is_empty() {
        return Err(AdminError::Usage("no 2FA code on stdin".into()));
    }
    Ok(code)
}

pub fn write_secret_file(path: &Path, text: &str) -> Result<(), AdminError> {
    let body = Zeroizing::new(format!("{text}\n"));
    fsutil::write_atomic(path, body.as_bytes(), 0o600).map_err(|e| AdminError::io(path, e))
}

fn init(cli: &Cli, args: &InitArgs) -> Result<Reply, AdminError> {
    let paths = StorePaths::new(&cli.home);
    if !paths.store().exists() && paths.audit().exists() {
        return Err(AdminError::Usage(format!(
            "{} exists from an earlier store: a new store cannot continue another store's audit log. Keep it (it is the record of that store) by moving it out of {}, then run init again",
            paths.audit().display(),
            cli.home.display()
        )));
    }
    let mut created_master = None;
    if std::env::var_os("TOKENHUB_MASTER_KEY").is_none() {
        let Some(key_file) = cli.master_key_file.as_deref() else {
            return Err(AdminError::Usage(format!("where should init keep the new master key? {MASTER_KEY_HINT}")));
        };
        fsutil::ensure_private_dir(&cli.home).map_err(|e| AdminError::io(&cli.home, e))?;
        if !key_file.exists() {
            check_key_outside_home(key_file, &cli.home)?;
            write_secret_file(key_file, &random_key256().to_base64())?;
            created_master = Some(key_file.to_path_buf());
        }
    }
    fsutil::ensure_private_dir(&cli.home).map_err(|e| AdminError::io(&cli.home, e))?;
    let store = open_store(cli)?;
    let bundle_key = match &args.bundle_key_file {
        Some(path) => {
            let text = Zeroizing::new(fsutil::read_private_file(path).map_err(|e| AdminError::io(path, e))?);
            crate::core::crypto::Key256::from_base64(&text).map_err(|e| {
                AdminError::Usage(format!(
                    "{}: {e}: the bundle key is the base64 of 32 random bytes (openssl rand -base64 32)",
                    path.display()
                ))
            })?
        }
        None => random_key256(),
    };
    let mut doc = StoreDoc {
        bundle_key: bundle_key.to_base64().to_string(),
        policy: BundleDoc { schema: SCHEMA_VERSION, ..Default::default() },
        settings: Settings { ecds_file: args.ecds_file.clone(), wasm_path: args.wasm.clone() },
        ..Default::default()
    };
    doc.audit.key_bytes()?;
    store.create(&doc)?;
    if let Some(p) = &args.bundle_key_out {
        write_secret_file(p, &bundle_key.to_base64())?;
    }
    // The log starts with the store's creation.
    let session =
        Session { store: &store, claim: Claim::Anonymous, otp: None, via: "cli", now: unix_now(), auto_publish: false };
    let op = super::session::Op::new("store.init", super::session::Scope::Anyone, super::audit::Target::default());
    session.mutate(op, |_, _| Ok(()))?;
    let mut text = format!("store created at {}", store.paths.store().display());
    if let Some(key_file) = &created_master {
        text.push_str(&format!(
            "\nnew master key written to {} (mode 0600): back it up apart from the store; without it the store cannot be opened",
            key_file.display()
        ));
    }
    text.push_str("\nnext: tokenhub-admin admin add NAME --role platform, then 2fa enroll / 2fa verify --as NAME");
    Ok(Reply::new(
        text,
        json!({"store": store.paths.store(), "master_key_created": created_master.is_some(), "bundle_key_id": bundle_key.id()}),
    ))
}
