//! The global quota mode's moving parts for one test: a real Redis
//! (Debian's `redis-server`, installed by tools/bootstrap.sh) on a free
//! loopback port with a private directory and no persistence, and the real
//! `tokenhub-admin ratelimit` service reading the store's published ECDS
//! file. Both are stopped when dropped (no daemon left behind); either can
//! be killed and started again on the same port.

use crate::admin::Admin;
use crate::paths;
use crate::ports::free_port;
use crate::process::ChildGuard;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

static INSTANCE: AtomicU32 = AtomicU32::new(0);

fn private_dir(kind: &str) -> PathBuf {
    let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("tokenhub-{kind}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Starts `command` (stdout and stderr to `log`, no stdin) as `name` and
/// waits until it listens on `port` of 127.0.0.1; its log on failure.
/// `hint` says how to get the program when it cannot start at all.
fn start_listening(name: &str, command: &mut Command, log: &Path, port: u16, hint: &str) -> ChildGuard {
    let out = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let err = out.try_clone().unwrap_or_else(|e| panic!("cloning log handle: {e}"));
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}{hint}"));
    let mut child = ChildGuard::new(name, child);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.exited() {
            panic!("{name} exited during startup ({status}):\n{}", fs::read_to_string(log).unwrap_or_default());
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return child;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} not listening on {addr} after {READY_TIMEOUT:?}");
}

/// A `redis-server` on 127.0.0.1.
pub struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis { port: free_port(), dir: private_dir("redis"), child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this server (Debian's redis-tools, beside
    /// redis-server); its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(which("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli: {e}"));
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `redis-cli --pipe` with `commands` (RESP) on stdin: bulk loading.
    pub fn pipe(&self, commands: &[u8]) -> String {
        use std::io::Write;
        let mut child = Command::new(which("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--pipe"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-cli --pipe: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(commands).unwrap_or_else(|e| panic!("redis-cli --pipe stdin: {e}"));
        }
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("redis-cli --pipe: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success() && text.contains("errors: 0"), "redis-cli --pipe: {text}");
        text
    }

    /// SIGKILL: no goodbye to clients (and, without persistence, no counters kept).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.pid()) {
                // SAFETY: kill(2) on our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            child.stop();
        }
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let bin = which("redis-server");
        let mut command = Command::new(&bin);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir);
        let log = self.dir.join("redis.log");
        let child = start_listening(
            "redis-server",
            &mut command,
            &log,
            self.port,
            " (tools/bootstrap.sh installs redis-server)",
        );
        self.child = Some(child);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: run tools/bootstrap.sh (it installs Debian's redis-server)"))
}

/// `tokenhub-admin ratelimit` on 127.0.0.1, limits from `admin`'s published
/// ECDS file, the bundle key in its environment (never an argument).
pub struct RateLimitService {
    port: u16,
    redis_url: String,
    ecds_file: PathBuf,
    bundle_key: String,
    dir: PathBuf,
    starts: u32,
    child: Option<ChildGuard>,
}

impl RateLimitService {
    pub fn start(admin: &Admin, redis: &Redis) -> RateLimitService {
        let mut service = RateLimitService {
            port: free_port(),
            redis_url: redis.url(),
            ecds_file: admin.ecds_file(),
            bundle_key: admin.bundle_key().to_string(),
            dir: private_dir("ratelimit"),
            starts: 0,
            child: None,
        };
        service.restart();
        service
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// This run's log (stderr and stdout).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("ratelimit-{}.log", self.starts))
    }

    /// SIGTERM (graceful), then start again on the same port.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop();
        }
        self.starts += 1;
        let bin = paths::admin_bin();
        let mut command = Command::new(&bin);
        command
            .arg("ratelimit")
            .args(["--listen", &format!("127.0.0.1:{}", self.port), "--redis", &self.redis_url, "--poll-ms", "100"])
            .arg("--bundle-file")
            .arg(&self.ecds_file)
            .env("TOKENHUB_BUNDLE_KEY", &self.bundle_key);
        let child = start_listening(
            "tokenhub-admin ratelimit",
            &mut command,
            &self.log_path(),
            self.port,
            &format!(" ({})", bin.display()),
        );
        self.child = Some(child);
    }

    /// Waits until the service's log says it loaded bundle `version`.
    pub fn wait_loaded(&self, version: u64) {
        let needle = format!("bundle version {version} loaded");
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.log().contains(&needle) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("the rate limit service did not load version {version}:\n{}", self.log());
    }
}

impl Drop for RateLimitService {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop();
        }
        if thread::panicking() {
            eprintln!("==== tokenhub-admin ratelimit log ({}) ====\n{}", self.log_path().display(), self.log());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The global mode as the suites run it: switches the store to it and
/// publishes, starts Redis and the service on that bundle, then `replicas`
/// Envoys (two workers each) on `GLOBAL_TEMPLATE` in
/// front of `upstream_port`, each serving the published version.
pub fn start_global_mode(
    admin: &Admin,
    upstream_port: u16,
    replicas: usize,
) -> (Redis, RateLimitService, Vec<crate::Envoy>) {
    let mode = admin.json(&["quota", "mode", "global"]);
    assert_eq!(mode["quota_mode"], "global", "{mode}");
    admin.publish();
    let version = admin.published_version();
    let redis = Redis::start();
    let service = RateLimitService::start(admin, &redis);
    service.wait_loaded(version);
    let envoys: Vec<crate::Envoy> = (0..replicas)
        .map(|_| {
            let mut opts =
                crate::EnvoyOptions::new(upstream_port).var("RATELIMIT_PORT", service.port()).publisher(admin);
            opts.template = crate::envoy::GLOBAL_TEMPLATE.into();
            opts.concurrency = 2;
            crate::Envoy::start(opts)
        })
        .collect();
    for envoy in &envoys {
        envoy.wait_for_stat("wasmcustom.tokenhub.bundle_version", |v| v == version, Duration::from_secs(20));
    }
    (redis, service, envoys)
}
