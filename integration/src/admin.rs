//! The real `tokenhub-admin` binary against a private home, so end-to-end
//! tests change the store and publish exactly as an operator does: through
//! the CLI, its encrypted store and its atomic publish into the directory
//! Envoy watches.

use crate::paths;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

/// Distinguishes instances within one test binary.
static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// Environment that would point the CLI at another store or master key.
const FOREIGN_ENV: [&str; 5] =
    ["TOKENHUB_HOME", "TOKENHUB_MASTER_KEY", "TOKENHUB_MASTER_KEY_FILE", "TOKENHUB_ADMIN", "TOKENHUB_OTP"];

/// One run of the CLI (the test kit's driver).
pub use tokenhub_testkit::cli::Run as AdminOutput;

/// A key as `key create` / `key rotate` print it (the only time the full
/// key is shown).
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: String,
    pub key_id: String,
}

/// A store initialised by `tokenhub-admin init` in a private directory:
/// the store in `<dir>/home`, the ECDS file `<dir>/bundle/guard.json`, the
/// bundle key in `<dir>/bundle.key`. The directory is removed on drop,
/// unless the test failed.
pub struct Admin {
    bin: PathBuf,
    dir: PathBuf,
    bundle_key: String,
    bundle_key_id: String,
}

impl Admin {
    /// `tokenhub-admin init` with the ECDS file naming `wasm` (the module
    /// path Envoy loads).
    pub fn init(wasm: &Path) -> Admin {
        let instance = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tokenhub-admin-{}-{instance}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut admin = Admin { bin: paths::admin_bin(), dir, bundle_key: String::new(), bundle_key_id: String::new() };
        let key_file = admin.dir.join("bundle.key");
        let (ecds, wasm, key_out) =
            (admin.ecds_file().display().to_string(), wasm.display().to_string(), key_file.display().to_string());
        let out = admin.json(&[
            "init",
            "--ecds-file",
            ecds.as_str(),
            "--wasm",
            wasm.as_str(),
            "--bundle-key-out",
            key_out.as_str(),
        ]);
        admin.bundle_key_id = out["bundle_key_id"].as_str().unwrap_or_default().to_string();
        admin.bundle_key = fs::read_to_string(&key_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", key_file.display()))
            .trim()
            .to_string();
        assert!(!admin.bundle_key.is_empty(), "init wrote an empty bundle key to {}", key_file.display());
        admin
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The directory `publish` writes guard.json into (give it to Envoy as
    /// `EnvoyOptions::bundle_dir`).
    pub fn bundle_dir(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    pub fn ecds_file(&self) -> PathBuf {
        self.bundle_dir().join("guard.json")
    }

    /// The published ECDS file's text ("" when nothing is published).
    pub fn ecds_contents(&self) -> String {
        fs::read_to_string(self.ecds_file()).unwrap_or_default()
    }

    /// The bundle key (base64) for Envoy's TOKENHUB_BUNDLE_KEY.
    pub fn bundle_key(&self) -> &str {
        &self.bundle_key
    }

    /// The bundle key's public id, as the filter names it in errors.
    pub fn bundle_key_id(&self) -> &str {
        &self.bundle_key_id
    }

    /// Runs the CLI with `--home` and `--json`; returns whatever happened.
    pub fn run(&self, args: &[&str]) -> AdminOutput {
        self.run_with_stdin(args, None)
    }

    /// The CLI command for `args` with `--home` and `--json`, not yet
    /// started: for tests that start it themselves (e.g. to kill it).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.text_command(&["--json"]);
        cmd.args(args);
        cmd
    }

    /// The CLI command for `args` with `--home`, printing text.
    pub fn text_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--home").arg(self.home()).args(args);
        for name in FOREIGN_ENV {
            cmd.env_remove(name);
        }
        // Outside the store's directory, as `init` requires.
        cmd.env("TOKENHUB_MASTER_KEY_FILE", self.dir.join("master.key"));
        cmd
    }

    /// Like [`Admin::run`], with `stdin` fed to the process (secrets).
    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> AdminOutput {
        tokenhub_testkit::cli::run(self.command(args), args, stdin)
    }

    /// Runs the CLI, which must succeed, and returns its JSON output.
    pub fn json(&self, args: &[&str]) -> Value {
        self.run(args).ok().json()
    }

    /// `provider set` with the secret on stdin (never an argument).
    pub fn set_provider(&self, args: &[&str], secret: &str) -> Value {
        let mut full = vec!["provider", "set"];
        full.extend_from_slice(args);
        self.run_with_stdin(&full, Some(secret.as_bytes())).ok().json()
    }

    /// `key create --tenant <tenant> <extra…>`.
    pub fn create_key(&self, tenant: &str, extra: &[&str]) -> IssuedKey {
        let mut args = vec!["key", "create", "--tenant", tenant];
        args.extend_from_slice(extra);
        issued(&self.json(&args))
    }

    /// `key rotate <key_id> --grace <grace>`.
    pub fn rotate_key(&self, key_id: &str, grace: &str) -> IssuedKey {
        issued(&self.json(&["key", "rotate", key_id, "--grace", grace]))
    }

    /// `publish` (validate, seal, atomic rename of guard.json).
    pub fn publish(&self) -> Value {
        self.json(&["publish"])
    }

    /// `status`: what is published.
    pub fn status(&self) -> Value {
        self.json(&["status"])
    }

    /// The published bundle version according to `status`.
    pub fn published_version(&self) -> u64 {
        let status = self.status();
        status["published"]["version"].as_u64().unwrap_or_else(|| panic!("no published version in {status}"))
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("==== tokenhub-admin store kept in {} ====", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn issued(out: &Value) -> IssuedKey {
    let field = |name: &str| {
        out[name].as_str().map(str::to_string).unwrap_or_else(|| panic!("no {name} in tokenhub-admin output {out}"))
    };
    IssuedKey { key: field("key"), key_id: field("key_id") }
}
