//! Fixed-window request quotas, counted in a store shared by every worker
//! (Proxy-Wasm shared data in Envoy; a map in tests).
//!
//! A counter is named `tokenhub.q|{scope}|{window}` (the global mode's
//! rate limit service keys Redis by the same names), but the local store
//! keeps every window of one scope (a key, a sub-account or a tenant) in
//! ONE entry, `{scope stem}|*`, as slots
//! `[tag length u8][tag][window index u64 LE][count u64 LE]` (the tag is
//! the counter's last segment: `m`, `d`, `tm`…). So a request costs one
//! read and one compare-and-swap write per scope, not per counter. The
//! number of entries is bounded by the number of quota-bearing keys,
//! sub-accounts and tenants — never by traffic or time; slots are reused
//! from window to window. Increments are compare-and-swap with a bounded
//! retry loop; a counter is never moved past its limit, and when a later
//! scope of the same request refuses, the earlier increments are rolled
//! back, so a refused request consumes nothing. An entry that does not
//! decode refuses (fail closed) rather than count from zero.

use crate::core::budget::metered_limits_for;
use crate::core::bundle::compile::{Key, SubAccount, Tenant};
use crate::core::bundle::schema::QuotaDoc;

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
    let quotas = [key.and_then(|k| k.quota()), sub.limits.quota.as_ref(), tenant.limits.quota.as_ref()];
    let windows = |q: &QuotaDoc| [(q.per_minute, "m", MINUTE, ()), (q.per_day, "d", DAY, ())];
    level_limits(quotas, key, sub, tenant, windows).into_iter().map(|(limit, ())| limit).collect()
}

/// The limits `levels` (key, sub-account, tenant; `None` = no limits there)
/// set: per level, each window `windows` gives as `(limit, counter suffix,
/// window, tag)` whose limit is set, named for its level.
pub(crate) fn level_limits<T, M, const N: usize>(
    levels: [Option<&T>; 3],
    key: Option<Key<'_>>,
    sub: &SubAccount,
    tenant: &Tenant,
    windows: impl Fn(&T) -> [(Option<u64>, &'static str, u64, M); N],
) -> Vec<(Limit, M)> {
    let mut out = Vec::new();
    for (level, scope) in levels.into_iter().zip(SCOPES) {
        let Some(l) = level else { continue };
        let name = scope_name(scope, key, sub, tenant);
        for (limit, suffix, window, tag) in windows(l) {
            if let Some(limit) = limit {
                out.push((Limit { counter: counter_key(&name, suffix), limit, window }, tag));
            }
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

/// The shared-data entry a counter lives in (its scope's) and its slot tag.
fn location(counter: &str) -> (String, &str) {
    let (stem, tag) = counter.rsplit_once('|').unwrap_or((counter, ""));
    (format!("{stem}|*"), tag)
}

/// A counter's slot tag (`location` without building the entry name).
fn tag_of(counter: &str) -> &str {
    counter.rsplit_once('|').map_or("", |(_, tag)| tag)
}

/// A scope's entry: its windows' slots (tag, window index, count).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Entry {
    slots: Vec<(Vec<u8>, u64, u64)>,
}

/// An entry that exists but does not decode: refuse, never count from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Damaged;

impl Entry {
    /// A missing entry is empty (every count zero).
    fn parse(value: Option<&[u8]>) -> Result<Self, Damaged> {
        let mut slots = Vec::new();
        let mut rest = value.unwrap_or_default();
        while let Some((&len, tail)) = rest.split_first() {
            let len = usize::from(len);
            let tag = tail.get(..len).ok_or(Damaged)?;
            let word = |at: usize| {
                tail.get(len + at..len + at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).ok_or(Damaged)
            };
            slots.push((tag.to_vec(), word(0)?, word(8)?));
            rest = tail.get(len + 16..).ok_or(Damaged)?;
        }
        Ok(Self { slots })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.slots.iter().map(|(t, _, _)| 17 + t.len()).sum());
        for (tag, window, count) in &self.slots {
            let tag = &tag[..tag.len().min(usize::from(u8::MAX))];
            out.push(tag.len() as u8);
            out.extend_from_slice(tag);
            out.extend_from_slice(&window.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        out
    }

    /// The slot's (window index, count); (0, 0) when absent.
    fn slot(&self, tag: &str) -> (u64, u64) {
        self.slots.iter().find(|(t, _, _)| t == tag.as_bytes()).map_or((0, 0), |(_, w, c)| (*w, *c))
    }

    /// The count in window `current` (an older window's count is spent).
    fn count(&self, tag: &str, current: u64) -> u64 {
        match self.slot(tag) {
            (w, count) if w == current => count,
            _ => 0,
        }
    }

    fn put(&mut self, tag: &str, window: u64, count: u64) {
        match self.slots.iter_mut().find(|(t, _, _)| t == tag.as_bytes()) {
            Some(slot) => (slot.1, slot.2) = (window, count),
            None => self.slots.push((tag.as_bytes().to_vec(), window, count)),
        }
    }
}

/// The entries of `limits` in first-use order, each with its limits' indexes.
fn by_entry(limits: &[Limit]) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, limit) in limits.iter().enumerate() {
        let (entry, _) = location(&limit.counter);
        match out.iter_mut().find(|(e, _)| *e == entry) {
            Some((_, members)) => members.push(i),
            None => out.push((entry, vec![i])),
        }
    }
    out
}

/// Counts one request against every limit, or none of them.
pub fn consume(store: &dyn CounterStore, limits: &[Limit], now: u64) -> QuotaOutcome {
    consume_amounts(store, limits, &vec![1; limits.len()], now)
}

/// Adds `amounts[i]` to `limits[i]`, for every limit whose window is not yet
/// spent, or to none of them. A limit refuses only once it is reached, so an amount may
/// take a counter past its limit (a token reservation larger than what is
/// left): requests are counted in ones and never overshoot. One read and
/// one compare-and-swap per scope entry.
pub fn consume_amounts(store: &dyn CounterStore, limits: &[Limit], amounts: &[u64], now: u64) -> QuotaOutcome {
    if limits.is_empty() {
        return QuotaOutcome::Unlimited;
    }
    let amount = |i: usize| amounts.get(i).copied().unwrap_or(1);
    let entries = by_entry(limits);
    let mut tightest: Option<Budget> = None;
    for (done, (entry, members)) in entries.iter().enumerate() {
        match increment(store, entry, members.iter().map(|&i| (&limits[i], amount(i))), now) {
            Step::Counted(b) => {
                if tightest.is_none_or(|t| b.remaining < t.remaining) {
                    tightest = Some(b);
                }
            }
            failed => {
                for (entry, members) in &entries[..done] {
                    let back: Vec<(&str, u64, i128)> = members
                        .iter()
                        .map(|&i| (tag_of(&limits[i].counter), limits[i].window, -i128::from(amount(i))))
                        .collect();
                    adjust_entry(store, entry, &back, now);
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
    /// Counted; the tightest budget of the entry's limits.
    Counted(Budget),
    Full(Budget),
    Failed,
}

/// Adds each amount to its limit's slot in `entry` (one write), or refuses
/// with the first limit already reached.
fn increment<'l>(
    store: &dyn CounterStore,
    entry: &str,
    limits: impl Iterator<Item = (&'l Limit, u64)> + Clone,
    now: u64,
) -> Step {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(entry);
        let Ok(mut slots) = Entry::parse(value.as_deref()) else { return Step::Failed };
        let mut tightest: Option<Budget> = None;
        for (limit, amount) in limits.clone() {
            let (current, reset) = window(now, limit.window);
            let tag = tag_of(&limit.counter);
            let count = slots.count(tag, current);
            if count >= limit.limit {
                return Step::Full(Budget { limit: limit.limit, remaining: 0, reset });
            }
            let counted = count.saturating_add(amount);
            slots.put(tag, current, counted);
            let b = Budget { limit: limit.limit, remaining: limit.limit.saturating_sub(counted), reset };
            if tightest.is_none_or(|t| b.remaining < t.remaining) {
                tightest = Some(b);
            }
        }
        let Some(tightest) = tightest else { return Step::Failed };
        match store.set(entry, &slots.encode(), cas) {
            Ok(true) => return Step::Counted(tightest),
            Ok(false) => continue,
            Err(StoreError) => return Step::Failed,
        }
    }
    Step::Failed
}

/// A limit's use in the current window, read only (no write, no CAS). An
/// entry that does not decode reads as spent (fail closed).
pub fn current(store: &dyn CounterStore, limit: &Limit, now: u64) -> Budget {
    let (index, reset) = window(now, limit.window);
    let (entry, tag) = location(&limit.counter);
    let count = match Entry::parse(store.get(&entry).0.as_deref()) {
        Ok(slots) => slots.count(tag, index),
        Err(Damaged) => limit.limit,
    };
    Budget { limit: limit.limit, remaining: limit.limit.saturating_sub(count), reset }
}

/// Adds `delta` (negative: gives back) to this window's count, never below
/// zero; a counter already in a later window is left alone. Bounded CAS
/// retries; `false` when the store failed or stayed contended.
pub(crate) fn adjust(store: &dyn CounterStore, limit: &Limit, delta: i128, now: u64) -> bool {
    let (entry, tag) = location(&limit.counter);
    adjust_entry(store, &entry, &[(tag, limit.window, delta)], now)
}

/// `adjust` for several slots (tag, window length, delta) of one entry, in one write.
fn adjust_entry(store: &dyn CounterStore, entry: &str, changes: &[(&str, u64, i128)], now: u64) -> bool {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(entry);
        let Ok(mut slots) = Entry::parse(value.as_deref()) else { return false };
        let mut changed = false;
        for &(tag, length, delta) in changes {
            let (current, _) = window(now, length);
            let (w, count) = slots.slot(tag);
            let count = match w.cmp(&current) {
                std::cmp::Ordering::Equal => count,
                std::cmp::Ordering::Less => 0,
                std::cmp::Ordering::Greater => continue,
            };
            let next = (i128::from(count) + delta).clamp(0, i128::from(u64::MAX)) as u64;
            if next != count {
                slots.put(tag, current, next);
                changed = true;
            }
        }
        if !changed {
            return true;
        }
        match store.set(entry, &slots.encode(), cas) {
            Ok(true) => return true,
            Ok(false) => continue,
            Err(StoreError) => return false,
        }
    }
    false
}

/// Makes sure every counter's entry exists, so that request-time writes are
/// always CAS-protected (a Proxy-Wasm `set` on a missing entry ignores
/// CAS). Runs in `on_configure`, which Envoy completes on the main thread
/// before any worker serves the new configuration. A new entry takes over
/// the counts of the one-entry-per-counter layout of earlier versions
/// (same process, same window), so an upgrade does not reset quotas.
/// Returns the number of entries.
pub fn ensure_counters(
    store: &dyn CounterStore,
    counters: impl IntoIterator<Item = String>,
) -> Result<usize, StoreError> {
    let mut entries: Vec<(String, Vec<String>)> = Vec::new();
    for counter in counters {
        let (entry, _) = location(&counter);
        match entries.iter_mut().find(|(e, _)| *e == entry) {
            Some((_, members)) => members.push(counter),
            None => entries.push((entry, vec![counter])),
        }
    }
    for (entry, members) in &entries {
        let (value, cas) = store.get(entry);
        if value.is_some() {
            continue;
        }
        let mut slots = Entry::default();
        for counter in members {
            if let (Some(legacy), _) = store.get(counter) {
                let (window, count) = legacy_decode(&legacy);
                slots.put(tag_of(counter), window, count);
            }
        }
        store.set(entry, &slots.encode(), cas)?;
    }
    Ok(entries.len())
}

/// A counter of the earlier layout: `[window index u64 LE][count u64 LE]`.
fn legacy_decode(v: &[u8]) -> (u64, u64) {
    let word = |range: std::ops::Range<usize>| {
        v.get(range).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
    };
    (word(0..8), word(8..16))
}

/// A counter's stored (window index, count), for tests.
#[cfg(test)]
pub(crate) fn stored(store: &dyn CounterStore, counter: &str) -> (u64, u64) {
    let (entry, tag) = location(counter);
    Entry::parse(store.get(&entry).0.as_deref()).map(|e| e.slot(tag)).unwrap_or((u64::MAX, u64::MAX))
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
        assert_eq!(stored(&s, "key"), (0, 1));
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
        assert_eq!(stored(&s, "k"), (0, 1));
    }

    /// Counts the writes that reach the store.
    #[derive(Default)]
    struct Writes {
        inner: MemStore,
        sets: std::cell::Cell<usize>,
    }

    impl CounterStore for Writes {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, StoreError> {
            self.sets.set(self.sets.get() + 1);
            self.inner.set(key, value, cas)
        }
    }

    fn scoped(scope: &str, window: &str, limit: u64, length: u64) -> Limit {
        lim(&counter_key(scope, window), limit, length)
    }

    #[test]
    fn every_window_of_a_scope_is_one_entry_and_one_write() {
        let s = Writes::default();
        let limits = [
            scoped("k|A", "m", 10, MINUTE),
            scoped("k|A", "d", 100, DAY),
            scoped("t|acme", "m", 20, MINUTE),
            scoped("t|acme", "d", 200, DAY),
        ];
        let counters = limits.iter().map(|l| l.counter.clone());
        assert_eq!(ensure_counters(&s, counters).unwrap(), 2, "two scopes, two entries");
        let before = s.sets.get();
        assert_eq!(consume(&s, &limits, 0), QuotaOutcome::Allowed(Budget { limit: 10, remaining: 9, reset: 60 }));
        assert_eq!(s.sets.get() - before, 2, "one compare-and-swap per scope, not per counter");
        for (l, count) in limits.iter().zip([1, 1, 1, 1]) {
            assert_eq!(stored(&s, &l.counter), (0, count), "{}", l.counter);
        }
        assert!(s.get("tokenhub.q|k|A|*").0.is_some() && s.get("tokenhub.q|k|A|m").0.is_none());
        // A token budget of the same scope shares the entry without
        // disturbing the request windows.
        let tokens = scoped("k|A", "tm", 1_000, MINUTE);
        assert!(matches!(consume_amounts(&s, std::slice::from_ref(&tokens), &[300], 0), QuotaOutcome::Allowed(_)));
        assert!(adjust(&s, &tokens, -100, 1));
        assert_eq!(stored(&s, &tokens.counter), (0, 200));
        assert_eq!(stored(&s, &limits[0].counter), (0, 1));
        assert_eq!(stored(&s, &limits[1].counter), (0, 1));
    }

    /// Four workers (threads on one shared map, as Envoy's workers share
    /// shared data), two keys of one tenant.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn exact_across_concurrent_workers_sharing_a_tenant() {
        use crate::core::memstore::SyncStore;
        use std::sync::Arc;
        let store = Arc::new(SyncStore::default());
        let keys = ["A", "B"];
        let limits = |key: &str| {
            vec![
                scoped(&format!("k|{key}"), "m", 400, MINUTE),
                scoped(&format!("k|{key}"), "d", 100_000, DAY),
                scoped("t|acme", "m", 600, MINUTE),
                scoped("t|acme", "d", 100_000, DAY),
            ]
        };
        let all = keys.iter().flat_map(|k| limits(k)).map(|l| l.counter);
        ensure_counters(store.as_ref(), all).unwrap();
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let store = Arc::clone(&store);
                let mine = limits(keys[w % 2]);
                std::thread::spawn(move || {
                    (0..300).filter(|_| matches!(consume(store.as_ref(), &mine, 30), QuotaOutcome::Allowed(_))).count()
                })
            })
            .collect();
        let admitted: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(admitted, 600, "exactly the tenant's limit, whatever the interleaving");
        let count = |key: &str, w: &str| stored(store.as_ref(), &counter_key(key, w)).1;
        assert_eq!(count("t|acme", "m"), 600);
        assert_eq!(count("t|acme", "d"), 600);
        assert_eq!(count("k|A", "m") + count("k|B", "m"), 600, "refused requests consumed nothing");
        assert_eq!(count("k|A", "d") + count("k|B", "d"), 600);
        assert!(count("k|A", "m") <= 400 && count("k|B", "m") <= 400);
    }

    #[test]
    fn a_damaged_entry_refuses_and_rolls_the_others_back() {
        let s = MemStore::default();
        let limits = [scoped("k|A", "m", 10, MINUTE), scoped("t|acme", "m", 10, MINUTE)];
        ensure_counters(&s, limits.iter().map(|l| l.counter.clone())).unwrap();
        let (_, cas) = s.get("tokenhub.q|t|acme|*");
        // A slot cut short: the tag says 5 bytes, 2 follow.
        assert!(s.set("tokenhub.q|t|acme|*", &[5, b'm', b'x'], cas).unwrap());
        assert_eq!(consume(&s, &limits, 0), QuotaOutcome::Unavailable, "fail closed, never count from zero");
        assert_eq!(stored(&s, &limits[0].counter), (0, 0), "the key's increment was given back");
        assert_eq!(current(&s, &limits[1], 0).remaining, 0, "a damaged entry reads as spent");
        assert!(!adjust(&s, &limits[1], -1, 0));
        // ensure_counters leaves it as it is (no silent reset to zero).
        ensure_counters(&s, limits.iter().map(|l| l.counter.clone())).unwrap();
        assert_eq!(consume(&s, &limits, 0), QuotaOutcome::Unavailable);
    }

    #[test]
    fn new_entries_take_over_the_counts_of_the_per_counter_layout() {
        let s = MemStore::default();
        let minute = scoped("k|A", "m", 8, MINUTE);
        let day = scoped("k|A", "d", 100, DAY);
        // What an earlier version left in this process's shared data.
        let legacy = |window: u64, count: u64| [window.to_le_bytes(), count.to_le_bytes()].concat();
        assert!(s.set(&minute.counter, &legacy(2, 7), 0).unwrap());
        assert!(s.set(&day.counter, &legacy(0, 40), 0).unwrap());
        assert_eq!(ensure_counters(&s, [minute.counter.clone(), day.counter.clone()]).unwrap(), 1);
        assert_eq!(stored(&s, &minute.counter), (2, 7));
        let both = [minute.clone(), day.clone()];
        assert_eq!(consume(&s, &both, 150), QuotaOutcome::Allowed(Budget { limit: 8, remaining: 0, reset: 30 }));
        assert_eq!(consume(&s, &both, 151), QuotaOutcome::Exceeded(Budget { limit: 8, remaining: 0, reset: 29 }));
        assert_eq!(stored(&s, &day.counter), (0, 41));
        // Migrated once: later configurations keep the entry's counts.
        assert!(s.set(&minute.counter, &legacy(2, 0), 0).unwrap());
        ensure_counters(&s, [minute.counter.clone(), day.counter.clone()]).unwrap();
        assert_eq!(stored(&s, &minute.counter), (2, 8));
    }

    #[test]
    fn no_limits_is_unlimited() {
        assert_eq!(consume(&MemStore::default(), &[], 0), QuotaOutcome::Unlimited);
    }
}
