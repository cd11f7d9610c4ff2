//! Command-line interface. Secrets are read from stdin or files, never from
//! arguments (the one exception, `--otp`, is a single-use code that expires
//! within a minute); keys and tokens are printed once; `--json` gives
//! scripts stable output; exit codes follow `AdminError::exit_code`.

pub mod commands;
mod dispatch;

use super::actions::setup::{self, InitSpec};
use super::actions::Reply;
use super::session::{Claim, Session};
use super::store::Store;
use super::{unix_now, AdminError};
use clap::Parser;
use commands::{Command, LogsCmd, TwoFaCmd};
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
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
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let _ = if cli.json { reply.write_json(&mut out) } else { writeln!(out, "{}", reply.text()) };
    let _ = out.flush();
    for w in &reply.warnings {
        eprintln!("{w}");
    }
}

fn run(cli: &Cli) -> Result<Reply, AdminError> {
    if let Command::Init(args) = &cli.command {
        let spec = InitSpec {
            ecds_file: args.ecds_file.clone(),
            wasm: args.wasm.clone(),
            bundle_key_out: args.bundle_key_out.clone(),
            bundle_key_file: args.bundle_key_file.clone(),
        };
        return setup::init(&cli.home, cli.master_key_file.as_deref(), &spec);
    }
    // Needs no store and no master key: only the published file and the bundle key.
    if let Command::Ratelimit(args) = &cli.command {
        crate::admin::ratelimit::run(args)?;
        return Ok(Reply::new("tokenhub-admin ratelimit: stopped", json!({"stopped": true})));
    }
    // No admin session: the files' own permissions decide who may prune
    // them; the store is read only for the tenants' own retention.
    if let Command::Logs(LogsCmd::Prune { access_log, retention, drop_tenant, ignore_tenant_rules }) = &cli.command {
        let tenants = if *ignore_tenant_rules {
            Default::default()
        } else {
            let doc = setup::open_store(&cli.home, cli.master_key_file.as_deref()).and_then(|s| s.load()).map_err(|e| {
                AdminError::Usage(format!(
                    "logs prune reads the tenants' own retention from the store: {e} (or give --ignore-tenant-rules to apply the platform's rules to every line)"
                ))
            })?;
            crate::admin::retention::tenant_rules(&doc.policy.tenants)
        };
        return crate::admin::actions::auditing::prune_logs(
            access_log,
            retention.days(),
            tenants,
            drop_tenant.as_deref(),
            unix_now(),
        );
    }
    let store = setup::open_store(&cli.home, cli.master_key_file.as_deref())?;
    let claim = match &cli.as_admin {
        Some(name) => Claim::Named(name.clone()),
        None => Claim::Anonymous,
    };
    let otp = otp_for(cli, &store)?;
    let session = Session {
        store: &store,
        claim,
        otp,
        via: "cli",
        now: unix_now(),
        publish: cli.publish.then_some(super::publish::publish_hook),
    };
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
        store.load().ok().and_then(|d| super::store::admins::find(&d.admins, name).map(|a| a.second_factor.enabled()));
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
