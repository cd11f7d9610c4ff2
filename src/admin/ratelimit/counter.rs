//! Fixed-window counters in Redis, with the guard's semantics (see
//! `core::quota`): windows aligned on the clock (the same `window`
//! arithmetic, so `ratelimit-reset` means the same in both modes), every
//! limit of a request admits it or none counts it.
//!
//! One request = one `MULTI … EXEC` round trip: `INCRBY` every counter of
//! the current window and `EXPIREAT` it just after the window ends. Redis
//! runs the transaction atomically, so each increment returns a distinct
//! count: exactly `limit` requests see a count within the limit, however
//! many replicas ask at once. A refused request gives its increments back
//! (`DECRBY`), like the guard's rollback, so a refusal consumes nothing.
//! Counters live only in Redis: restarting this service loses none.

use super::descriptors::Identity;
use crate::core::budget::{settle_delta, MeteredLimit, Settlement};
use crate::core::quota::{window, Budget, Limit, QuotaOutcome};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;
use tokio::sync::Mutex;

/// Redis key of a limit's counter in the window that contains `now`.
pub fn redis_key(limit: &Limit, now: u64) -> String {
    let (index, _) = window(now, limit.window);
    format!("{}|{index}", limit.counter)
}

/// When the counter of `now`'s window may go: one second after its end.
fn expires_at(limit: &Limit, now: u64) -> u64 {
    let (_, reset) = window(now, limit.window);
    now.saturating_add(reset).saturating_add(1)
}

/// Whether a `redis://[user][:password]@host` URL carries a password.
pub fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':') || !userinfo.is_empty())
}

fn unix_i64(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The outcome of counted increments: the tightest budget, or the first
/// limit that the request would exceed. `amounts[i]` was added to
/// `limits[i]`, giving `counts[i]`: the request is refused when a counter
/// was already at its limit before (`count − amount ≥ limit`), as the guard
/// counts (`core::quota`); for one request (amount 1) that is
/// `count > limit`. A negative count (a settlement gave back more than the
/// counter held, e.g. after Redis lost it) counts as 0.
pub fn judge(limits: &[Limit], amounts: &[u64], counts: &[i64], now: u64) -> QuotaOutcome {
    judge_with(limits, amounts, counts, limits.len(), now).0
}

/// `judge`, and the index of the limit that refused (if one did); an
/// admission reports the tightest of the first `reported` limits only.
fn judge_with(
    limits: &[Limit],
    amounts: &[u64],
    counts: &[i64],
    reported: usize,
    now: u64,
) -> (QuotaOutcome, Option<usize>) {
    if limits.is_empty() {
        return (QuotaOutcome::Unlimited, None);
    }
    if counts.len() != limits.len() || amounts.len() != limits.len() {
        return (QuotaOutcome::Unavailable, None);
    }
    let mut tightest: Option<Budget> = None;
    for (i, ((limit, &amount), &count)) in limits.iter().zip(amounts).zip(counts).enumerate() {
        let (_, reset) = window(now, limit.window);
        let count = u64::try_from(count).unwrap_or(0);
        if count.saturating_sub(amount) >= limit.limit {
            return (QuotaOutcome::Exceeded(Budget { limit: limit.limit, remaining: 0, reset }), Some(i));
        }
        let budget = Budget { limit: limit.limit, remaining: limit.limit.saturating_sub(count), reset };
        if i < reported && tightest.is_none_or(|t| budget.remaining < t.remaining) {
            tightest = Some(budget);
        }
    }
    (tightest.map_or(QuotaOutcome::Unlimited, QuotaOutcome::Allowed), None)
}

/// What counting found: the outcome, the index of the limit that refused,
/// and every counter after the increments (given back if refused).
#[derive(Debug)]
pub struct Counted {
    pub outcome: QuotaOutcome,
    pub refused_by: Option<usize>,
    pub counts: Vec<i64>,
}

impl Counted {
    /// Whether an admitted request left any limit from index `from` on
    /// past `percent` of it (`core::budget::past_soft_limit`).
    pub fn past_soft_limit(&self, limits: &[Limit], from: usize, percent: u8) -> bool {
        if matches!(self.outcome, QuotaOutcome::Exceeded(_) | QuotaOutcome::Unavailable) {
            return false;
        }
        limits.iter().zip(&self.counts).skip(from).any(|(l, &count)| {
            let used = u64::try_from(count).unwrap_or(0);
            let budget = Budget { limit: l.limit, remaining: l.limit.saturating_sub(used), reset: 0 };
            crate::core::budget::past_soft_limit(&budget, percent)
        })
    }
}

/// The Redis connection: made on first use (Redis may start after this
/// service), then kept; `redis`' connection manager reconnects by itself.
pub struct RedisCounters {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    timeout: Duration,
}

#[derive(Debug)]
pub struct CounterError(pub String);

impl std::fmt::Display for CounterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis: {}", self.0)
    }
}

impl RedisCounters {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        // The URL is never echoed: it may hold a password.
        let client = redis::Client::open(url)
            .map_err(|e| format!("--redis is not a Redis URL like redis://127.0.0.1:6379 ({:?})", e.kind()))?;
        Ok(Self { client, conn: Mutex::new(None), timeout })
    }

    async fn connection(&self) -> Result<ConnectionManager, CounterError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| CounterError(format!("cannot connect: {e}")))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Counts `hits` against every limit, or none of them.
    pub async fn consume(&self, limits: &[Limit], hits: u64, now: u64) -> Result<QuotaOutcome, CounterError> {
        let amounts = vec![hits; limits.len()];
        Ok(self.consume_amounts(limits, &amounts, limits.len(), now).await?.outcome)
    }

    /// Adds `amounts[i]` to `limits[i]` for every limit, or to none of them
    /// (a refusal gives them back); with the index of the refusing limit.
    /// An admission reports the tightest of the first `reported` limits.
    pub async fn consume_amounts(
        &self,
        limits: &[Limit],
        amounts: &[u64],
        reported: usize,
        now: u64,
    ) -> Result<Counted, CounterError> {
        if limits.is_empty() {
            return Ok(Counted { outcome: QuotaOutcome::Unlimited, refused_by: None, counts: Vec::new() });
        }
        let mut conn = self.connection().await?;
        let keys: Vec<String> = limits.iter().map(|l| redis_key(l, now)).collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for ((limit, key), &amount) in limits.iter().zip(&keys).zip(amounts) {
            pipe.incr(key, amount).expire_at(key, unix_i64(expires_at(limit, now))).ignore();
        }
        let counts: Vec<i64> =
            pipe.query_async(&mut conn).await.map_err(|e| CounterError(format!("count failed: {e}")))?;
        // A refused request's hits do not count: take them back. Never more
        // than the limit is admitted even if this fails (the counts stay
        // higher, so later requests may be refused early, never late).
        let (outcome, refused_by) = judge_with(limits, amounts, &counts, reported, now);
        if matches!(outcome, QuotaOutcome::Exceeded(_)) {
            let mut undo = redis::pipe();
            undo.atomic();
            for ((limit, key), &amount) in limits.iter().zip(&keys).zip(amounts) {
                // The expiry again: should the window have ended meanwhile,
                // a recreated key must not stay forever.
                undo.decr(key, amount).ignore().expire_at(key, unix_i64(expires_at(limit, now))).ignore();
            }
            if let Err(e) = undo.query_async::<()>(&mut conn).await {
                eprintln!("tokenhub-admin ratelimit: could not give back a refused request's counts ({e})");
            }
        }
        Ok(Counted { outcome, refused_by, counts })
    }

    /// The end of a metered stream (global mode): each budget counter moves
    /// by `core::budget::settle_delta` (the actual charge replaces the
    /// reservation while its window lasts), in one transaction. A counter a
    /// settlement took below zero (Redis lost the reservation it gives back)
    /// is raised back by the excess.
    /// The request's usage goes to this month's totals of `who` in the
    /// same transaction (`totals`).
    pub async fn settle(
        &self,
        limits: &[MeteredLimit],
        s: &Settlement,
        who: &Identity,
        now: u64,
    ) -> Result<(), CounterError> {
        let mut conn = self.connection().await?;
        let keys: Vec<String> = limits.iter().map(|m| redis_key(&m.limit, now)).collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (m, key) in limits.iter().zip(&keys) {
            let delta = settle_delta(m, s.reserved, s.charge(), s.reserved_at, now);
            let delta = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
            pipe.incr(key, delta).expire_at(key, unix_i64(expires_at(&m.limit, now))).ignore();
        }
        super::totals::record(&mut pipe, who, s, now);
        let counts: Vec<i64> =
            pipe.query_async(&mut conn).await.map_err(|e| CounterError(format!("settlement failed: {e}")))?;
        let below: Vec<(&String, i64)> = keys.iter().zip(counts).filter(|(_, c)| *c < 0).collect();
        if !below.is_empty() {
            let mut fix = redis::pipe();
            for (key, count) in below {
                fix.incr(key, count.saturating_neg()).ignore();
            }
            fix.query_async::<()>(&mut conn).await.map_err(|e| CounterError(format!("settlement failed: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::quota::{DAY, MINUTE};

    fn lim(name: &str, limit: u64, window: u64) -> Limit {
        Limit { counter: name.into(), limit, window }
    }

    #[test]
    fn keys_name_the_window_and_expire_just_after_it() {
        let l = lim("tokenhub.q|k|abc|m", 30, MINUTE);
        assert_eq!(redis_key(&l, 119), "tokenhub.q|k|abc|m|1");
        assert_eq!(redis_key(&l, 120), "tokenhub.q|k|abc|m|2");
        assert_eq!(expires_at(&l, 119), 121);
        assert_eq!(expires_at(&l, 120), 181);
        assert_eq!(expires_at(&lim("d", 1, DAY), DAY + 5), 2 * DAY + 1);
    }

    #[test]
    fn the_tightest_remaining_budget_is_reported() {
        let limits = [lim("k", 30, MINUTE), lim("t", 100, MINUTE)];
        let one = [1, 1];
        assert_eq!(
            judge(&limits, &one, &[29, 31], 10),
            QuotaOutcome::Allowed(Budget { limit: 30, remaining: 1, reset: 50 })
        );
        assert_eq!(
            judge(&limits, &one, &[5, 99], 10),
            QuotaOutcome::Allowed(Budget { limit: 100, remaining: 1, reset: 50 })
        );
    }

    #[test]
    fn a_count_past_any_limit_refuses_with_that_limits_reset() {
        let limits = [lim("k", 30, MINUTE), lim("t", 5000, DAY)];
        assert_eq!(
            judge(&limits, &[1, 1], &[31, 40], 30),
            QuotaOutcome::Exceeded(Budget { limit: 30, remaining: 0, reset: 30 })
        );
        assert_eq!(
            judge(&limits, &[1, 1], &[3, 5001], 30),
            QuotaOutcome::Exceeded(Budget { limit: 5000, remaining: 0, reset: DAY - 30 })
        );
        // Exactly at the limit is still admitted (the limit-th request).
        assert!(matches!(judge(&limits, &[1, 1], &[30, 30], 30), QuotaOutcome::Allowed(Budget { remaining: 0, .. })));
    }

    #[test]
    fn a_budget_admits_while_below_its_limit_before_the_reservation() {
        // As the guard: refused only when the counter was already at the
        // limit; the admitted reservation may pass it (the overshoot bound).
        let limits = [lim("tm", 1_000, MINUTE)];
        assert!(matches!(judge(&limits, &[600], &[1_599], 0), QuotaOutcome::Allowed(Budget { remaining: 0, .. })));
        assert!(matches!(judge(&limits, &[600], &[1_600], 0), QuotaOutcome::Exceeded(_)));
        // Nothing to reserve: refused once spent.
        assert!(matches!(judge(&limits, &[0], &[1_000], 0), QuotaOutcome::Exceeded(_)));
        assert!(matches!(judge(&limits, &[0], &[-40], 0), QuotaOutcome::Allowed(Budget { remaining: 1_000, .. })));
    }

    #[test]
    fn the_soft_limit_looks_at_the_budgets_of_an_admitted_request_only() {
        let limits = [lim("m", 10, MINUTE), lim("tm", 1_000, MINUTE)];
        let counted = |outcome, counts: Vec<i64>| Counted { outcome, refused_by: None, counts };
        let ok = QuotaOutcome::Allowed(Budget { limit: 10, remaining: 0, reset: 1 });
        assert!(counted(ok, vec![10, 800]).past_soft_limit(&limits, 1, 80));
        assert!(!counted(ok, vec![10, 799]).past_soft_limit(&limits, 1, 80), "the request quota is not a budget");
        assert!(!counted(QuotaOutcome::Exceeded(Budget { limit: 1, remaining: 0, reset: 1 }), vec![0, 999])
            .past_soft_limit(&limits, 1, 80));
        assert!(counted(QuotaOutcome::Unlimited, vec![0, 1_000]).past_soft_limit(&limits, 1, 100));
    }

    #[test]
    fn urls_with_credentials_are_recognized() {
        assert!(has_password("redis://:s3cret@10.0.0.5:6379"));
        assert!(has_password("redis://user:s3cret@10.0.0.5:6379/0"));
        assert!(has_password("redis://s3cret@10.0.0.5"));
        assert!(!has_password("redis://127.0.0.1:6379"));
        assert!(!has_password("redis://127.0.0.1:6379/0?protocol=resp3"));
    }

    #[test]
    fn no_limits_is_unlimited_and_a_short_reply_fails_closed() {
        assert_eq!(judge(&[], &[], &[], 0), QuotaOutcome::Unlimited);
        assert_eq!(judge(&[lim("k", 3, MINUTE), lim("t", 3, MINUTE)], &[1, 1], &[1], 0), QuotaOutcome::Unavailable);
    }
}
