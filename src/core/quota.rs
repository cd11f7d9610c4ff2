//! Fixed-window request quotas, counted in a store shared by every worker
//! (Proxy-Wasm shared data in Envoy; a map in tests).
//!
//! Each counter is one entry, `[window index u64 LE][count u64 LE]`, reused
//! from window to window, so the number of entries is bounded by the number
//! of quota-bearing keys, sub-accounts and tenants — never by traffic or
//! time. Increments are compare-and-swap with a bounded retry loop; a
//! counter is never moved past its limit, and when a later counter of the
//! same request refuses, the earlier increments are rolled back, so a
//! refused request consumes nothing.

use crate::core::budget::metered_limits_for;
use crate::core::bundle::compile::{Key, SubAccount, Tenant};

pub const MINUTE: u64 = 60;
pub const DAY: u64 = 86_400;
/// A calendar month (UTC): as a window length, `window` counts months from
/// the epoch instead of fixed spans. The value is the mean Gregorian month,
/// so code that only needs a length (e.g. a Redis expiry) gets a sane one.
pub const MONTH: u64 = 2_629_746;
/// CAS attempts per counter before giving up (fail closed).
pub const MAX_CAS_ATTEMPTS: usize = 64;

/// The compare-and-swap store the counters live in.
pub trait CounterStore {
    /// Current value and its CAS token; `None` when the entry is missing.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32);
    /// Writes `value` if the entry's CAS token is still `cas`; `false` on a
    /// mismatch (someone else wrote first).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreError;

/// One limit to enforce for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub counter: String,
    pub limit: u64,
    pub window: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOutcome {
    /// No quota applies.
    Unlimited,
    /// Counted; the tightest remaining budget.
    Allowed(Budget),
    /// Refused by this limit; nothing was consumed.
    Exceeded(Budget),
    /// The store failed or stayed contended: refuse (fail closed).
    Unavailable,
}

/// IETF RateLimit header fields (limit, remaining, seconds to reset), on
/// every counted response: from the guard (local mode) or from the rate
/// limit service (global mode) — one definition for both.
pub fn rate_limit_headers(b: Budget) -> [(&'static str, String); 3] {
    [
        ("ratelimit-limit", b.limit.to_string()),
        ("ratelimit-remaining", b.remaining.to_string()),
        ("ratelimit-reset", b.reset.to_string()),
    ]
}

/// The headers of a 429: the RateLimit fields of the exhausted limit and
/// `Retry-After` (its body is `DenyReason::QuotaExceeded.body()`).
pub fn refusal_headers(b: Budget) -> [(&'static str, String); 4] {
    let [limit, remaining, reset] = rate_limit_headers(b);
    [limit, remaining, reset, ("retry-after", b.reset.to_string())]
}

/// The limits that apply to a request of `key` (key, sub-account, tenant;
/// per minute and per day), with their shared-data counter names.
pub fn limits_for(key: Option<Key<'_>>, sub: &SubAccount, tenant: &Tenant) -> Vec<Limit> {
    let mut out = Vec::new();
    let quotas = [key.and_then(|k| k.quota()), sub.quota.as_ref(), tenant.quota.as_ref()];
    for (quota, scope) in quotas.into_iter().zip(SCOPES) {
        let Some(q) = quota else { continue };
        let name = scope_name(scope, key, sub, tenant);
        if let Some(limit) = q.per_minute {
            out.push(Limit { counter: counter_key(&name, "m"), limit, window: MINUTE });
        }
        if let Some(limit) = q.per_day {
            out.push(Limit { counter: counter_key(&name, "d"), limit, window: DAY });
        }
    }
    out
}

/// The scopes a request is counted in, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Key,
    SubAccount,
    Tenant,
}

pub(crate) const SCOPES: [Scope; 3] = [Scope::Key, Scope::SubAccount, Scope::Tenant];

/// The counter-name stem of a request's scope (built only for scopes that
/// have a limit).
pub(crate) fn scope_name(scope: Scope, key: Option<Key<'_>>, sub: &SubAccount, tenant: &Tenant) -> String {
    match scope {
        Scope::Key => format!("k|{}", key.map_or("", |k| k.id())),
        Scope::SubAccount => format!("s|{}|{}", tenant.id, sub.id),
        Scope::Tenant => format!("t|{}", tenant.id),
    }
}

pub(crate) fn counter_key(name: &str, window: &str) -> String {
    format!("tokenhub.q|{name}|{window}")
}

/// Window index and seconds until it ends.
pub fn window(now: u64, length: u64) -> (u64, u64) {
    if length == MONTH {
        return month_window(now);
    }
    let length = length.max(1);
    (now / length, length - now % length)
}

/// Months since January 1970 (UTC) and seconds until the next month starts.
fn month_window(now: u64) -> (u64, u64) {
    let (year, month) = civil_month(now / DAY);
    let index = (year - 1970) * 12 + (month - 1);
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let next_start = days_from_civil(next_year, next_month) * DAY;
    (index, next_start.saturating_sub(now).max(1))
}

/// (year, month 1..=12) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

/// Days since 1970-01-01 of the first day of (year, month).
fn days_from_civil(year: u64, month: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

fn decode(value: Option<&[u8]>) -> (u64, u64) {
    let Some(v) = value else { return (0, 0) };
    let word = |range: std::ops::Range<usize>| {
        v.get(range).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
    };
    (word(0..8), word(8..16))
}

fn encode(window: u64, count: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&window.to_le_bytes());
    out[8..].copy_from_slice(&count.to_le_bytes());
    out
}

/// Counts one request against every limit, or none of them.
pub fn consume(store: &dyn CounterStore, limits: &[Limit], now: u64) -> QuotaOutcome {
    consume_amounts(store, limits, &vec![1; limits.len()], now)
}

/// Adds `amounts[i]` to `limits[i]`, for every limit whose window is not yet
/// spent, or to none of them. A limit refuses only once it is reached, so an amount may
/// take a counter past its limit (a token reservation larger than what is
/// left): requests are counted in ones and never overshoot.
pub fn consume_amounts(store: &dyn CounterStore, limits: &[Limit], amounts: &[u64], now: u64) -> QuotaOutcome {
    if limits.is_empty() {
        return QuotaOutcome::Unlimited;
    }
    let mut tightest: Option<Budget> = None;
    for (i, limit) in limits.iter().enumerate() {
        let amount = amounts.get(i).copied().unwrap_or(1);
        match increment(store, limit, amount, now) {
            Step::Counted(b) => {
                if tightest.is_none_or(|t| b.remaining < t.remaining) {
                    tightest = Some(b);
                }
            }
            failed => {
                for (done, amount) in limits[..i].iter().zip(amounts) {
                    adjust(store, done, -i128::from(*amount), now);
                }
                return match failed {
                    Step::Full(b) => QuotaOutcome::Exceeded(b),
                    _ => QuotaOutcome::Unavailable,
                };
            }
        }
    }
    tightest.map_or(QuotaOutcome::Unlimited, QuotaOutcome::Allowed)
}

enum Step {
    Counted(Budget),
    Full(Budget),
    Failed,
}

fn increment(store: &dyn CounterStore, limit: &Limit, amount: u64, now: u64) -> Step {
    let (current, reset) = window(now, limit.window);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(&limit.counter);
        let (w, count) = decode(value.as_deref());
        let count = if w == current { count } else { 0 };
        if count >= limit.limit {
            return Step::Full(Budget { limit: limit.limit, remaining: 0, reset });
        }
        let counted = count.saturating_add(amount);
        match store.set(&limit.counter, &encode(current, counted), cas) {
            Ok(true) => {
                let remaining = limit.limit.saturating_sub(counted);
                return Step::Counted(Budget { limit: limit.limit, remaining, reset });
            }
            Ok(false) => continue,
            Err(StoreError) => return Step::Failed,
        }
    }
    Step::Failed
}

/// A limit's use in the current window, read only (no write, no CAS).
pub fn current(store: &dyn CounterStore, limit: &Limit, now: u64) -> Budget {
    let (index, reset) = window(now, limit.window);
    let (w, count) = decode(store.get(&limit.counter).0.as_deref());
    let count = if w == index { count } else { 0 };
    Budget { limit: limit.limit, remaining: limit.limit.saturating_sub(count), reset }
}

/// Adds `delta` (negative: gives back) to this window's count, never below
/// zero; a counter already in a later window is left alone. Bounded CAS
/// retries; `false` when the store failed or stayed contended.
pub(crate) fn adjust(store: &dyn CounterStore, limit: &Limit, delta: i128, now: u64) -> bool {
    let (current, _) = window(now, limit.window);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(&limit.counter);
        let (w, count) = decode(value.as_deref());
        let count = match w.cmp(&current) {
            std::cmp::Ordering::Equal => count,
            std::cmp::Ordering::Less => 0,
            std::cmp::Ordering::Greater => return true,
        };
        let next = (i128::from(count) + delta).clamp(0, i128::from(u64::MAX)) as u64;
        if next == count {
            return true;
        }
        match store.set(&limit.counter, &encode(current, next), cas) {
            Ok(true) => return true,
            Ok(false) => continue,
            Err(StoreError) => return false,
        }
    }
    false
}

/// Makes sure every counter exists, so that request-time writes are always
/// CAS-protected (a Proxy-Wasm `set` on a missing entry ignores CAS). Runs
/// in `on_configure`, which Envoy completes on the main thread before any
/// worker serves the new configuration.
pub fn ensure_counters(store: &dyn CounterStore, counters: impl IntoIterator<Item = String>) -> Result<(), StoreError> {
    for counter in counters {
        let (value, cas) = store.get(&counter);
        if value.is_none() {
            store.set(&counter, &encode(0, 0), cas)?;
        }
    }
    Ok(())
}

/// Every counter name a policy can use.
pub fn all_counters(policy: &crate::core::bundle::Policy) -> Vec<String> {
    let mut out = Vec::new();
    // Only keys with limits of their own have key quotas; every other
    // request counts against its sub-account's and tenant's, whatever the
    // credential: one pass over sub-accounts covers them, not one per key.
    for key in policy.keys.limited() {
        let Some(sub) = policy.sub_accounts.get(key.sub_account) else { continue };
        let Some(tenant) = policy.tenants.get(sub.tenant) else { continue };
        out.extend(limits_for(Some(key), sub, tenant).into_iter().map(|l| l.counter));
        out.extend(metered_limits_for(Some(key), sub, tenant).into_iter().map(|m| m.limit.counter));
    }
    for sub in &policy.sub_accounts {
        let Some(tenant) = policy.tenants.get(sub.tenant) else { continue };
        out.extend(limits_for(None, sub, tenant).into_iter().map(|l| l.counter));
        out.extend(metered_limits_for(None, sub, tenant).into_iter().map(|m| m.limit.counter));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    // Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
    use super::*;
    use crate::core::memstore::MemStore;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn lim(name: &str, limit: u64, window: u64) -> Limit {
        Limit { counter: name.into(), limit, window }
    }

    #[test]
    fn window_arithmetic() {
        assert_eq!(window(0, 60), (0, 60));
        assert_eq!(window(59, 60), (0, 1));
        assert_eq!(window(60, 60), (1, 60));
        assert_eq!(window(86_399, DAY), (0, 1));
        assert_eq!(window(10, 0), (10, 1), "zero-length window is treated as 1s, never divides by zero");
    }

    #[test]
    fn month_windows_follow_the_calendar() {
        // 2026-12-01T00:00:00Z = 1_796_083_200; 2027-01-01 = +31 days.
        let dec_1 = 1_796_083_200;
        assert_eq!(window(dec_1, MONTH), ((2026 - 1970) * 12 + 11, 31 * DAY));
        assert_eq!(window(dec_1 - 1, MONTH), ((2026 - 1970) * 12 + 10, 1));
        assert_eq!(window(dec_1 + 31 * DAY, MONTH).0, (2027 - 1970) * 12);
        // February of a leap year has 29 days, of others 28.
        let feb_2028 = 1_832_976_000;
        assert_eq!(window(feb_2028, MONTH), ((2028 - 1970) * 12 + 1, 29 * DAY));
        let feb_2027 = 1_801_440_000;
        assert_eq!(window(feb_2027, MONTH), ((2027 - 1970) * 12 + 1, 28 * DAY));
        assert_eq!(window(0, MONTH), (0, 31 * DAY));
        // Every day of four years: the index never goes back and steps by one.
        let mut last = window(0, MONTH).0;
        for day in 0..(4 * 366) {
            let (index, reset) = window(day * DAY, MONTH);
            assert!(index == last || index == last + 1, "day {day}");
            assert!((1..=31 * DAY).contains(&reset), "day {day}: reset {reset}");
            assert_eq!(window(day * DAY + reset, MONTH).0, index + 1, "day {day}: reset lands on the next month");
            last = index;
        }
    }

    #[test]
    fn exactly_n_then_exceeded_then_new_window() {
        let s = MemStore::default();
        let limits = [lim("k", 3, 60)];
        for expected_remaining in [2, 1, 0] {
            assert_eq!(
                consume(&s, &limits, 120),
                QuotaOutcome::Allowed(Budget { limit: 3, remaining: expected_remaining, reset: 60 })
            );
        }
        assert_eq!(consume(&s, &limits, 150), QuotaOutcome::Exceeded(Budget { limit: 3, remaining: 0, reset: 30 }));
        assert_eq!(consume(&s, &limits, 179), QuotaOutcome::Exceeded(Budget { limit: 3, remaining: 0, reset: 1 }));
        assert!(matches!(consume(&s, &limits, 180), QuotaOutcome::Allowed(Budget { remaining: 2, .. })));
    }

    #[test]
    fn tightest_limit_decides_and_refusal_consumes_nothing() {
        let s = MemStore::default();
        let key = lim("key", 5, 60);
        let tenant = lim("tenant", 2, 60);
        // Another key of the same tenant uses one tenant slot.
        assert!(matches!(consume(&s, std::slice::from_ref(&tenant), 0), QuotaOutcome::Allowed(_)));
        let both = [key.clone(), tenant.clone()];
        assert_eq!(consume(&s, &both, 0), QuotaOutcome::Allowed(Budget { limit: 2, remaining: 0, reset: 60 }));
        assert!(matches!(consume(&s, &both, 0), QuotaOutcome::Exceeded(Budget { limit: 2, .. })));
        // The refused request's key increment was rolled back: 1 used, not 2.
        assert_eq!(decode(s.get("key").0.as_deref()), (0, 1));
    }

    #[test]
    fn contention_is_retried_and_bounded() {
        let s = MemStore::default();
        ensure_counters(&s, ["k".to_string()]).unwrap();
        s.conflict_next(MAX_CAS_ATTEMPTS - 1);
        assert!(matches!(consume(&s, &[lim("k", 10, 60)], 0), QuotaOutcome::Allowed(_)));
        s.conflict_next(MAX_CAS_ATTEMPTS);
        assert_eq!(consume(&s, &[lim("k", 10, 60)], 0), QuotaOutcome::Unavailable);
    }

    #[test]
    fn ensure_counters_never_resets_existing_counts() {
        let s = MemStore::default();
        ensure_counters(&s, ["k".to_string()]).unwrap();
        consume(&s, &[lim("k", 10, 60)], 0);
        ensure_counters(&s, ["k".to_string()]).unwrap();
        assert_eq!(decode(s.get("k").0.as_deref()), (0, 1));
    }

    #[test]
    fn no_limits_is_unlimited() {
        assert_eq!(consume(&MemStore::default(), &[], 0), QuotaOutcome::Unlimited);
    }
}
