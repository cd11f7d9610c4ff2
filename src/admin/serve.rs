//! `tokenhub-admin serve`: the admin HTTP service (the sidecar's API).
//!
//! JSON in, JSON out, on loopback unless `--allow-remote`. Every request but
//! `GET /healthz` carries an admin token (`authorization: Bearer tha_…`);
//! every change also carries a 2FA code (`x-tokenhub-otp`) when the admin has
//! 2FA, goes through the same session (least privilege, audit) as the CLI,
//! and is published in the same commit. Requests are handled one at a time:
//! the store lock serializes them anyway. See docs/admin-api.md.

use super::actions::access::{IpChange, QuotaArgs, TargetArgs};
use super::actions::auditing::SearchArgs;
use super::actions::keys::{KeyCreate, ScopeArgs};
use super::actions::{access, admins, auditing, keys, providers, system, tenants, Reply};
use super::cli::commands::ServeArgs;
use super::ops::ProviderSpec;
use super::session::{Claim, Session};
use super::store::Store;
use super::{unix_now, AdminError};
use crate::core::bundle::schema::Status;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use tiny_http::{Header, Method, Request, Response, Server};
use zeroize::Zeroizing;

/// Larger bodies are refused: no operation needs more.
const MAX_BODY: usize = 64 * 1024;

/// Runs until the process is stopped.
pub fn serve(store: &Store, args: &ServeArgs, home: &Path) -> Result<(), AdminError> {
    let addr: SocketAddr = args
        .listen
        .parse()
        .map_err(|_| AdminError::Usage(format!("--listen {:?}: expected IP:PORT, e.g. 127.0.0.1:8081", args.listen)))?;
    if !addr.ip().is_loopback() && !args.allow_remote {
        return Err(AdminError::Usage(format!(
            "refusing to listen on {addr}: the admin API belongs on loopback (a sidecar); pass --allow-remote to override"
        )));
    }
    let doc = store.load()?;
    if doc.settings.ecds_file.is_none() || doc.settings.wasm_path.is_none() {
        return Err(AdminError::Usage(
            "serve publishes after every change: configure where first with `tokenhub-admin publish --ecds-file FILE --wasm FILE`".into(),
        ));
    }
    let server = Server::http(addr).map_err(|e| AdminError::Io(format!("listen on {addr}: {e}")))?;
    let bound = server.server_addr().to_ip().map_or_else(|| addr.to_string(), |a| a.to_string());
    // One line on stdout so a supervisor (or a test) learns the port.
    println!("tokenhub-admin serve: listening on http://{bound} (store {})", home.display());
    for request in server.incoming_requests() {
        handle(store, request);
    }
    Ok(())
}

/// A request, read: method, path segments, query, headers we use, body.
struct Call {
    method: Method,
    path: Vec<String>,
    query: Vec<(String, String)>,
    body: Value,
}

fn handle(store: &Store, mut request: Request) {
    let (status, body) = match read_call(&mut request) {
        Ok(call) => respond_to(store, &request, &call),
        Err(e) => error_body(&e),
    };
    let mut response = Response::from_string(body.to_string()).with_status_code(status);
    for (name, value) in [("content-type", "application/json"), ("cache-control", "no-store")] {
        // Static ASCII: from_bytes cannot fail on these.
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    // A client that went away is not our problem.
    let _ = request.respond(response);
}

fn read_call(request: &mut Request) -> Result<Call, AdminError> {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let path: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(AdminError::Usage(format!("request body larger than {MAX_BODY} bytes")));
    }
    let mut raw = Zeroizing::new(Vec::new());
    request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| AdminError::Io(format!("reading the request body: {e}")))?;
    if raw.len() > MAX_BODY {
        return Err(AdminError::Usage(format!("request body larger than {MAX_BODY} bytes")));
    }
    let body = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        // The parser's message names a position, never the content.
        serde_json::from_slice(&raw).map_err(|e| AdminError::Usage(format!("the body is not JSON: {e}")))?
    };
    Ok(Call { method: request.method().clone(), path, query, body })
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

fn header_value(request: &Request, name: &'static str) -> Option<String> {
    request.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().trim().to_string())
}

fn respond_to(store: &Store, request: &Request, call: &Call) -> (u16, Value) {
    let path: Vec<&str> = call.path.iter().map(String::as_str).collect();
    if path == ["healthz"] {
        return health(store, &call.method);
    }
    let token = header_value(request, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::to_string))
        .unwrap_or_default();
    let session = Session {
        store,
        claim: Claim::Token(Zeroizing::new(token)),
        otp: header_value(request, "x-tokenhub-otp").map(Zeroizing::new),
        via: "http",
        now: unix_now(),
        auto_publish: true,
    };
    let result = match path.split_first() {
        Some((&"v1", rest)) => route(&session, &call.method, rest, call),
        _ => Err(no_route(&call.method, &call.path)),
    };
    match result {
        Ok((status, reply)) => (status, reply.json),
        Err(e) => error_body(&e),
    }
}

fn health(store: &Store, method: &Method) -> (u16, Value) {
    if *method != Method::Get {
        return error_body(&AdminError::Usage("use GET /healthz".into()));
    }
    match store.load() {
        Ok(doc) => (200, json!({"status": "ok", "published_version": doc.published.map(|p| p.version)})),
        Err(e) => (503, json!({"status": "unavailable", "error": {"kind": e.kind()}})),
    }
}

fn no_route(method: &Method, path: &[String]) -> AdminError {
    AdminError::NotFound(format!("no endpoint {method} /{}; see docs/admin-api.md", path.join("/")))
}

fn error_body(e: &AdminError) -> (u16, Value) {
    let status = match e {
        AdminError::Usage(_) => 400,
        AdminError::Auth(_) => 401,
        AdminError::Forbidden(_) => 403,
        AdminError::NotFound(_) => 404,
        AdminError::Invalid(_) => 422,
        AdminError::Corrupt(_) | AdminError::Io(_) | AdminError::Internal(_) => 500,
    };
    (status, json!({"error": {"kind": e.kind(), "message": e.to_string()}}))
}

type Routed = Result<(u16, Reply), AdminError>;

fn ok(reply: Result<Reply, AdminError>) -> Routed {
    reply.map(|r| (200, r))
}

fn created(reply: Result<Reply, AdminError>) -> Routed {
    reply.map(|r| (201, r))
}

fn body<T: DeserializeOwned>(call: &Call) -> Result<T, AdminError> {
    let value = if call.body.is_null() { json!({}) } else { call.body.clone() };
    serde_json::from_value(value).map_err(|e| AdminError::Usage(format!("request body: {e}")))
}

fn query<T: DeserializeOwned>(call: &Call) -> Result<T, AdminError> {
    let map: serde_json::Map<String, Value> =
        call.query.iter().map(|(k, v)| (k.clone(), v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n)))).collect();
    serde_json::from_value(Value::Object(map)).map_err(|e| AdminError::Usage(format!("query: {e}")))
}

fn route(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match path.first() {
        Some(&"status") if *method == Method::Get && path.len() == 1 => ok(system::status(s)),
        Some(&"whoami") if *method == Method::Get && path.len() == 1 => ok(admins::status(s)),
        Some(&"admins") if *method == Method::Get && path.len() == 1 => ok(admins::list(s)),
        Some(&"publish") if *method == Method::Post && path.len() == 1 => ok(system::publish(s, None, None)),
        Some(&"tenants") => route_tenants(s, method, &path[1..], call),
        Some(&"keys") => route_keys(s, method, &path[1..], call),
        Some(&"ip") => route_ip(s, method, &path[1..], call),
        Some(&"quota") => route_quota(s, method, &path[1..], call),
        Some(&"providers") => route_providers(s, method, &path[1..], call),
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

fn route_tenants(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, []) => ok(tenants::list(s)),
        (Method::Post, []) => {
            let b: TenantBody = body(call)?;
            created(tenants::add(s, &b.id, &b.name, &b.region))
        }
        (Method::Get, [id]) => ok(tenants::show(s, id)),
        (Method::Post, [id, "disable"]) => ok(tenants::set_status(s, id, Status::Disabled)),
        (Method::Post, [id, "enable"]) => ok(tenants::set_status(s, id, Status::Active)),
        (Method::Put, [id, "region"]) => ok(tenants::set_region(s, id, &body::<RegionBody>(call)?.region)),
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
struct KeyListQuery {
    tenant: Option<String>,
}

fn route_keys(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, []) => ok(keys::list(s, query::<KeyListQuery>(call)?.tenant.as_deref())),
        (Method::Post, []) => {
            let b: KeyCreateBody = body(call)?;
            let args = KeyCreate {
                tenant: b.tenant,
                sub_account: b.sub_account.unwrap_or_else(|| "default".into()),
                name: b.name,
                expires_in: b.expires_in,
                scopes: ScopeArgs { methods: b.methods, paths: b.paths },
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
        (Method::Put, [id, "scopes"]) => ok(keys::set_scopes(s, id, &body::<ScopeArgs>(call)?)),
        (Method::Put, [id, "expiry"]) => ok(keys::set_expiry(s, id, body::<ExpiryBody>(call)?.expires_in.as_deref())),
        _ => Err(no_route(method, &call.path)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IpBody {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    sub_account: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    cidrs: Vec<String>,
}

impl IpBody {
    fn target(&self) -> TargetArgs {
        TargetArgs { tenant: self.tenant.clone(), sub_account: self.sub_account.clone(), key: self.key.clone() }
    }
}

fn route_ip(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, []) => ok(access::ip_list(s, &query::<TargetArgs>(call)?)),
        (Method::Post, [verb]) => {
            let b: IpBody = body(call)?;
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
            ok(access::ip_change(s, &b.target(), change))
        }
        _ => Err(no_route(method, &call.path)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    sub_account: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    per_minute: Option<u64>,
    #[serde(default)]
    per_day: Option<u64>,
}

fn route_quota(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, []) => ok(access::quota_show(s, &query::<TargetArgs>(call)?)),
        (Method::Put, []) => {
            let b: QuotaBody = body(call)?;
            let args = QuotaArgs {
                target: TargetArgs { tenant: b.tenant, sub_account: b.sub_account, key: b.key },
                per_minute: b.per_minute,
                per_day: b.per_day,
            };
            ok(access::quota_set(s, &args))
        }
        (Method::Delete, []) => ok(access::quota_clear(s, &query::<TargetArgs>(call)?)),
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
                header: b.header.to_ascii_lowercase(),
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
    n: Option<usize>,
}

fn route_audit(s: &Session, method: &Method, path: &[&str], call: &Call) -> Routed {
    match (method, path) {
        (Method::Get, ["tail"]) => ok(auditing::tail(s, query::<TailQuery>(call)?.n.unwrap_or(20))),
        (Method::Get, ["search"]) => {
            // Query values are strings; `failures` arrives as "true".
            let mut args: SearchArgs = query(&Call {
                query: call.query.iter().filter(|(k, _)| k != "failures").cloned().collect(),
                method: call.method.clone(),
                path: Vec::new(),
                body: Value::Null,
            })?;
            args.failures = call.query.iter().any(|(k, v)| k == "failures" && v != "false");
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
