//! `tokenhub-admin ratelimit`: Envoy's rate limit service
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, gRPC)
//! for the global quota mode. Every Envoy's `envoy.filters.http.ratelimit`
//! filter, placed after the guard, asks it about each request with a
//! descriptor built from the guard's authoritative identity headers; the
//! limits are those of the published bundle (the same `quota set`), the
//! counters live in Redis, so every replica shares them and a restart of
//! this service loses none.
//!
//! Answers: OK (with the `ratelimit-*` headers of the tightest budget),
//! OVER_LIMIT (429 with `retry-after`, `ratelimit-*` and the guard's own
//! JSON error body), or a gRPC error when Redis or the bundle is not
//! available — Envoy then applies its failure mode (the template: fail
//! closed, 503).

pub mod counter;
pub mod descriptors;
pub mod source;
pub mod totals;

use crate::admin::AdminError;
use crate::core::budget::{Charge, Meter, MeteredLimit, Settlement};
use crate::core::bundle::schema::QuotaMode;
use crate::core::errors::DenyReason;
use crate::core::quota::{self, QuotaOutcome};
use clap::Args;
use counter::RedisCounters;
use descriptors::{Ask, LimitTable};
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use source::{Polled, Source};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct RatelimitArgs {
    /// gRPC address Envoy's ratelimit cluster points at (loopback unless
    /// --allow-remote). Port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub listen: String,
    /// Accept a non-loopback listen address (keep it on a private network:
    /// the service answers anyone who can reach it).
    #[arg(long)]
    pub allow_remote: bool,
    /// Where the counters live. A URL with a password belongs in the
    /// environment variable (TOKENHUB_REDIS_URL), never on the command line.
    #[arg(long, env = "TOKENHUB_REDIS_URL", hide_env_values = true, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// The ECDS file `tokenhub-admin publish` writes (guard.json); re-read
    /// when it changes.
    #[arg(long)]
    pub bundle_file: PathBuf,
    /// File (mode 0600) with the bundle key; default: the environment
    /// variable TOKENHUB_BUNDLE_KEY, as for Envoy.
    #[arg(long)]
    pub bundle_key_file: Option<PathBuf>,
    /// How often the bundle file is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// Redis connect and reply timeout, in milliseconds (keep it below the
    /// Envoy filter's `timeout`, 2 s in the template). A request whose
    /// reply timed out may have been counted: it errs towards refusing.
    #[arg(long, default_value_t = 1000)]
    pub redis_timeout_ms: u64,
}

pub const RATELIMIT_HELP: &str = "Examples:
  TOKENHUB_BUNDLE_KEY=$(cat bundle.key) tokenhub-admin ratelimit --bundle-file /etc/tokenhub/bundle/guard.json --redis redis://127.0.0.1:6379
  tokenhub-admin ratelimit --bundle-file guard.json --bundle-key-file bundle.key --listen 127.0.0.1:8082
Used in the global quota mode (`tokenhub-admin quota mode global`): run one or more beside Redis and
point every Envoy's ratelimit filter at them (envoy/global-ratelimit/envoy.yaml.tmpl). The limits are
the published bundle's; counters live in Redis, so replicas of this service share them.";

/// The Redis URL when it carries a password (`--redis` reads it too).
pub const REDIS_URL_ENV: &str = "TOKENHUB_REDIS_URL";

/// The loaded limits, swapped whole on reload.
type Shared = Arc<RwLock<Option<Arc<LimitTable>>>>;

/// Runs until SIGINT or SIGTERM.
pub fn run(args: &RatelimitArgs) -> Result<(), AdminError> {
    let belongs = "the rate limit service belongs on loopback or a private network";
    let addr = crate::admin::listen_address(&args.listen, "127.0.0.1:8082", args.allow_remote, belongs)?;
    if std::env::var_os(REDIS_URL_ENV).is_none() && counter::has_password(&args.redis) {
        return Err(AdminError::Usage(format!(
            "--redis: a URL with a password would be visible in the process list; put it in {REDIS_URL_ENV} instead"
        )));
    }
    let key = source::bundle_key(args.bundle_key_file.as_deref()).map_err(AdminError::Usage)?;
    let timeout = Duration::from_millis(args.redis_timeout_ms.max(1));
    let counters = RedisCounters::new(&args.redis, timeout).map_err(AdminError::Usage)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AdminError::Internal(format!("tokio runtime: {e}")))?;
    let mut source = Source::new(args.bundle_file.clone(), key);
    let poll = Duration::from_millis(args.poll_ms.max(10));
    runtime.block_on(serve(addr, counters, &mut source, poll))
}

async fn serve(
    addr: SocketAddr,
    counters: RedisCounters,
    source: &mut Source,
    poll: Duration,
) -> Result<(), AdminError> {
    let shared: Shared = Arc::new(RwLock::new(None));
    reload(source, &shared);
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| AdminError::Io(format!("listen on {addr}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| AdminError::Io(format!("listen on {addr}: {e}")))?;
    // One line on stdout so a supervisor (or a test) learns the port.
    println!("tokenhub-admin ratelimit: listening on {bound} (bundle {})", source.path().display());
    let service = Service { limits: shared.clone(), counters: Arc::new(counters) };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown());
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(server);
    loop {
        tokio::select! {
            result = &mut server => {
                return result.map_err(|e| AdminError::Io(format!("gRPC server: {e}")));
            }
            _ = ticker.tick() => reload(source, &shared),
        }
    }
}

fn reload(source: &mut Source, shared: &Shared) {
    match source.poll() {
        Polled::Unchanged => {}
        Polled::Loaded(table) => {
            eprintln!(
                "tokenhub-admin ratelimit: bundle version {} loaded (quota mode {}, {} tenants, {} keys)",
                table.policy.version,
                table.policy.quota_mode.label(),
                table.policy.tenants.len(),
                table.policy.keys.len()
            );
            if table.policy.quota_mode == QuotaMode::Local {
                eprintln!(
                    "tokenhub-admin ratelimit: the bundle is in local quota mode: the guards count, this service answers OK without counting (`tokenhub-admin quota mode global` switches)"
                );
            }
            let mut slot = shared.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            *slot = Some(Arc::from(table));
        }
        Polled::Refused(why) => {
            let serving = shared.read().map(|s| s.as_ref().map(|t| t.policy.version)).unwrap_or(None);
            match serving {
                Some(v) => eprintln!("tokenhub-admin ratelimit: bundle refused ({why}); version {v} keeps serving"),
                None => eprintln!(
                    "tokenhub-admin ratelimit: no bundle ({why}); every request gets an error (Envoy fails closed) until one is published"
                ),
            }
        }
    }
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

struct Service {
    limits: Shared,
    counters: Arc<RedisCounters>,
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let request = request.into_inner();
        let table = self
            .limits
            .read()
            .map_err(|_| tonic::Status::internal("limits lock poisoned"))?
            .clone()
            .ok_or_else(|| tonic::Status::unavailable("no valid bundle loaded yet"))?;
        let plan = plan(&table, &request)?;
        let now = crate::admin::unix_now();
        let unavailable = |e: counter::CounterError| {
            eprintln!("tokenhub-admin ratelimit: {e}");
            tonic::Status::unavailable(e.to_string())
        };
        for (limits, settlement, who) in &plan.settle {
            self.counters.settle(limits, settlement, who, now).await.map_err(unavailable)?;
        }
        let hits = u64::from(request.hits_addend.max(1));
        let mut limits = plan.requests.clone();
        let mut amounts = vec![hits; limits.len()];
        for (metered, charge) in &plan.reserve {
            for m in metered {
                limits.push(m.limit.clone());
                amounts.push(match m.meter {
                    Meter::Tokens => charge.tokens,
                    Meter::Cost => charge.cost,
                });
            }
        }
        // An admitted request's headers: its request quotas' tightest
        // budget, as the guard sends in local mode (not the token budgets').
        let counted =
            self.counters.consume_amounts(&limits, &amounts, plan.requests.len(), now).await.map_err(unavailable)?;
        // The soft limit: the service alone knows the shared counts; the
        // guard turns the header into its metric and access-log field.
        let soft = counted.past_soft_limit(&limits, plan.requests.len(), table.policy.soft_limit_percent);
        let (outcome, refused_by) = (counted.outcome, counted.refused_by);
        let reason = match refused_by {
            Some(i) if i >= plan.requests.len() => DenyReason::BudgetExceeded,
            _ => DenyReason::QuotaExceeded,
        };
        let mut answer = response(outcome, reason, request.descriptors.len())?;
        if soft {
            answer.response_headers_to_add.push(HeaderValue {
                key: crate::core::budget::SOFT_LIMIT_HEADER.into(),
                value: "1".into(),
                ..Default::default()
            });
        }
        Ok(tonic::Response::new(answer))
    }
}

/// What one `ShouldRateLimit` call asks, descriptor by descriptor (see
/// `descriptors::Ask`).
#[derive(Debug, Default)]
pub struct Plan {
    /// Request quotas: one hit each (deduplicated).
    pub requests: Vec<quota::Limit>,
    /// Token and dollar budgets to check and reserve at admission.
    pub reserve: Vec<(Vec<MeteredLimit>, Charge)>,
    /// Ended streams to settle.
    pub settle: Vec<(Vec<MeteredLimit>, Settlement, descriptors::Identity)>,
}

/// Every limit a request counts against: all of its descriptors' limits,
/// counted together (all admit or none counts). Nothing while the bundle is
/// in local mode: the guards count then, and this service only says OK, so
/// that the mode in the bundle alone decides who counts.
pub fn plan(table: &LimitTable, request: &RateLimitRequest) -> Result<Plan, tonic::Status> {
    if request.domain != descriptors::DOMAIN {
        return Err(tonic::Status::invalid_argument(format!(
            "domain {:?}: this service answers domain {:?}",
            request.domain,
            descriptors::DOMAIN
        )));
    }
    let mut plan = Plan::default();
    if table.policy.quota_mode == QuotaMode::Local {
        return Ok(plan);
    }
    for d in &request.descriptors {
        let entries: Vec<(&str, &str)> = d.entries.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        match table.ask(&entries).map_err(|e| tonic::Status::invalid_argument(e.to_string()))? {
            Ask::Requests(limits) => plan.requests.extend(limits),
            Ask::Reserve(limits, charge) => plan.reserve.push((limits, charge)),
            Ask::Settle(limits, settlement, who) => plan.settle.push((limits, settlement, who)),
        }
    }
    plan.requests.sort_by(|a, b| a.counter.cmp(&b.counter));
    plan.requests.dedup_by(|a, b| a.counter == b.counter);
    Ok(plan)
}

/// The answer Envoy turns into the client's response; an error (Envoy's
/// failure mode: 503 in the template) when the counters could not decide.
pub fn response(
    outcome: QuotaOutcome,
    reason: DenyReason,
    descriptors: usize,
) -> Result<RateLimitResponse, tonic::Status> {
    let header = |(name, value): (&str, String)| HeaderValue { key: name.into(), value, ..Default::default() };
    let (code, headers, body) = match outcome {
        QuotaOutcome::Unlimited => (Code::Ok, Vec::new(), Vec::new()),
        QuotaOutcome::Allowed(b) => {
            (Code::Ok, quota::rate_limit_headers(b).into_iter().map(header).collect(), Vec::new())
        }
        QuotaOutcome::Exceeded(b) => {
            let mut headers: Vec<HeaderValue> = quota::refusal_headers(b).into_iter().map(header).collect();
            headers.push(header(("content-type", "application/json".into())));
            (Code::OverLimit, headers, reason.body().into_bytes())
        }
        QuotaOutcome::Unavailable => {
            return Err(tonic::Status::unavailable("Redis answered with fewer counts than asked"));
        }
    };
    Ok(RateLimitResponse {
        overall_code: code as i32,
        statuses: (0..descriptors).map(|_| DescriptorStatus { code: code as i32, ..Default::default() }).collect(),
        response_headers_to_add: headers,
        raw_body: body,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::quota::Budget;

    #[test]
    fn over_limit_carries_the_guards_429_headers_and_body() {
        let r = response(
            QuotaOutcome::Exceeded(Budget { limit: 30, remaining: 0, reset: 17 }),
            DenyReason::QuotaExceeded,
            1,
        )
        .unwrap();
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        let headers: Vec<(&str, &str)> =
            r.response_headers_to_add.iter().map(|h| (h.key.as_str(), h.value.as_str())).collect();
        assert_eq!(
            headers,
            vec![
                ("ratelimit-limit", "30"),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "17"),
                ("retry-after", "17"),
                ("content-type", "application/json")
            ]
        );
        assert_eq!(r.raw_body, DenyReason::QuotaExceeded.body().into_bytes());
        let body: serde_json::Value = serde_json::from_slice(&r.raw_body).unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    }

    fn table(mode: QuotaMode) -> LimitTable {
        use crate::core::bundle::schema::{BundleDoc, QuotaDoc, SubAccountDoc, TenantDoc, SCHEMA_VERSION};
        let doc = BundleDoc {
            schema: SCHEMA_VERSION,
            version: 1,
            quota_mode: mode,
            tenants: vec![TenantDoc {
                id: "acme".into(),
                quota: Some(QuotaDoc { per_minute: Some(10), per_day: None }),
                sub_accounts: vec![SubAccountDoc { id: "default".into(), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        };
        LimitTable::new(crate::core::bundle::compile(&doc).unwrap())
    }

    fn request(domain: &str, descriptors: &[&[(&str, &str)]]) -> RateLimitRequest {
        use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
            rate_limit_descriptor::Entry, RateLimitDescriptor,
        };
        RateLimitRequest {
            domain: domain.into(),
            descriptors: descriptors
                .iter()
                .map(|entries| RateLimitDescriptor {
                    entries: entries.iter().map(|(k, v)| Entry { key: (*k).into(), value: (*v).into() }).collect(),
                    ..Default::default()
                })
                .collect(),
            hits_addend: 0,
        }
    }

    fn request_limits(table: &LimitTable, request: &RateLimitRequest) -> Result<Vec<quota::Limit>, tonic::Status> {
        Ok(plan(table, request)?.requests)
    }

    #[test]
    fn the_bundles_mode_decides_whether_this_service_counts() {
        let d: &[(&str, &str)] = &[("tenant", "acme"), ("sub_account", "default")];
        let global = request_limits(&table(QuotaMode::Global), &request("tokenhub", &[d, d])).unwrap();
        assert_eq!(global.len(), 1, "the same limit twice counts once: {global:?}");
        assert_eq!((global[0].counter.as_str(), global[0].limit), ("tokenhub.q|t|acme|m", 10));
        assert!(request_limits(&table(QuotaMode::Local), &request("tokenhub", &[d])).unwrap().is_empty());
        let err = request_limits(&table(QuotaMode::Global), &request("other", &[d])).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let unknown: &[(&str, &str)] = &[("tenant", "globex"), ("sub_account", "default")];
        let err = request_limits(&table(QuotaMode::Global), &request("tokenhub", &[unknown])).unwrap_err();
        assert!(err.message().contains("not in the loaded bundle"), "{}", err.message());
    }

    /// The guard's hand-made messages (`core::ratelimit_wire`, no protobuf
    /// runtime in the module) against `envoy-types`' own encoding, which this
    /// service decodes: the top-up request it builds is the descriptor
    /// Envoy's actions build, and it reads the code and headers this
    /// service answers.
    #[test]
    fn the_guards_wire_format_is_envoys() {
        use crate::core::ratelimit_wire::{self as wire, Code as WireCode};
        use prost::Message;
        let entries = [("tenant", "acme"), ("sub_account", "default"), ("key_id", "k1"), ("budget_reserve", "5000,7")];
        let bytes = wire::encode_request(wire::DOMAIN, &entries);
        let decoded = RateLimitRequest::decode(bytes.as_slice()).unwrap();
        let expected = request("tokenhub", &[&entries]);
        assert_eq!(decoded, expected);
        assert_eq!(bytes, expected.encode_to_vec(), "byte for byte as prost writes it");
        let reserve = plan(&table(QuotaMode::Global), &decoded).unwrap_err();
        assert!(reserve.message().contains("key k1"), "read as a budget descriptor: {}", reserve.message());
        let budget = quota::Budget { limit: 220, remaining: 0, reset: 17 };
        for (outcome, code) in [
            (QuotaOutcome::Exceeded(budget), WireCode::OverLimit),
            (QuotaOutcome::Allowed(quota::Budget { remaining: 3, ..budget }), WireCode::Ok),
            (QuotaOutcome::Unlimited, WireCode::Ok),
        ] {
            let answer = response(outcome, DenyReason::BudgetExceeded, 1).unwrap();
            let read = wire::decode_response(&answer.encode_to_vec()).unwrap();
            assert_eq!(read.code, code);
            let headers: Vec<(String, String)> =
                answer.response_headers_to_add.iter().map(|h| (h.key.clone(), h.value.clone())).collect();
            assert_eq!(read.headers, headers);
        }
        let mut soft = response(QuotaOutcome::Unlimited, DenyReason::BudgetExceeded, 1).unwrap();
        soft.response_headers_to_add.push(HeaderValue {
            key: "x".into(),
            raw_value: b"raw".to_vec(),
            ..Default::default()
        });
        let read = wire::decode_response(&soft.encode_to_vec()).unwrap();
        assert_eq!(read.headers, vec![("x".to_string(), "raw".to_string())]);
    }

    #[test]
    fn ok_echoes_the_tightest_budget_and_unlimited_adds_nothing() {
        let r =
            response(QuotaOutcome::Allowed(Budget { limit: 30, remaining: 4, reset: 9 }), DenyReason::QuotaExceeded, 1)
                .unwrap();
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.response_headers_to_add.len(), 3);
        assert_eq!(r.response_headers_to_add[1].value, "4");
        assert!(r.raw_body.is_empty());
        let r = response(QuotaOutcome::Unlimited, DenyReason::QuotaExceeded, 2).unwrap();
        assert!(response(QuotaOutcome::Unavailable, DenyReason::QuotaExceeded, 1).is_err());
        assert_eq!((r.overall_code, r.statuses.len()), (Code::Ok as i32, 2));
        assert!(r.response_headers_to_add.is_empty());
    }
}
