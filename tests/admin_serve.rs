//! `tokenhub-admin serve` over real HTTP (a plain TcpStream client): token
//! authentication, 2FA header for changes, least privilege, JSON errors,
//! publishing after every change, and the audit endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_support;

use admin_support::{enable_2fa, totp, Home, Service};
use serde_json::{json, Value};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use tokenhub_testkit::http1;

impl Service {
    /// One request; returns (status, JSON body).
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        stream.write_all(req.as_bytes()).unwrap();
        let (status, _, head, body) = http1::read_response(&mut BufReader::new(stream), method).unwrap();
        assert!(head.header("content-type").is_some_and(|v| v.starts_with("application/json")), "{head:?}");
        let body = String::from_utf8(body).unwrap();
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}")))
    }

    fn as_(&self, token: &str) -> Client<'_> {
        Client { service: self, token: token.to_string(), otp: None }
    }
}

/// Requests with a bearer token (and optionally a 2FA code).
struct Client<'a> {
    service: &'a Service,
    token: String,
    otp: Option<String>,
}

impl Client<'_> {
    fn with_otp(mut self, code: &str) -> Self {
        self.otp = Some(code.to_string());
        self
    }
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(o) = &self.otp {
            headers.push(("x-tokenhub-otp", o.as_str()));
        }
        self.service.call(method, path, &headers, body)
    }
    fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }
}

/// Failed authentications the audit log counts (aggregated lines say
/// "N failed authentications from …", single ones count 1).
fn audited_failures(home: &Home) -> u64 {
    home.audit_lines()
        .into_iter()
        .filter(|e| e["outcome"] == "auth_failed" && e["via"] == "http" && e["action"] == "auth.identify")
        .map(|e| {
            let detail = e["detail"].as_str().unwrap_or_default().to_string();
            match detail.split_once(" failed authentications from ") {
                Some((n, _)) => n.parse::<u64>().unwrap(),
                None => 1,
            }
        })
        .sum()
}

/// Waits (bounded) for the service's periodic flush to audit `n` failures.
fn wait_for_failures(home: &Home, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while audited_failures(home) < n && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(audited_failures(home), n, "{}", home.audit_text());
}

fn published_version(home: &Home) -> u64 {
    home.run(&["--json", "status"]).ok().json()["published"]["version"].as_u64().unwrap_or(0)
}

#[test]
fn health_and_authentication() {
    let (home, root, _) = admin_support::two_tenants_two_admins("serve-auth");
    let svc = Service::start(&home);
    let (status, v) = svc.call("GET", "/healthz", &[], None);
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    // No token, a wrong token, a malformed header: 401 with a JSON error.
    let (status, v) = svc.call("GET", "/v1/tenants", &[], None);
    assert_eq!(status, 401);
    assert_eq!(v["error"]["kind"], "auth");
    let mut wrong = root.clone();
    wrong.replace_range(20..21, if &root[20..21] == "A" { "B" } else { "A" });
    assert_eq!(svc.as_(&wrong).get("/v1/tenants").0, 401);
    assert_eq!(svc.call("GET", "/v1/tenants", &[("authorization", &root)], None).0, 401, "Bearer is required");
    // The right token works; unknown endpoints and bad bodies are JSON errors.
    let c = svc.as_(&root);
    assert_eq!(c.get("/v1/tenants").1.as_array().unwrap().len(), 2);
    assert_eq!(c.get("/v1/nope").0, 404);
    assert_eq!(c.call("PATCH", "/v1/tenants", None).0, 404);
    assert_eq!(c.call("POST", "/v1/tenants", Some(json!({"id": "x", "colour": "red"}))).0, 400);
    assert_eq!(c.call("POST", "/v1/tenants", Some(json!("not an object"))).0, 400);
    // Failed authentications are audited (aggregated per address), without
    // the presented token.
    wait_for_failures(&home, 3);
    let log = home.audit_text();
    assert!(!log.contains(&wrong[4..]) && !log.contains(&root[4..]));
    // A revoked token stops working at once.
    let id = home.run(&["--json", "admin", "token", "list", "root"]).ok().json()[0]["id"].as_str().unwrap().to_string();
    home.run(&["admin", "token", "revoke", "root", &id]).ok();
    assert_eq!(c.get("/v1/tenants").0, 401);
}

#[test]
fn every_operation_over_http_publishes_at_once() {
    let (home, root, _) = admin_support::published_two_tenants_two_admins("serve-ops");
    let svc = Service::start(&home);
    let c = svc.as_(&root);
    let mut version = published_version(&home);
    let mut step = |method: &str, path: &str, body: Option<Value>, want: u16| -> Value {
        let (status, v) = c.call(method, path, body);
        assert_eq!(status, want, "{method} {path}: {v}");
        if method != "GET" {
            let now = published_version(&home);
            assert!(now > version, "{method} {path} did not publish");
            version = now;
        }
        v
    };
    step("POST", "/v1/tenants", Some(json!({"id": "initech", "region": "eu"})), 201);
    step("PUT", "/v1/tenants/initech/region", Some(json!({"region": "us"})), 200);
    step("POST", "/v1/tenants/initech/sub-accounts", Some(json!({"id": "research"})), 201);
    step("POST", "/v1/tenants/initech/sub-accounts/research/disable", None, 200);
    step("POST", "/v1/tenants/initech/sub-accounts/research/enable", None, 200);
    let subs = step("GET", "/v1/tenants/initech/sub-accounts", None, 200);
    assert_eq!(subs.as_array().unwrap().len(), 2);
    let created = step(
        "POST",
        "/v1/keys",
        Some(
            json!({"tenant": "initech", "sub_account": "research", "name": "ci", "methods": ["POST"], "paths": ["/v1/"]}),
        ),
        201,
    );
    let key_id = created["key_id"].as_str().unwrap().to_string();
    assert!(created["key"].as_str().unwrap().starts_with("thk_"));
    let shown = step("GET", &format!("/v1/keys/{key_id}"), None, 200);
    assert!(shown.get("key").is_none() && shown["scopes"]["methods"] == json!(["POST"]));
    let rotated = step("POST", &format!("/v1/keys/{key_id}/rotate"), Some(json!({"grace": "1h"})), 200);
    assert_ne!(rotated["key"], created["key"]);
    step("POST", &format!("/v1/keys/{key_id}/disable"), None, 200);
    step("POST", &format!("/v1/keys/{key_id}/enable"), None, 200);
    step("PUT", &format!("/v1/keys/{key_id}/scopes"), Some(json!({"methods": ["GET"]})), 200);
    step("PUT", &format!("/v1/keys/{key_id}/expiry"), Some(json!({"expires_in": "30d"})), 200);
    step("POST", "/v1/ip/allow", Some(json!({"tenant": "initech", "cidrs": ["203.0.113.0/24", "2001:db8::/32"]})), 200);
    step("POST", "/v1/ip/deny", Some(json!({"tenant": "initech", "cidrs": ["2001:db8::/32"]})), 200);
    let ips = step("GET", "/v1/ip?tenant=initech", None, 200);
    assert_eq!(ips, json!({"enabled": true, "cidrs": ["203.0.113.0/24"]}));
    assert_eq!(c.call("POST", "/v1/ip/allow", Some(json!({"key": key_id, "cidrs": ["300.0.0.0/8"]}))).0, 400);
    step("PUT", "/v1/quota", Some(json!({"key": key_id, "per_minute": 60, "per_day": 1000})), 200);
    let q = step("GET", &format!("/v1/quota?key={key_id}"), None, 200);
    assert_eq!(q["quota"], json!({"per_minute": 60, "per_day": 1000}));
    step("DELETE", &format!("/v1/quota?key={key_id}"), None, 200);
    step("PUT", "/v1/providers/openai", Some(json!({"path_prefix": "/v1/", "secret": "sk-http-secret-0123"})), 200);
    let providers = step("GET", "/v1/providers", None, 200);
    assert!(!providers.to_string().contains("sk-http-secret"));
    step("POST", "/v1/publish", None, 200);
    let revoked = step("POST", &format!("/v1/incident/revoke/{key_id}"), None, 200);
    assert_eq!(revoked["status"], "disabled");
    assert!(revoked["audit"].as_array().unwrap().len() >= 8);
    step("DELETE", &format!("/v1/keys/{key_id}"), None, 200);
    step("DELETE", "/v1/providers/openai", None, 200);
    step("POST", "/v1/tenants/initech/disable", None, 200);
    step("POST", "/v1/tenants/initech/enable", None, 200);
    // A change the filter would refuse is refused and nothing is published.
    let before = published_version(&home);
    let (status, v) =
        c.call("PUT", "/v1/providers/bad", Some(json!({"path_prefix": "/x/", "header": "host", "secret": "s"})));
    assert_eq!((status, v["error"]["kind"].as_str()), (422, Some("invalid_policy")));
    assert_eq!(published_version(&home), before);
    // Status and the audit endpoints.
    assert_eq!(c.get("/v1/status").1["acting_as"], "root");
    let tail = c.get("/v1/audit/tail?n=3").1;
    assert_eq!(tail.as_array().unwrap().len(), 3);
    assert!(tail.as_array().unwrap().iter().all(|e| e["via"] == "http"));
    let search = c.get(&format!("/v1/audit/search?key={key_id}&action=key.")).1;
    assert!(search.as_array().unwrap().len() >= 6);
    let (status, verify) = c.get("/v1/audit/verify");
    assert_eq!((status, verify["ok"].as_bool()), (200, Some(true)));
    // The audit log says the service did it, as root.
    assert!(home
        .audit_lines()
        .iter()
        .any(|e| e["action"] == "incident.revoke" && e["actor"] == "root" && e["via"] == "http"));
    // Tampering shows up in the API too.
    home.rewrite_audit(|l| l[2] = l[2].replace("tenant.add", "tenant.del"));
    let (status, verify) = c.get("/v1/audit/verify");
    assert_eq!((status, verify["problems"][0]["line"].as_u64()), (409, Some(3)));
}

#[test]
fn tenant_admins_over_http() {
    let (home, root, ann) = admin_support::published_two_tenants_two_admins("serve-tenant");
    let svc = Service::start(&home);
    let a = svc.as_(&ann);
    let tenants = a.get("/v1/tenants").1;
    assert_eq!(tenants.as_array().unwrap().len(), 1);
    assert_eq!(a.call("POST", "/v1/keys", Some(json!({"tenant": "globex"}))).0, 403);
    assert_eq!(a.call("POST", "/v1/tenants", Some(json!({"id": "evil"}))).0, 403);
    assert_eq!(a.call("PUT", "/v1/quota", Some(json!({"tenant": "acme", "per_minute": 10}))).0, 403);
    let (status, key) = a.call("POST", "/v1/keys", Some(json!({"tenant": "acme"})));
    assert_eq!(status, 201);
    let key_id = key["key_id"].as_str().unwrap();
    assert_eq!(a.call("PUT", "/v1/quota", Some(json!({"key": key_id, "per_minute": 10}))).0, 200);
    let globex = svc.as_(&root).call("POST", "/v1/keys", Some(json!({"tenant": "globex"}))).1;
    let globex_id = globex["key_id"].as_str().unwrap();
    assert_eq!(a.get(&format!("/v1/keys/{globex_id}")).0, 404, "another tenant's key is not visible");
    // Another tenant's key id answers exactly like a missing one.
    let foreign = a.call("POST", &format!("/v1/incident/revoke/{globex_id}"), None);
    let missing = a.call("POST", "/v1/incident/revoke/AAAAAAAAAAAA", None);
    assert_eq!(foreign.0, 404);
    assert_eq!(foreign.1.to_string().replace(globex_id, "<id>"), missing.1.to_string().replace("AAAAAAAAAAAA", "<id>"));
    let status = a.get("/v1/status").1;
    assert_eq!((status["tenants"].as_u64(), status["keys"].as_u64()), (Some(1), Some(1)), "{status}");
    assert_eq!(a.call("POST", &format!("/v1/incident/revoke/{key_id}"), None).0, 200);
    assert!(a
        .get("/v1/audit/tail?n=100")
        .1
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["target"]["tenant"] == "acme" || e["actor"] == "ann"));
}

#[test]
fn with_2fa_every_change_needs_the_otp_header() {
    let (home, root, _) = admin_support::published_two_tenants_two_admins("serve-2fa");
    let (secret, recovery) = enable_2fa(&home, "root");
    let svc = Service::start(&home);
    let c = svc.as_(&root);
    // Reads need only the token.
    assert_eq!(c.get("/v1/keys").0, 200);
    let (status, v) = c.call("POST", "/v1/tenants", Some(json!({"id": "initech"})));
    assert_eq!(status, 401);
    assert!(v["error"]["message"].as_str().unwrap().contains("x-tokenhub-otp"));
    assert_eq!(svc.as_(&root).with_otp("000000").call("POST", "/v1/tenants", Some(json!({"id": "initech"}))).0, 401);
    let code = totp(&secret, 1);
    let ok = svc.as_(&root).with_otp(&code);
    assert_eq!(ok.call("POST", "/v1/tenants", Some(json!({"id": "initech"}))).0, 201);
    assert_eq!(ok.call("POST", "/v1/tenants", Some(json!({"id": "hooli"}))).0, 401, "replayed code");
    let rc = svc.as_(&root).with_otp(&recovery[0]);
    assert_eq!(rc.call("POST", "/v1/tenants", Some(json!({"id": "hooli"}))).0, 201);
    // An admin without 2FA is read-only on a secured store.
    let ann =
        home.run(&["--json", "--as", "root", "--otp", &recovery[1], "admin", "token", "create", "ann"]).ok().json();
    let a = svc.as_(ann["token"].as_str().unwrap());
    assert_eq!(a.get("/v1/keys").0, 200);
    assert_eq!(a.call("POST", "/v1/keys", Some(json!({"tenant": "acme"}))).0, 401);
    assert!(!home.audit_text().contains(&format!("\"{code}\"")));
}

#[test]
fn refuses_to_listen_beyond_loopback() {
    let (home, _, _) = admin_support::published_two_tenants_two_admins("serve-remote");
    let run = home.run(&["serve", "--listen", "0.0.0.0:0"]).fails(2);
    assert!(run.stderr.contains("--allow-remote"), "{}", run.stderr);
    // Without a publish target it refuses too: it could not publish changes.
    let bare = Home::new("serve-unconfigured");
    std::fs::remove_file(bare.home().join("store.enc")).unwrap();
    // A new store does not continue the old store's audit log.
    assert!(bare.run(&["init"]).fails(2).stderr.contains("audit.log exists"));
    std::fs::rename(bare.audit_log(), bare.dir.join("old-audit.log")).unwrap();
    bare.run(&["init"]).ok();
    bare.run(&["serve", "--listen", "127.0.0.1:0"]).fails(2);
}

/// Issue 16 #11: query values are text (a time in unix seconds, an all-digit
/// id), and a body's wrong value is never quoted back.
#[test]
fn numeric_query_strings_and_errors_that_quote_nothing() {
    let (home, root, _) = admin_support::published_two_tenants_two_admins("serve-query");
    home.run(&["tenant", "add", "2024"]).ok();
    let svc = Service::start(&home);
    let c = svc.as_(&root);
    let (status, found) = c.get("/v1/audit/search?since=1700000000&action=tenant.add");
    assert_eq!(status, 200, "{found}");
    assert_eq!(found.as_array().unwrap().len(), 3, "{found}");
    assert_eq!(c.get("/v1/audit/search?since=4102444800").1.as_array().unwrap().len(), 0);
    let (status, keys) = c.get("/v1/keys?tenant=2024");
    assert_eq!((status, keys.as_array().map(Vec::len)), (200, Some(0)), "{keys}");
    assert_eq!(c.get("/v1/audit/tail?n=2").1.as_array().unwrap().len(), 2);
    assert_eq!(c.get("/v1/audit/tail?n=two").0, 400);
    // A value in the wrong place: the error names the field, not the value.
    let secret = "sk-live-0123456789abcdefSECRET";
    let (status, err) = c.call("PUT", "/v1/quota", Some(json!({"tenant": "acme", "per_minute": secret})));
    assert_eq!(status, 400);
    assert!(!err.to_string().contains(secret), "{err}");
    let (status, err) =
        c.call("PUT", "/v1/providers/openai", Some(json!({"path_prefix": "/v1/", "secret": secret, secret: 1})));
    assert_eq!(status, 400);
    assert!(!err.to_string().contains(secret), "{err}");
    assert!(!home.audit_text().contains(secret));
}

/// Issue 16 #3: a slow-loris client (connections that trickle their head,
/// one that trickles a body) and 10 000 requests with bad tokens: the API
/// keeps answering a real admin within 1 s, no bad request is answered
/// 5xx, and the store and the audit log stay bounded.
#[test]
fn slow_loris_and_a_bad_token_flood_leave_the_api_answering() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    let (home, root, _) = admin_support::published_two_tenants_two_admins("serve-dos");
    let svc = Service::start(&home);
    let c = svc.as_(&root);
    assert_eq!(c.get("/v1/tenants").0, 200);
    let store = home.home().join("store.enc");
    let revision = |h: &Home| h.run(&["--json", "status"]).ok().json()["store_revision"].as_u64().unwrap();
    let (store_before, log_before, rev_before) =
        (std::fs::metadata(&store).unwrap().len(), home.audit_text().len(), revision(&home));
    let stop = AtomicBool::new(false);
    let statuses: Vec<AtomicU64> = (0..600).map(|_| AtomicU64::new(0)).collect();
    let slowest_ms = AtomicU64::new(0);
    let probes = AtomicU64::new(0);
    let addr = svc.addr.clone();
    std::thread::scope(|scope| {
        // Slow loris: 40 connections each sending a byte of their head every 300 ms.
        for _ in 0..40 {
            let (addr, stop) = (&addr, &stop);
            scope.spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                for b in b"POST /v1/tenants HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n".iter().cycle() {
                    if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
        }
        // A valid admin trickling a body it announced.
        {
            let (addr, stop, root) = (&addr, &stop, &root);
            scope.spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let head = format!(
                    "POST /v1/tenants HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {root}\r\ncontent-length: 4000\r\n\r\n{{"
                );
                s.write_all(head.as_bytes()).unwrap();
                while !stop.load(Ordering::Relaxed) && s.write_all(b" ").is_ok() {
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
        }
        // The flood: 10 000 requests with bad tokens, from 4 clients.
        let flood: Vec<_> = (0..4)
            .map(|t| {
                let (addr, statuses, stop) = (&addr, &statuses, &stop);
                scope.spawn(move || {
                    for i in 0..2500 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let token = format!("tha_{:012}{:040}", t, i);
                        let mut s = TcpStream::connect(addr).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        let req = format!(
                            "POST /v1/tenants HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: 11\r\n\r\n{{\"id\":\"x\"}}"
                        );
                        s.write_all(req.as_bytes()).unwrap();
                        let mut raw = Vec::new();
                        let _ = s.read_to_end(&mut raw);
                        let text = String::from_utf8_lossy(&raw);
                        let status: usize = text.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                        statuses[status.min(599)].fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // The real admin, meanwhile: every answer within 1 s.
        let prober = {
            let (addr, stop, slowest_ms, probes, root) = (&addr, &stop, &slowest_ms, &probes, &root);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    let req = format!("GET /v1/tenants HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {root}\r\n\r\n");
                    s.write_all(req.as_bytes()).unwrap();
                    let mut raw = Vec::new();
                    let read = s.read_to_end(&mut raw);
                    let text = String::from_utf8_lossy(&raw);
                    if !(read.is_ok() && text.starts_with("HTTP/1.1 200")) {
                        stop.store(true, Ordering::Relaxed);
                        panic!("the admin was not answered within 1 s: {read:?} {text}");
                    }
                    slowest_ms.fetch_max(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                    probes.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        for f in flood {
            f.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        prober.join().unwrap();
    });
    let count = |s: usize| statuses[s].load(Ordering::Relaxed);
    let answered: u64 = statuses.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    assert_eq!(answered, 10_000);
    assert_eq!(
        count(401) + count(429),
        10_000,
        "401 {} 429 {} other {}",
        count(401),
        count(429),
        answered - count(401) - count(429)
    );
    assert!(probes.load(Ordering::Relaxed) > 0);
    // Every failure is counted in the log, in a bounded number of lines.
    wait_for_failures(&home, 10_000);
    let (store_after, log_after, rev_after) =
        (std::fs::metadata(&store).unwrap().len(), home.audit_text().len(), revision(&home));
    eprintln!(
        "slowest admin answer {} ms over {} probes; 401: {}, 429: {}; store {store_before} -> {store_after} bytes (revision {rev_before} -> {rev_after}); audit log {log_before} -> {log_after} bytes",
        slowest_ms.load(Ordering::Relaxed),
        probes.load(Ordering::Relaxed),
        count(401),
        count(429)
    );
    assert!(rev_after - rev_before < 50, "the store was rewritten {} times", rev_after - rev_before);
    assert!(log_after - log_before < 30_000, "the audit log grew by {} bytes", log_after - log_before);
    assert!(store_after < store_before + 4_000, "the store grew from {store_before} to {store_after} bytes");
    // Still serving, and the trickled body never became a tenant.
    assert_eq!(c.get("/v1/tenants").1.as_array().unwrap().len(), 2);
}

#[test]
fn quota_mode_over_http_is_the_cli_action() {
    let (home, root, ann) = admin_support::published_two_tenants_two_admins("serve-quota-mode");
    let svc = Service::start(&home);
    let (r, a) = (svc.as_(&root), svc.as_(&ann));
    assert_eq!(r.get("/v1/quota/mode"), (200, json!({"quota_mode": "local"})));
    // Any admin reads it; setting it is the platform's (it changes how every tenant is limited).
    assert_eq!(a.get("/v1/quota/mode"), (200, json!({"quota_mode": "local"})));
    let (status, v) = a.call("PUT", "/v1/quota/mode", Some(json!({"quota_mode": "global"})));
    assert_eq!((status, v["error"]["kind"].as_str()), (403, Some("forbidden")));
    // Bad bodies: an unknown mode, another field name, no body.
    for body in [json!({"quota_mode": "regional"}), json!({"mode": "global"}), json!({})] {
        let (status, v) = r.call("PUT", "/v1/quota/mode", Some(body.clone()));
        assert_eq!((status, v["error"]["kind"].as_str()), (400, Some("usage")), "{body}");
    }
    assert_eq!(home.run(&["--json", "quota", "mode"]).ok().json(), json!({"quota_mode": "local"}));

    let before = published_version(&home);
    let (status, v) = r.call("PUT", "/v1/quota/mode", Some(json!({"quota_mode": "global"})));
    assert_eq!((status, v), (200, json!({"quota_mode": "global", "previous": "local"})));
    // Published in the same commit, and the CLI reads the same setting.
    assert!(published_version(&home) > before);
    assert_eq!(home.run(&["--json", "quota", "mode"]).ok().json(), json!({"quota_mode": "global"}));
    assert_eq!(r.get("/v1/quota/mode"), (200, json!({"quota_mode": "global"})));
    let line = home.audit_lines().into_iter().rev().find(|e| e["action"] == "quota.mode").unwrap();
    assert_eq!((line["actor"].as_str(), line["via"].as_str()), (Some("root"), Some("http")));
    assert_eq!(line["detail"], "local -> global");
    // The refused tenant admin was audited as denied.
    assert!(home.audit_lines().iter().any(|e| e["action"] == "quota.mode" && e["outcome"] == "denied"));

    let (status, v) = r.call("PUT", "/v1/quota/mode", Some(json!({"quota_mode": "local"})));
    assert_eq!((status, v), (200, json!({"quota_mode": "local", "previous": "global"})));
    // Bodies naming a level still refuse a field nobody knows.
    let extra = json!({"tenant": "acme", "per_minute": 5, "colour": "red"});
    assert_eq!(r.call("PUT", "/v1/quota", Some(extra)).0, 400);
    let extra = json!({"tenant": "acme", "cidrs": ["10.0.0.0/8"], "colour": "red"});
    assert_eq!(r.call("POST", "/v1/ip/allow", Some(extra)).0, 400);
    assert_eq!(r.call("PUT", "/v1/quota", Some(json!({"tenant": 5, "per_minute": 5}))).0, 400);
}

#[test]
fn metering_settings_over_http_are_the_cli_action() {
    let (home, root, ann) = admin_support::published_two_tenants_two_admins("serve-metering");
    let svc = Service::start(&home);
    let (r, a) = (svc.as_(&root), svc.as_(&ann));
    let defaults = json!({"soft_limit_percent": 80, "default_output_tokens": 1024});
    assert_eq!(a.get("/v1/quota/metering"), (200, defaults.clone()));
    let (status, v) = a.call("PUT", "/v1/quota/metering", Some(json!({"soft_limit_percent": 90})));
    assert_eq!((status, v["error"]["kind"].as_str()), (403, Some("forbidden")), "the platform's setting");
    for body in [json!({"soft_limit_percent": 0}), json!({"default_output_tokens": 0})] {
        let (status, v) = r.call("PUT", "/v1/quota/metering", Some(body.clone()));
        assert_eq!((status, v["error"]["kind"].as_str()), (422, Some("invalid_policy")), "{body}: {v}");
    }
    for body in [json!({"percent": 90}), json!({})] {
        let (status, v) = r.call("PUT", "/v1/quota/metering", Some(body.clone()));
        assert_eq!((status, v["error"]["kind"].as_str()), (400, Some("usage")), "{body}: {v}");
    }
    let (status, v) = r.call("PUT", "/v1/quota/metering", Some(json!({"default_output_tokens": 300})));
    assert_eq!((status, v), (200, json!({"soft_limit_percent": 80, "default_output_tokens": 300})));
    assert_eq!(home.run(&["--json", "quota", "metering"]).ok().json()["default_output_tokens"], 300);
}

#[test]
fn erasure_over_http_needs_the_platform_and_the_confirmation() {
    let (home, root, ann) = admin_support::two_tenants_two_admins("serve-erase");
    home.run(&["admin", "add", "gus", "--role", "tenant", "--tenant", "globex"]).ok();
    home.run(&["publish"]).ok();
    let svc = Service::start(&home);
    let (r, a) = (svc.as_(&root), svc.as_(&ann));
    assert_eq!(a.call("POST", "/v1/tenants/acme/erase", Some(json!({"confirm": "acme"}))).0, 403);
    assert_eq!(r.call("POST", "/v1/tenants/acme/erase", Some(json!({"confirm": "globex"}))).0, 400);
    assert_eq!(r.call("POST", "/v1/tenants/acme/erase", None).0, 400);
    let version = published_version(&home);
    let (status, v) = r.call("POST", "/v1/tenants/acme/erase", Some(json!({"confirm": "acme"})));
    assert_eq!((status, &v["erased"]), (200, &json!(true)), "{v}");
    assert!(published_version(&home) > version, "published at once");
    assert_eq!(r.get("/v1/tenants/acme").0, 404);
    let (status, v) = r.call("POST", "/v1/admins/gus/erase", Some(json!({"confirm": "gus"})));
    assert_eq!(status, 200, "{v}");
    home.run(&["--as", "root", "audit", "verify"]).ok();
    let text = home.audit_text();
    assert!(!text.contains("acme") && !text.contains("\"ann\"") && !text.contains("gus"), "{text}");
}

/// `PUT /v1/tenants/{t}/log-retention` is `tenant log-retention`: platform
/// only, validated, published at once, an empty body restores the defaults.
#[test]
fn log_retention_over_http_is_the_cli_action() {
    let (home, root, ann) = admin_support::published_two_tenants_two_admins("serve-log-retention");
    let svc = Service::start(&home);
    let (r, a) = (svc.as_(&root), svc.as_(&ann));
    let path = "/v1/tenants/acme/log-retention";
    assert_eq!(a.call("PUT", path, Some(json!({"truncate_ips_after_days": 0}))).0, 403);
    assert_eq!(r.call("PUT", path, Some(json!({"retain_days": 0}))).0, 400);
    assert_eq!(r.call("PUT", path, Some(json!({"retain": 3}))).0, 400);
    let version = published_version(&home);
    let (status, v) = r.call("PUT", path, Some(json!({"retain_days": 3, "truncate_ips_after_days": 0})));
    assert_eq!(status, 200, "{v}");
    assert!(published_version(&home) > version, "published at once");
    let shown = r.get("/v1/tenants/acme").1;
    assert_eq!(shown["log_retention"], json!({"retain_days": 3, "truncate_ips_after_days": 0}), "{shown}");
    assert_eq!(r.call("PUT", path, Some(json!({}))).1["log_retention"], Value::Null);
    assert_eq!(r.get("/v1/tenants/acme").1["log_retention"], Value::Null);
}

#[test]
fn prices_and_token_budgets_over_http_are_the_cli_actions() {
    let (home, root, ann) = admin_support::two_tenants_two_admins("serve-prices");
    let secret = home.dir.join("secret");
    std::fs::write(&secret, "sk-test-secret").unwrap();
    home.run(&["provider", "set", "openai", "--path-prefix", "/v1/", "--secret-file", secret.to_str().unwrap()]).ok();
    home.run(&["publish"]).ok();
    let svc = Service::start(&home);
    let (r, a) = (svc.as_(&root), svc.as_(&ann));
    // Prices: the platform's; dollars as strings or numbers.
    let price = json!({"provider": "openai", "model": "gpt-4o", "input": "2.50", "cached_input": 1.25, "output": 10});
    assert_eq!(a.call("PUT", "/v1/prices", Some(price.clone())).0, 403);
    let (status, v) = r.call("PUT", "/v1/prices", Some(price));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["price"]["output_nano_usd_per_token"], 10_000);
    for bad in [
        json!({"provider": "openai", "model": "gpt-4o", "input": "cheap", "output": 1}),
        json!({"provider": "openai", "model": "gpt-4o", "input": 1}),
        json!({"provider": "openai", "model": "gpt-4o", "input": 1, "output": 1, "colour": "red"}),
    ] {
        assert_eq!(r.call("PUT", "/v1/prices", Some(bad.clone())).0, 400, "{bad}");
    }
    let (status, list) = a.get("/v1/prices");
    assert_eq!((status, list[0]["cached_input_nano_usd_per_token"].as_u64()), (200, Some(1_250)));
    // Budgets in the quota body; a tenant admin sets its own keys'.
    let (key_id, _) = home.create_key(&["--tenant", "acme"]);
    let body = json!({"key": key_id, "tokens_per_minute": 1000, "tokens_per_day": 50000, "monthly_budget_usd": "12.5"});
    let (status, v) = a.call("PUT", "/v1/quota", Some(body));
    assert_eq!(status, 200, "{v}");
    let q = a.get(&format!("/v1/quota?key={key_id}")).1;
    assert_eq!(
        q["budget"],
        json!({"tokens_per_minute": 1000, "tokens_per_day": 50000, "monthly_budget_nano_usd": 12_500_000_000u64})
    );
    assert!(q["quota"].is_null());
    let bad = json!({"key": key_id, "monthly_budget_usd": "-3"});
    assert_eq!(a.call("PUT", "/v1/quota", Some(bad)).0, 400);
    // Removal by query; audited with the actor and channel.
    assert_eq!(r.call("DELETE", "/v1/prices?provider=openai&model=gpt-4o", None).0, 200);
    assert_eq!(r.call("DELETE", "/v1/prices?provider=openai&model=gpt-4o", None).0, 404);
    let line = home.audit_lines().into_iter().rev().find(|e| e["action"] == "price.remove").unwrap();
    assert_eq!((line["actor"].as_str(), line["via"].as_str()), (Some("root"), Some("http")));
}

#[test]
fn usage_over_http_is_the_cli_report() {
    let (home, root, ann) = admin_support::published_two_tenants_two_admins("serve-usage");
    let t = tokenhub_guard::admin::audit::rfc3339(admin_support::now() - 60);
    let at = format!("{}.250Z", t.trim_end_matches('Z'));
    let line = |tenant: &str, key: &str, input: u64| {
        format!(
            r#"{{"start_time":"{at}","status":"200","reason":"allowed","tenant":"{tenant}","sub_account":"default","key_id":"{key}","model":"gpt-4o","input_tokens":"{input}","output_tokens":"5","cost_nano_usd":"7"}}"#
        )
    };
    let log = [line("acme", "k1", 10), line("acme", "k2", 20), line("globex", "k3", 40)].join("\n") + "\n";
    std::fs::write(home.dir.join("access.log"), log).unwrap();
    let svc = Service::start(&home);
    let (r, a) = (svc.as_(&root), svc.as_(&ann));
    let (status, v) = r.call("GET", "/v1/usage?by=tenant&per_model=true", None);
    assert_eq!(status, 200, "{v}");
    let cli = home
        .run(&[
            "--json",
            "usage",
            "--access-log",
            home.dir.join("access.log").to_str().unwrap(),
            "--by",
            "tenant",
            "--per-model",
        ])
        .ok()
        .json();
    assert_eq!(v, cli, "the API answers what the CLI prints");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["input_tokens"].as_u64().unwrap()).collect::<Vec<_>>(), [30, 40]);
    // A tenant admin sees its own tenant only.
    let (status, v) = a.call("GET", "/v1/usage", None);
    assert_eq!(status, 200, "{v}");
    assert!(v["rows"].as_array().unwrap().iter().all(|r| r["tenant"] == "acme"), "{v}");
    let (status, _) = a.call("GET", "/v1/usage?tenant=globex", None);
    assert_eq!(status, 403);
    for bad in ["/v1/usage?by=region", "/v1/usage?per_day=maybe", "/v1/usage?format=xml"] {
        let (status, v) = r.call("GET", bad, None);
        assert_eq!((status, v["error"]["kind"].as_str()), (400, Some("usage")), "{bad}: {v}");
    }
}

/// Where in the process's writable memory `needle` occurs (Linux
/// `/proc/PID/maps` and `/proc/PID/mem`; the test is the process's parent,
/// so ptrace rules let it read).
fn memory_hits(pid: u32, needle: &[u8]) -> Vec<String> {
    use std::io::{Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut hits = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next().unwrap(), fields.next().unwrap());
        let name = fields.nth(3).unwrap_or("[anon]");
        if !perms.starts_with("rw") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        let n = buf.windows(needle.len()).filter(|w| *w == needle).count();
        if n > 0 {
            hits.push(format!("{n} in {name} {range}"));
        }
    }
    hits
}

/// After a provider secret is set, a TOTP code verified and the store
/// opened over HTTP, the still-running service's memory holds neither the
/// provider secret nor the TOTP seed (they are zeroized after use). The
/// master key is the scan's control: the service needs it while it runs.
#[test]
fn secrets_do_not_stay_in_the_services_memory() {
    let (home, root, _) = admin_support::published_two_tenants_two_admins("serve-memory");
    let (seed, _) = enable_2fa(&home, "root");
    let svc = Service::start(&home);
    let provider_secret = format!("sk-memscan-{}", &root[root.len() - 16..]);
    let c = svc.as_(&root).with_otp(&totp(&seed, 1));
    let body = json!({"path_prefix": "/v1/", "secret": provider_secret});
    assert_eq!(c.call("PUT", "/v1/providers/openai", Some(body)).0, 200);
    assert_eq!(svc.as_(&root).get("/v1/providers").0, 200);
    assert_eq!(svc.as_(&root).get("/v1/tenants").0, 200);
    let raw_seed = base32_decode(&seed);
    let pid = svc.child.id();
    // The control: the master key, which the service holds while it runs
    // (it decrypts the store on every request), is found.
    let master = std::fs::read_to_string(home.master_key_file()).unwrap();
    let master = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, master.trim()).unwrap();
    assert!(!memory_hits(pid, &master).is_empty(), "the scan finds nothing at all");
    let found: Vec<String> = [
        ("provider secret", provider_secret.as_bytes()),
        ("TOTP seed (base32)", seed.as_bytes()),
        ("TOTP seed", &raw_seed),
    ]
    .into_iter()
    .filter_map(|(what, needle)| {
        let hits = memory_hits(pid, needle);
        (!hits.is_empty()).then(|| format!("the {what}: {hits:?}"))
    })
    .collect();
    assert!(found.is_empty(), "still in the service's memory: {found:?}");
}

/// RFC 4648 base32 (no padding), for the TOTP seed's raw bytes.
fn base32_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u64, 0);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {text}"),
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
