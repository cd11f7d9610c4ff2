//! `tokenhub-admin usage`: the security page's "check logs, review for
//! unusual usage" step. Reads Envoy's JSON access log (metadata only) and
//! reports, per tenant, sub-account and key: requests, denials by reason,
//! distinct client IPs, first and last seen. Pure: lines in, report out.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Who a log line belongs to; `-` where the guard identified nobody (a
/// missing, malformed or unknown key: never what the client claimed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Owner {
    pub tenant: String,
    pub sub_account: String,
    pub key_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub requests: u64,
    pub allowed: u64,
    /// Denial reason label (see the guard's `tokenhub.denied.*`) → count.
    pub denied: BTreeMap<String, u64>,
    pub client_ips: BTreeSet<String>,
    pub first_seen: String,
    pub last_seen: String,
}

/// Which lines count.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    /// Inclusive bounds on the line's time (RFC 3339 UTC, compared as text).
    pub since: Option<String>,
    pub until: Option<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub rows: BTreeMap<Owner, Usage>,
    /// Lines that are not JSON objects (skipped, counted).
    pub unreadable: u64,
}

/// One field, with `-`, empty and null meaning absent (Envoy's formatter
/// writes `-` or null for an unset value).
fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a str> {
    names.iter().filter_map(|n| v.get(*n)).find_map(|f| f.as_str()).filter(|s| !s.is_empty() && *s != "-")
}

fn status(v: &Value) -> Option<u64> {
    let s = v.get("status")?;
    s.as_u64().or_else(|| s.as_str().and_then(|t| t.parse().ok()))
}

/// The report over raw lines (each parsed once).
pub fn report(lines: impl Iterator<Item = String>, filter: &UsageFilter) -> Report {
    report_parsed(lines.filter(|l| !l.trim().is_empty()).map(|l| super::retention::parse_line(&l)), filter)
}

/// The report over lines already parsed (`None`: not a JSON object, counted
/// as unreadable), e.g. after `Retention::judge` on the same values.
pub fn report_parsed(lines: impl Iterator<Item = Option<Value>>, filter: &UsageFilter) -> Report {
    let mut out = Report::default();
    for v in lines {
        let Some(v) = v else {
            out.unreadable += 1;
            continue;
        };
        let owner = Owner {
            tenant: field(&v, &["tenant"]).unwrap_or("-").to_string(),
            sub_account: field(&v, &["sub_account"]).unwrap_or("-").to_string(),
            key_id: field(&v, &["key_id"]).unwrap_or("-").to_string(),
        };
        let time = field(&v, &["start_time", "time"]).unwrap_or("").to_string();
        if !matches(filter, &owner, &time) {
            continue;
        }
        record(out.rows.entry(owner).or_default(), &v, time);
    }
    out
}

fn matches(f: &UsageFilter, owner: &Owner, time: &str) -> bool {
    f.tenant.as_ref().is_none_or(|t| *t == owner.tenant)
        && f.key_id.as_ref().is_none_or(|k| *k == owner.key_id)
        && f.since.as_ref().is_none_or(|s| time >= s.as_str())
        && f.until.as_ref().is_none_or(|u| time <= u.as_str())
}

fn record(u: &mut Usage, v: &Value, time: String) {
    u.requests += 1;
    let code = status(v).unwrap_or(0);
    match field(v, &["reason", "decision"]) {
        Some(reason) if reason != "allowed" => *u.denied.entry(reason.to_string()).or_default() += 1,
        // A refusal by Envoy itself (no guard reason), e.g. a 400 for a bad path.
        None if code >= 400 => *u.denied.entry(format!("status_{code}")).or_default() += 1,
        _ => u.allowed += 1,
    }
    // Envoy's own `ip:port` (a request the guard never saw) counts as its address.
    if let Some(ip) = field(v, &["client", "client_ip"]) {
        u.client_ips.insert(super::retention::client_ip(ip).map_or_else(|| ip.to_string(), |a| a.to_string()));
    }
    if u.first_seen.is_empty() || time < u.first_seen {
        u.first_seen = time.clone();
    }
    if time > u.last_seen {
        u.last_seen = time;
    }
}

impl Report {
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|(o, u)| {
                serde_json::json!({
                    "tenant": o.tenant, "sub_account": o.sub_account, "key_id": o.key_id,
                    "requests": u.requests, "allowed": u.allowed, "denied": u.denied,
                    "distinct_client_ips": u.client_ips.len(), "client_ips": u.client_ips,
                    "first_seen": u.first_seen, "last_seen": u.last_seen,
                })
            })
            .collect();
        serde_json::json!({ "rows": rows, "unreadable_lines": self.unreadable })
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{:<16} {:<14} {:<13} {:>8} {:>8} {:>4}  {:<24} {:<24} DENIED BY REASON\n",
            "TENANT", "SUB-ACCOUNT", "KEY ID", "REQUESTS", "ALLOWED", "IPS", "FIRST SEEN", "LAST SEEN"
        );
        for (o, u) in &self.rows {
            let denied: Vec<String> = u.denied.iter().map(|(r, n)| format!("{r}={n}")).collect();
            out.push_str(&format!(
                "{:<16} {:<14} {:<13} {:>8} {:>8} {:>4}  {:<24} {:<24} {}\n",
                o.tenant,
                o.sub_account,
                o.key_id,
                u.requests,
                u.allowed,
                u.client_ips.len(),
                u.first_seen,
                u.last_seen,
                denied.join(" ")
            ));
        }
        if self.rows.is_empty() {
            out.push_str("no matching requests in the access log\n");
        }
        if self.unreadable > 0 {
            out.push_str(&format!("({} lines were not JSON and were skipped)\n", self.unreadable));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> impl Iterator<Item = String> {
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter()
    }

    const LOG: &[&str] = &[
        r#"{"start_time":"2026-11-29T10:00:00.000Z","tenant":"acme","sub_account":"research","key_id":"K1","client":"203.0.113.7","status":200,"reason":"allowed"}"#,
        r#"{"start_time":"2026-11-29T10:00:05.000Z","tenant":"acme","sub_account":"research","key_id":"K1","client":"198.51.100.9","status":403,"reason":"ip_not_allowed"}"#,
        r#"{"start_time":"2026-11-29T10:00:06.000Z","tenant":"acme","sub_account":"research","key_id":"K1","client":"198.51.100.9","status":"401","reason":"wrong_secret"}"#,
        r#"{"start_time":"2026-11-29T10:01:00.000Z","tenant":"-","sub_account":null,"key_id":"-","client":"192.0.2.1","status":401,"reason":"unknown_key"}"#,
        r#"{"start_time":"2026-11-29T10:02:00.000Z","tenant":"globex","sub_account":"ops","key_id":"K2","client":"::1","status":400,"reason":null}"#,
        r#"not json"#,
    ];

    #[test]
    fn groups_by_owner_and_counts_denials_ips_and_times() {
        let r = report(lines(LOG), &UsageFilter::default());
        assert_eq!(r.unreadable, 1);
        let k1 = &r.rows[&Owner { tenant: "acme".into(), sub_account: "research".into(), key_id: "K1".into() }];
        assert_eq!((k1.requests, k1.allowed), (3, 1));
        assert_eq!(k1.denied.get("ip_not_allowed"), Some(&1));
        assert_eq!(k1.denied.get("wrong_secret"), Some(&1));
        assert_eq!(k1.client_ips.len(), 2);
        assert_eq!(k1.first_seen, "2026-11-29T10:00:00.000Z");
        assert_eq!(k1.last_seen, "2026-11-29T10:00:06.000Z");
        let anon = &r.rows[&Owner { tenant: "-".into(), sub_account: "-".into(), key_id: "-".into() }];
        assert_eq!(anon.denied.get("unknown_key"), Some(&1));
        let k2 = &r.rows[&Owner { tenant: "globex".into(), sub_account: "ops".into(), key_id: "K2".into() }];
        assert_eq!(k2.denied.get("status_400"), Some(&1), "Envoy's own refusal");
    }

    #[test]
    fn filters_by_tenant_key_and_time() {
        let f = UsageFilter { tenant: Some("acme".into()), ..Default::default() };
        assert_eq!(report(lines(LOG), &f).rows.len(), 1);
        let f = UsageFilter {
            since: Some("2026-11-29T10:00:05".into()),
            until: Some("2026-11-29T10:01:00.000Z".into()),
            ..Default::default()
        };
        let r = report(lines(LOG), &f);
        assert_eq!(r.rows.values().map(|u| u.requests).sum::<u64>(), 3);
        let f = UsageFilter { key_id: Some("K2".into()), ..Default::default() };
        assert_eq!(report(lines(LOG), &f).rows.len(), 1);
    }

    #[test]
    fn text_and_json_render() {
        let r = report(lines(LOG), &UsageFilter::default());
        assert!(r.to_text().contains("ip_not_allowed=1"));
        assert_eq!(r.to_json()["rows"].as_array().map(Vec::len), Some(3));
    }
}
