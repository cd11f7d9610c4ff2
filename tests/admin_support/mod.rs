//! Shared by the `admin_*` tests: a private store driven through the real
//! `tokenhub-admin` binary, and TOTP codes computed as an authenticator app
//! would.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_tokenhub-admin");

static N: AtomicU32 = AtomicU32::new(0);

/// One CLI run (the test kit's driver).
pub use tokenhub_testkit::cli::Run;

/// An empty directory `thg-<name>-<pid>` under the system's temp dir.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("thg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh store in a private temp directory (removed on drop).
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// `init` with an ECDS file and wasm path configured.
    pub fn new(name: &str) -> Home {
        let home = Home { dir: fresh_dir(&format!("{name}-{}", N.fetch_add(1, Ordering::SeqCst))) };
        let ecds = home.ecds_file();
        home.run(&["init", "--ecds-file", ecds.to_str().unwrap(), "--wasm", "/opt/tokenhub/tokenhub_guard.wasm"]).ok();
        home
    }

    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
    /// Outside the store's directory, as `init` requires.
    pub fn master_key_file(&self) -> PathBuf {
        self.dir.join("master.key")
    }
    pub fn ecds_file(&self) -> PathBuf {
        self.dir.join("bundle").join("guard.json")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.home().join("audit.log")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("TOKENHUB_HOME", self.home())
            .env("TOKENHUB_MASTER_KEY_FILE", self.master_key_file())
            .env_remove("TOKENHUB_MASTER_KEY")
            .env_remove("TOKENHUB_ADMIN")
            .env_remove("TOKENHUB_OTP");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[], None)
    }

    /// With extra environment and optional stdin.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        tokenhub_testkit::cli::run(c, args, stdin.map(str::as_bytes))
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.audit_log()).unwrap_or_default()
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        self.audit_text().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Rewrites the audit log line by line (tamper tests).
    pub fn rewrite_audit(&self, f: impl FnOnce(&mut Vec<String>)) {
        let mut lines: Vec<String> = self.audit_text().lines().map(String::from).collect();
        f(&mut lines);
        std::fs::write(self.audit_log(), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    /// Creates a key and returns (key_id, key).
    pub fn create_key(&self, extra: &[&str]) -> (String, String) {
        let mut args = vec!["--json", "key", "create"];
        args.extend_from_slice(extra);
        let v = self.run(&args).ok().json();
        (v["key_id"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string())
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The code an authenticator shows for `secret`, `offset_steps` steps from now.
pub fn totp(secret: &str, offset_steps: i64) -> String {
    let t = (now() as i64 + offset_steps * 30) as u64;
    tokenhub_guard::admin::totp::code_at(secret, t).unwrap().to_string()
}

/// Enrolls and activates 2FA for `name`; returns (secret, recovery codes).
pub fn enable_2fa(home: &Home, name: &str) -> (String, Vec<String>) {
    let v = home.run(&["--json", "--as", name, "2fa", "enroll"]).ok().json();
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(v["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/TokenHub:"));
    let code = totp(&secret, 0);
    let v = home.run(&["--json", "--as", name, "--otp", &code, "2fa", "verify"]).ok().json();
    let codes: Vec<String> =
        v["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The keys `personal_data_fixture` issued.
pub struct TenantKeys {
    pub acme_id: String,
    pub acme_key: String,
    pub globex_id: String,
}

/// Tenant `acme` holding one of each kind of personal data (a named tenant,
/// a sub-account, an allowlist, a quota, its own provider secret, a named
/// key, the OIDC identity `identity`, the tenant admin `acme_admin`) and a
/// bystander `globex` with a key and the admin `gus`; `root` is a platform
/// admin. For the export and erasure tests.
pub fn personal_data_fixture(home: &Home, acme_admin: &str, identity: &str) -> TenantKeys {
    home.run(&["tenant", "add", "acme", "--name", "Acme Widgets", "--region", "eu"]).ok();
    home.run(&["tenant", "add", "globex"]).ok();
    home.run(&["subaccount", "add", "acme", "research"]).ok();
    home.run(&["ip", "allow", "--tenant", "acme", "203.0.113.0/24"]).ok();
    home.run(&["quota", "set", "--tenant", "acme", "--per-minute", "60"]).ok();
    home.run_with(&["provider", "set", "openai", "--path-prefix", "/v1/"], &[], Some("sk-platform-0123456789")).ok();
    let own = ["provider", "set", "openai", "--path-prefix", "/v1/", "--tenant", "acme"];
    home.run_with(&own, &[], Some("sk-acme-own-0123456789")).ok();
    let (acme_id, acme_key) = home.create_key(&["--tenant", "acme", "--sub-account", "research", "--name", "ci"]);
    let (globex_id, _) = home.create_key(&["--tenant", "globex"]);
    home.run(&["oidc", "map", "--issuer", "https://accounts.google.com", "--value", identity, "--tenant", "acme"]).ok();
    home.run(&["admin", "add", "root", "--role", "platform"]).ok();
    home.run(&["admin", "add", acme_admin, "--role", "tenant", "--tenant", "acme"]).ok();
    home.run(&["admin", "add", "gus", "--role", "tenant", "--tenant", "globex"]).ok();
    TenantKeys { acme_id, acme_key, globex_id }
}

/// `tokenhub-admin serve` of `home` on a free loopback port (its access log
/// is `home.dir/access.log`), stopped on drop.
pub struct Service {
    pub child: Child,
    pub addr: String,
    /// Kept open: serve's later lines must not meet a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Service {
    pub fn start(home: &Home) -> Service {
        Self::start_with(home, &[])
    }

    pub fn start_with(home: &Home, extra: &[&str]) -> Service {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("TOKENHUB_HOME", home.home())
            .env("TOKENHUB_MASTER_KEY_FILE", home.master_key_file())
            .env("TOKENHUB_ACCESS_LOG", home.dir.join("access.log"))
            .env_remove("TOKENHUB_MASTER_KEY")
            .env_remove("TOKENHUB_ADMIN")
            .env_remove("TOKENHUB_OTP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // The xDS control plane (`--xds-listen`) announces itself first.
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on http://") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "serve exited before listening");
        }
        let addr = line.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
        Service { child, addr, _stdout: out }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store with two tenants (acme, globex), a platform admin `root` and a
/// tenant admin `ann` of acme, each with an API token (no 2FA yet):
/// (home, root's token, ann's token).
pub fn two_tenants_two_admins(name: &str) -> (Home, String, String) {
    let home = Home::new(name);
    home.run(&["tenant", "add", "acme"]).ok();
    home.run(&["tenant", "add", "globex"]).ok();
    home.run(&["admin", "add", "root", "--role", "platform"]).ok();
    home.run(&["admin", "add", "ann", "--role", "tenant", "--tenant", "acme"]).ok();
    let token = |n: &str| {
        home.run(&["--json", "admin", "token", "create", n]).ok().json()["token"].as_str().unwrap().to_string()
    };
    let (root, ann) = (token("root"), token("ann"));
    (home, root, ann)
}

/// [`two_tenants_two_admins`], published once.
pub fn published_two_tenants_two_admins(name: &str) -> (Home, String, String) {
    let (home, root, ann) = two_tenants_two_admins(name);
    home.run(&["publish"]).ok();
    (home, root, ann)
}
