//! Reading the audit log: tail, search, verify. A tenant admin sees only the
//! entries about its own tenant.

use super::Reply;
use crate::admin::audit::Target;
use crate::admin::audit::{parse_time, AuditLog, Entry, Filter, Outcome, VerifyReport};
use crate::admin::session::{check_binding, Scope, Session};
use crate::admin::store::admins::Actor;
use crate::admin::AdminError;
use serde_json::{json, Value};

/// One entry as a line for a terminal.
pub fn entry_line(e: &Entry) -> String {
    let outcome = match e.outcome {
        Outcome::Ok => "ok",
        Outcome::Denied => "DENIED",
        Outcome::Error => "error",
        Outcome::AuthFailed => "AUTH-FAILED",
        Outcome::Locked => "LOCKED",
    };
    let t = &e.target;
    let ids: Vec<String> = [
        ("tenant", &t.tenant),
        ("sub", &t.sub_account),
        ("key", &t.key_id),
        ("admin", &t.admin),
        ("provider", &t.provider),
        ("token", &t.token_id),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
    .collect();
    let detail = e.detail.as_deref().map(|d| format!(" — {d}")).unwrap_or_default();
    format!("#{} {} {}@{} {} {} {}{detail}", e.seq, e.time, e.actor, e.via, e.action, ids.join(" "), outcome)
}

fn visible(who: &Actor, e: &Entry) -> bool {
    who.sees(e.target.tenant.as_deref()) || e.actor == who.name
}

/// A tenant admin's own entry about another tenant's object (a key id it
/// probed) shows the id it gave, not the tenant the id resolved to.
fn redact(who: &Actor, mut e: Entry) -> Entry {
    if !who.is_platform() && e.target.tenant.is_some() && e.target.tenant != who.tenant {
        e.target.tenant = None;
        e.target.sub_account = None;
    }
    e
}

fn entries_reply(entries: Vec<Entry>) -> Reply {
    let text = if entries.is_empty() {
        "no matching audit entries".to_string()
    } else {
        entries.iter().map(entry_line).collect::<Vec<_>>().join("\n")
    };
    Reply::new(text, json!(entries))
}

pub fn tail(s: &Session, n: usize) -> Result<Reply, AdminError> {
    s.read(Scope::Anyone, Target::default(), |_, who| {
        let mut entries: Vec<Entry> = AuditLog::new(s.store.paths.audit())
            .entries()?
            .into_iter()
            .filter(|e| visible(who, e))
            .map(|e| redact(who, e))
            .collect();
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
        Ok(entries_reply(entries))
    })
}

/// Which audit entries `search` returns, times as the admin gave them.
pub type AuditQuery = Filter<String>;

pub fn search(s: &Session, args: &AuditQuery) -> Result<Reply, AdminError> {
    let filter = args.clone().parse_times(|t| parse_time(&t, s.now).map_err(AdminError::Usage))?;
    s.read(Scope::Anyone, Target::default(), |_, who| {
        let entries: Vec<Entry> = AuditLog::new(s.store.paths.audit())
            .entries()?
            .into_iter()
            .filter(|e| visible(who, e) && filter.matches(e))
            .map(|e| redact(who, e))
            .collect();
        Ok(entries_reply(entries))
    })
}

/// Checks the whole chain against the store's key and recorded head (the
/// last line). Lines of the last commit still missing from the log are
/// appended first (under the lock); any other disagreement is reported.
pub fn verify_report(s: &Session) -> Result<VerifyReport, AdminError> {
    s.store.locked(|store| store.load().map(|doc| check_binding(store, &doc, true)))??.ok();
    s.read_unbound(|doc, _| {
        let mut audit = doc.audit.clone();
        let key = audit.key_bytes()?;
        AuditLog::new(s.store.paths.audit()).verify(&key, doc.audit.head.as_ref())
    })
}

/// Checks the whole chain; an error (exit 5) names each bad line.
pub fn verify(s: &Session) -> Result<Reply, AdminError> {
    let report = verify_report(s)?;
    if report.ok() {
        return Ok(Reply::new(
            format!("audit log intact: {} entries, chain and MACs verified", report.entries),
            json!({"ok": true, "entries": report.entries, "problems": []}),
        ));
    }
    let lines: Vec<String> = report.problems.iter().map(|p| format!("line {}: {}", p.line, p.message)).collect();
    Err(AdminError::Corrupt(format!(
        "the audit log at {} has been tampered with:\n{}",
        s.store.paths.audit().display(),
        lines.join("\n")
    )))
}

/// What `usage` reads and which rows it keeps.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// Envoy's JSON access log (metadata only; see envoy/local/envoy.yaml.tmpl).
    pub access_log: std::path::PathBuf,
    pub tenant: Option<String>,
    pub key: Option<String>,
    /// From: unix seconds, 2025-01-31, 2025-01-31T12:00:00Z, or an age like 24h.
    pub since: Option<String>,
    /// Until (same forms as --since).
    pub until: Option<String>,
    /// Read the log as `logs prune` would leave it (`None`: every line).
    pub retention: Option<RetentionDays>,
    /// Rows per key, sub-account or tenant, and per model and day.
    pub grouping: crate::admin::usage::Grouping,
    /// The text of the reply is CSV (the JSON is the same either way).
    pub csv: bool,
}

/// `logs prune`'s and `usage`'s retention, in days.
#[derive(Debug, Clone, Copy)]
pub struct RetentionDays {
    pub retain: u64,
    pub truncate_ips_after: u64,
}

/// Requests, denials by reason, client IPs, first and last seen, tokens
/// and cost per tenant, sub-account or key (and model, day), from the
/// access log. A tenant admin sees only its
/// own tenant's rows (and never the anonymous ones).
pub fn usage(s: &Session, args: &UsageQuery) -> Result<Reply, AdminError> {
    use crate::admin::retention::{parse_line, tenant_rules, Fate, Retention};
    use crate::admin::usage::{report_parsed, UsageFilter};
    use std::io::BufRead;
    let time = |t: &Option<String>| {
        t.as_deref()
            .map(|t| parse_time(t, s.now).map(crate::admin::audit::rfc3339).map_err(AdminError::Usage))
            .transpose()
    };
    // Envoy writes milliseconds ("…:05.123Z"): a lower bound without the
    // "Z" sorts before every line of its second, an upper bound with it after.
    let since = time(&args.since)?.map(|t| t.trim_end_matches('Z').to_string());
    let until = time(&args.until)?;
    // A named tenant is authorised by the session (a tenant admin: its
    // own only); without one, a tenant admin reads its own tenant's rows.
    let (scope, target) = match &args.tenant {
        Some(t) => (Scope::Tenant, Target::tenant(t)),
        None => (Scope::Anyone, Target::default()),
    };
    s.read(scope, target, |doc, who| {
        let tenant = args.tenant.clone().or_else(|| who.tenant.clone().filter(|_| !who.is_platform()));
        let file = std::fs::File::open(&args.access_log).map_err(|e| AdminError::io(&args.access_log, e))?;
        let rules = args.retention.map(|d| Retention {
            now: s.now,
            retain_days: d.retain,
            truncate_ips_after_days: Some(d.truncate_ips_after),
            tenants: tenant_rules(&doc.policy.tenants),
        });
        // Each line parsed once: the retention judges the value the report reads.
        let lines = std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse_line(&l))
            .filter_map(|v| match (v, &rules) {
                (Some(mut v), Some(r)) => (r.judge(&mut v).0 != Fate::Dropped).then_some(Some(v)),
                (v, _) => Some(v),
            });
        let filter = UsageFilter { tenant, key_id: args.key.clone(), since, until };
        let r = report_parsed(lines, &filter, args.grouping);
        Ok(UsageReply::reply(r, args.csv))
    })
}

/// A usage report as a reply: text (or CSV) for a terminal, JSON rendered
/// from the report itself.
struct UsageReply(crate::admin::usage::Report, crate::admin::usage::Format);

impl UsageReply {
    /// Text for a terminal, or CSV with `--csv`.
    fn reply(report: crate::admin::usage::Report, csv: bool) -> Reply {
        use crate::admin::usage::Format;
        Reply::deferred(Self(report, if csv { Format::Csv } else { Format::Text }))
    }
}

impl super::Render for UsageReply {
    fn text(&self) -> String {
        self.0.render(self.1).trim_end().to_string()
    }

    fn json(&self) -> Value {
        self.0.to_json()
    }

    fn write_json(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(out, &self.0).map_err(std::io::Error::other)
    }
}

/// `usage --current`: this month's totals of the metered requests from
/// the global quota mode's counters in Redis (`ratelimit::totals`), in the
/// same report as `usage` over the access log.
pub fn usage_current(s: &Session, args: &UsageQuery, redis_url: &str) -> Result<Reply, AdminError> {
    use crate::admin::ratelimit::{counter::has_password, totals, REDIS_URL_ENV};
    if args.grouping.per_model || args.grouping.per_day || args.since.is_some() || args.until.is_some() {
        return Err(AdminError::Usage(
            "usage --current: this month's totals are kept per key, sub-account and tenant only (no model, day or time range); for those, read the access log: usage --access-log FILE".into(),
        ));
    }
    if std::env::var_os(REDIS_URL_ENV).is_none() && has_password(redis_url) {
        return Err(AdminError::Usage(format!(
            "--redis: a URL with a password would be visible in the process list; put it in {REDIS_URL_ENV} instead"
        )));
    }
    let (scope, target) = match &args.tenant {
        Some(t) => (Scope::Tenant, Target::tenant(t)),
        None => (Scope::Anyone, Target::default()),
    };
    s.read(scope, target, |doc, who| {
        if doc.policy.quota_mode != crate::core::bundle::schema::QuotaMode::Global {
            return Err(AdminError::Usage(
                "usage --current reads the global quota mode's counters in Redis, and this store is in the local quota mode (each Envoy counts in its own shared data, which no command reads): use `tokenhub-admin usage --access-log FILE`, or run the global mode (`tokenhub-admin quota mode global`, docs/global-quotas.md)".into(),
            ));
        }
        let tenant = args.tenant.clone().or_else(|| who.tenant.clone().filter(|_| !who.is_platform()));
        // The level's own totals; a key filter needs the key level.
        let read = if args.key.is_some() { crate::admin::usage::Level::Key } else { args.grouping.level };
        let rows =
            totals::read_current(redis_url, read, std::time::Duration::from_secs(30), s.now).map_err(AdminError::Io)?;
        let month = totals::month_label(s.now);
        let r = totals::report(rows, &month, args.grouping.level, tenant.as_deref(), args.key.as_deref());
        Ok(UsageReply::reply(r, args.csv))
    })
}

/// Binds store and log again after a deliberate restore (see `audit rebind`).
pub fn rebind(s: &Session) -> Result<Reply, AdminError> {
    let detail = s.rebind()?;
    Ok(Reply::new(format!("store and audit log bound again: {detail}"), json!({"rebound": true, "detail": detail})))
}

/// `logs prune`: applies the retention to rotated access-log files (needs no
/// store: whoever may write the files may prune them).
/// With `drop_tenant`, every line of that (erased) tenant goes too.
/// `tenants`: the tenants' own rules (`retention::tenant_rules`), which
/// override `days` for their lines.
pub fn prune_logs(
    files: &[std::path::PathBuf],
    days: RetentionDays,
    tenants: std::collections::BTreeMap<String, crate::core::bundle::schema::LogRetentionDoc>,
    drop_tenant: Option<&str>,
    now: u64,
) -> Result<Reply, AdminError> {
    use crate::admin::retention::{prune_file, Retention};
    let rules =
        Retention { now, retain_days: days.retain, truncate_ips_after_days: Some(days.truncate_ips_after), tenants };
    let mut text = Vec::new();
    let mut out = Vec::new();
    for file in files {
        let stats = prune_file(file, &rules, drop_tenant)?;
        text.push(format!(
            "{}: {} lines kept, {} dropped (older than {} days), {} of the erased tenant dropped, {} client addresses cut to /24 or /48 (older than {} days), {} without a readable time kept",
            file.display(),
            stats.kept,
            stats.dropped,
            days.retain,
            stats.erased,
            stats.truncated,
            days.truncate_ips_after,
            stats.undated
        ));
        out.push(json!({"file": file, "stats": stats}));
    }
    Ok(Reply::new(
        text.join("\n"),
        json!({
            "retain_days": days.retain, "truncate_ips_after_days": days.truncate_ips_after,
            "tenant_rules": rules.tenants, "files": out,
        }),
    ))
}
