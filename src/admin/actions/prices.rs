//! The price table of the bundle: per provider and model (an exact name or
//! a `prefix*`), the input, cached-input and output prices that monthly
//! dollar budgets are charged by. Given in dollars per million tokens,
//! stored in nano-dollars per token (exact down to $0.001 per million).
//! The platform's call: it is what every tenant's spend is measured in.

use super::render::{table, usd_text};
use super::Reply;
use crate::admin::audit::Target;
use crate::admin::session::{Change, Scope, Session};
use crate::admin::store::policy;
use crate::admin::AdminError;
use crate::core::budget::NANO_USD_PER_USD;
use crate::core::bundle::schema::PriceDoc;
use serde_json::{json, Value};

/// Dollars as given by an admin (`12`, `12.5`, `$0.000001`) in nano-dollars.
pub fn dollars(text: &str, what: &str) -> Result<u64, AdminError> {
    let bad = || {
        AdminError::Usage(format!(
            "{what}: {text:?} is not an amount of dollars (digits, at most 9 after the point, e.g. 12.50)"
        ))
    };
    let t = text.trim();
    let t = t.strip_prefix('$').unwrap_or(t);
    let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let fraction: u64 = format!("{fraction:0<9}").parse().map_err(|_| bad())?;
    whole.checked_mul(NANO_USD_PER_USD).and_then(|w| w.checked_add(fraction)).ok_or_else(bad)
}

/// Dollars per million tokens in nano-dollars per token.
pub fn per_million(text: &str, what: &str) -> Result<u64, AdminError> {
    let nano_per_million = dollars(text, what)?;
    if nano_per_million % 1_000_000 != 0 {
        return Err(AdminError::Usage(format!(
            "{what}: {text:?} is finer than $0.001 per million tokens, the smallest step prices are kept in"
        )));
    }
    Ok(nano_per_million / 1_000_000)
}

/// A price per token as dollars per million tokens, for people.
fn per_million_text(nano_per_token: u64) -> String {
    usd_text(nano_per_token.saturating_mul(1_000_000))
}

fn target(provider: &str) -> Target {
    Target::provider(provider, None)
}

/// Sets (or replaces) the price of `model` at `provider`.
pub fn set(s: &Session, price: PriceDoc) -> Result<Reply, AdminError> {
    let (provider, model) = (price.provider.clone(), price.model.clone());
    s.mutate(Change::policy("price.set", Scope::Platform, target(&provider)), |d, c| {
        if !d.policy.providers.iter().any(|p| p.id == price.provider) {
            return Err(AdminError::NotFound(format!(
                "no provider {:?}: define it with `provider set` first",
                price.provider
            )));
        }
        c.note = Some(format!(
            "{} in {} cached {} out {} per 1M",
            price.model,
            per_million_text(price.input),
            per_million_text(price.cached_input),
            per_million_text(price.output)
        ));
        let prices = &mut d.policy.prices;
        match prices.iter_mut().find(|p| p.provider == price.provider && p.model == price.model) {
            Some(existing) => *existing = price.clone(),
            None => prices.push(price.clone()),
        }
        policy::validate(d)
    })?;
    Ok(Reply::new(
        format!("price of {provider} {model} set; {}", s.apply_hint()),
        json!({"provider": provider, "model": model, "price": price_json(&price)}),
    ))
}

pub fn remove(s: &Session, provider: &str, model: &str) -> Result<Reply, AdminError> {
    s.mutate(Change::policy("price.remove", Scope::Platform, target(provider)), |d, c| {
        let before = d.policy.prices.len();
        d.policy.prices.retain(|p| !(p.provider == provider && p.model == model));
        if d.policy.prices.len() == before {
            return Err(AdminError::NotFound(format!("no price for provider {provider:?} model {model:?}")));
        }
        c.note = Some(model.to_string());
        policy::validate(d)
    })?;
    Ok(Reply::new(
        format!("price of {provider} {model} removed; {}", s.apply_hint()),
        json!({"provider": provider, "model": model, "removed": true}),
    ))
}

fn price_json(p: &PriceDoc) -> Value {
    json!({
        "provider": p.provider, "model": p.model,
        "input_nano_usd_per_token": p.input, "cached_input_nano_usd_per_token": p.cached_input,
        "output_nano_usd_per_token": p.output,
        "input_usd_per_million": per_million_text(p.input).trim_start_matches('$'),
        "cached_input_usd_per_million": per_million_text(p.cached_input).trim_start_matches('$'),
        "output_usd_per_million": per_million_text(p.output).trim_start_matches('$'),
    })
}

pub fn list(s: &Session) -> Result<Reply, AdminError> {
    s.read(Scope::Anyone, Target::default(), |doc, _| {
        let prices = &doc.policy.prices;
        let rows: Vec<Vec<String>> = prices
            .iter()
            .map(|p| {
                vec![
                    p.provider.clone(),
                    p.model.clone(),
                    per_million_text(p.input),
                    per_million_text(p.cached_input),
                    per_million_text(p.output),
                ]
            })
            .collect();
        let text = table(&["PROVIDER", "MODEL", "INPUT /1M", "CACHED /1M", "OUTPUT /1M"], &rows);
        Ok(Reply::new(text, Value::Array(prices.iter().map(price_json).collect())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_exact_decimals() {
        assert_eq!(dollars("12", "x").unwrap(), 12 * NANO_USD_PER_USD);
        assert_eq!(dollars("$12.50", "x").unwrap(), 12_500_000_000);
        assert_eq!(dollars(".000000001", "x").unwrap(), 1);
        assert_eq!(dollars("0.1", "x").unwrap(), 100_000_000);
        for bad in ["", ".", "-1", "1e3", "1.0000000001", "12,5", "99999999999999999999", "18446744074"] {
            let err = dollars(bad, "--monthly-budget").unwrap_err().to_string();
            assert!(err.contains("--monthly-budget"), "{bad}: {err}");
        }
    }

    #[test]
    fn prices_per_million_are_nano_dollars_per_token() {
        assert_eq!(per_million("2.50", "x").unwrap(), 2_500);
        assert_eq!(per_million("0.075", "x").unwrap(), 75);
        assert_eq!(per_million("0", "x").unwrap(), 0);
        assert!(per_million("0.0001", "--input").unwrap_err().to_string().contains("$0.001"));
        assert_eq!(per_million_text(2_500), "$2.50");
        assert_eq!(per_million_text(75), "$0.075");
    }
}
