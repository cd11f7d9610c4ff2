//! Retention of Envoy's access log (GDPR minimisation): lines older than
//! the retention are dropped, and client addresses older than a second age
//! are cut to their network (/24 for IPv4, /48 for IPv6). Pure rules
//! (`Retention::apply`) used by `logs prune`, which rewrites rotated files,
//! and by `usage`, which reads a log as if it had been pruned.

use super::fsutil;
use super::AdminError;
use crate::core::bundle::schema::{LogRetentionDoc, TenantDoc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// Days an access-log line is kept by default.
pub const DEFAULT_RETAIN_DAYS: u64 = 30;
/// Days after which a client address is cut to its network by default.
pub const DEFAULT_TRUNCATE_IPS_AFTER_DAYS: u64 = 7;
/// The fields of a line that hold the client's address.
const CLIENT_FIELDS: [&str; 2] = ["client", "client_ip"];
const DAY: u64 = 86_400;

/// What to keep, relative to `now` (unix seconds): the platform's rules,
/// and the tenants' own (`tenant log-retention`), which override them for
/// that tenant's lines.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    pub now: u64,
    pub retain_days: u64,
    /// `None`: addresses are never cut.
    pub truncate_ips_after_days: Option<u64>,
    /// Tenant id → its own rules (a field left out: the platform's).
    pub tenants: BTreeMap<String, LogRetentionDoc>,
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

/// What `Retention::judge` did to a parsed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Same,
    Dropped,
    /// Its client fields were cut to their network, in place.
    Truncated,
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

/// The tenants' own retention rules, from the store (or a bundle).
pub fn tenant_rules(tenants: &[TenantDoc]) -> BTreeMap<String, LogRetentionDoc> {
    tenants.iter().filter_map(|t| Some((t.id.clone(), t.log_retention?))).collect()
}

/// One access-log line parsed once (`None`: not a JSON object), for every
/// pass over it (`Retention::judge`, `usage::report`).
pub fn parse_line(line: &str) -> Option<Value> {
    serde_json::from_str::<Value>(line).ok().filter(Value::is_object)
}

impl Retention {
    /// The days a line of `tenant` is kept, and after which its address is cut.
    fn rules_for(&self, tenant: Option<&str>) -> (u64, Option<u64>) {
        match tenant.and_then(|t| self.tenants.get(t)) {
            Some(own) => (
                own.retain_days.unwrap_or(self.retain_days),
                own.truncate_ips_after_days.or(self.truncate_ips_after_days),
            ),
            None => (self.retain_days, self.truncate_ips_after_days),
        }
    }

    /// The fate of one parsed line (its client fields cut in place when
    /// truncated), and whether it had a readable time.
    pub fn judge(&self, v: &mut Value) -> (Fate, bool) {
        let Some(at) = line_time(v) else { return (Fate::Same, false) };
        let (retain_days, truncate_after) = self.rules_for(v.get("tenant").and_then(Value::as_str));
        let age = self.now.saturating_sub(at);
        if age >= retain_days.saturating_mul(DAY) {
            return (Fate::Dropped, true);
        }
        let Some(after) = truncate_after else { return (Fate::Same, true) };
        if age < after.saturating_mul(DAY) {
            return (Fate::Same, true);
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
        (if changed { Fate::Truncated } else { Fate::Same }, true)
    }

    /// The fate of one access-log line.
    pub fn apply(&self, line: &str) -> (Kept, bool) {
        let Some(mut v) = parse_line(line) else { return (Kept::Same, false) };
        match self.judge(&mut v) {
            (Fate::Same, dated) => (Kept::Same, dated),
            (Fate::Dropped, dated) => (Kept::Dropped, dated),
            (Fate::Truncated, dated) => match serde_json::to_string(&v) {
                Ok(text) => (Kept::Truncated(text), dated),
                Err(_) => (Kept::Same, dated),
            },
        }
    }

    /// The lines that remain, and what happened; every line of
    /// `drop_tenant` (an erased tenant) goes too, whatever its age. Each
    /// line is parsed once.
    pub fn prune<'a>(
        &self,
        lines: impl Iterator<Item = &'a str>,
        drop_tenant: Option<&str>,
    ) -> (Vec<String>, PruneStats) {
        let mut stats = PruneStats::default();
        let mut out = Vec::new();
        for line in lines {
            let Some(mut v) = parse_line(line) else {
                stats.undated += u64::from(!line.trim().is_empty());
                stats.kept += 1;
                out.push(line.to_string());
                continue;
            };
            if drop_tenant.is_some() && v.get("tenant").and_then(Value::as_str) == drop_tenant {
                stats.erased += 1;
                continue;
            }
            let (fate, dated) = self.judge(&mut v);
            stats.undated += u64::from(!dated);
            match fate {
                Fate::Dropped => {
                    stats.dropped += 1;
                    continue;
                }
                Fate::Truncated if let Ok(text) = serde_json::to_string(&v) => {
                    stats.truncated += 1;
                    out.push(text);
                }
                Fate::Same | Fate::Truncated => out.push(line.to_string()),
            }
            stats.kept += 1;
        }
        (out, stats)
    }
}

/// The line's time (`start_time` as Envoy writes it,
/// `2025-01-31T12:00:00.123Z`, or `time`), in unix seconds.
fn line_time(v: &Value) -> Option<u64> {
    let t = ["start_time", "time"].iter().find_map(|n| v.get(*n)?.as_str())?;
    let whole = t.get(..19).filter(|w| w.as_bytes().get(10) == Some(&b'T'))?;
    super::audit::parse_time(&format!("{whole}Z"), 0).ok()
}

/// An address cut to its network (`cidr::truncate`: IPv4 /24, IPv6 /48);
/// `ip:port` (Envoy's own form, for a request the guard never saw) loses
/// its port too. `None`: not an address.
pub fn truncate_ip(text: &str) -> Option<String> {
    client_ip(text).map(|ip| crate::core::cidr::truncate(ip).to_string())
}

/// The address in a log's client field: a bare address, or Envoy's
/// `ip:port` / `[ip6]:port`.
pub fn client_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
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
        let rules = Retention { now: NOW, retain_days: 30, truncate_ips_after_days: Some(7), ..Default::default() };
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
        assert_eq!(truncate_ip("203.0.113.77:41234").unwrap(), "203.0.113.0");
        assert_eq!(truncate_ip("[2001:db8:abcd:12::1]:443").unwrap(), "2001:db8:abcd::");
        let never = Retention { truncate_ips_after_days: None, ..rules.clone() };
        assert_eq!(never.apply(&week), (Kept::Same, true));
        let other = line("2025-12-30T10:00:00.123Z", "203.0.113.8").replace("acme", "globex");
        let text = [fresh.as_str(), other.as_str()].join("\n");
        let (out, stats) = rules.prune(text.lines(), Some("acme"));
        assert_eq!((out, stats.erased, stats.kept), (vec![other], 1, 1));
    }

    #[test]
    fn a_tenant_s_own_retention_overrides_the_platform_s() {
        let mut rules = Retention { now: NOW, retain_days: 30, truncate_ips_after_days: Some(7), ..Default::default() };
        rules
            .tenants
            .insert("short".into(), LogRetentionDoc { retain_days: Some(3), truncate_ips_after_days: Some(0) });
        rules.tenants.insert("long".into(), LogRetentionDoc { retain_days: Some(90), truncate_ips_after_days: None });
        let at = |tenant: &str, date: &str| line(date, "203.0.113.77").replace("acme", tenant);
        let four_days = "2025-12-28T00:00:00.000Z";
        let two_days = "2025-12-30T00:00:00.000Z";
        let sixty_days = "2025-11-02T00:00:00.000Z";
        assert_eq!(rules.apply(&at("short", four_days)), (Kept::Dropped, true));
        assert_eq!(rules.apply(&at("acme", four_days)), (Kept::Same, true));
        let (Kept::Truncated(cut), true) = rules.apply(&at("short", two_days)) else { panic!("not cut") };
        assert!(cut.contains(r#""client":"203.0.113.0""#), "{cut}");
        assert_eq!(rules.apply(&at("acme", sixty_days)), (Kept::Dropped, true));
        let (Kept::Truncated(cut), true) = rules.apply(&at("long", sixty_days)) else { panic!("not kept") };
        assert!(cut.contains("203.0.113.0"), "the platform's 7 days still cut it: {cut}");
    }
}
