//! The thin glue between Envoy and the core: the only module that calls the
//! Proxy-Wasm host. It gathers request facts, calls `core::decision::decide`
//! and applies the outcome. Bodies are read only for a credential with
//! model allowlists or token budgets (metered): its request body goes
//! through the bounded model scanner (the body held until the model is
//! known, then streamed on untouched) and its response body through the
//! usage parser, whose counts go to filter state for the access log and,
//! when metered, settle the reservation made at admission
//! (`core::budget`): at the end of the response, or when the stream is
//! destroyed early (an abort) with what arrived. In the global quota mode
//! a body that asks more than the reservation made at headers is held
//! while the guard asks the rate limit service for the difference itself
//! (`ask_top_up`, the filter's one outbound call). Nothing of a body is
//! kept beyond the scanners' bounded state, or logged.

mod host;

use crate::core::budget::{self, Charge, MeteredLimit, Outcome, Price};
use crate::core::bundle::schema::QuotaMode;
use crate::core::bundle::{self, BundleKey, Policy};
use crate::core::decision::{
    decide, is_stripped_header, Decision, OidcIdentity, RequestFacts, Subject, FORWARDED_FOR_HEADER,
};
use crate::core::errors::DenyReason;
use crate::core::models::{self, ModelRules, ModelScan, ModelScanner, Rest, DEFAULT_SCAN_BOUND};
use crate::core::newest::{self, Claim};
use crate::core::quota::{self, Budget, CounterStore, QuotaOutcome};
use crate::core::ratelimit_wire as wire;
use crate::core::usage::{self, Framing, Usage, UsageParser};
use crate::core::wipe::WipedHeaders;
use host::{Metrics, SharedCounters};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;
use zeroize::Zeroizing;

/// Environment variable of the Envoy process that holds the bundle key,
/// exposed to the VM through `vm_config.environment_variables.host_env_keys`.
pub const BUNDLE_KEY_ENV: &str = "TOKENHUB_BUNDLE_KEY";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(GuardRoot::default()) });
}}

#[derive(Default)]
struct GuardRoot {
    policy: Option<Rc<Policy>>,
    metrics: Option<Rc<Metrics>>,
    /// A delta checked without its base (see `check_without_base`): the
    /// configuration, loaded in full on the first request, if one comes.
    deferred: std::cell::RefCell<Deferred>,
}

#[derive(Default)]
enum Deferred {
    #[default]
    No,
    Pending(Vec<u8>, u64),
    Loaded(Option<Rc<Policy>>),
}

impl Context for GuardRoot {}

impl RootContext for GuardRoot {
    /// Returns false only for what fails the same way every time for the
    /// same file (it cannot be opened, parsed or validated). Envoy caches a
    /// configuration's first (main-thread) result and, when a worker VM's
    /// configure later fails, runs that worker WITHOUT the filter — fail
    /// open. So everything that depends on state (rollback, shared data)
    /// returns true and serves the safe policy instead: the newest one, or
    /// none (503).
    fn on_configure(&mut self, _size: usize) -> bool {
        self.metrics = match Metrics::define() {
            Ok(m) => Some(Rc::new(m)),
            Err(e) => {
                log::error!("tokenhub guard: cannot define metrics ({e}); serving without them");
                None
            }
        };
        let config = self.get_plugin_configuration().unwrap_or_default();
        if config.iter().all(u8::is_ascii_whitespace) {
            self.policy = self.without_bundle().map(Rc::new);
            return true;
        }
        let key = match bundle_key() {
            Ok(key) => key,
            Err(reason) => return self.reject(&reason),
        };
        // Kept where a VM that must fall back to it finds it (host memory,
        // once per process), before opening consumes the bytes.
        let fingerprint = bundle::delta::fingerprint(&config);
        if !newest::stage(&SharedCounters, &fingerprint, &config) {
            log::warn!(
                "tokenhub guard: cannot keep the sealed bundle in shared data; a rollback could not fall back to it"
            );
        }
        if let Some(checked) = check_without_base(&config, &key) {
            return match checked {
                Ok(policy) => {
                    let version = policy.version;
                    self.policy = self.admit(policy, &fingerprint, &key).map(Rc::new);
                    if self.policy.as_ref().is_some_and(|p| p.version == version) {
                        log::info!("tokenhub guard: delta version {version} checked without loading its base here (loaded on this VM's first request, if any)");
                        *self.deferred.borrow_mut() = Deferred::Pending(config, version);
                    }
                    true
                }
                Err(reason) => {
                    newest::discard(&SharedCounters, &fingerprint);
                    self.reject(&reason)
                }
            };
        }
        // A delta the main thread may have accepted without decrypting its
        // base (`check_without_base`): failing here must not return false,
        // or Envoy would run this worker without the filter.
        let checked_elsewhere = on_summarized_base(&config);
        match load_policy(config, &key) {
            Ok(policy) => {
                self.policy = self.admit(policy, &fingerprint, &key).map(Rc::new);
                true
            }
            Err(reason) if checked_elsewhere => {
                log::error!(
                    "tokenhub guard: bundle rejected ({reason}); refusing every request (503) until the next bundle"
                );
                self.policy = None;
                true
            }
            Err(reason) => {
                newest::discard(&SharedCounters, &fingerprint);
                self.reject(&reason)
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(GuardHttp {
            policy: self.serving_policy(),
            metrics: self.metrics.clone(),
            budget: None,
            body: None,
            meter: None,
            metered: None,
            pending: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl GuardRoot {
    /// The policy requests run against: a deferred delta's full load
    /// happens here, once (503 if it fails: never the checked policy,
    /// which lacks the base's keys).
    fn serving_policy(&self) -> Option<Rc<Policy>> {
        let mut deferred = self.deferred.borrow_mut();
        match std::mem::take(&mut *deferred) {
            Deferred::No => self.policy.clone(),
            Deferred::Loaded(policy) => {
                *deferred = Deferred::Loaded(policy.clone());
                policy
            }
            Deferred::Pending(config, version) => {
                let loaded = bundle_key().and_then(|key| load_policy(config, &key));
                let policy = match loaded {
                    Ok(p) if p.version == version => Some(Rc::new(p)),
                    Ok(_) => None,
                    Err(reason) => {
                        log::error!("tokenhub guard: bundle version {version} could not be loaded in full ({reason}); refusing every request until the next bundle");
                        None
                    }
                };
                *deferred = Deferred::Loaded(policy.clone());
                policy
            }
        }
    }

    fn reject(&self, reason: &str) -> bool {
        log::error!("tokenhub guard: bundle rejected, the previous one keeps serving: {reason}");
        if let Some(m) = &self.metrics {
            m.bundle_rejected();
        }
        false
    }

    /// An empty configuration: Envoy's default before anything is published
    /// (serve 503), or an emptied ECDS file, which must not drop a bundle
    /// this Envoy already enforces (keep serving the newest).
    fn without_bundle(&self) -> Option<Policy> {
        let newest = match newest::newest(&SharedCounters) {
            Ok(None) => {
                log::warn!(
                    "tokenhub guard: no policy bundle configured; every request is refused with 503 until one is published"
                );
                return None;
            }
            Ok(Some(newest)) => newest,
            Err(newest::Unreadable) => {
                log::error!("tokenhub guard: {UNREADABLE}");
                return None;
            }
        };
        log::error!("tokenhub guard: empty configuration refused; serving version {}", newest.version);
        if let Some(m) = &self.metrics {
            m.bundle_rejected();
        }
        let policy = newest_policy(&bundle_key().ok()?)?;
        ensure_quota_counters(&policy, self.metrics.as_deref()).ok()?;
        if let Some(m) = &self.metrics {
            m.bundle_loaded(policy.version);
        }
        Some(policy)
    }

    /// Applies the state-dependent checks to a valid bundle: refuses a
    /// rollback by serving the newest bundle this Envoy has accepted, and
    /// creates the quota counters. `None` = serve 503.
    fn admit(&self, policy: Policy, fingerprint: &newest::Fingerprint, key: &BundleKey) -> Option<Policy> {
        let policy = match newest::claim(&SharedCounters, policy.version, fingerprint) {
            Claim::Serve => policy,
            Claim::Rollback(newest) => {
                newest::discard(&SharedCounters, fingerprint);
                log::error!(
                    "tokenhub guard: bundle version {} is older than version {} already loaded (rollback refused); serving version {}",
                    policy.version,
                    newest.version,
                    newest.version
                );
                if let Some(m) = &self.metrics {
                    m.bundle_rejected();
                }
                drop(policy);
                newest_policy(key)?
            }
            Claim::Unreadable => {
                log::error!("tokenhub guard: bundle version {} not loaded: {UNREADABLE}", policy.version);
                if let Some(m) = &self.metrics {
                    m.bundle_rejected();
                }
                return None;
            }
        };
        if let Err(reason) = ensure_quota_counters(&policy, self.metrics.as_deref()) {
            log::error!("tokenhub guard: {reason}; refusing every request until the next bundle");
            return None;
        }
        log::info!(
            "tokenhub guard: bundle version {} loaded ({} tenants, {} keys, {} providers)",
            policy.version,
            policy.tenants.len(),
            policy.keys.len(),
            policy.providers.len()
        );
        if let Some(m) = &self.metrics {
            m.bundle_loaded(policy.version);
        }
        Some(policy)
    }
}

fn bundle_key() -> Result<BundleKey, String> {
    let key_text = std::env::var(BUNDLE_KEY_ENV).map_err(|_| {
        format!("{BUNDLE_KEY_ENV} is not set in Envoy's environment or not listed in vm_config.environment_variables.host_env_keys")
    })?;
    BundleKey::from_base64(&key_text).map_err(|e| format!("{BUNDLE_KEY_ENV}: {e}"))
}

thread_local! {
    /// The base bundle this VM last loaded (its record table is shared with
    /// the policy): a delta on it is applied without loading it again.
    /// Envoy keeps a worker's VM across bundle updates (a new root context
    /// each time), so this outlives `GuardRoot`.
    static BASE: std::cell::RefCell<Option<bundle::delta::Base>> = const { std::cell::RefCell::new(None) };
}

/// Shared-data key of the summary of the base the process last loaded
/// (`delta::BaseSummary`).
const BASE_SUMMARY_KEY: &str = "tokenhub.bundle.base";

/// A delta on a base this VM does not hold but this process has loaded
/// (the main thread's fresh validation VM, on every update): checked
/// against the base's summary without decrypting the base. `None`: load
/// normally.
fn check_without_base(config: &[u8], key: &BundleKey) -> Option<Result<Policy, String>> {
    let (_, base) = bundle::delta::split(config)?.ok()?;
    let fingerprint = bundle::seal::fingerprint(base);
    if BASE.with(|b| b.borrow().as_ref().is_some_and(|c| c.fingerprint == fingerprint)) {
        return None;
    }
    let summary = SharedCounters.get(BASE_SUMMARY_KEY).0?;
    let summary: bundle::delta::BaseSummary = serde_json::from_slice(&summary).ok()?;
    bundle::delta::check_deferred(config, key, &summary).map(|checked| checked.map_err(|e| e.to_string()))
}

/// Whether `config` is a delta on the base whose summary is in shared data.
fn on_summarized_base(config: &[u8]) -> bool {
    let Some(Ok((_, base))) = bundle::delta::split(config) else { return false };
    let summary = SharedCounters.get(BASE_SUMMARY_KEY).0.unwrap_or_default();
    serde_json::from_slice::<bundle::delta::BaseSummary>(&summary)
        .is_ok_and(|s| s.fingerprint == crate::core::secret::to_hex(&bundle::seal::fingerprint(base)))
}

/// Opens and compiles the bundle (decrypted where it lies), or a delta on
/// its base (the cached one when it matches). The error names the problem
/// and never contains bundle content.
fn load_policy(config: Vec<u8>, key: &BundleKey) -> Result<Policy, String> {
    let cached = BASE.with(|b| b.borrow().clone());
    let (policy, base) = bundle::delta::load(config, key, cached.as_ref()).map_err(|e| e.to_string())?;
    if cached.as_ref().is_some_and(|c| std::sync::Arc::ptr_eq(&c.table, &base.table)) && policy.version != base.version
    {
        log::info!(
            "tokenhub guard: delta version {} applied on base version {} held by this VM ({} key records not loaded again)",
            policy.version,
            base.version,
            base.table.len()
        );
    }
    if cached.is_none_or(|c| c.fingerprint != base.fingerprint) {
        // A base loaded in full: later fresh VMs check deltas against it.
        if let Ok(summary) = serde_json::to_vec(&base.summary()) {
            let _ = SharedCounters.set(BASE_SUMMARY_KEY, &summary, 0);
        }
    }
    BASE.with(|b| *b.borrow_mut() = Some(base));
    Ok(policy)
}

/// Why no bundle is served when the newest-bundle record is unreadable.
const UNREADABLE: &str = "the record of the newest accepted bundle in shared data is unreadable, so no bundle can be checked for rollback; refusing every request (503) until Envoy restarts";

/// The newest accepted bundle, kept sealed in shared data; `None` (serve
/// 503) if it is gone, no longer opens or is not the expected version.
fn newest_policy(key: &BundleKey) -> Option<Policy> {
    let found = newest::newest_sealed(&SharedCounters, bundle::delta::fingerprint).ok().flatten();
    match found.map(|(newest, sealed)| (newest, load_policy(sealed, key))) {
        Some((newest, Ok(p))) if p.version == newest.version => Some(p),
        _ => {
            log::error!("tokenhub guard: the newest bundle is unavailable; refusing every request until the next one");
            None
        }
    }
}

/// Creates every quota counter the policy can use, before any worker serves
/// it (see `quota::ensure_counters`), and reports how many exist.
fn ensure_quota_counters(policy: &Policy, metrics: Option<&Metrics>) -> Result<(), String> {
    // Global mode: the rate limit service keeps the counters, not the guard.
    let counters = if policy.quota_mode == QuotaMode::Local { quota::all_counters(policy) } else { Vec::new() };
    let count = quota::ensure_counters(&SharedCounters, counters)
        .map_err(|_| "cannot create quota counters in shared data".to_string())?;
    if let Some(m) = metrics {
        m.quota_counters(count);
    }
    Ok(())
}

/// A request refused by its quotas: over a limit (429), a token or dollar
/// budget already spent (429), or the counters could not be read or
/// written (fail closed, 503).
enum QuotaRefusal {
    Exceeded(Budget),
    Spent(Budget),
    Unavailable,
    /// Global mode: a dollar budget applies and the provider has no price
    /// to reserve by.
    NotPriced,
}

/// Global mode: the reservation the rate limit service makes at request
/// headers (`core::budget`), before the body is read — Envoy's `ratelimit`
/// filter asks as soon as the guard lets the headers on, and the guard
/// cannot hold them and still read the body. So the input is estimated
/// from `content-length` (0 for a chunked body), the output is the
/// bundle's default (a `max_tokens` in the body is not known yet) and a
/// dollar budget's share is priced at the provider's highest prices (the
/// model is not known yet). Once the body is read, a larger estimate (its
/// `max_tokens`, a body longer than `content-length` said) is topped up by
/// the guard itself (`GuardHttp::ask_top_up`, `core::ratelimit_wire`).
/// `None`: a dollar budget applies and the provider has no price at all
/// (refused, as `model_not_priced`).
fn global_reservation(
    policy: &Policy,
    provider: usize,
    metered: &[MeteredLimit],
    content_length: Option<u64>,
) -> Option<Charge> {
    let price = policy.highest_price(provider);
    if price.is_none() && budget::needs_price(metered) {
        return None;
    }
    let estimate =
        budget::estimate(&price.unwrap_or_default(), content_length.unwrap_or(0), policy.default_output_tokens);
    Some(estimate)
}

struct GuardHttp {
    policy: Option<Rc<Policy>>,
    metrics: Option<Rc<Metrics>>,
    /// The tightest quota budget after this request, echoed on the response.
    budget: Option<Budget>,
    /// A credential with model allowlists: its request body's scan.
    body: Option<BodyCheck>,
    /// Its response's usage, once the response is JSON or SSE.
    meter: Option<Meter>,
    /// A credential with token or dollar budgets: its reservation.
    metered: Option<Box<Metered>>,
    /// Global mode: a top-up asked of the rate limit service, the request
    /// body held until it answers.
    pending: Option<TopUp>,
}

/// A body-time top-up in flight (`GuardHttp::ask_top_up`).
struct TopUp {
    /// The gRPC call's token.
    token: u32,
    /// What it reserves beyond the reservation so far.
    extra: Charge,
    /// Count the request as allowed once admitted (its model was decided
    /// in the same body callback).
    count_allowed: bool,
}

/// A metered request (local quota mode): the reservation made at
/// admission, and what the response has shown so far.
struct Metered {
    limits: Vec<MeteredLimit>,
    /// `Policy::providers` index the request is routed to (prices are per provider).
    provider: usize,
    /// The request's `content-length`, when it states one.
    content_length: Option<u64>,
    /// Input tokens estimated from the body size.
    input_estimate: u64,
    /// The body size the estimate counted.
    body_bytes: u64,
    /// The output cap the reservation counts (`None`: the default).
    output_cap: Option<u64>,
    /// The reservation and when it was made; `None` until the body named
    /// its model (or had none).
    reserved: Option<(Charge, u64)>,
    /// The price of the model the request named.
    requested_price: Option<Price>,
    /// The response status, once the response began.
    status: Option<u32>,
    response_bytes: u64,
    settled: bool,
    /// Global quota mode: the rate limit service reserved at admission and
    /// settles from the filter state `settle` writes.
    global: bool,
    /// Global mode: the descriptor's identity entries as Envoy's actions
    /// build them (tenant, sub_account, key_id when present), for the top-up.
    identity: Vec<(&'static str, String)>,
    /// Global mode: the body-time top-ups the service admitted (part of
    /// `reserved`) and when the last was made.
    topped_up: Option<(Charge, u64)>,
    /// Global mode: a top-up's answer said the soft limit was passed (the
    /// metric and the access-log field once, whichever answer says it).
    soft_marked: bool,
    /// What `settle` charged (its cost goes to the usage metrics).
    charged: Option<Charge>,
}

/// The request body of a credential with model allowlists.
struct BodyCheck {
    rules: [Option<ModelRules>; 3],
    scanner: ModelScanner,
    /// Body bytes already scanned (Envoy buffers while the filter pauses).
    scanned: usize,
    /// The allowed model, once decided (the rest streams through).
    decided: Option<String>,
    /// Decided without a model (a metered request whose body names none,
    /// and no model rules): the rest streams through unread.
    passed: bool,
    /// For the usage metrics: the tenant's id and the provider's index.
    tenant: String,
    provider: usize,
}

struct Meter {
    parser: UsageParser,
    /// What the filter state says so far (written only when it changes).
    written: Option<Usage>,
    model_written: bool,
    /// Counted in the usage metrics (once).
    counted: bool,
}

impl Context for GuardHttp {
    /// The rate limit service's answer to a top-up (`ask_top_up`): OK
    /// adds it to the reservation and lets the body on; OVER_LIMIT refuses
    /// as a spent budget (429 with the service's `retry-after` and
    /// `ratelimit-*`); anything else (the call failed, timed out, or the
    /// answer is unreadable) fails closed with 503 `filter_fault`, as a
    /// counter the guard cannot read does in local mode.
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if self.pending.as_ref().is_none_or(|p| p.token != token_id) {
            return;
        }
        let Some(asked) = self.pending.take() else { return };
        let answer = match status_code {
            0 => self.get_grpc_call_response_body(0, response_size).and_then(|b| wire::decode_response(&b)),
            _ => None,
        };
        match answer {
            Some(wire::Answer { code: wire::Code::Ok, headers }) => {
                let soft = headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(budget::SOFT_LIMIT_HEADER));
                if let (true, Some(m)) = (soft, &mut self.metered) {
                    if !std::mem::replace(&mut m.soft_marked, true) {
                        self.mark_soft_limit();
                    }
                }
                let now = host::unix_now(self);
                if let Some(m) = &mut self.metered {
                    if let Some((reserved, _)) = &mut m.reserved {
                        *reserved = reserved.plus(asked.extra);
                    }
                    m.topped_up = Some((m.topped_up.map_or_else(Charge::default, |t| t.0).plus(asked.extra), now));
                }
                // A cap that arrived while the service was asked may need more.
                if self.ask_top_up(asked.count_allowed).is_some() {
                    return;
                }
                if let (true, Some(m)) = (asked.count_allowed, &self.metrics) {
                    m.allowed();
                }
                self.resume_http_request();
            }
            Some(wire::Answer { code: wire::Code::OverLimit, headers }) => {
                let extra: Vec<(&str, String)> = headers
                    .iter()
                    .filter(|(name, _)| !name.eq_ignore_ascii_case("content-type"))
                    .map(|(name, value)| (name.as_str(), value.clone()))
                    .collect();
                self.deny_with(DenyReason::BudgetExceeded, &extra);
            }
            _ => {
                log::warn!(
                    "tokenhub guard: the rate limit service (cluster {:?}) did not answer a budget top-up (gRPC status {status_code}); refusing (503)",
                    wire::CLUSTER
                );
                self.deny(DenyReason::FilterFault);
            }
        }
    }
}

impl HttpContext for GuardHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Holds the client's credential: zeroed when dropped.
        let headers = WipedHeaders::new(self.get_http_request_headers_bytes());
        let view: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let Some(policy) = self.policy.clone() else {
            // No identity is known: the access log must not see a client's
            // claimed tenant either.
            self.strip(&view, &[]);
            host::set_logged_client(self, None, host::source_ip(self));
            return self.deny(DenyReason::NoBundle);
        };
        #[cfg(feature = "fault-injection")]
        fault_injection::maybe_trap(&view);
        let pseudo = |name: &str| {
            view.iter().find(|(n, _)| *n == name).and_then(|(_, v)| std::str::from_utf8(v).ok()).unwrap_or("")
        };
        // Only bundles that map OIDC principals pay for reading the JWT claims.
        let jwt = if policy.oidc_claims.is_empty() { None } else { host::jwt_claims(self, &policy.oidc_claims) };
        let claim_view: Vec<(&str, &str)> =
            jwt.as_ref().map(|j| j.claims.iter().map(|(c, v)| (c.as_str(), v.as_str())).collect()).unwrap_or_default();
        let facts = RequestFacts {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers: &view,
            source: host::source_ip(self),
            now: host::unix_now(self),
            oidc: jwt.as_ref().map(|j| OidcIdentity { issuer: &j.issuer, claims: &claim_view }),
        };
        // Client-sent credentials and identity headers go on every path, so
        // neither the upstream nor the access log ever sees a claimed tenant.
        let decision = decide(&policy, &facts);
        host::set_logged_client(self, decision.tenant(), facts.source);
        match decision {
            Decision::Allow(grant) => {
                // Token and dollar budgets. An empty list on the
                // headers-only path: no allocation, no host call.
                let metered = budget::metered_limits_for(
                    grant.subject.credential.key(),
                    grant.subject.sub_account,
                    grant.subject.tenant,
                );
                let global = policy.quota_mode == QuotaMode::Global;
                // Global mode: Envoy's rate limit filter after the guard
                // counts, from the identity headers set below, and the
                // budgets from the reservation in filter state.
                // Read for metered requests only (the header-only path skips it).
                let content_length: Option<u64> =
                    if metered.is_empty() { None } else { pseudo("content-length").trim().parse().ok() };
                let header_estimate = match metered.is_empty() || !global {
                    true => None,
                    false => Some(global_reservation(&policy, grant.provider, &metered, content_length)),
                };
                let charged = match (metered.is_empty(), policy.quota_mode) {
                    (false, QuotaMode::Local)
                        if let Some(spent) = budget::spent(&SharedCounters, &metered, facts.now) =>
                    {
                        Err(QuotaRefusal::Spent(spent))
                    }
                    (_, QuotaMode::Local) => self.charge_quota(&grant.subject, facts.now),
                    (_, QuotaMode::Global) if matches!(header_estimate, Some(None)) => Err(QuotaRefusal::NotPriced),
                    (_, QuotaMode::Global) => Ok(()),
                };
                if let Err(refusal) = charged {
                    self.strip(&view, &[]);
                    self.set_identity(&grant.subject);
                    return match refusal {
                        QuotaRefusal::Exceeded(budget) => self.deny_quota(DenyReason::QuotaExceeded, budget),
                        QuotaRefusal::Spent(budget) => self.deny_quota(DenyReason::BudgetExceeded, budget),
                        QuotaRefusal::Unavailable => self.deny(DenyReason::FilterFault),
                        QuotaRefusal::NotPriced => self.deny(DenyReason::ModelNotPriced),
                    };
                }
                // What is about to be overwritten needs no separate removal
                // (one host call fewer per header, on every allowed request).
                let forwarded_for = grant.subject.forwarded_for(facts.source);
                let mut overwritten = [grant.inject.0; 7];
                for (slot, (name, _)) in overwritten.iter_mut().zip(grant.subject.identity_headers()) {
                    *slot = name;
                }
                if forwarded_for.is_some() {
                    overwritten[6] = FORWARDED_FOR_HEADER;
                }
                self.strip(&view, &overwritten);
                let inject = [(grant.inject.0, Some(grant.inject.1))];
                let forward = forwarded_for.as_deref().map(|a| (FORWARDED_FOR_HEADER, Some(a)));
                self.put_headers(&view, grant.subject.identity_headers().into_iter().chain(inject).chain(forward));
                if let Some(Some(estimate)) = header_estimate {
                    // For the rate limit service (`budget_reserve`), which
                    // refuses or reserves before the body is read.
                    self.set_property(vec![budget::RESERVE_STATE], Some(estimate.to_wire().as_bytes()));
                }
                if !metered.is_empty() {
                    self.metered = Some(Box::new(Metered {
                        limits: metered,
                        provider: grant.provider,
                        content_length,
                        input_estimate: 0,
                        body_bytes: 0,
                        output_cap: None,
                        // Without a body nothing is generated: a zero
                        // reservation, settled by any usage reported.
                        // Global mode: the service reserved the estimate.
                        reserved: match header_estimate {
                            Some(Some(estimate)) => Some((estimate, facts.now)),
                            _ => end_of_stream.then_some((Charge::default(), facts.now)),
                        },
                        global,
                        identity: match global {
                            true => [wire::TENANT_ENTRY, wire::SUB_ACCOUNT_ENTRY, wire::KEY_ID_ENTRY]
                                .into_iter()
                                .zip(grant.subject.identity_headers())
                                .filter_map(|(entry, (_, value))| Some((entry, value?.to_string())))
                                .collect(),
                            false => Vec::new(),
                        },
                        topped_up: None,
                        soft_marked: false,
                        requested_price: None,
                        status: None,
                        response_bytes: 0,
                        settled: false,
                        charged: None,
                    }));
                }
                if grant.needs_model() || self.metered.is_some() {
                    // Only now is the body read. Proxy-Wasm cannot hold the
                    // headers and still see the body (a paused
                    // on_request_headers gets no body callbacks), so the
                    // headers go on and the body is held (buffered by
                    // Envoy) until the model is known; a refusal then
                    // answers locally and resets the upstream request,
                    // which never received a byte of the body. A request
                    // without a body names no model (GET /v1/models…): it
                    // goes on as any other.
                    if !end_of_stream {
                        self.body = Some(BodyCheck {
                            rules: grant.model_rules().map(Clone::clone),
                            scanner: ModelScanner::new(DEFAULT_SCAN_BOUND),
                            scanned: 0,
                            decided: None,
                            passed: false,
                            tenant: grant.subject.tenant.id.clone(),
                            provider: grant.provider,
                        });
                        return Action::Continue;
                    }
                }
                if let Some(m) = &self.metrics {
                    m.allowed();
                }
                Action::Continue
            }
            Decision::Deny(denial) => {
                self.strip(&view, &[]);
                for (name, value) in denial.identity_headers().into_iter().flatten() {
                    self.set_http_request_header(name, value);
                }
                self.deny(denial.reason)
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.pending.is_some() {
            return self.while_topping_up(body_size);
        }
        let Some(check) = &mut self.body else { return Action::Continue };
        if check.passed {
            return Action::Continue;
        }
        if check.decided.is_some() {
            // Streaming on: each callback holds only its own chunk.
            let chunk = Zeroizing::new(self.get_http_request_body(0, body_size).unwrap_or_default());
            let rest = self.body.as_mut().map_or(Rest::Fine, |c| c.scanner.check_rest(&chunk));
            return match rest {
                Rest::Fine => {
                    self.revise_reservation();
                    // Global mode: a cap stated after the model's chunk.
                    if let Some(held) = self.ask_top_up(false) {
                        if let Some(check) = &mut self.body {
                            // Envoy now buffers: later callbacks hold this chunk too.
                            check.scanned = body_size;
                        }
                        return held;
                    }
                    Action::Continue
                }
                Rest::DuplicateModel => self.deny(DenyReason::ModelUnreadable),
            };
        }
        let start = check.scanned;
        let new =
            Zeroizing::new(self.get_http_request_body(start, body_size.saturating_sub(start)).unwrap_or_default());
        let Some(check) = &mut self.body else { return Action::Continue };
        check.scanned = body_size;
        let mut scan = check.scanner.feed(&new);
        if scan == ModelScan::NeedMore && end_of_stream {
            scan = check.scanner.finish();
        }
        let levels = [&check.rules[0], &check.rules[1], &check.rules[2]];
        let verdict = match models::verdict(&levels, &scan) {
            // Metered only: a body without a readable model is priced by
            // nothing (refused below if a dollar budget needs a price).
            Some(Err(DenyReason::ModelUnreadable)) if !models::any_rules(&levels) => Some(Ok(())),
            other => other,
        };
        match verdict {
            None => Action::Pause,
            Some(Err(reason)) => self.deny(reason),
            Some(Ok(())) => {
                let model = match scan {
                    ModelScan::Found(model) => Some(model),
                    _ => None,
                };
                if let Err(refused) = self.reserve(model.as_deref(), body_size as u64) {
                    return refused;
                }
                if let Some(check) = &mut self.body {
                    check.passed = model.is_none();
                    check.decided = model;
                }
                if let Some(held) = self.ask_top_up(true) {
                    return held;
                }
                if let Some(m) = &self.metrics {
                    m.allowed();
                }
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.metered.as_ref().is_some_and(|m| m.global) {
            self.service_refusal();
        }
        let reserved = self.metered.as_ref().is_some_and(|m| m.reserved.is_some());
        // Metered: the requests whose body was read for their model, and
        // those with a budget reservation.
        if reserved || self.body.as_ref().is_some_and(|c| c.decided.is_some()) {
            // (One map read: proxy_get_header_map_value is not among the
            // allowed capabilities.)
            let headers = self.get_http_response_headers_bytes();
            let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v));
            let framing = value("content-type").and_then(|v| Framing::from_content_type(&v));
            // Global mode: the rate limit service's soft-limit signal.
            let soft = value(budget::SOFT_LIMIT_HEADER).is_some() && self.metered.as_ref().is_some_and(|m| m.global);
            if soft {
                // The header is meant for the guard only.
                if !self.metered.as_ref().is_some_and(|m| m.soft_marked) {
                    self.mark_soft_limit();
                }
                self.set_http_response_header(budget::SOFT_LIMIT_HEADER, None);
            }
            if let Some(m) = &mut self.metered {
                m.status = Some(value(":status").and_then(|v| v.parse().ok()).unwrap_or(0));
            }
            self.meter = framing.map(|f| Meter {
                parser: UsageParser::new(f),
                written: None,
                model_written: false,
                counted: false,
            });
            let requested = self.body.as_ref().and_then(|c| c.decided.as_deref()).and_then(usage::loggable_model);
            if let (Some(_), Some(name)) = (&self.meter, requested) {
                self.set_property(vec!["tokenhub_model"], Some(name.as_bytes()));
            }
        }
        if let Some(budget) = self.budget {
            for (name, value) in quota::rate_limit_headers(budget) {
                self.set_http_response_header(name, Some(&value));
            }
        }
        if end_of_stream {
            self.settle(true);
            self.count_usage();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.meter.is_none() && self.metered.is_none() {
            return Action::Continue;
        }
        if let Some(m) = &mut self.metered {
            m.response_bytes = m.response_bytes.saturating_add(body_size as u64);
        }
        if self.meter.is_some() {
            let chunk = Zeroizing::new(self.get_http_response_body(0, body_size).unwrap_or_default());
            if let Some(meter) = &mut self.meter {
                meter.parser.feed(&chunk);
            }
            // Written as soon as known, so an aborted stream logs what arrived.
            self.record_usage();
        }
        if end_of_stream {
            self.settle(true);
            self.count_usage();
        }
        Action::Continue
    }
}

/// A stream ends early (the client or the upstream aborted): Envoy deletes
/// the context (`proxy_on_delete`, already entered for every stream, so
/// this costs the headers-only path nothing), and the reservation is
/// settled with what arrived. A completed response was settled already.
impl Drop for GuardHttp {
    fn drop(&mut self) {
        self.settle(false);
        self.count_usage();
    }
}

/// Test builds only (`--features fault-injection`, never shipped): a
/// request carrying `x-tokenhub-test-fault: panic` traps the VM, so the
/// fault tests can show what Envoy's failure policy does with a real trap.
#[cfg(feature = "fault-injection")]
mod fault_injection {
    #[allow(clippy::panic)]
    pub fn maybe_trap(headers: &[(&str, &[u8])]) {
        if headers.iter().any(|(n, v)| *n == "x-tokenhub-test-fault" && *v == b"panic") {
            panic!("fault injection: trap requested");
        }
    }
}

impl GuardHttp {
    /// Model and token counts into filter state for the access log
    /// (`%FILTER_STATE(wasm.tokenhub_input_tokens:PLAIN)%`…): numbers and a
    /// model name only, written when they change.
    fn record_usage(&mut self) {
        let Some(meter) = &mut self.meter else { return };
        let current = meter.parser.usage();
        let usage_changed = current.is_some() && current != meter.written;
        meter.written = current.or(meter.written);
        // The provider's name for the model replaces the one asked for
        // (written when the response began), once.
        let model = match (meter.model_written, meter.parser.model()) {
            (false, Some(m)) => Some(m.to_string()),
            _ => None,
        };
        meter.model_written |= model.is_some();
        if let Some(name) = model.as_deref().and_then(usage::loggable_model) {
            self.set_property(vec!["tokenhub_model"], Some(name.as_bytes()));
        }
        if let (true, Some(u)) = (usage_changed, current) {
            for (name, value) in [
                ("tokenhub_input_tokens", u.input),
                ("tokenhub_output_tokens", u.output),
                ("tokenhub_cached_tokens", u.cached_input),
                ("tokenhub_reasoning_tokens", u.reasoning),
            ] {
                self.set_property(vec![name], Some(value.to_string().as_bytes()));
            }
        }
    }

    /// Removes the client's credential and every `x-tokenhub-*` header
    /// (any case, `_` spellings too) except those in `overwritten`, which
    /// the caller sets next.
    fn strip(&self, headers: &[(&str, &[u8])], overwritten: &[&str]) {
        for (name, _) in headers.iter().filter(|(n, _)| is_stripped_header(n) && !overwritten.contains(n)) {
            self.set_http_request_header(name, None);
        }
    }

    /// The headers of an allowed request (`None`: must be absent), each
    /// with the cheapest host call: an append where the request does not
    /// carry it (Envoy then neither looks it up nor removes it first: about
    /// 1 700 instructions fewer per header, measured), a replace where it
    /// does. `present`: the request's headers as read (names lower case).
    fn put_headers<'a>(
        &self,
        present: &[(&str, &[u8])],
        headers: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) {
        for (name, value) in headers {
            let sent = present.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
            match (value, sent) {
                (Some(value), false) => self.add_http_request_header(name, value),
                (value, true) => self.set_http_request_header(name, value),
                (None, false) => {}
            }
        }
    }

    /// The authoritative identity headers for the access log on a refused
    /// request (always the same host calls, known owner or not).
    fn set_identity(&self, subject: &Subject<'_>) {
        for (name, value) in subject.identity_headers() {
            self.set_http_request_header(name, value);
        }
    }

    /// Counts the request against its quotas; why it is refused, if it is.
    fn charge_quota(&mut self, subject: &Subject<'_>, now: u64) -> Result<(), QuotaRefusal> {
        let limits = quota::limits_for(subject.credential.key(), subject.sub_account, subject.tenant);
        match quota::consume(&SharedCounters, &limits, now) {
            QuotaOutcome::Unlimited => Ok(()),
            QuotaOutcome::Allowed(budget) => {
                self.budget = Some(budget);
                Ok(())
            }
            QuotaOutcome::Exceeded(budget) => Err(QuotaRefusal::Exceeded(budget)),
            QuotaOutcome::Unavailable => Err(QuotaRefusal::Unavailable),
        }
    }

    /// Sends the JSON error and stops the request. The reason goes to a
    /// counter and to filter state (for the access log), nowhere else.
    fn deny(&mut self, reason: DenyReason) -> Action {
        self.deny_with(reason, &[])
    }

    /// 429 with `Retry-After` and the RateLimit fields of the exhausted
    /// limit (requests, tokens, or nano-dollars for a dollar budget).
    fn deny_quota(&mut self, reason: DenyReason, budget: Budget) -> Action {
        self.deny_with(reason, &quota::refusal_headers(budget))
    }

    /// Admission of a metered request, once its body named its model (or
    /// none): the estimate is reserved in every budget, or the request is
    /// refused (the `Err` is the action to return).
    fn reserve(&mut self, model: Option<&str>, body_bytes: u64) -> Result<(), Action> {
        let Some(policy) = self.policy.clone() else { return Ok(()) };
        let Some(m) = &mut self.metered else { return Ok(()) };
        if m.global {
            // The service reserved at request headers: only what settling
            // needs, and the model's price (a dollar budget needs one).
            let price = model.and_then(|name| policy.price_for(m.provider, name));
            let body_bytes = m.content_length.unwrap_or(0).max(body_bytes);
            m.input_estimate = budget::input_estimate(body_bytes);
            m.body_bytes = body_bytes;
            m.requested_price = price;
            if price.is_none() && budget::needs_price(&m.limits) {
                return Err(self.deny(DenyReason::ModelNotPriced));
            }
            return Ok(());
        }
        if m.reserved.is_some() {
            return Ok(());
        }
        let price = model.and_then(|name| policy.price_for(m.provider, name));
        if price.is_none() && budget::needs_price(&m.limits) {
            return Err(self.deny(DenyReason::ModelNotPriced));
        }
        let now = host::unix_now(self);
        // The output cap the body stated so far (`max_tokens`… before the
        // model, or after it in the same chunk), else the bundle's default;
        // one stated later revises the reservation (`revise_reservation`).
        let cap = self.body.as_ref().and_then(|c| c.scanner.max_output());
        let Some(m) = &mut self.metered else { return Ok(()) };
        let body_bytes = m.content_length.unwrap_or(0).max(body_bytes);
        m.output_cap = cap;
        let estimate =
            budget::estimate(&price.unwrap_or_default(), body_bytes, cap.unwrap_or(policy.default_output_tokens));
        m.input_estimate = budget::input_estimate(body_bytes);
        m.body_bytes = body_bytes;
        m.requested_price = price;
        match budget::reserve(&SharedCounters, &m.limits, estimate, now) {
            QuotaOutcome::Allowed(_) | QuotaOutcome::Unlimited => {
                m.reserved = Some((estimate, now));
                if budget::soft_limit_reached(&SharedCounters, &m.limits, policy.soft_limit_percent, now) {
                    self.mark_soft_limit();
                }
                Ok(())
            }
            QuotaOutcome::Exceeded(b) => Err(self.deny_quota(DenyReason::BudgetExceeded, b)),
            QuotaOutcome::Unavailable => Err(self.deny(DenyReason::FilterFault)),
        }
    }

    /// Global mode, once the body is read: when its estimate (`budget::estimate`
    /// as in local mode: the model's price, else the provider's highest as
    /// at headers; the body's output cap, else the default) exceeds what is
    /// reserved, the guard asks the rate limit service itself for the
    /// difference (`core::ratelimit_wire`: one `budget_reserve` descriptor
    /// with the identity entries) and holds the body until it answers
    /// (`on_grpc_call_response`). `Some`: the action to return (held, or
    /// refused when the call cannot be made). Requests without budgets, and
    /// those whose body adds nothing, never get here / ask nothing.
    fn ask_top_up(&mut self, count_allowed: bool) -> Option<Action> {
        let policy = self.policy.clone()?;
        let cap = self.body.as_ref().and_then(|c| c.scanner.max_output());
        let m = self.metered.as_ref()?;
        let (true, false, Some((reserved, _))) = (m.global, m.settled, m.reserved) else { return None };
        let price = m.requested_price.or_else(|| policy.highest_price(m.provider)).unwrap_or_default();
        let estimate = budget::estimate(&price, m.body_bytes, cap.unwrap_or(policy.default_output_tokens));
        let extra = budget::top_up(&m.limits, reserved, estimate)?;
        let value = extra.to_wire();
        let mut entries: Vec<(&str, &str)> = m.identity.iter().map(|(k, v)| (*k, v.as_str())).collect();
        entries.push((wire::BUDGET_RESERVE_ENTRY, &value));
        let message = wire::encode_request(wire::DOMAIN, &entries);
        let timeout = std::time::Duration::from_millis(wire::TIMEOUT_MS);
        match self.dispatch_grpc_call(wire::CLUSTER, wire::SERVICE, wire::METHOD, Vec::new(), Some(&message), timeout) {
            Ok(token) => {
                self.pending = Some(TopUp { token, extra, count_allowed });
                Some(Action::Pause)
            }
            Err(status) => {
                log::warn!(
                    "tokenhub guard: cannot call the rate limit service for a budget top-up ({status:?}): is the cluster {:?} defined in Envoy (envoy/global-ratelimit/envoy.yaml.tmpl)? Refusing (503)",
                    wire::CLUSTER
                );
                Some(self.deny(DenyReason::FilterFault))
            }
        }
    }

    /// Body arriving while a top-up is asked (Envoy buffers it, so the
    /// callback holds what came before too): the new bytes are checked as
    /// any streamed chunk (a second model is refused; a cap there is topped
    /// up once the service answered), and the body stays held.
    fn while_topping_up(&mut self, body_size: usize) -> Action {
        let Some(check) = &self.body else { return Action::Pause };
        let start = check.scanned.min(body_size);
        let new = Zeroizing::new(self.get_http_request_body(start, body_size - start).unwrap_or_default());
        let Some(check) = &mut self.body else { return Action::Pause };
        check.scanned = body_size;
        match check.scanner.check_rest(&new) {
            Rest::Fine => Action::Pause,
            Rest::DuplicateModel => self.deny(DenyReason::ModelUnreadable),
        }
    }

    /// An output cap stated after the chunk the model was found in: the
    /// reservation moves to it (up or down) without a new admission check,
    /// so such a request may add its increase to the overshoot bound
    /// (`core::budget`).
    fn revise_reservation(&mut self) {
        let cap = self.body.as_ref().and_then(|c| c.scanner.max_output());
        let Some(m) = &self.metered else { return };
        // Global mode: the service's reservation stays as made at headers.
        let (Some(cap), Some((reserved, at)), false, false) = (cap, m.reserved, m.settled, m.global) else { return };
        if m.output_cap == Some(cap) {
            return;
        }
        let now = host::unix_now(self);
        let Some(m) = &mut self.metered else { return };
        let revised = budget::estimate(&m.requested_price.unwrap_or_default(), m.body_bytes, cap);
        if budget::settle(&SharedCounters, &m.limits, reserved, revised, at, now) {
            m.reserved = Some((revised, now));
            m.output_cap = Some(cap);
        }
    }

    /// Replaces the reservation with the actual charge (once). `in_stream`:
    /// filter state can still be written (not from `drop`).
    fn settle(&mut self, in_stream: bool) {
        let Some(m) = &self.metered else { return };
        let Some((reserved, at)) = m.reserved else { return };
        if m.settled {
            return;
        }
        let now = host::unix_now(self);
        let response_model = self.meter.as_ref().and_then(|meter| meter.parser.model());
        let usage = self.meter.as_ref().and_then(|meter| meter.parser.usage());
        let price = response_model
            .and_then(|name| self.policy.as_ref()?.price_for(m.provider, name))
            .or(m.requested_price)
            .unwrap_or_default();
        let outcome = match m.status {
            Some(status) => Outcome::Response { status, body_bytes: m.response_bytes },
            None => Outcome::NoResponse,
        };
        let charge = budget::actual(outcome, usage, &price, reserved, m.input_estimate);
        if m.global {
            // For the rate limit service (`budget_settle`, sent when the
            // stream is done: also after an abort, from `drop`, which runs
            // before Envoy's ratelimit filter is destroyed).
            let (input, output, cached_input) = match usage {
                Some(u) => (u.input, u.output, u.cached_input),
                None => {
                    let input = m.input_estimate.min(charge.tokens);
                    (input, charge.tokens - input, 0)
                }
            };
            let settlement =
                budget::Settlement { input, output, cached_input, cost: charge.cost, reserved, reserved_at: at };
            self.set_property(vec![budget::SETTLE_STATE], Some(settlement.to_wire().as_bytes()));
        } else if !budget::settle(&SharedCounters, &m.limits, reserved, charge, at, now) {
            log::warn!("tokenhub guard: a token budget could not be settled (shared data contended); the reservation stays charged");
        }
        if let Some(m) = &mut self.metered {
            m.settled = true;
        }
        if in_stream {
            self.set_property(vec!["tokenhub_cost_nano_usd"], Some(charge.cost.to_string().as_bytes()));
        }
        if let Some(m) = &mut self.metered {
            m.charged = Some(charge);
        }
    }

    /// The response's usage into the per-tenant, per-model counters
    /// (`core::usage_metrics`), once, after `settle` (which prices it).
    fn count_usage(&mut self) {
        let (Some(metrics), Some(policy)) = (&self.metrics, &self.policy) else { return };
        let (Some(meter), Some(check)) = (&mut self.meter, &self.body) else { return };
        if meter.counted {
            return;
        }
        meter.counted = true;
        let usage = meter.parser.usage().unwrap_or_default();
        let model = meter.parser.model().or(check.decided.as_deref());
        let label = crate::core::usage_metrics::model_label(policy, check.provider, model);
        let cost = self.metered.as_ref().and_then(|m| m.charged).map_or(0, |c| c.cost);
        metrics.usage(&check.tenant, &label, [1, usage.input, usage.output, usage.cached_input, cost]);
    }

    /// Global mode: a response from Envoy's ratelimit filter itself (the
    /// service refused the request: nothing was reserved; or could not be
    /// asked: nothing is known, the reservation stays counted) is not
    /// settled.
    fn service_refusal(&mut self) {
        let details = self.get_property(vec!["response", "code_details"]).unwrap_or_default();
        if details == b"request_rate_limited" || details == b"rate_limiter_error" {
            let topped_up = self.metered.as_mut().and_then(|m| {
                m.settled = true;
                m.topped_up
            });
            // A top-up the service admitted before Envoy's own answer came:
            // only it is given back.
            if let Some((extra, at)) = topped_up {
                let settlement = budget::Settlement { reserved: extra, reserved_at: at, ..Default::default() };
                self.set_property(vec![budget::SETTLE_STATE], Some(settlement.to_wire().as_bytes()));
            }
        }
    }

    /// A budget passed its soft limit with this request's reservation
    /// (judged here in local mode, by the rate limit service in global
    /// mode): the metric and the access-log field.
    fn mark_soft_limit(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.soft_limit();
        }
        self.set_property(vec!["tokenhub_soft_limit"], Some(b"1"));
    }

    /// A refused request gives its reservation back.
    fn release(&mut self) {
        let Some(m) = &mut self.metered else { return };
        if let (Some((reserved, at)), false) = (m.reserved, m.settled) {
            m.settled = true;
            if m.global {
                // Given back when the stream is done (a refusal after the
                // service admitted the request: the body's model).
                let settlement = budget::Settlement { reserved, reserved_at: at, ..Default::default() };
                self.set_property(vec![budget::SETTLE_STATE], Some(settlement.to_wire().as_bytes()));
                return;
            }
            let now = host::unix_now(self);
            if let Some(m) = &self.metered {
                budget::settle(&SharedCounters, &m.limits, reserved, Charge::default(), at, now);
            }
        }
    }

    fn deny_with(&mut self, reason: DenyReason, extra: &[(&str, String)]) -> Action {
        // A refused request is not metered (its local reply names no model).
        self.release();
        // An answer still due is ignored (a refusal while a top-up is
        // asked: if the service admits it, it stays until its window ends).
        self.pending = None;
        self.metered = None;
        self.body = None;
        self.meter = None;
        if let Some(m) = &self.metrics {
            m.denied(reason);
        }
        host::set_decision(self, reason.label());
        let body = reason.body();
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
        self.send_http_response(reason.status(), headers, Some(body.as_bytes()));
        Action::Pause
    }
}
