//! `tokenhub-admin usage`: the security page's "check logs, review for
//! unusual usage" step, and the detailed token and cost report. Reads
//! Envoy's JSON access log (metadata only) and reports, per tenant,
//! sub-account and key (or coarser, `Grouping`), optionally per model and
//! per day: requests, denials by reason, distinct client IPs, first and last
//! seen, input/output/cached/reasoning tokens and cost. Pure: lines in,
//! report out; one table (`Report::table`) rendered as text, JSON or CSV.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Who a log line belongs to; `-` where the guard identified nobody (a
/// missing, malformed or unknown key: never what the client claimed).
/// Levels above the grouping's are `*`; `model` and `day` are empty unless
/// grouped by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Owner {
    pub tenant: String,
    pub sub_account: String,
    pub key_id: String,
    pub model: String,
    pub day: String,
}

impl Owner {
    /// A key's row (no model, no day): what tests and callers name.
    pub fn key(tenant: &str, sub_account: &str, key_id: &str) -> Self {
        Self {
            tenant: tenant.into(),
            sub_account: sub_account.into(),
            key_id: key_id.into(),
            model: String::new(),
            day: String::new(),
        }
    }
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
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_nano_usd: u64,
}

/// The rows' level: per key (the default), per sub-account or per tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Level {
    #[default]
    Key,
    SubAccount,
    Tenant,
}

/// How lines are grouped into rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grouping {
    pub level: Level,
    pub per_model: bool,
    pub per_day: bool,
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

/// Where a report's figures come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Source {
    /// The access log: every request, with its outcome, addresses and times.
    #[default]
    AccessLog,
    /// The global mode's totals of one month (`YYYY-MM`) in Redis
    /// (`ratelimit::totals`): metered requests, their tokens and cost.
    Counters { month: String },
}

/// The columns the counters know (`Source::Counters`).
const COUNTED: [&str; 9] = [
    "tenant",
    "sub_account",
    "key_id",
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_nano_usd",
    "cost_usd",
];

#[derive(Debug, Default)]
pub struct Report {
    pub grouping: Grouping,
    pub source: Source,
    pub rows: BTreeMap<Owner, Usage>,
    /// Lines that are not JSON objects (skipped, counted).
    pub unreadable: u64,
}

/// One field, with `-`, empty and null meaning absent (Envoy's formatter
/// writes `-` or null for an unset value).
fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a str> {
    names.iter().filter_map(|n| v.get(*n)).find_map(|f| f.as_str()).filter(|s| !s.is_empty() && *s != "-")
}

/// A count field: a number or a numeric string (filter state is text); 0 when absent.
fn count(v: &Value, name: &str) -> u64 {
    v.get(name).and_then(|f| f.as_u64().or_else(|| f.as_str().and_then(|t| t.parse().ok()))).unwrap_or(0)
}

fn status(v: &Value) -> Option<u64> {
    let s = v.get("status")?;
    s.as_u64().or_else(|| s.as_str().and_then(|t| t.parse().ok()))
}

/// The report over raw lines (each parsed once).
pub fn report(lines: impl Iterator<Item = String>, filter: &UsageFilter, grouping: Grouping) -> Report {
    let parsed = lines.filter(|l| !l.trim().is_empty()).map(|l| super::retention::parse_line(&l));
    report_parsed(parsed, filter, grouping)
}

/// The report over lines already parsed (`None`: not a JSON object, counted
/// as unreadable), e.g. after `Retention::judge` on the same values.
pub fn report_parsed(lines: impl Iterator<Item = Option<Value>>, filter: &UsageFilter, grouping: Grouping) -> Report {
    let mut out = Report { grouping, ..Report::default() };
    for v in lines {
        let Some(v) = v else {
            out.unreadable += 1;
            continue;
        };
        let tenant = field(&v, &["tenant"]).unwrap_or("-");
        let sub_account = field(&v, &["sub_account"]).unwrap_or("-");
        let key_id = field(&v, &["key_id"]).unwrap_or("-");
        let time = field(&v, &["start_time", "time"]).unwrap_or("").to_string();
        if !matches(filter, tenant, key_id, &time) {
            continue;
        }
        let all = "*";
        let owner = Owner {
            tenant: tenant.to_string(),
            sub_account: if grouping.level == Level::Tenant { all } else { sub_account }.to_string(),
            key_id: if grouping.level == Level::Key { key_id } else { all }.to_string(),
            model: if grouping.per_model { field(&v, &["model"]).unwrap_or("-") } else { "" }.to_string(),
            day: if grouping.per_day { time.get(..10).unwrap_or("-") } else { "" }.to_string(),
        };
        record(out.rows.entry(owner).or_default(), &v, time);
    }
    out
}

fn matches(f: &UsageFilter, tenant: &str, key_id: &str, time: &str) -> bool {
    f.tenant.as_ref().is_none_or(|t| t == tenant)
        && f.key_id.as_ref().is_none_or(|k| k == key_id)
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
    for (total, name) in [
        (&mut u.input_tokens, "input_tokens"),
        (&mut u.output_tokens, "output_tokens"),
        (&mut u.cached_tokens, "cached_tokens"),
        (&mut u.reasoning_tokens, "reasoning_tokens"),
        (&mut u.cost_nano_usd, "cost_nano_usd"),
    ] {
        *total = total.saturating_add(count(v, name));
    }
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
    Csv,
}

/// One column: its name (JSON member, CSV and text header), whether the
/// text table shows it, and its value in a row.
struct Column {
    name: &'static str,
    in_text: bool,
    value: for<'a> fn(&'a Owner, &'a Usage) -> Cell<'a>,
}

/// One cell, borrowed from its row: rendered straight into each format
/// (a report may have 100 000 rows).
enum Cell<'a> {
    Text(&'a str),
    Count(u64),
    Usd(u64),
    Ips(&'a BTreeSet<String>),
    Denied(&'a BTreeMap<String, u64>),
}

impl Cell<'_> {
    /// As text: a list space-separated, denials as `reason=count`.
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.to_string(),
            Self::Count(n) => n.to_string(),
            Self::Usd(nano) => usd(*nano),
            Self::Ips(ips) => ips.iter().map(String::as_str).collect::<Vec<_>>().join(" "),
            Self::Denied(d) => d.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" "),
        }
    }
}

impl Serialize for Cell<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(t) => s.serialize_str(t),
            Self::Count(n) => s.serialize_u64(*n),
            Self::Usd(nano) => s.serialize_str(&usd(*nano)),
            Self::Ips(ips) => ips.serialize(s),
            Self::Denied(d) => d.serialize(s),
        }
    }
}

/// Every column, once: the three formats are renderings of this list.
fn columns(g: Grouping, source: &Source) -> Vec<Column> {
    use Cell::{Count, Text};
    let c = |name, in_text, value| Column { name, in_text, value };
    let mut out = vec![c("tenant", true, |o, _| Text(&o.tenant))];
    if g.level != Level::Tenant {
        out.push(c("sub_account", true, |o, _| Text(&o.sub_account)));
    }
    if g.level == Level::Key {
        out.push(c("key_id", true, |o, _| Text(&o.key_id)));
    }
    if g.per_model {
        out.push(c("model", true, |o, _| Text(&o.model)));
    }
    if g.per_day {
        out.push(c("day", true, |o, _| Text(&o.day)));
    }
    out.extend([
        c("requests", true, |_, u| Count(u.requests)),
        c("allowed", true, |_, u| Count(u.allowed)),
        c("input_tokens", true, |_, u| Count(u.input_tokens)),
        c("output_tokens", true, |_, u| Count(u.output_tokens)),
        c("cached_tokens", true, |_, u| Count(u.cached_tokens)),
        c("reasoning_tokens", false, |_, u| Count(u.reasoning_tokens)),
        c("cost_nano_usd", false, |_, u| Count(u.cost_nano_usd)),
        c("cost_usd", true, |_, u| Cell::Usd(u.cost_nano_usd)),
        c("distinct_client_ips", true, |_, u| Count(u.client_ips.len() as u64)),
        c("client_ips", false, |_, u| Cell::Ips(&u.client_ips)),
        c("first_seen", true, |_, u| Text(&u.first_seen)),
        c("last_seen", true, |_, u| Text(&u.last_seen)),
        c("denied", true, |_, u| Cell::Denied(&u.denied)),
    ]);
    if matches!(source, Source::Counters { .. }) {
        out.retain(|c| COUNTED.contains(&c.name));
    }
    out
}

/// Nano-dollars as a decimal amount of dollars (exact: 9 places).
fn usd(nano: u64) -> String {
    let per = crate::core::budget::NANO_USD_PER_USD;
    format!("{}.{:09}", nano / per, nano % per)
}

/// A CSV field (RFC 4180): quoted when it holds a comma, quote or line
/// break; a leading `=`, `+`, `-` or `@` is prefixed with `'` so a
/// spreadsheet never runs a log value as a formula.
fn csv_field(text: &str) -> String {
    let text =
        if text.starts_with(['=', '+', '-', '@']) && text != "-" { format!("'{text}") } else { text.to_string() };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// One row as a JSON object.
struct Row<'a> {
    cols: &'a [Column],
    owner: &'a Owner,
    usage: &'a Usage,
}

impl Serialize for Row<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.cols.len()))?;
        for c in self.cols {
            m.serialize_entry(c.name, &(c.value)(self.owner, self.usage))?;
        }
        m.end()
    }
}

/// The rows as a JSON array, written as they are walked.
struct Rows<'a>(&'a Report, &'a [Column]);

impl Serialize for Rows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Self(report, cols) = self;
        s.collect_seq(report.rows.iter().map(|(owner, usage)| Row { cols, owner, usage }))
    }
}

/// The JSON form: `{"rows": [...], "unreadable_lines": n}`, and for the
/// counters the month and `"source": "redis"`.
impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let cols = columns(self.grouping, &self.source);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("rows", &Rows(self, &cols))?;
        m.serialize_entry("unreadable_lines", &self.unreadable)?;
        if let Source::Counters { month } = &self.source {
            m.serialize_entry("month", month)?;
            m.serialize_entry("source", "redis")?;
        }
        m.end()
    }
}

impl Report {
    /// The header and the rows, as cells: what text and CSV render.
    fn table(&self) -> (Vec<Column>, Vec<Vec<String>>) {
        let cols = columns(self.grouping, &self.source);
        let rows = self.rows.iter().map(|(o, u)| cols.iter().map(|c| (c.value)(o, u).text()).collect()).collect();
        (cols, rows)
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => self.to_json().to_string(),
            Format::Csv => self.csv(),
            Format::Text => self.text_table(),
        }
    }

    fn csv(&self) -> String {
        let (cols, rows) = self.table();
        let mut out = cols.iter().map(|c| c.name).collect::<Vec<_>>().join(",");
        out.push('\n');
        for row in &rows {
            out.push_str(&row.iter().map(|cell| csv_field(cell)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out
    }

    fn text_table(&self) -> String {
        let (cols, rows) = self.table();
        let shown: Vec<usize> = (0..cols.len()).filter(|&i| cols[i].in_text).collect();
        let header: Vec<String> = shown.iter().map(|&i| cols[i].name.to_uppercase()).collect();
        let mut widths: Vec<usize> = header.iter().map(String::len).collect();
        for r in &rows {
            for (w, &i) in widths.iter_mut().zip(&shown) {
                *w = (*w).max(r[i].len());
            }
        }
        // Padded by hand: `format!("{:<w$}")` pads a char at a time.
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = &String>| {
            let start = out.len();
            for (cell, &w) in cells.zip(&widths) {
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.len()) + 2));
            }
            out.truncate(start + out[start..].trim_end().len());
            out.push('\n');
        };
        let mut out = String::new();
        line(&mut out, &mut header.iter());
        for r in &rows {
            line(&mut out, &mut shown.iter().map(|&i| &r[i]));
        }
        if self.rows.is_empty() {
            out.push_str(match self.source {
                Source::AccessLog => "no matching requests in the access log\n",
                Source::Counters { .. } => "no metered requests this month\n",
            });
        }
        if self.unreadable > 0 {
            out.push_str(&format!("({} lines were not JSON and were skipped)\n", self.unreadable));
        }
        out
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn to_text(&self) -> String {
        self.render(Format::Text)
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
        let r = report(lines(LOG), &UsageFilter::default(), Grouping::default());
        assert_eq!(r.unreadable, 1);
        let k1 = &r.rows[&Owner::key("acme", "research", "K1")];
        assert_eq!((k1.requests, k1.allowed), (3, 1));
        assert_eq!(k1.denied.get("ip_not_allowed"), Some(&1));
        assert_eq!(k1.denied.get("wrong_secret"), Some(&1));
        assert_eq!(k1.client_ips.len(), 2);
        assert_eq!(k1.first_seen, "2026-11-29T10:00:00.000Z");
        assert_eq!(k1.last_seen, "2026-11-29T10:00:06.000Z");
        let anon = &r.rows[&Owner::key("-", "-", "-")];
        assert_eq!(anon.denied.get("unknown_key"), Some(&1));
        let k2 = &r.rows[&Owner::key("globex", "ops", "K2")];
        assert_eq!(k2.denied.get("status_400"), Some(&1), "Envoy's own refusal");
    }

    #[test]
    fn filters_by_tenant_key_and_time() {
        let f = UsageFilter { tenant: Some("acme".into()), ..Default::default() };
        assert_eq!(report(lines(LOG), &f, Grouping::default()).rows.len(), 1);
        let f = UsageFilter {
            since: Some("2026-11-29T10:00:05".into()),
            until: Some("2026-11-29T10:01:00.000Z".into()),
            ..Default::default()
        };
        let r = report(lines(LOG), &f, Grouping::default());
        assert_eq!(r.rows.values().map(|u| u.requests).sum::<u64>(), 3);
        let f = UsageFilter { key_id: Some("K2".into()), ..Default::default() };
        assert_eq!(report(lines(LOG), &f, Grouping::default()).rows.len(), 1);
    }

    #[test]
    fn text_and_json_render() {
        let r = report(lines(LOG), &UsageFilter::default(), Grouping::default());
        assert!(r.to_text().contains("ip_not_allowed=1"));
        assert_eq!(r.to_json()["rows"].as_array().map(Vec::len), Some(3));
    }

    const METERED: &[&str] = &[
        r#"{"start_time":"2026-11-29T10:00:00.000Z","tenant":"acme","sub_account":"research","key_id":"K1","status":200,"reason":"allowed","model":"gpt-4o","input_tokens":"1200","output_tokens":"300","cached_tokens":"1024","reasoning_tokens":"64","cost_nano_usd":"368800000"}"#,
        r#"{"start_time":"2026-11-29T23:59:59.000Z","tenant":"acme","sub_account":"research","key_id":"K1","status":200,"reason":"allowed","model":"gpt-4o","input_tokens":100,"output_tokens":50,"cost_nano_usd":"1"}"#,
        r#"{"start_time":"2026-11-30T08:00:00.000Z","tenant":"acme","sub_account":"ops","key_id":"K3","status":200,"reason":"allowed","model":"claude-3-5-haiku","input_tokens":"35","output_tokens":"15","cached_tokens":"-","cost_nano_usd":null}"#,
        r#"{"start_time":"2026-11-30T08:00:01.000Z","tenant":"acme","sub_account":"ops","key_id":"K3","status":429,"reason":"token_budget_exceeded","model":"-"}"#,
    ];

    fn grouped(level: Level, per_model: bool, per_day: bool) -> Report {
        report(lines(METERED), &UsageFilter::default(), Grouping { level, per_model, per_day })
    }

    #[test]
    fn tokens_and_cost_per_key_model_and_day() {
        let r = grouped(Level::Key, false, false);
        let k1 = &r.rows[&Owner::key("acme", "research", "K1")];
        assert_eq!((k1.input_tokens, k1.output_tokens, k1.cached_tokens, k1.reasoning_tokens), (1300, 350, 1024, 64));
        assert_eq!(k1.cost_nano_usd, 368_800_001);
        let k3 = &r.rows[&Owner::key("acme", "ops", "K3")];
        assert_eq!((k3.requests, k3.input_tokens, k3.cached_tokens, k3.cost_nano_usd), (2, 35, 0, 0));
        // Per tenant: one row, sub-account and key folded into `*`.
        let t = grouped(Level::Tenant, false, false);
        assert_eq!(t.rows.len(), 1);
        let (owner, all) = t.rows.iter().next().unwrap();
        assert_eq!((owner.sub_account.as_str(), owner.key_id.as_str()), ("*", "*"));
        assert_eq!((all.requests, all.input_tokens, all.output_tokens), (4, 1335, 365));
        // Per sub-account, model and day.
        let d = grouped(Level::SubAccount, true, true);
        let days: Vec<(&str, &str, &str, u64)> = d
            .rows
            .iter()
            .map(|(o, u)| (o.sub_account.as_str(), o.model.as_str(), o.day.as_str(), u.requests))
            .collect();
        assert_eq!(
            days,
            [
                ("ops", "-", "2026-11-30", 1),
                ("ops", "claude-3-5-haiku", "2026-11-30", 1),
                ("research", "gpt-4o", "2026-11-29", 2)
            ]
        );
    }

    #[test]
    fn text_json_and_csv_are_one_table() {
        let r = grouped(Level::SubAccount, true, false);
        let json = r.to_json();
        let rows = json["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|row| row.get("key_id").is_none() && row.get("day").is_none()), "{json}");
        let research = rows.iter().find(|row| row["model"] == "gpt-4o").unwrap();
        assert_eq!(
            (research["input_tokens"].as_u64(), research["cost_usd"].as_str()),
            (Some(1300), Some("0.368800001"))
        );
        let csv = r.render(Format::Csv);
        let csv_lines: Vec<&str> = csv.lines().collect();
        assert_eq!(csv_lines.len(), 4, "{csv}");
        let header: Vec<&str> = csv_lines[0].split(',').collect();
        let mut names: Vec<String> = rows[0].as_object().unwrap().keys().cloned().collect();
        names.sort();
        let mut sorted_header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        sorted_header.sort();
        assert_eq!(sorted_header, names, "the same columns in CSV and JSON");
        assert!(csv.contains(",gpt-4o,2,2,1300,350,1024,64,368800001,0.368800001,"), "{csv}");
        assert!(csv.contains("token_budget_exceeded=1"), "{csv}");
        let text = r.render(Format::Text);
        assert!(text.starts_with("TENANT") && text.contains("INPUT_TOKENS") && text.contains("0.368800001"), "{text}");
        assert!(!text.contains("REASONING_TOKENS"), "the text table leaves the wide columns to JSON and CSV");
    }

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-"), "-");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }
}
