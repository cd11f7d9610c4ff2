//! `tokenhub-admin serve`: the admin HTTP service (the sidecar's API).
//!
//! JSON in, JSON out, on loopback unless `--allow-remote`. Every request but
//! `GET /healthz` carries an admin token (`authorization: Bearer tha_…`);
//! every change also carries a 2FA code (`x-tokenhub-otp`) when the admin has
//! 2FA, goes through the same session (least privilege, audit) as the CLI,
//! and is published in the same commit. The transport (`http`) serves
//! connections concurrently with bounded resources and checks the token
//! before it reads a body. See docs/admin-api.md and docs/openapi.yaml.

mod console;
mod http;

use super::actions::access::{IpChange, Level};
use super::actions::auditing::AuditQuery;
use super::actions::keys::{KeySpec, Scopes};
use super::actions::{access, admins, auditing, keys, prices, privacy, providers, system, tenants, Reply};
use super::session::{Claim, Session};
use super::store::policy::ProviderSpec;
use super::store::Store;
use super::{safe_serde_error, unix_now, AdminError};
use crate::core::bundle::schema::{PriceDoc, QuotaDoc, QuotaMode, Status, TokenBudgetDoc};
use http::{AuthCache, Failures, Head, Method, Refusal, Slots, Workers};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// What every connection thread shares.
struct Shared<'a> {
    store: &'a Store,
    /// Envoy's access log, for `GET /v1/usage` (`serve --access-log`).
    access_log: Option<std::path::PathBuf>,
    auth: AuthCache,
    failures: Failures,
    slots: Slots,
    workers: Workers,
    /// The browser console at `/console/` (same actions, same sessions).
    console: console::Console,
}

/// How `serve` listens (the CLI's `ServeArgs` converts to it; nothing of
/// clap here). Addresses are text, parsed (and refused with the flag's
/// name) by `serve`.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The admin API's IP:PORT (loopback only unless `allow_remote`).
    pub listen: String,
    pub allow_remote: bool,
    /// The xDS control plane's IP:PORT (`None`: no control plane).
    pub xds_listen: Option<String>,
    /// mTLS of the xDS server: its certificate, key, and the gateways' CA.
    pub xds_cert: Option<PathBuf>,
    pub xds_key: Option<PathBuf>,
    pub xds_client_ca: Option<PathBuf>,
    /// Prometheus metrics of the gateways' xDS state.
    pub metrics_listen: Option<String>,
    /// Further HOST[:PORT] names the console answers to (loopback always).
    pub console_host: Vec<String>,
    /// Envoy's access log, for `GET /v1/usage` and the console's usage page.
    pub access_log: Option<PathBuf>,
}

/// Runs until the process is stopped.
pub fn serve(store: &Store, args: &ServeOptions, home: &Path) -> Result<(), AdminError> {
    let belongs = "the admin API belongs on loopback (a sidecar)";
    let addr = super::listen_address(&args.listen, "127.0.0.1:8081", args.allow_remote, belongs)?;
    // Only the settings outlive this line: the document (and its secrets)
    // is dropped, and zeroed, at once.
    let settings = store.load()?.settings.clone();
    if settings.ecds_file.is_none() || settings.wasm_path.is_none() {
        return Err(AdminError::Usage(
            "serve publishes after every change: configure where first with `tokenhub-admin publish --ecds-file FILE --wasm FILE`".into(),
        ));
    }
    super::logger::init();
    let mut xds_home = None;
    if let Some(xds) = super::xds::options(args, &settings, home)? {
        xds_home = Some(xds.home.clone());
        let tls = if xds.tls.is_some() { "mTLS" } else { "plaintext, loopback" };
        let bound = super::xds::spawn(xds)?;
        println!("tokenhub-admin serve: xDS (ECDS) on grpc://{} ({tls})", bound.xds);
        if let Some(m) = bound.metrics {
            println!("tokenhub-admin serve: metrics on http://{m}/metrics");
        }
    }
    let listener = TcpListener::bind(addr).map_err(|e| AdminError::Io(format!("listen on {addr}: {e}")))?;
    let bound = listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
    // One line on stdout so a supervisor (or a test) learns the port.
    println!("tokenhub-admin serve: listening on http://{bound} (store {})", home.display());
    let _ = std::io::stdout().flush();
    let shared = Shared {
        store,
        access_log: args.access_log.clone(),
        auth: AuthCache::new(),
        failures: Failures::new(),
        slots: Slots::new(),
        workers: Workers::new(),
        console: console::Console::new(
            listener.local_addr().unwrap_or(addr),
            &args.console_host,
            args.access_log.clone(),
            xds_home,
        ),
    };
    std::thread::scope(|scope| {
        let sh = &shared;
        // Aggregated failed authentications reach the audit log at least
        // this often.
        scope.spawn(move || loop {
            std::thread::sleep(http::FAILURE_FLUSH);
            sh.failures.flush(sh.store);
        });
        for conn in listener.incoming() {
            let Ok(stream) = conn else { continue };
            let Some(slot) = sh.slots.take() else {
                busy(stream);
                continue;
            };
            let worker = std::thread::Builder::new().stack_size(1024 * 1024).spawn_scoped(scope, move || {
                let _slot = slot;
                connection(sh, stream);
            });
            if let Err(e) = worker {
                eprintln!("tokenhub-admin serve: cannot start a connection thread: {e}");
            }
        }
    });
    Ok(())
}

/// Every connection slot is taken: answer 503 without waiting on the client.
fn busy(stream: TcpStream) {
    let body = json!({"error": {"kind": "busy", "message": "too many open connections; retry shortly"}}).to_string();
    let text = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(text.as_bytes());
}

/// A request, read: method, path segments, query, body.
struct Call {
    method: Method,
    path: Vec<String>,
    query: Vec<(String, String)>,
    body: Value,
    access_log: Option<std::path::PathBuf>,
}

/// A body may carry a secret (`PUT /v1/providers/{id}`): its strings are
/// overwritten when the request is done.
impl Drop for Call {
    fn drop(&mut self) {
        wipe_strings(&mut self.body);
    }
}

fn wipe_strings(v: &mut Value) {
    use zeroize::Zeroize;
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe_strings),
        Value::Object(map) => map.values_mut().for_each(wipe_strings),
        _ => {}
    }
}

fn refuse(stream: TcpStream, r: &Refusal) {
    http::respond(stream, r.status, &http::refusal_body(r), r.retry_after);
}

fn connection(sh: &Shared, mut stream: TcpStream) {
    http::configure(&stream);
    let peer = stream.peer_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let mut head = match http::read_head(&mut stream) {
        Ok(h) => h,
        Err(r) => return refuse(stream, &r),
    };
    let (path, query) = split_target(&head.target);
    if path == ["healthz"] {
        let (status, body) = health(sh.store, &head.method);
        return http::respond(stream, status, &body, None);
    }
    if path.first().is_some_and(|p| p == "console") {
        return console::handle(sh, stream, head, peer, &path[1..], &query);
    }
    // The token is checked before any body is read, from hashes cached in
    // memory: a bad token costs neither a decryption nor a store write.
    let token = bearer(&head);
    match token.as_ref().map(|t| sh.auth.check(sh.store, t)) {
        Some(Ok(true)) => {}
        Some(Err(e)) => {
            let (status, body) = error_body(&e);
            return http::respond(stream, status, &body, None);
        }
        Some(Ok(false)) | None => {
            let why = if token.is_none() {
                "no admin token: send authorization: Bearer tha_…"
            } else {
                "invalid or revoked admin token"
            };
            if let Some(wait) = sh.failures.record(sh.store, peer, why) {
                let r = Refusal {
                    status: 429,
                    kind: "rate_limited",
                    message: "too many failed authentications from this address; retry later".into(),
                    retry_after: Some(wait),
                };
                return refuse(stream, &r);
            }
            let (status, body) = error_body(&AdminError::Auth(why.into()));
            return http::respond(stream, status, &body, None);
        }
    }
    let call = match http::body_length(&head)
        .and_then(|n| http::read_body(&mut stream, &mut head, n))
        .map_err(|r| (r.status, http::refusal_body(&r)))
        .and_then(|raw| parse_body(&raw).map_err(|e| error_body(&e)))
    {
        Ok(body) => Call { method: head.method.clone(), path, query, body, access_log: sh.access_log.clone() },
        Err((status, body)) => return http::respond(stream, status, &body, None),
    };
    let (status, body) = {
        let _permit = sh.workers.acquire();
        respond_to(sh.store, &head, &call)
    };
    http::respond(stream, status, &body, None);
}

fn split_target(target: &str) -> (Vec<String>, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (path, query)
}

fn parse_body(raw: &[u8]) -> Result<Value, AdminError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    // The parser's message names a position, never the content.
    serde_json::from_slice(raw)
        .map_err(|e| AdminError::Usage(format!("the body is not JSON: {}", safe_serde_error(&e))))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bearer(head: &Head) -> Option<Zeroizing<String>> {
    let v = head.header("authorization")?;
    let t = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))?.trim();
    (!t.is_empty()).then(|| Zeroizing::new(t.to_string()))
}

fn respond_to(store: &Store, head: &Head, call: &Call) -> (u16, Value) {
    let session = Session {
        store,
        claim: Claim::Token(bearer(head).unwrap_or_default()),
        otp: head.header("x-tokenhub-otp").map(|v| Zeroizing::new(v.to_string())),
        via: "http",
        now: unix_now(),
        publish: Some(super::publish::publish_hook),
    };
    let path: Vec<&str> = call.path.iter().map(String::as_str).collect();
    let result = match path.split_first() {
        Some((&"v1", rest)) => route(&session, &call.method, rest, call),
        _ => Err(no_route(&call.method, &call.path)),
    };
    match result {
        Ok((status, reply)) => (status, reply.into_json()),
        Err(e) => error_body(&e),
    }
}

/// Cheap: no decryption, no lock. Says the service runs and its store file
/// is there; the first authenticated request tells whether it opens.
fn health(store: &Store, method: &Method) -> (u16, Value) {
    if *method != Method::Get {
        return error_body(&AdminError::Usage("use GET /healthz".into()));
    }
    match std::fs::metadata(store.paths.store()) {
        Ok(m) if m.is_file() => (200, json!({"status": "ok"})),
        _ => (503, json!({"status": "unavailable", "error": {"kind": "io"}})),
    }
}

fn no_route(method: &Method, path: &[String]) -> AdminError {
    AdminError::NotFound(format!("no endpoint {method} /{}; see docs/admin-api.md", path.join("/")))
}

fn error_body(e: &AdminError) -> (u16, Value) {
    (e.http_status(), json!({"error": {"kind": e.kind(), "message": e.to_string()}}))
}

type Routed = Result<(u16, Reply), AdminError>;

fn ok(reply: Result<Reply, AdminError>) -> Routed {
    reply.map(|r| (200, r))
}

fn created(reply: Result<Reply, AdminError>) -> Routed {
    reply.map(|r| (201, r))
}

fn body<T: DeserializeOwned>(call: &Call) -> Result<T, AdminError> {
    from_body(if call.body.is_null() { json!({}) } else { call.body.clone() })
}

/// Query parameters are text: `?since=1700000000` is the string the
/// action parses (a time), `?tenant=2024` a tenant id. The few numeric
/// parameters parse their text themselves (`number_text`).
fn query<T: DeserializeOwned>(call: &Call) -> Result<T, AdminError> {
    let map: serde_json::Map<String, Value> = call.query.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    serde_json::from_value(Value::Object(map))
        .map_err(|e| AdminError::Usage(format!("query: {}", safe_serde_error(&e))))
}

/// A numeric query parameter, given as text.
fn number_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| t.trim().parse::<usize>().map_err(|_| serde::de::Error::custom("expected a whole number"))).transpose()
}

fn route(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match path.first() {
        Some(&"status") if *method == Method::Get && path.len() == 1 => ok(system::status(s)),
        Some(&"whoami") if *method == Method::Get && path.len() == 1 => ok(admins::status(s)),
        Some(&"admins") if *method == Method::Get && path.len() == 1 => ok(admins::list(s)),
        Some(&"admins") if *method == Method::Post && path.len() == 3 && path[2] == "erase" => {
            ok(privacy::erase_admin(s, path[1], &body::<ConfirmBody>(call)?.confirm))
        }
        Some(&"publish") if *method == Method::Post && path.len() == 1 => ok(system::publish(s, None, None)),
        Some(&"tenants") => route_tenants(s, method, &path[1..], call),
        Some(&"keys") => route_keys(s, method, &path[1..], call),
        Some(&"ip") => route_ip(s, method, &path[1..], call),
        Some(&"quota") => route_quota(s, method, &path[1..], call),
        Some(&"providers") => route_providers(s, method, &path[1..], call),
        Some(&"prices") => route_prices(s, method, &path[1..], call),
        Some(&"usage") if *method == Method::Get && path.len() == 1 => usage(s, call),
        Some(&"incident") => match (method, &path[1..]) {
            (Method::Post, ["revoke", key_id]) => ok(keys::incident_revoke(s, key_id)),
            _ => Err(no_route(method, &call.path)),
        },
        Some(&"audit") => route_audit(s, method, &path[1..], call),
        _ => Err(no_route(method, &call.path)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantBody {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    region: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdBody {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionBody {
    region: String,
}

/// An erasure's confirmation: the tenant's or admin's name again.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    confirm: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientAddressBody {
    forward: bool,
}

fn route_tenants(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, []) => ok(tenants::list(s)),
        (Method::Post, []) => {
            let b: TenantBody = body(call)?;
            created(tenants::add(s, &b.id, &b.name, &b.region))
        }
        (Method::Get, [id]) => ok(tenants::show(s, id)),
        (Method::Post, [id, "export"]) => ok(privacy::export(s, id, None, None)),
        (Method::Post, [id, "erase"]) => ok(privacy::erase_tenant(s, id, &body::<ConfirmBody>(call)?.confirm, &[])),
        (Method::Post, [id, "disable"]) => ok(tenants::set_status(s, id, Status::Disabled)),
        (Method::Post, [id, "enable"]) => ok(tenants::set_status(s, id, Status::Active)),
        (Method::Put, [id, "region"]) => ok(tenants::set_region(s, id, &body::<RegionBody>(call)?.region)),
        (Method::Put, [id, "client-address"]) => {
            ok(tenants::set_client_address(s, id, body::<ClientAddressBody>(call)?.forward))
        }
        (Method::Put, [id, "log-retention"]) => ok(tenants::set_log_retention(s, id, body(call)?)),
        (Method::Get, [t, "sub-accounts"]) => ok(tenants::sub_list(s, t)),
        (Method::Post, [t, "sub-accounts"]) => created(tenants::sub_add(s, t, &body::<IdBody>(call)?.id)),
        (Method::Post, [t, "sub-accounts", id, "disable"]) => ok(tenants::sub_set_status(s, t, id, Status::Disabled)),
        (Method::Post, [t, "sub-accounts", id, "enable"]) => ok(tenants::sub_set_status(s, t, id, Status::Active)),
        _ => Err(no_route(method, &call.path)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyCreateBody {
    tenant: String,
    #[serde(default)]
    sub_account: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RotateBody {
    grace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiryBody {
    /// A duration from now (`30d`), or null for never.
    expires_in: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ScopesBody {
    methods: Vec<String>,
    paths: Vec<String>,
    models: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct KeyListQuery {
    tenant: Option<String>,
}

fn route_keys(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, []) => ok(keys::list(s, query::<KeyListQuery>(call)?.tenant.as_deref())),
        (Method::Post, []) => {
            let b: KeyCreateBody = body(call)?;
            let args = KeySpec {
                tenant: b.tenant,
                sub_account: b.sub_account,
                name: b.name,
                expires_in: b.expires_in,
                scopes: Scopes { methods: b.methods, paths: b.paths, models: b.models },
            };
            created(keys::create(s, &args))
        }
        (Method::Get, [id]) => ok(keys::show(s, id)),
        (Method::Delete, [id]) => ok(keys::delete(s, id)),
        (Method::Post, [id, "rotate"]) => {
            let grace = body::<RotateBody>(call)?.grace.unwrap_or_else(|| "0s".into());
            ok(keys::rotate(s, id, &grace))
        }
        (Method::Post, [id, "disable"]) => ok(keys::set_status(s, id, Status::Disabled)),
        (Method::Post, [id, "enable"]) => ok(keys::set_status(s, id, Status::Active)),
        (Method::Post, [id, "revoke"]) => ok(keys::incident_revoke(s, id)),
        (Method::Put, [id, "scopes"]) => {
            let b: ScopesBody = body(call)?;
            ok(keys::set_scopes(s, id, &Scopes { methods: b.methods, paths: b.paths, models: b.models }))
        }
        (Method::Put, [id, "expiry"]) => ok(keys::set_expiry(s, id, body::<ExpiryBody>(call)?.expires_in.as_deref())),
        _ => Err(no_route(method, &call.path)),
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct IpBody {
    cidrs: Vec<String>,
}

/// `tenant`[+`sub_account`] or `key`: in a query (`?tenant=…`) or beside
/// an operation's own fields in a body.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct LevelFields {
    tenant: Option<String>,
    sub_account: Option<String>,
    key: Option<String>,
}

impl LevelFields {
    fn level(self) -> Result<Level, AdminError> {
        Level::parse(self.tenant, self.sub_account, self.key)
    }
}

fn level_query(call: &Call) -> Result<Level, AdminError> {
    query::<LevelFields>(call)?.level()
}

/// A body naming a level beside the operation's own fields `T` (each part
/// refuses fields it does not know).
fn level_body<T: DeserializeOwned>(call: &Call) -> Result<(LevelFields, T), AdminError> {
    let mut own = if call.body.is_null() { json!({}) } else { call.body.clone() };
    let mut level = serde_json::Map::new();
    if let Some(fields) = own.as_object_mut() {
        for name in ["tenant", "sub_account", "key"] {
            if let Some(v) = fields.remove(name) {
                level.insert(name.into(), v);
            }
        }
    }
    Ok((from_body(Value::Object(level))?, from_body(own)?))
}

fn from_body<T: DeserializeOwned>(value: Value) -> Result<T, AdminError> {
    serde_json::from_value(value).map_err(|e| AdminError::Usage(format!("request body: {}", safe_serde_error(&e))))
}

fn route_ip(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, []) => ok(access::ip_list(s, &level_query(call)?)),
        (Method::Post, [verb]) => {
            let (level, b): (LevelFields, IpBody) = level_body(call)?;
            let change = match *verb {
                "allow" => IpChange::Allow(&b.cidrs),
                "deny" => IpChange::Deny(&b.cidrs),
                "enable" => IpChange::Enabled(true),
                "disable" => IpChange::Enabled(false),
                _ => return Err(no_route(method, &call.path)),
            };
            if matches!(change, IpChange::Allow(c) | IpChange::Deny(c) if c.is_empty()) {
                return Err(AdminError::Usage("give \"cidrs\": [\"203.0.113.0/24\", …]".into()));
            }
            ok(access::ip_change(s, &level.level()?, change))
        }
        _ => Err(no_route(method, &call.path)),
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct QuotaBody {
    per_minute: Option<u64>,
    per_day: Option<u64>,
    tokens_per_minute: Option<u64>,
    tokens_per_day: Option<u64>,
    /// Dollars per month, as a decimal string (`"12.50"`) or a number.
    monthly_budget_usd: Option<Dollars>,
}

/// Dollars in a request body: a decimal string is exact; a number is read
/// from its JSON text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Dollars {
    Text(String),
    Number(serde_json::Number),
}

impl Dollars {
    fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Number(n) => n.to_string(),
        }
    }

    fn nano(&self, what: &str) -> Result<u64, AdminError> {
        prices::dollars(&self.text(), what)
    }

    fn per_million(&self, what: &str) -> Result<u64, AdminError> {
        prices::per_million(&self.text(), what)
    }
}

/// `PUT /v1/prices`, as `tokenhub-admin price set` (dollars per million tokens).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    provider: String,
    model: String,
    input: Dollars,
    #[serde(default)]
    cached_input: Option<Dollars>,
    output: Dollars,
}

/// `DELETE /v1/prices?provider=…&model=…`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceKey {
    provider: String,
    model: String,
}

fn route_prices(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, []) => ok(prices::list(s)),
        (Method::Put, []) => {
            let b: PriceBody = body(call)?;
            let price = PriceDoc {
                input: b.input.per_million("input")?,
                cached_input: b.cached_input.map(|c| c.per_million("cached_input")).transpose()?.unwrap_or(0),
                output: b.output.per_million("output")?,
                provider: b.provider,
                model: b.model,
            };
            ok(prices::set(s, price))
        }
        (Method::Delete, []) => {
            let k: PriceKey = query(call)?;
            ok(prices::remove(s, &k.provider, &k.model))
        }
        _ => Err(no_route(method, &call.path)),
    }
}

/// `PUT /v1/quota/mode`, as `tokenhub-admin quota mode local|global`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaModeBody {
    quota_mode: QuotaMode,
}

/// `GET /v1/usage?tenant=&key=&since=&until=&by=key|sub_account|tenant&per_model=true&per_day=true`:
/// `tokenhub-admin usage --json` over the access log `serve --access-log` names.
fn usage(s: &Session, call: &Call) -> Routed {
    use crate::admin::usage::{Grouping, Level};
    let Some(access_log) = call.access_log.clone() else {
        return Err(AdminError::Usage(
            "no access log: start `tokenhub-admin serve` with --access-log FILE (or TOKENHUB_ACCESS_LOG)".into(),
        ));
    };
    let mut args = auditing::UsageQuery { access_log, ..Default::default() };
    let yes = |v: &str, name: &str| match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(AdminError::Usage(format!("{name}={v:?}: expected true or false"))),
    };
    let mut grouping = Grouping::default();
    for (k, v) in &call.query {
        match k.as_str() {
            "tenant" => args.tenant = Some(v.clone()),
            "key" => args.key = Some(v.clone()),
            "since" => args.since = Some(v.clone()),
            "until" => args.until = Some(v.clone()),
            "per_model" => grouping.per_model = yes(v, k)?,
            "per_day" => grouping.per_day = yes(v, k)?,
            "by" => {
                grouping.level = match v.as_str() {
                    "key" => Level::Key,
                    "sub_account" => Level::SubAccount,
                    "tenant" => Level::Tenant,
                    _ => return Err(AdminError::Usage(format!("by={v:?}: expected key, sub_account or tenant"))),
                }
            }
            _ => return Err(AdminError::Usage(format!("unknown query parameter {k:?} for /v1/usage"))),
        }
    }
    args.grouping = grouping;
    args.retention = Some(auditing::RetentionDays {
        retain: crate::admin::retention::DEFAULT_RETAIN_DAYS,
        truncate_ips_after: crate::admin::retention::DEFAULT_TRUNCATE_IPS_AFTER_DAYS,
    });
    ok(auditing::usage(s, &args))
}

/// `PUT /v1/quota/metering`, as `tokenhub-admin quota metering`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeteringBody {
    #[serde(default)]
    soft_limit_percent: Option<u8>,
    #[serde(default)]
    default_output_tokens: Option<u64>,
}

fn route_quota(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, []) => ok(access::quota_show(s, &level_query(call)?)),
        (Method::Put, []) => {
            let (level, b): (LevelFields, QuotaBody) = level_body(call)?;
            let budget = TokenBudgetDoc {
                tokens_per_minute: b.tokens_per_minute,
                tokens_per_day: b.tokens_per_day,
                monthly_budget_nano_usd: b.monthly_budget_usd.map(|d| d.nano("monthly_budget_usd")).transpose()?,
            };
            ok(access::quota_set(s, &level.level()?, QuotaDoc { per_minute: b.per_minute, per_day: b.per_day }, budget))
        }
        (Method::Delete, []) => ok(access::quota_clear(s, &level_query(call)?)),
        (Method::Get, ["mode"]) => ok(access::quota_mode_show(s)),
        (Method::Put, ["mode"]) => ok(access::quota_mode_set(s, body::<QuotaModeBody>(call)?.quota_mode)),
        (Method::Get, ["metering"]) => ok(access::metering_show(s)),
        (Method::Put, ["metering"]) => {
            let b: MeteringBody = body(call)?;
            ok(access::metering_set(s, b.soft_limit_percent, b.default_output_tokens))
        }
        _ => Err(no_route(method, &call.path)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderBody {
    path_prefix: String,
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "default_format")]
    format: String,
    #[serde(default)]
    tenant: Option<String>,
    secret: String,
    /// As `provider set --shared-preset` / `--shared-endpoint`.
    #[serde(default)]
    shared_preset: Option<String>,
    #[serde(default)]
    shared_endpoints: Vec<String>,
}

fn default_header() -> String {
    "authorization".into()
}

fn default_format() -> String {
    "Bearer {secret}".into()
}

fn route_providers(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, []) => ok(providers::list(s)),
        (Method::Put, [id]) => {
            let mut b: ProviderBody = body(call)?;
            let secret = Zeroizing::new(std::mem::take(&mut b.secret));
            if secret.trim().is_empty() {
                return Err(AdminError::Usage("\"secret\" is empty".into()));
            }
            let spec = ProviderSpec {
                id: id.to_string(),
                path_prefix: b.path_prefix,
                header: b.header,
                format: b.format,
                shared_preset: b.shared_preset,
                shared_endpoints: b.shared_endpoints,
            };
            ok(providers::set(s, spec, b.tenant.as_deref(), secret))
        }
        (Method::Delete, [id]) => ok(providers::remove(s, id)),
        _ => Err(no_route(method, &call.path)),
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct TailQuery {
    #[serde(deserialize_with = "number_text")]
    n: Option<usize>,
}

/// `GET /v1/audit/search` (besides `failures`, read apart: it is a flag).
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct SearchQuery {
    tenant: Option<String>,
    key: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn route_audit(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, ["tail"]) => ok(auditing::tail(s, query::<TailQuery>(call)?.n.unwrap_or(20))),
        (Method::Get, ["search"]) => {
            // Query values are strings; `failures` arrives as "true".
            let q: SearchQuery = query(&Call {
                query: call.query.iter().filter(|(k, _)| k != "failures").cloned().collect(),
                method: call.method.clone(),
                path: Vec::new(),
                body: Value::Null,
                access_log: None,
            })?;
            let failures = call.query.iter().any(|(k, v)| k == "failures" && v != "false");
            let args = AuditQuery {
                tenant: q.tenant,
                key_id: q.key,
                actor: q.actor,
                action: q.action,
                since: q.since,
                until: q.until,
                failures,
            };
            ok(auditing::search(s, &args))
        }
        (Method::Get, ["verify"]) => {
            let report = auditing::verify_report(s)?;
            let status = if report.ok() { 200 } else { 409 };
            Ok((
                status,
                Reply::new("", json!({"ok": report.ok(), "entries": report.entries, "problems": report.problems})),
            ))
        }
        _ => Err(no_route(method, &call.path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("2025-01-31T12%3A00%3A00Z"), "2025-01-31T12:00:00Z");
    }

    #[test]
    fn error_statuses() {
        assert_eq!(error_body(&AdminError::Auth("x".into())).0, 401);
        assert_eq!(error_body(&AdminError::Forbidden("x".into())).0, 403);
        assert_eq!(error_body(&AdminError::Invalid("x".into())).0, 422);
        assert_eq!(error_body(&AdminError::NotFound("x".into())).1["error"]["kind"], "not_found");
    }
}
