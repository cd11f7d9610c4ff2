//! A real Envoy process for one test: renders a bootstrap template (by
//! default envoy/local/envoy.yaml.tmpl) into a private directory, starts
//! the Envoy binary on free loopback ports, waits until it serves, and
//! offers admin and ECDS helpers. When the test fails, drop prints Envoy's
//! log and keeps the directory.

use crate::client::{self, Connection, Response};
use crate::paths;
use crate::ports::free_port;
use crate::process::ChildGuard;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// V8 compiles the module once per worker plus once on the main thread;
/// on a busy 2-core machine that can take seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a published ECDS file may take to be accepted or rejected
/// (measured: about 20 ms).
const ECDS_TIMEOUT: Duration = Duration::from_secs(10);
/// After Envoy counts an ECDS update, workers pick it up asynchronously.
const ECDS_SETTLE: Duration = Duration::from_millis(100);

/// Starts tried when Envoy loses a port race with another test.
const START_ATTEMPTS: u32 = 3;

/// The counters under which Envoy reports filesystem ECDS updates.
const ECDS_STAT_PREFIX: &str = "extension_config_discovery.http_filter.tokenhub.guard.";

/// The plaintext harness config: one listener, one `echo` cluster.
pub const LOCAL_TEMPLATE: &str = "envoy/local/envoy.yaml.tmpl";
/// The demo config: TLS 1.3 listener, `eu`/`us` clusters chosen by the
/// guard's x-tokenhub-region, metadata-only JSON access log. Needs the
/// vars TLS_CERT, TLS_KEY, UPSTREAM_EU_PORT and UPSTREAM_US_PORT.
pub const DEMO_TEMPLATE: &str = "envoy/demo/envoy.yaml.tmpl";
/// The global quota mode's config (the rate limit filter after the guard).
pub const GLOBAL_TEMPLATE: &str = "envoy/global-ratelimit/envoy.yaml.tmpl";

/// Distinguishes instances within one test binary (for --base-id and dirs).
static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// How to start Envoy. `EnvoyOptions::new(upstream_port)` gives defaults.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Port of the echo upstream on 127.0.0.1.
    pub upstream_port: u16,
    /// The guard filter module (default: the release build; env TOKENHUB_WASM).
    pub wasm_path: PathBuf,
    /// guard.json at start. `None`: keep the one already in `bundle_dir`,
    /// else nothing published yet (`resources: []`), so the default_config
    /// (empty configuration, every request 503) applies.
    pub initial_ecds: Option<String>,
    /// The directory Envoy watches for guard.json. `None`: a private one
    /// inside Envoy's directory. `Some`: an existing directory, e.g. where
    /// `tokenhub-admin publish` writes, so Envoy reads what the sidecar
    /// published (and it is left in place when Envoy stops).
    pub bundle_dir: Option<PathBuf>,
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// Extra environment for Envoy, e.g. TOKENHUB_BUNDLE_KEY.
    pub env: Vec<(String, String)>,
    /// `--log-level`.
    pub log_level: String,
    /// `--component-log-level`, e.g. "wasm:debug".
    pub component_log_level: Option<String>,
    /// The bootstrap template, relative to the repository root. The TLS and
    /// regional-routing config is [`DEMO_TEMPLATE`].
    pub template: PathBuf,
    /// Values for placeholders beyond the built-in ones (LISTEN_PORT,
    /// ADMIN_PORT, UPSTREAM_PORT, BUNDLE_DIR, WASM_PATH, ACCESS_LOG), e.g.
    /// `("TLS_CERT", "/tmp/…/tls.crt")`. A placeholder left unfilled fails
    /// the start.
    pub vars: Vec<(String, String)>,
}

impl EnvoyOptions {
    pub fn new(upstream_port: u16) -> EnvoyOptions {
        EnvoyOptions {
            upstream_port,
            wasm_path: paths::guard_wasm(),
            initial_ecds: None,
            bundle_dir: None,
            concurrency: 2,
            env: Vec::new(),
            log_level: "info".to_string(),
            component_log_level: None,
            template: PathBuf::from(LOCAL_TEMPLATE),
            vars: Vec::new(),
        }
    }

    /// Adds a placeholder value (see [`EnvoyOptions::vars`]).
    pub fn var(mut self, name: &str, value: impl ToString) -> EnvoyOptions {
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    /// Watches `admin`'s bundle directory, with its bundle key in Envoy's
    /// environment: Envoy runs what that store publishes.
    pub fn publisher(mut self, admin: &crate::Admin) -> EnvoyOptions {
        self.bundle_dir = Some(admin.bundle_dir());
        self.env.push((crate::guard::BUNDLE_KEY_ENV.to_string(), admin.bundle_key().to_string()));
        self
    }
}

/// How Envoy took a published ECDS file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcdsOutcome {
    /// Applied; new requests use it.
    Accepted,
    /// Parsed but refused (e.g. the guard's on_configure returned false);
    /// the previous config keeps serving.
    Rejected,
    /// Unreadable (bad YAML, wrong type); the previous config keeps serving.
    Failed,
}

/// A running Envoy; stopped on drop.
pub struct Envoy {
    child: ChildGuard,
    dir: PathBuf,
    bundle_dir: PathBuf,
    listen_port: u16,
    admin_port: u16,
    wasm_path: PathBuf,
    publish_count: AtomicU32,
}

impl Envoy {
    /// Starts Envoy and waits until it is ready; panics (with Envoy's log)
    /// if it does not come up.
    pub fn start(opts: EnvoyOptions) -> Envoy {
        let mut attempt = 1;
        loop {
            let mut envoy = Envoy::spawn_once(&opts);
            match envoy.wait_ready() {
                Ok(()) => return envoy,
                // Another test's process took a port between free_port()
                // and Envoy's bind: try again with fresh ports.
                Err(_) if attempt < START_ATTEMPTS && envoy.log_contents().contains("Address already in use") => {
                    eprintln!("envoy: a port was taken before Envoy bound it; retrying with new ports");
                    attempt += 1;
                }
                // Drop prints the log.
                Err(why) => panic!("{why}"),
            }
        }
    }

    fn spawn_once(opts: &EnvoyOptions) -> Envoy {
        let instance = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let dir = fresh_dir(instance);
        let (listen_port, admin_port) = (free_port(), free_port());
        let bundle_dir = opts.bundle_dir.clone().unwrap_or_else(|| dir.join("bundle"));
        fs::create_dir_all(&bundle_dir).unwrap_or_else(|e| panic!("creating {}: {e}", bundle_dir.display()));
        let ecds_path = bundle_dir.join("guard.json");
        match &opts.initial_ecds {
            Some(ecds) => write_file(&ecds_path, ecds),
            // Envoy refuses to start when the ECDS file is missing, so
            // "nothing published" is an empty resource list, which it
            // rejects in favour of the default_config.
            None if !ecds_path.exists() => write_file(&ecds_path, "{\"resources\": []}\n"),
            None => {}
        }
        let config = render_config(opts, &dir, &bundle_dir, listen_port, admin_port);
        let config_path = dir.join("envoy.yaml");
        write_file(&config_path, &config);
        let child = spawn(opts, &dir, &config_path, instance);
        Envoy {
            child,
            dir,
            bundle_dir,
            listen_port,
            admin_port,
            wasm_path: opts.wasm_path.clone(),
            publish_count: AtomicU32::new(0),
        }
    }

    /// The listener on 127.0.0.1.
    pub fn listener(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.listen_port)
    }

    /// The same listener on ::1.
    pub fn listener_v6(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.listen_port)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.admin_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The directory Envoy watches for guard.json.
    pub fn bundle_dir(&self) -> PathBuf {
        self.bundle_dir.clone()
    }

    /// `GET path` from 127.0.0.1 to the listener; see [`client::get`].
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        client::get(self.listener(), path, headers).unwrap_or_else(|e| panic!("GET {path} via Envoy: {e}"))
    }

    /// Raw request from `src_ip` to the listener of the same IP family;
    /// see [`client::request`].
    pub fn request<L: AsRef<[u8]>>(&self, src_ip: IpAddr, head_lines: &[L], body: &[u8]) -> io::Result<Response> {
        client::request(src_ip, self.listener_for(src_ip), head_lines, body)
    }

    /// A connection from `src_ip`, for several requests (keep-alive).
    pub fn connect(&self, src_ip: IpAddr) -> io::Result<Connection> {
        Connection::open(src_ip, self.listener_for(src_ip))
    }

    fn listener_for(&self, src_ip: IpAddr) -> SocketAddr {
        if src_ip.is_ipv6() {
            self.listener_v6()
        } else {
            self.listener()
        }
    }

    /// `GET path` on the admin interface.
    pub fn admin_get(&self, path: &str) -> Response {
        client::get(self.admin_addr(), path, &[]).unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    pub fn stats_prometheus(&self) -> String {
        self.admin_get("/stats/prometheus").body_text()
    }

    /// All stats in Envoy's text format (`name: value` lines).
    pub fn stats_text(&self) -> String {
        self.admin_get("/stats").body_text()
    }

    /// The value of one counter or gauge by its full Envoy name, e.g.
    /// "http.ingress_http.downstream_rq_total".
    pub fn stat(&self, name: &str) -> Option<u64> {
        let text = self.stats_text();
        let prefix = format!("{name}: ");
        text.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|value| value.trim().parse().ok())
    }

    /// Polls `stat(name)` until `ok(value)`; returns the value or panics.
    pub fn wait_for_stat(&self, name: &str, ok: impl Fn(u64) -> bool, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.stat(name);
            match value {
                Some(v) if ok(v) => return v,
                _ if Instant::now() >= deadline => panic!("stat {name} stayed at {value:?}"),
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn config_dump(&self) -> serde_json::Value {
        self.admin_get("/config_dump").json()
    }

    /// Envoy's own log (stdout and stderr) so far.
    pub fn log_contents(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// The private directory holding the rendered config and the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where Envoy's stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("envoy.log")
    }

    /// The access log file (JSON lines).
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.join("access.log")
    }

    /// Stops Envoy now (SIGTERM, as on drop) so its logs are complete; the
    /// files stay readable until drop.
    pub fn stop(&mut self) {
        self.child.stop();
    }

    /// Polls Envoy's log until it contains `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_contents().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The access log so far (flushed every 100 ms), one JSON object a line.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        read_lossy(&self.access_log_path()).lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// The access log once it holds `n` lines (Envoy flushes it every
    /// 100 ms), or whatever it holds after 10 s.
    pub fn access_log_lines(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.access_log();
            if lines.len() >= n || Instant::now() >= deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's CPU time (user + system) so far, from /proc, for
    /// per-request cost measurements.
    pub fn cpu_time(&self) -> Duration {
        paths::process_cpu_time(self.pid())
    }

    /// The ECDS file for the guard with this configuration string (the
    /// sealed bundle; "" = no bundle), from envoy/local/guard.ecds.json.example.
    pub fn guard_ecds(&self, configuration: &str) -> String {
        guard_ecds_yaml(&self.wasm_path, configuration)
    }

    /// Replaces guard.json the way `tokenhub-admin publish` does: a temp
    /// file in the same directory, fsync, rename. Envoy reacts only to
    /// renames into the directory, never to in-place writes.
    pub fn publish_ecds(&self, contents: &str) {
        let n = self.publish_count.fetch_add(1, Ordering::SeqCst);
        let tmp = self.bundle_dir().join(format!(".guard.json.tmp{n}"));
        let mut file = File::create(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
        fs::rename(&tmp, self.bundle_dir().join("guard.json")).unwrap_or_else(|e| panic!("renaming: {e}"));
    }

    /// Publishes and waits until Envoy has processed the file.
    pub fn publish_ecds_and_wait(&self, contents: &str) -> EcdsOutcome {
        self.await_ecds(|| self.publish_ecds(contents)).1
    }

    /// Runs `publish` (anything that renames a new guard.json into the
    /// bundle directory, e.g. `tokenhub-admin publish`) and waits until
    /// Envoy has processed the file; returns what `publish` returned and
    /// how Envoy took the file.
    pub fn await_ecds<R>(&self, publish: impl FnOnce() -> R) -> (R, EcdsOutcome) {
        let before = self.ecds_counts();
        let result = publish();
        let deadline = Instant::now() + ECDS_TIMEOUT;
        loop {
            let now = self.ecds_counts();
            if let Some(outcome) = before.outcome_since(&now) {
                thread::sleep(ECDS_SETTLE);
                return (result, outcome);
            }
            assert!(Instant::now() < deadline, "Envoy did not process the ECDS file within {ECDS_TIMEOUT:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn ecds_counts(&self) -> EcdsCounts {
        let stat = |name: &str| self.stat(&format!("{ECDS_STAT_PREFIX}{name}")).unwrap_or(0);
        EcdsCounts {
            success: stat("update_success"),
            rejected: stat("update_rejected"),
            failure: stat("update_failure"),
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.exited() {
                return Err(format!("Envoy exited during startup ({status})"));
            }
            if self.is_ready() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!("Envoy not ready after {READY_TIMEOUT:?}"))
    }

    /// Admin /ready says LIVE and the listener accepts connections.
    fn is_ready(&self) -> bool {
        let live = client::get(self.admin_addr(), "/ready", &[])
            .map(|r| r.status == 200 && r.body_text().trim() == "LIVE")
            .unwrap_or(false);
        live && TcpStream::connect_timeout(&self.listener(), Duration::from_secs(1)).is_ok()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let failed = thread::panicking();
        if failed {
            // Envoy drops unflushed access log lines on SIGTERM; let the
            // 100 ms flush timer run once more.
            thread::sleep(Duration::from_millis(250));
        }
        // Stop before reading, so Envoy's own log is complete.
        self.child.stop();
        if failed {
            eprintln!(
                "==== Envoy log ({}) ====\n{}\n==== access log ====\n{}==== end (files kept in {}) ====",
                self.child.name(),
                self.log_contents(),
                read_lossy(&self.dir.join("access.log")),
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct EcdsCounts {
    success: u64,
    rejected: u64,
    failure: u64,
}

impl EcdsCounts {
    fn outcome_since(&self, now: &EcdsCounts) -> Option<EcdsOutcome> {
        if now.success > self.success {
            Some(EcdsOutcome::Accepted)
        } else if now.rejected > self.rejected {
            Some(EcdsOutcome::Rejected)
        } else if now.failure > self.failure {
            Some(EcdsOutcome::Failed)
        } else {
            None
        }
    }
}

/// The guard's ECDS file: the reference example with the module path and
/// the configuration string filled in (JSON string syntax is valid YAML
/// double-quoted syntax, so any text is escaped correctly).
pub fn guard_ecds_yaml(wasm_path: &Path, configuration: &str) -> String {
    let example = paths::repo_root().join("envoy/local/guard.ecds.json.example");
    let text = read_lossy(&example);
    assert!(!text.is_empty(), "{} is missing or empty", example.display());
    let quoted = serde_json::Value::String(configuration.to_string()).to_string();
    text.replace("{{WASM_PATH}}", &wasm_path.display().to_string()).replace("\"<sealed bundle text>\"", &quoted)
}

/// The local template's OIDC issuer when a test names none: an `.invalid`
/// issuer whose JWKS holds a public key whose private half was discarded,
/// so no token can ever verify against it.
pub const DEFAULT_OIDC_ISSUER: &str = "https://issuer.tokenhub.invalid";
pub const DEFAULT_OIDC_JWKS: &str = r#"{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"unused","n":"r1PJKdvUsyZ1k6vRg08f16wdFBNOyNxU10IeBuSNxbYWbPLc0g8of4nNRC2ng4lbaWRCITGZkexQOyrgjtpH0wL6e-qe03QVsp29ufQWq0gBnkCQJ3glrWjgEZStP2eVjIU7U9YLxfHdzFyXdvung0T1eBnMTD7UnI8wXeppIS6k7lpjcPbGWoefVluxRl77e-Fqr-LYEbCteA25kD1A9BXFUxD4DrN03vskE-QhREfNPvz2Ie6km6Fbdx6fnO0Tc63iVIiyggM3GmkCdshAkpO1YPLazLAr3sYM_r33uEmP0yBXamm7dbGmw2218i6Pm1RaCnQHx7RXmuECTz5mlw","e":"AQAB"}]}"#;

fn render_config(opts: &EnvoyOptions, dir: &Path, bundle_dir: &Path, listen_port: u16, admin_port: u16) -> String {
    let template_path = paths::repo_root().join(&opts.template);
    let template = read_lossy(&template_path);
    assert!(!template.is_empty(), "{} is missing or empty", template_path.display());
    let builtin = [
        ("LISTEN_PORT", listen_port.to_string()),
        ("ADMIN_PORT", admin_port.to_string()),
        ("UPSTREAM_PORT", opts.upstream_port.to_string()),
        ("BUNDLE_DIR", bundle_dir.display().to_string()),
        ("WASM_PATH", opts.wasm_path.display().to_string()),
        ("ACCESS_LOG", dir.join("access.log").display().to_string()),
    ];
    let extra = opts.vars.iter().map(|(name, value)| (name.as_str(), value.clone()));
    // Replaced last, so a test's own `vars` win.
    let defaults = [("OIDC_ISSUER", DEFAULT_OIDC_ISSUER.to_string()), ("OIDC_JWKS", DEFAULT_OIDC_JWKS.to_string())];
    let rendered = builtin
        .into_iter()
        .chain(extra)
        .chain(defaults)
        .fold(template, |text, (name, value)| text.replace(&format!("{{{{{name}}}}}"), &value));
    assert!(!rendered.contains("{{"), "unfilled placeholder in {}", template_path.display());
    rendered
}

fn spawn(opts: &EnvoyOptions, dir: &Path, config: &Path, instance: u32) -> ChildGuard {
    let log = File::create(dir.join("envoy.log")).unwrap_or_else(|e| panic!("creating envoy.log: {e}"));
    let log_err = log.try_clone().unwrap_or_else(|e| panic!("cloning log handle: {e}"));
    let bin = paths::envoy_bin();
    let mut cmd = Command::new(&bin);
    cmd.arg("-c")
        .arg(config)
        .args(["--concurrency", &opts.concurrency.to_string()])
        // Parallel Envoys must not share hot-restart state. Tests never hot
        // restart, so it is off (otherwise every run leaves a
        // /dev/shm/envoy_shared_memory_* file behind); the base id is unique
        // per instance anyway, in case someone turns it back on.
        .arg("--disable-hot-restart")
        .args(["--base-id", &base_id(instance).to_string()])
        .args(["--log-level", &opts.log_level])
        // The access log is otherwise flushed every 10 s.
        .args(["--file-flush-interval-msec", "100"])
        .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if let Some(levels) = &opts.component_log_level {
        cmd.args(["--component-log-level", levels]);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    ChildGuard::new(format!("envoy#{instance} in {}", dir.display()), child)
}

/// Unique among concurrently running test processes: the pid (< 2^22 on
/// Linux) times 64, plus the instance number within this process.
fn base_id(instance: u32) -> u32 {
    std::process::id().wrapping_mul(64).wrapping_add(instance % 64)
}

fn fresh_dir(instance: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokenhub-envoy-{}-{instance}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

fn write_file(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}
