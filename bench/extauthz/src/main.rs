//! `ext-authz`: the guard's checks as an external authorization service, for
//! `make bench`'s comparison with what platform teams deploy instead of an
//! in-process filter (Envoy's `ext_authz` HTTP filter calling a gRPC
//! service, as Envoy Gateway and AI gateways do).
//!
//! It opens the very ECDS file `tokenhub-admin publish` writes for the guard
//! (key in `TOKENHUB_BUNDLE_KEY`, as the filter reads it), compiles it with
//! `tokenhub_guard::core::bundle::open_and_compile`, and answers each
//! `Authorization/Check` with `core::decision::decide` and, for keys with
//! quotas, `core::quota::consume` over an in-process counter map: key hash
//! lookup, status, CIDR allowlist, claimed tenant, path scope, quotas — the
//! filter's decision, natively. An allowed request gets the same header
//! changes the filter makes (client credential and `x-tokenhub-*` removed,
//! identity headers and the provider credential set); a refused one the
//! filter's status and JSON body. The bundle is read once at start (no
//! reload: the benchmark measures requests).
//!
//! usage: ext-authz --listen 127.0.0.1:PORT --ecds PATH/guard.json
//! One thread (a current-thread Tokio runtime): the benchmark pins it to a core.

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::google::rpc;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use tokenhub_guard::core::bundle::{open_and_compile, BundleKey, Policy};
use tokenhub_guard::core::decision::{decide, is_stripped_header, Decision, RequestFacts, FORWARDED_FOR_HEADER};
use tokenhub_guard::core::errors::DenyReason;
use tokenhub_guard::core::quota::{self, CounterStore, QuotaOutcome, StoreError};

const BUNDLE_KEY_ENV: &str = "TOKENHUB_BUNDLE_KEY";

/// Quota counters with Proxy-Wasm shared-data semantics (CAS token bumped
/// on every write), for the one process: what Envoy's shared data is to the
/// filter.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, (Vec<u8>, u32)>>);

impl CounterStore for Counters {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        match self.0.lock() {
            Ok(map) => map.get(key).map_or((None, 0), |(v, c)| (Some(v.clone()), *c)),
            Err(_) => (None, 0),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, StoreError> {
        let mut map = self.0.lock().map_err(|_| StoreError)?;
        match map.get_mut(key) {
            Some((v, c)) if *c == cas || cas == 0 => {
                *v = value.to_vec();
                *c += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => {
                map.insert(key.to_string(), (value.to_vec(), 1));
                Ok(true)
            }
        }
    }
}

struct Guard {
    policy: Policy,
    counters: Counters,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn set(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: name.to_string(), value: value.to_string(), ..HeaderValue::default() }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

fn denied(reason: DenyReason) -> CheckResponse {
    CheckResponse {
        // PERMISSION_DENIED: Envoy answers with the http_response below.
        status: Some(rpc::Status { code: 7, ..rpc::Status::default() }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: reason.status() as i32 }),
            headers: vec![set("content-type", "application/json")],
            body: reason.body(),
        })),
        ..CheckResponse::default()
    }
}

impl Guard {
    fn check(&self, req: &CheckRequest) -> CheckResponse {
        let Some(attributes) = req.attributes.as_ref() else { return denied(DenyReason::FilterFault) };
        let Some(http) = attributes.request.as_ref().and_then(|r| r.http.as_ref()) else {
            return denied(DenyReason::FilterFault);
        };
        let source =
            attributes.source.as_ref().and_then(|p| p.address.as_ref()).and_then(|a| match a.address.as_ref() {
                Some(Address::SocketAddress(s)) => s.address.parse::<IpAddr>().ok(),
                _ => None,
            });
        let view: Vec<(&str, &[u8])> = http.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        let facts =
            RequestFacts { method: &http.method, path: &http.path, headers: &view, source, now: now(), oidc: None };
        match decide(&self.policy, &facts) {
            Decision::Allow(grant) => {
                let limits =
                    quota::limits_for(grant.subject.credential.key(), grant.subject.sub_account, grant.subject.tenant);
                match quota::consume(&self.counters, &limits, facts.now) {
                    QuotaOutcome::Unlimited | QuotaOutcome::Allowed(_) => {}
                    QuotaOutcome::Exceeded(_) => return denied(DenyReason::QuotaExceeded),
                    QuotaOutcome::Unavailable => return denied(DenyReason::FilterFault),
                }
                let mut headers = Vec::with_capacity(7);
                let mut headers_to_remove = Vec::new();
                for (name, value) in grant.subject.identity_headers() {
                    match value {
                        Some(v) => headers.push(set(name, v)),
                        None => headers_to_remove.push(name.to_string()),
                    }
                }
                headers.push(set(grant.inject.0, grant.inject.1));
                if let Some(address) = grant.subject.forwarded_for(facts.source) {
                    headers.push(set(FORWARDED_FOR_HEADER, &address));
                }
                // What the client sent and is not overwritten above goes.
                for (name, _) in &view {
                    if is_stripped_header(name)
                        && !headers.iter().any(|h| h.header.as_ref().is_some_and(|h| h.key == *name))
                    {
                        headers_to_remove.push((*name).to_string());
                    }
                }
                CheckResponse {
                    status: Some(rpc::Status::default()),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers,
                        headers_to_remove,
                        ..OkHttpResponse::default()
                    })),
                    ..CheckResponse::default()
                }
            }
            Decision::Deny(denial) => denied(denial.reason),
        }
    }
}

#[tonic::async_trait]
impl Authorization for Guard {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(Guard::check(self, request.get_ref())))
    }
}

/// The sealed bundle inside the guard's ECDS file: the Wasm config's
/// `configuration`, a base64 BytesValue.
fn sealed_from_ecds(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let value = doc.pointer("/resources/0/typed_config/config/configuration/value").and_then(|v| v.as_str()).ok_or(
        "no resources[0].typed_config.config.configuration.value (is it the file `tokenhub-admin publish` wrote?)",
    )?;
    base64::engine::general_purpose::STANDARD.decode(value).map_err(|e| format!("configuration.value: {e}"))
}

fn load(ecds: &str) -> Result<Policy, String> {
    let key_text =
        std::env::var(BUNDLE_KEY_ENV).map_err(|_| format!("{BUNDLE_KEY_ENV} is not set: the bundle key, base64"))?;
    let key = BundleKey::from_base64(&key_text).map_err(|e| format!("{BUNDLE_KEY_ENV}: {e}"))?;
    let text = std::fs::read_to_string(ecds).map_err(|e| format!("{ecds}: {e}"))?;
    let sealed = sealed_from_ecds(&text).map_err(|e| format!("{ecds}: {e}"))?;
    open_and_compile(&sealed, &key).map_err(|e| format!("{ecds}: {e}"))
}

fn run() -> Result<(), String> {
    let mut listen = None;
    let mut ecds = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--listen" => listen = args.next(),
            "--ecds" => ecds = args.next(),
            other => return Err(format!("unknown argument {other}; usage: ext-authz --listen ADDR:PORT --ecds FILE")),
        }
    }
    let listen: SocketAddr =
        listen.ok_or("--listen ADDR:PORT is required")?.parse().map_err(|e| format!("--listen: {e}"))?;
    let policy = load(&ecds.ok_or("--ecds FILE is required (the guard's ECDS file)")?)?;
    let guard = Guard { policy, counters: Counters::default() };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        // A wake-up every 100 ms: valgrind acts on callgrind_control's
        // commands (zero, dump) only when the process runs, and an idle
        // service would otherwise sleep through them.
        tokio::spawn(async {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            loop {
                tick.tick().await;
            }
        });
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("listen on {listen}: {e}"))?;
        eprintln!("ext-authz: listening on {listen}");
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(guard))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .map_err(|e| format!("serve: {e}"))
    })
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ext-authz: {e}");
        std::process::exit(1);
    }
}
