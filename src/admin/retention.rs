//! Retention of Envoy's access log (GDPR minimisation): lines older than
//! the retention are dropped, and client addresses older than a second age
//! are cut to their network (/24 for IPv4, /48 for IPv6). Pure rules
//! (`Retention::apply`) used by `logs prune`, which rewrites rotated files,
//! and by `usage`, which reads a log as if it had been pruned.

use super::fsutil;
use super::AdminError;
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;

/// Days an access-log line is kept by default.
pub const DEFAULT_RETAIN_DAYS: u64 = 30;
/// Days after which a client address is cut to its network by default.
pub const DEFAULT_TRUNCATE_IPS_AFTER_DAYS: u64 = 7;
/// The fields of a line that hold the client's address.
const CLIENT_FIELDS: [&str; 2] = ["client", "client_ip"];
const DAY: u64 = 86_400;

/// What to keep, relative to `now` (unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub now: u64,
    pub retain_days: u64,
    /// `None`: addresses are never cut.
    pub truncate_ips_after_days: Option<u64>,
}

/// What one line becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Unchanged (young enough, or without a readable time: kept, never
    /// guessed old).
    Same,
    /// Older than the retention.
    Dropped,
    /// Its client address cut to its network: the new line.
    Truncated(String),
}

/// How many lines a pass kept, dropped, truncated, and could not date.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneStats {
    pub kept: u64,
    pub dropped: u64,
    /// Lines of an erased tenant (`--drop-tenant`).
    pub erased: u64,
    pub truncated: u64,
    pub undated: u64,
}

impl Retention {
    /// The fate of one access-log line.
    pub fn apply(&self, line: &str) -> (Kept, bool) {
        let Ok(mut v) = serde_json::from_str::<Value>(line) else { return (Kept::Same, false) };
        let Some(at) = line_time(&v) else { return (Kept::Same, false) };
        let age = self.now.saturating_sub(at);
        if age >= self.retain_days.saturating_mul(DAY) {
            return (Kept::Dropped, true);
        }
        let Some(after) = self.truncate_ips_after_days else { return (Kept::Same, true) };
        if age < after.saturating_mul(DAY) {
            return (Kept::Same, true);
        }
        let mut changed = false;
        for name in CLIENT_FIELDS {
            let Some(Value::String(ip)) = v.get_mut(name) else { continue };
            if let Some(cut) = truncate_ip(ip) {
                if cut != *ip {
                    *ip = cut;
                    changed = true;
                }
            }
        }
        match (changed, serde_json::to_string(&v)) {
            (true, Ok(text)) => (Kept::Truncated(text), true),
            _ => (Kept::Same, true),
        }
    }

    /// The lines that remain, and what happened; every line of
    /// `drop_tenant` (an erased tenant) goes too, whatever its age.
    pub fn prune<'a>(
        &self,
        lines: impl Iterator<Item = &'a str>,
        drop_tenant: Option<&str>,
    ) -> (Vec<String>, PruneStats) {
        let mut stats = PruneStats::default();
        let mut out = Vec::new();
        for line in lines {
            if drop_tenant.is_some() && line_tenant(line).as_deref() == drop_tenant {
                stats.erased += 1;
                continue;
            }
            let (kept, dated) = self.apply(line);
            stats.undated += u64::from(!dated && !line.trim().is_empty());
            match kept {
                Kept::Same => out.push(line.to_string()),
                Kept::Dropped => {
                    stats.dropped += 1;
                    continue;
                }
                Kept::Truncated(text) => {
                    stats.truncated += 1;
                    out.push(text);
                }
            }
            stats.kept += 1;
        }
        (out, stats)
    }
}

/// The tenant a line names (`tenant`), if any.
fn line_tenant(line: &str) -> Option<String> {
    let v = serde_json::from_str::<Value>(line).ok()?;
    v.get("tenant")?.as_str().map(str::to_string)
}

/// The line's time (`start_time` as Envoy writes it,
/// `2025-01-31T12:00:00.123Z`, or `time`), in unix seconds.
fn line_time(v: &Value) -> Option<u64> {
    let t = ["start_time", "time"].iter().find_map(|n| v.get(*n)?.as_str())?;
    let whole = t.get(..19).filter(|w| w.as_bytes().get(10) == Some(&b'T'))?;
    super::audit::parse_time(&format!("{whole}Z"), 0).ok()
}

/// An address cut to its network: IPv4 /24, IPv6 /48 (`None`: not an
/// address).
pub fn truncate_ip(text: &str) -> Option<String> {
    match text.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => {
            let [x, y, z, _] = a.octets();
            Some(std::net::Ipv4Addr::new(x, y, z, 0).to_string())
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            Some(std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string())
        }
    }
}

/// Processes that hold `path` open (Linux `/proc`), other than this one.
fn holders(path: &Path) -> Vec<u32> {
    let Ok(target) = std::fs::canonicalize(path) else { return Vec::new() };
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target)) {
            out.push(pid);
        }
    }
    out
}

/// Prunes one access-log file in place: refuses a file some process holds
/// open (a live log Envoy is writing: rotate it first, then prune the
/// rotated file), rewrites it atomically with its mode and owner only when
/// something changed.
pub fn prune_file(path: &Path, rules: &Retention, drop_tenant: Option<&str>) -> Result<PruneStats, AdminError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).map_err(|e| AdminError::io(path, e))?;
    if !meta.file_type().is_file() {
        return Err(AdminError::Usage(format!(
            "{}: not a regular file (a link or a pipe is not pruned)",
            path.display()
        )));
    }
    let open = holders(path);
    if !open.is_empty() {
        return Err(AdminError::Usage(format!(
            "{} is open in process {open:?} (a live log Envoy is writing): rotate it first (move it aside, then have Envoy reopen its logs with `curl -X POST http://ADMIN/reopen_logs`) and prune the rotated file",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| AdminError::io(path, e))?;
    let (lines, stats) = rules.prune(text.lines(), drop_tenant);
    if stats.dropped == 0 && stats.truncated == 0 && stats.erased == 0 {
        return Ok(stats);
    }
    let mut bytes = lines.join("\n").into_bytes();
    if !bytes.is_empty() {
        bytes.push(b'\n');
    }
    fsutil::write_atomic(path, &bytes, meta.mode() & 0o7777).map_err(|e| AdminError::io(path, e))?;
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid())).map_err(|e| AdminError::io(path, e))?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn line(date: &str, ip: &str) -> String {
        format!(r#"{{"start_time":"{date}","client":"{ip}","tenant":"acme","status":"200"}}"#)
    }

    #[test]
    fn old_lines_go_and_older_addresses_are_cut() {
        let rules = Retention { now: NOW, retain_days: 30, truncate_ips_after_days: Some(7) };
        let fresh = line("2025-12-30T10:00:00.123Z", "203.0.113.77");
        let week = line("2025-12-20T10:00:00.000Z", "2001:db8:abcd:12::1");
        let old = line("2025-11-20T10:00:00.000Z", "198.51.100.9");
        let text = [fresh.as_str(), week.as_str(), old.as_str(), "not json", ""].join("\n");
        let (out, stats) = rules.prune(text.lines(), None);
        assert_eq!(stats, PruneStats { kept: 3, dropped: 1, erased: 0, truncated: 1, undated: 1 });
        assert_eq!(out[0], fresh);
        assert!(out[1].contains(r#""client":"2001:db8:abcd::""#), "{}", out[1]);
        assert!(!out.join("\n").contains("198.51.100"));
        assert_eq!(truncate_ip("203.0.113.77").unwrap(), "203.0.113.0");
        assert_eq!(truncate_ip("acme"), None);
        let never = Retention { truncate_ips_after_days: None, ..rules };
        assert_eq!(never.apply(&week), (Kept::Same, true));
        let other = line("2025-12-30T10:00:00.123Z", "203.0.113.8").replace("acme", "globex");
        let text = [fresh.as_str(), other.as_str()].join("\n");
        let (out, stats) = rules.prune(text.lines(), Some("acme"));
        assert_eq!((out, stats.erased, stats.kept), (vec![other], 1, 1));
    }
}
