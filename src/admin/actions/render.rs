//! Small text helpers for terminal output.

use crate::core::budget::NANO_USD_PER_USD;
use crate::core::bundle::schema::{QuotaDoc, ScopesDoc, Status, TokenBudgetDoc};

/// Unix seconds as a UTC date (YYYY-MM-DD), or `-`.
pub fn date(t: Option<u64>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let (y, m, d) = crate::admin::audit::civil_from_days((t / 86_400) as i64);
            format!("{y:04}-{m:02}-{d:02}")
        }
    }
}

pub fn status_str(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Disabled => "disabled",
    }
}

pub fn scopes_text(s: Option<&ScopesDoc>) -> String {
    match s {
        None => "*".into(),
        Some(s) => {
            let m = if s.methods.is_empty() { "*".into() } else { s.methods.join(",") };
            let p = if s.path_prefixes.is_empty() { "*".into() } else { s.path_prefixes.join(",") };
            format!("{m} {p}")
        }
    }
}

pub fn quota_text(q: Option<&QuotaDoc>) -> String {
    let part = |v: Option<u64>, unit: &str| v.map(|n| format!("{n}/{unit}"));
    match q {
        None => "unlimited".into(),
        Some(q) => {
            let parts: Vec<String> =
                [part(q.per_minute, "min"), part(q.per_day, "day")].into_iter().flatten().collect();
            if parts.is_empty() {
                "unlimited".into()
            } else {
                parts.join(", ")
            }
        }
    }
}

/// Nano-dollars as dollars: at least two decimals, no trailing zeros
/// beyond them (`$12.50`, `$0.075`).
pub fn usd_text(nano: u64) -> String {
    let fraction = format!("{:09}", nano % NANO_USD_PER_USD);
    let kept = fraction.trim_end_matches('0');
    let kept = if kept.len() < 2 { &fraction[..2] } else { kept };
    format!("${}.{kept}", nano / NANO_USD_PER_USD)
}

pub fn budget_text(b: Option<&TokenBudgetDoc>) -> String {
    let Some(b) = b else { return "no token budget".into() };
    let parts: Vec<String> = [
        b.tokens_per_minute.map(|n| format!("{n} tokens/min")),
        b.tokens_per_day.map(|n| format!("{n} tokens/day")),
        b.monthly_budget_nano_usd.map(|n| format!("{}/month", usd_text(n))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "no token budget".into()
    } else {
        parts.join(", ")
    }
}

/// Left-aligned columns sized to their content.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(date(Some(0)), "1970-01-01");
        assert_eq!(date(None), "-");
        assert_eq!(quota_text(Some(&QuotaDoc { per_minute: Some(60), per_day: None })), "60/min");
        assert_eq!(quota_text(None), "unlimited");
        assert_eq!(usd_text(12_500_000_000), "$12.50");
        assert_eq!(usd_text(75_000_000), "$0.075");
        assert_eq!(usd_text(1), "$0.000000001");
        let b = TokenBudgetDoc {
            tokens_per_minute: Some(10),
            monthly_budget_nano_usd: Some(NANO_USD_PER_USD),
            ..Default::default()
        };
        assert_eq!(budget_text(Some(&b)), "10 tokens/min, $1.00/month");
        assert_eq!(table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]), "A    BB\nxyz  1");
    }
}
