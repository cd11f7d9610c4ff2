//! Token and spend budgets: tokens per minute and per day, dollars per
//! calendar month, per key, sub-account and tenant, in the same shared
//! counters as the request quotas (`core::quota`).
//!
//! A request's usage is known only when its response ends, so admission
//! reserves an estimate and the end of the stream settles it:
//!
//! 1. `reserve`: refused (429) when any budget is already spent; otherwise
//!    the estimate is added to every counter, all or none.
//! 2. `settle`: the counter moves by `actual − reserved` (the reservation's
//!    window still current) or by `actual` (a new window: the reservation
//!    expired with its own). Runs at the end of the stream and on an abort,
//!    with what was received so far.
//!
//! Overshoot bound: a request is admitted only while its counter is below
//! the limit, and the counter already holds every admitted request's
//! reservation or settled usage. So however many requests run at once, a
//! window's total exceeds its limit by less than one reservation (the
//! largest), plus what requests in flight use beyond their own reservation
//! (an estimate too low). The output part of a reservation is the body's
//! `max_tokens` (`max_completion_tokens`, `max_output_tokens`,
//! `generationConfig.maxOutputTokens`; `core::models` reads them) when it
//! states one, which a provider never exceeds, else the bundle's
//! `default_output_tokens` (`quota metering`). A cap that arrives in a body
//! chunk after the one naming the model revises the reservation without a
//! new admission check: such a request can add its revision's increase.
//! So in every case the overshoot is at most the sum of the in-flight
//! reservations. Charging only at the end, as gateways commonly do, lets
//! every concurrent request in: the overshoot is all of them.
//! (Proved natively below, with 8 threads, and through real Envoy with 30
//! parallel requests: `integration/tests/budgets_e2e.rs`.)

use crate::core::bundle::compile::{Key, SubAccount, Tenant};
use crate::core::bundle::schema::TokenBudgetDoc;
use crate::core::quota::{
    adjust, consume_amounts, current, level_limits, window, Budget, CounterStore, Limit, QuotaOutcome, DAY, MINUTE,
    MONTH,
};

/// One nano-dollar is 10⁻⁹ USD: prices per million tokens in dollars are
/// exact in it down to $0.001, and a u64 counter holds $18 billion.
pub const NANO_USD_PER_USD: u64 = 1_000_000_000;

/// Output tokens reserved when the request states no `max_tokens` and the
/// bundle no `default_output_tokens`.
pub const DEFAULT_OUTPUT_RESERVATION: u64 = 1_024;

/// What a metered request is charged: tokens, and their cost in nano-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    pub tokens: u64,
    pub cost: u64,
}

/// Which part of a `Charge` a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    Tokens,
    Cost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredLimit {
    pub limit: Limit,
    pub meter: Meter,
}

impl Charge {
    fn of(self, meter: Meter) -> u64 {
        match meter {
            Meter::Tokens => self.tokens,
            Meter::Cost => self.cost,
        }
    }

    /// Both parts added (saturating): a reservation and its top-up.
    pub fn plus(self, other: Charge) -> Charge {
        Charge { tokens: self.tokens.saturating_add(other.tokens), cost: self.cost.saturating_add(other.cost) }
    }
}

/// The token and dollar limits that apply to a request of `key` (key,
/// sub-account, tenant), with their shared-data counter names. Empty: the
/// request is not metered (its bodies are not read for usage).
pub fn metered_limits_for(key: Option<Key<'_>>, sub: &SubAccount, tenant: &Tenant) -> Vec<MeteredLimit> {
    let budgets = [key.and_then(|k| k.budget()), sub.limits.budget.as_ref(), tenant.limits.budget.as_ref()];
    let windows = |b: &TokenBudgetDoc| {
        [
            (b.tokens_per_minute, "tm", MINUTE, Meter::Tokens),
            (b.tokens_per_day, "td", DAY, Meter::Tokens),
            (b.monthly_budget_nano_usd, "usd", MONTH, Meter::Cost),
        ]
    };
    level_limits(budgets, key, sub, tenant, windows)
        .into_iter()
        .map(|(limit, meter)| MeteredLimit { limit, meter })
        .collect()
}

/// A model's prices, in nano-dollars per token (= dollars per million
/// tokens × 1 000: $2.50 per million is 2 500).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

impl Price {
    /// The cost of a response's usage; `input` includes `cached_input`.
    pub fn cost(&self, input: u64, cached_input: u64, output: u64) -> u64 {
        let cached = cached_input.min(input);
        (input - cached)
            .saturating_mul(self.input)
            .saturating_add(cached.saturating_mul(self.cached_input))
            .saturating_add(output.saturating_mul(self.output))
    }
}

/// A request's input tokens estimated from its body's length (a token is
/// rarely under 4 bytes of text, so bytes / 4 is on the high side for prose
/// and code).
pub fn input_estimate(body_bytes: u64) -> u64 {
    body_bytes.div_ceil(4)
}

/// The reservation for a request: its input estimate plus `output`, the
/// output cap the body states (`max_tokens`…) or the configured default.
pub fn estimate(price: &Price, body_bytes: u64, output: u64) -> Charge {
    let input = input_estimate(body_bytes);
    Charge { tokens: input.saturating_add(output), cost: price.cost(input, 0, output) }
}

/// Global mode, once the body is read: what its `estimate` adds to the
/// reservation made at request headers (`reserved`) — the body's output
/// cap, a body longer than `content-length` said. `None`: nothing that
/// one of `limits` counts (tokens for a token budget, cost for a dollar
/// budget) grew, so no top-up is asked. A smaller estimate is not given
/// back early: the settlement replaces the whole reservation anyway.
pub fn top_up(limits: &[MeteredLimit], reserved: Charge, estimate: Charge) -> Option<Charge> {
    let extra = Charge {
        tokens: estimate.tokens.saturating_sub(reserved.tokens),
        cost: estimate.cost.saturating_sub(reserved.cost),
    };
    limits.iter().any(|m| extra.of(m.meter) > 0).then_some(extra)
}

/// Admission: refused when a budget is already spent, else the estimate is
/// reserved in every counter (all or none).
pub fn reserve(store: &dyn CounterStore, limits: &[MeteredLimit], estimate: Charge, now: u64) -> QuotaOutcome {
    let (plain, amounts): (Vec<Limit>, Vec<u64>) =
        limits.iter().map(|m| (m.limit.clone(), estimate.of(m.meter))).unzip();
    consume_amounts(store, &plain, &amounts, now)
}

/// End of stream (or abort): replaces the reservation made at `reserved_at`
/// with the actual charge. `false` when a counter could not be updated (the
/// store failed or stayed contended; the reservation then stays charged).
pub fn settle(
    store: &dyn CounterStore,
    limits: &[MeteredLimit],
    reserved: Charge,
    actual: Charge,
    reserved_at: u64,
    now: u64,
) -> bool {
    let mut ok = true;
    for m in limits {
        // Every limit, even after one failed.
        ok &= adjust(store, &m.limit, settle_delta(m, reserved, actual, reserved_at, now), now);
    }
    ok
}

/// How a limit's counter moves when a reservation made at `reserved_at` is
/// replaced by `actual` at `now`: by `actual − reserved` while the
/// reservation's window is still current, else by `actual` (the
/// reservation expired with its window and is not taken from the new one).
/// Local mode (`settle`) and the global mode's rate limit service both
/// settle with it.
pub fn settle_delta(m: &MeteredLimit, reserved: Charge, actual: Charge, reserved_at: u64, now: u64) -> i128 {
    let same_window = window(reserved_at, m.limit.window).0 == window(now, m.limit.window).0;
    if same_window {
        i128::from(actual.of(m.meter)) - i128::from(reserved.of(m.meter))
    } else {
        i128::from(actual.of(m.meter))
    }
}

/// Global quota mode: the filter-state names (`wasm.NAME` to Envoy) the
/// guard writes for the rate limit service, which Envoy's `ratelimit`
/// filter turns into descriptor entries (`envoy/global-ratelimit`): the
/// reservation at request headers, the settlement at the end of the stream.
/// Absent (a request without budgets): Envoy sends no such descriptor.
pub const RESERVE_STATE: &str = "tokenhub_budget_reserve";
pub const SETTLE_STATE: &str = "tokenhub_budget_settle";
/// Global mode: the rate limit service adds this response header (value
/// `1`) when an admitted request's reservation took a budget past its soft
/// limit; the guard turns it into the metric and the access-log field it
/// uses in local mode, and removes it.
pub const SOFT_LIMIT_HEADER: &str = "x-tokenhub-soft-limit";

/// What replaces a reservation in the global mode, as the guard tells the
/// service: the charge (tokens = input + output, cost) with its input,
/// output and cached-input split (for the usage totals), and the
/// reservation it replaces with the time it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settlement {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cost: u64,
    pub reserved: Charge,
    pub reserved_at: u64,
}

impl Settlement {
    /// The charge it settles to.
    pub fn charge(&self) -> Charge {
        Charge { tokens: self.input.saturating_add(self.output), cost: self.cost }
    }

    /// `input,output,cached,cost,reserved_tokens,reserved_cost,reserved_at`
    /// (decimal, nano-dollars).
    pub fn to_wire(&self) -> String {
        let r = self.reserved;
        format!(
            "{},{},{},{},{},{},{}",
            self.input, self.output, self.cached_input, self.cost, r.tokens, r.cost, self.reserved_at
        )
    }

    pub fn from_wire(text: &str) -> Option<Self> {
        let [input, output, cached_input, cost, tokens, reserved_cost, reserved_at] = numbers(text)?;
        Some(Self { input, output, cached_input, cost, reserved: Charge { tokens, cost: reserved_cost }, reserved_at })
    }
}

impl Charge {
    /// `tokens,cost` (decimal, nano-dollars): a reservation on the wire.
    pub fn to_wire(&self) -> String {
        format!("{},{}", self.tokens, self.cost)
    }

    pub fn from_wire(text: &str) -> Option<Self> {
        let [tokens, cost] = numbers(text)?;
        Some(Self { tokens, cost })
    }
}

/// Exactly `N` comma-separated decimal u64s (no signs, no spaces).
fn numbers<const N: usize>(text: &str) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    let mut parts = text.split(',');
    for slot in &mut out {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A limit already spent (the one whose window ends last, so that
/// `Retry-After` is honest), read without writing: the cheap refusal at
/// request headers, before the body names the model a reservation is
/// priced by.
pub fn spent(store: &dyn CounterStore, limits: &[MeteredLimit], now: u64) -> Option<Budget> {
    limits.iter().map(|m| current(store, &m.limit, now)).filter(|b| b.remaining == 0).max_by_key(|b| b.reset)
}

/// Whether any of the limits is past `percent` of its window (after this
/// request's reservation): the soft limit.
pub fn soft_limit_reached(store: &dyn CounterStore, limits: &[MeteredLimit], percent: u8, now: u64) -> bool {
    limits.iter().any(|m| past_soft_limit(&current(store, &m.limit, now), percent))
}

/// Whether a request needs a price before it is admitted (a dollar budget
/// applies to it).
pub fn needs_price(limits: &[MeteredLimit]) -> bool {
    limits.iter().any(|m| m.meter == Meter::Cost)
}

/// What is known of a metered request's response when it is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No response began (the client or the upstream went away first):
    /// nothing is known, the reservation stays charged.
    NoResponse,
    /// A response with this status began; `body_bytes` of it arrived
    /// (all of it, or what came before an abort).
    Response { status: u32, body_bytes: u64 },
}

/// The charge that replaces a reservation:
/// - usage the response reported (all of it, or what arrived before an
///   abort: e.g. Anthropic's `message_start` input and output so far);
/// - none reported by a 2xx response (an OpenAI stream without
///   `stream_options.include_usage`, or cut before its usage chunk): the
///   input estimate plus the body bytes that arrived / 4 as output — on
///   the high side, since SSE framing counts, so leaving usage out never
///   pays;
/// - none reported by an error response: nothing (providers do not bill
///   refused requests);
/// - no response at all: the reservation.
pub fn actual(
    outcome: Outcome,
    usage: Option<crate::core::usage::Usage>,
    price: &Price,
    reserved: Charge,
    input_estimate: u64,
) -> Charge {
    match (outcome, usage) {
        (_, Some(u)) => {
            Charge { tokens: u.input.saturating_add(u.output), cost: price.cost(u.input, u.cached_input, u.output) }
        }
        (Outcome::Response { status: 200..=299, body_bytes }, None) => {
            let output = body_bytes.div_ceil(4);
            Charge { tokens: input_estimate.saturating_add(output), cost: price.cost(input_estimate, 0, output) }
        }
        (Outcome::Response { .. }, None) => Charge::default(),
        (Outcome::NoResponse, None) => reserved,
    }
}

/// True once a budget's use reaches `percent` of its limit (a soft limit:
/// a metric and an access-log field, so operators hear before the 429).
pub fn past_soft_limit(budget: &Budget, percent: u8) -> bool {
    let used = budget.limit.saturating_sub(budget.remaining);
    u128::from(used) * 100 >= u128::from(budget.limit) * u128::from(percent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::memstore::MemStore;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_top_up_is_what_grew_for_a_limit_that_counts_it() {
        let reserved = Charge { tokens: 600, cost: 900 };
        let tm = [tokens("tm", 1_000, MINUTE)];
        let usd =
            [MeteredLimit { limit: Limit { counter: "usd".into(), limit: 10, window: MONTH }, meter: Meter::Cost }];
        let bigger = Charge { tokens: 5_600, cost: 500 };
        assert_eq!(top_up(&tm, reserved, bigger), Some(Charge { tokens: 5_000, cost: 0 }));
        assert_eq!(top_up(&usd, reserved, bigger), None, "the cost did not grow: a dollar budget asks nothing");
        assert_eq!(top_up(&usd, reserved, Charge { tokens: 1, cost: 901 }), Some(Charge { tokens: 0, cost: 1 }));
        assert_eq!(top_up(&tm, reserved, reserved), None);
        assert_eq!(top_up(&[], reserved, bigger), None);
        assert_eq!(reserved.plus(Charge { tokens: u64::MAX, cost: 1 }), Charge { tokens: u64::MAX, cost: 901 });
    }

    fn count(store: &dyn CounterStore, counter: &str) -> u64 {
        crate::core::quota::stored(store, counter).1
    }

    fn tokens(counter: &str, limit: u64, window: u64) -> MeteredLimit {
        MeteredLimit { limit: Limit { counter: counter.into(), limit, window }, meter: Meter::Tokens }
    }

    fn dollars(counter: &str, usd: u64) -> MeteredLimit {
        MeteredLimit {
            limit: Limit { counter: counter.into(), limit: usd * NANO_USD_PER_USD, window: MONTH },
            meter: Meter::Cost,
        }
    }

    #[test]
    fn cost_counts_cached_input_at_its_own_price() {
        // $2.50 / $1.25 / $10 per million tokens.
        let price = Price { input: 2_500, cached_input: 1_250, output: 10_000 };
        assert_eq!(price.cost(1_000_000, 0, 0), 2_500 * 1_000_000);
        assert_eq!(price.cost(1_000, 400, 100), 600 * 2_500 + 400 * 1_250 + 100 * 10_000);
        assert_eq!(price.cost(10, 50, 0), 10 * 1_250, "cached beyond the input is capped");
        assert_eq!(price.cost(u64::MAX, 0, u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn estimates_use_max_tokens_when_stated() {
        let price = Price { input: 1_000, cached_input: 0, output: 2_000 };
        assert_eq!(estimate(&price, 400, 50), Charge { tokens: 150, cost: 100 * 1_000 + 50 * 2_000 });
        assert_eq!(estimate(&price, 0, 700).tokens, 700);
        assert_eq!(input_estimate(401), 101);
    }

    #[test]
    fn spent_budget_refuses_and_settlement_replaces_the_reservation() {
        let store = MemStore::default();
        let limits = [tokens("tpm", 1_000, MINUTE), dollars("usd", 1)];
        let estimate = Charge { tokens: 600, cost: 300_000_000 };
        assert!(matches!(reserve(&store, &limits, estimate, 0), QuotaOutcome::Allowed(_)));
        assert_eq!(count(&store, "tpm"), 600);
        // Still below the limit: admitted, the reservation may pass it.
        assert!(matches!(reserve(&store, &limits, estimate, 1), QuotaOutcome::Allowed(Budget { remaining: 0, .. })));
        assert_eq!(count(&store, "tpm"), 1_200);
        assert!(matches!(reserve(&store, &limits, estimate, 2), QuotaOutcome::Exceeded(_)));
        assert_eq!(count(&store, "usd"), 600_000_000, "a refusal reserves nothing anywhere");
        // Both settle below their reservation: room again.
        let actual = Charge { tokens: 100, cost: 50_000_000 };
        assert!(settle(&store, &limits, estimate, actual, 0, 3));
        assert!(settle(&store, &limits, estimate, actual, 1, 3));
        assert_eq!((count(&store, "tpm"), count(&store, "usd")), (200, 100_000_000));
        assert!(matches!(reserve(&store, &limits, estimate, 4), QuotaOutcome::Allowed(_)));
    }

    #[test]
    fn a_reservation_from_an_ended_window_is_not_taken_from_the_new_one() {
        let store = MemStore::default();
        let limits = [tokens("tpm", 1_000, MINUTE)];
        let estimate = Charge { tokens: 500, cost: 0 };
        assert!(matches!(reserve(&store, &limits, estimate, 59), QuotaOutcome::Allowed(_)));
        assert!(matches!(reserve(&store, &limits, estimate, 61), QuotaOutcome::Allowed(_)));
        // The first settles in the second window: charged its actual, no credit.
        assert!(settle(&store, &limits, estimate, Charge { tokens: 20, cost: 0 }, 59, 62));
        assert_eq!(count(&store, "tpm"), 520);
        // A settlement that would go below zero stops at zero.
        assert!(settle(&store, &limits, Charge { tokens: 9_999, cost: 0 }, Charge::default(), 61, 62));
        assert_eq!(count(&store, "tpm"), 0);
    }

    #[test]
    fn spent_and_soft_limits_read_without_writing() {
        let store = MemStore::default();
        let limits = [tokens("tpm", 1_000, MINUTE), dollars("usd", 1)];
        assert_eq!(spent(&store, &limits, 0), None);
        assert!(!soft_limit_reached(&store, &limits, 80, 0));
        assert!(matches!(reserve(&store, &limits, Charge { tokens: 800, cost: 1 }, 0), QuotaOutcome::Allowed(_)));
        assert!(soft_limit_reached(&store, &limits, 80, 0));
        assert!(!soft_limit_reached(&store, &limits, 81, 0));
        assert_eq!(spent(&store, &limits, 0), None);
        assert!(matches!(reserve(&store, &limits, Charge { tokens: 300, cost: 1 }, 0), QuotaOutcome::Allowed(_)));
        // Spent: the refusal names the limit and when it resets.
        assert_eq!(spent(&store, &limits, 10), Some(Budget { limit: 1_000, remaining: 0, reset: 50 }));
        assert_eq!(count(&store, "tpm"), 1_100, "reading wrote nothing");
        assert_eq!(spent(&store, &limits, 60), None, "a new minute");
        // Both spent: the later reset is the honest Retry-After.
        let usd = [dollars("usd", 1)];
        assert!(matches!(
            reserve(&store, &usd, Charge { tokens: 0, cost: NANO_USD_PER_USD }, 10),
            QuotaOutcome::Allowed(_)
        ));
        assert_eq!(spent(&store, &limits, 10).map(|b| b.limit), Some(NANO_USD_PER_USD));
        assert!(needs_price(&limits) && !needs_price(&limits[..1]));
    }

    #[test]
    fn the_actual_charge_is_the_usage_else_what_arrived() {
        use crate::core::usage::Usage;
        let price = Price { input: 1_000, cached_input: 100, output: 4_000 };
        let reserved = Charge { tokens: 1_124, cost: 4_196_000 };
        let usage = Usage { input: 50, output: 20, cached_input: 40, ..Usage::default() };
        let ok = Outcome::Response { status: 200, body_bytes: 401 };
        assert_eq!(
            actual(ok, Some(usage), &price, reserved, 100),
            Charge { tokens: 70, cost: 10 * 1_000 + 40 * 100 + 20 * 4_000 }
        );
        // An aborted stream that reported usage so far is charged that.
        assert_eq!(
            actual(Outcome::Response { status: 200, body_bytes: 9 }, Some(usage), &price, reserved, 100).tokens,
            70
        );
        // No usage on a 2xx: the input estimate and bytes / 4 (rounded up).
        assert_eq!(actual(ok, None, &price, reserved, 100), Charge { tokens: 201, cost: 100 * 1_000 + 101 * 4_000 });
        // No usage on an error: nothing; no response at all: the reservation.
        let err = Outcome::Response { status: 429, body_bytes: 300 };
        assert_eq!(actual(err, None, &price, reserved, 100), Charge::default());
        assert_eq!(actual(Outcome::NoResponse, None, &price, reserved, 100), reserved);
    }

    #[test]
    fn wire_formats_round_trip_and_refuse_anything_else() {
        let s = Settlement {
            input: 35,
            output: 1,
            cached_input: 10,
            cost: u64::MAX,
            reserved: Charge { tokens: 600, cost: 7 },
            reserved_at: 1_790_000_000,
        };
        assert_eq!(s.to_wire(), format!("35,1,10,{},600,7,1790000000", u64::MAX));
        assert_eq!(Settlement::from_wire(&s.to_wire()), Some(s));
        assert_eq!(s.charge(), Charge { tokens: 36, cost: u64::MAX });
        let c = Charge { tokens: 612, cost: 3_000 };
        assert_eq!(Charge::from_wire(&c.to_wire()), Some(c));
        for bad in ["", "1", "1,2,3", "1,-2", "1, 2", "+1,2", "1,2,", "18446744073709551616,0", "a,b"] {
            assert_eq!(Charge::from_wire(bad), None, "{bad:?}");
        }
        assert_eq!(Settlement::from_wire("1,2,3,4,5,6"), None);
    }

    #[test]
    fn settle_delta_keeps_an_ended_windows_reservation_out_of_the_new_one() {
        let m = tokens("tpm", 1_000, MINUTE);
        let (reserved, actual) = (Charge { tokens: 500, cost: 0 }, Charge { tokens: 20, cost: 0 });
        assert_eq!(settle_delta(&m, reserved, actual, 59, 59), -480);
        assert_eq!(settle_delta(&m, reserved, actual, 59, 60), 20);
        let usd = dollars("usd", 1);
        let (reserved, actual) = (Charge { tokens: 0, cost: 9 }, Charge { tokens: 5, cost: 4 });
        assert_eq!(settle_delta(&usd, reserved, actual, 0, 100), -5);
    }

    #[test]
    fn soft_limit_is_a_share_of_the_limit() {
        let b = |remaining| Budget { limit: 1_000, remaining, reset: 1 };
        assert!(!past_soft_limit(&b(201), 80));
        assert!(past_soft_limit(&b(200), 80));
        assert!(past_soft_limit(&b(0), 100));
        assert!(!past_soft_limit(&Budget { limit: u64::MAX, remaining: 1, reset: 1 }, 100));
    }

    /// The stated bound, under real concurrency: 8 threads admit, "stream"
    /// and settle requests against one token budget until refused.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn concurrent_requests_overshoot_by_less_than_one_reservation() {
        const LIMIT: u64 = 50_000;
        const RESERVED: u64 = 700;
        let store = crate::core::memstore::SyncStore::default();
        let limits = [tokens("tpm", LIMIT, MINUTE)];
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for seed in 0..8u64 {
                let (store, limits, admitted) = (&store, &limits, &admitted);
                scope.spawn(move || {
                    let mut state = seed * 7919 + 1;
                    let reservation = Charge { tokens: RESERVED, cost: 0 };
                    while let QuotaOutcome::Allowed(_) = reserve(store, limits, reservation, 0) {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                        let actual = 1 + (state >> 33) % RESERVED; // max_tokens honoured
                        std::thread::yield_now();
                        assert!(settle(store, limits, reservation, Charge { tokens: actual, cost: 0 }, 0, 0));
                    }
                });
            }
        });
        let total = count(&store, "tpm");
        // (A thread is refused while others' reservations are outstanding,
        // so the settled total may end below the limit by up to 8 of them.)
        assert!(total >= LIMIT - 8 * RESERVED, "the budget was used: {total}");
        assert!(total < LIMIT + RESERVED, "overshoot bound: {total} ≥ {LIMIT} + {RESERVED}");
        assert!(admitted.into_inner() > LIMIT / RESERVED, "settlements gave room back");
    }
}
