//! The deployment promises through a real Envoy running the demo
//! config `envoy/demo/envoy.yaml.tmpl` (what `make demo` runs, and what the
//! Docker and Kubernetes configs mirror):
//!
//! - TLS: the listener completes a TLS 1.3 handshake (ALPN h2 and
//!   http/1.1) and refuses TLS 1.2, 1.1 and 1.0 with a protocol_version
//!   alert;
//! - data localization: a tenant's region (from the bundle, never from the
//!   client) picks the `eu` or `us` upstream; no region → JSON 403, no
//!   upstream at all;
//! - the JSON access log carries metadata only, with the right values for
//!   allowed and denied requests;
//! - zero data retention: canary strings planted in bodies, query strings,
//!   API keys, client headers and the provider secret appear in no output
//!   (Envoy's log, the access log, admin endpoints, the sidecar's outputs
//!   and files, the published bundle), and at trace level in no line the
//!   filter logs.
//!
//! Requests go through `curl` and `openssl s_client` (both installed): the
//! harness's raw client speaks plaintext only. Needs `make wasm`,
//! `make admin` and `make bootstrap`.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokenhub_integration::envoy::DEMO_TEMPLATE;
use tokenhub_integration::{paths, Admin, EchoUpstream, Envoy, EnvoyOptions, IssuedKey};

/// The log levels `tools/demo.sh` ships with.
const SHIPPED_LOG_LEVEL: &str = "warn";
const SHIPPED_COMPONENT_LOG_LEVEL: &str = "wasm:info";
const CHAT: &str = "/v1/chat/completions";
/// Every field of an access log line; anything else would be a leak path.
const ACCESS_LOG_FIELDS: [&str; 25] = [
    "time",
    "request_id",
    "tenant",
    "sub_account",
    "key_id",
    "region",
    "client_ip",
    "method",
    "path",
    "status",
    "reason",
    "details",
    "upstream_cluster",
    "protocol",
    "tls_version",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    // Metered requests only (credentials with model rules): model and token counts, never content.
    "model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    // Metered requests only (credentials with budgets): cost and the soft-limit flag.
    "cost_nano_usd",
    "soft_limit",
];

// ---------------------------------------------------------------------------
// Fixture: a store with an eu tenant, a us tenant and a tenant without a
// region, two echo upstreams, and Envoy on the demo config.

/// The filter is built by `make wasm`, which `make test` runs first; a
/// test without it is skipped (`Gateway::start` answers None).
fn guard_built() -> bool {
    let built = paths::guard_wasm().is_file();
    if !built {
        eprintln!("skipped: {} not built (make wasm)", paths::guard_wasm().display());
    }
    built
}

/// A self-signed certificate for localhost, 127.0.0.1 and ::1, made the
/// way `tools/demo.sh` makes it.
struct TestCert {
    cert: PathBuf,
    key: PathBuf,
}

impl TestCert {
    fn generate(dir: &Path) -> TestCert {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args(["-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap_or_else(|e| panic!("running openssl: {e}"));
        assert!(out.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
        TestCert { cert, key }
    }
}

/// The fixture's keys, each created through the real CLI.
struct Tenants {
    eu: IssuedKey,
    us: IssuedKey,
    nowhere: IssuedKey,
    /// A well-formed key deleted before publishing: unknown to the guard.
    deleted: String,
}

struct Gateway {
    // Drop order: Envoy first (its drop prints the log on failure).
    envoy: Envoy,
    eu: EchoUpstream,
    us: EchoUpstream,
    admin: Admin,
    tenants: Tenants,
    cert: TestCert,
    /// Everything the sidecar printed (except the one-time key display).
    admin_outputs: Vec<String>,
}

impl Gateway {
    fn start(provider_secret: &str) -> Option<Gateway> {
        Gateway::start_at(provider_secret, SHIPPED_LOG_LEVEL, Some(SHIPPED_COMPONENT_LOG_LEVEL))
    }

    /// None where the filter is not built (see `guard_built`).
    fn start_at(provider_secret: &str, log_level: &str, component_log_level: Option<&str>) -> Option<Gateway> {
        if !guard_built() {
            return None;
        }
        let admin = Admin::init(&paths::guard_wasm());
        let mut admin_outputs = Vec::new();
        let tenants = populate(&admin, provider_secret, &mut admin_outputs);
        admin_outputs.push(format!("{:?}", admin.publish()));
        let cert = TestCert::generate(admin.dir());
        let (eu, us) = (EchoUpstream::start().unwrap(), EchoUpstream::start().unwrap());
        let mut opts = EnvoyOptions::new(eu.port())
            .var("UPSTREAM_EU_PORT", eu.port())
            .var("UPSTREAM_US_PORT", us.port())
            .var("TLS_CERT", cert.cert.display())
            .var("TLS_KEY", cert.key.display());
        opts.template = PathBuf::from(DEMO_TEMPLATE);
        opts.bundle_dir = Some(admin.bundle_dir());
        opts.env.push(("TOKENHUB_BUNDLE_KEY".into(), admin.bundle_key().into()));
        opts.log_level = log_level.into();
        opts.component_log_level = component_log_level.map(str::to_string);
        let envoy = Envoy::start(opts);
        Some(Gateway { envoy, eu, us, admin, tenants, cert, admin_outputs })
    }

    fn url(&self, host: &str, path_and_query: &str) -> String {
        format!("https://{host}:{}{path_and_query}", self.envoy.listener().port())
    }

    /// One request with curl over HTTP/1.1 from 127.0.0.1.
    fn send(&self, req: Req<'_>) -> CurlResponse {
        curl(&self.cert.cert, &req.args(self))
    }

    /// Waits until the access log holds `n` lines.
    fn access_log(&self, n: usize) -> Vec<Value> {
        self.envoy.access_log_lines(n)
    }
}

/// Tenants `eu-corp` (eu), `us-corp` (us) and `no-region` (none), each
/// allowed from 127.0.0.1 and ::1, one key each, and one provider.
fn populate(admin: &Admin, provider_secret: &str, outputs: &mut Vec<String>) -> Tenants {
    let provider = ["openai", "--path-prefix", "/v1/", "--header", "authorization", "--format", "Bearer {secret}"];
    outputs.push(format!("{:?}", admin.set_provider(&provider, provider_secret)));
    let mut run = |args: &[&str]| outputs.push(format!("{:?}", admin.run(args).ok()));
    for (tenant, region) in [("eu-corp", "eu"), ("us-corp", "us"), ("no-region", "")] {
        run(&["tenant", "add", tenant, "--name", tenant, "--region", region]);
        run(&["ip", "allow", "--tenant", tenant, "127.0.0.1/32", "::1/128"]);
    }
    let deleted = admin.create_key("eu-corp", &["--name", "deleted"]);
    run(&["key", "delete", &deleted.key_id]);
    Tenants {
        eu: admin.create_key("eu-corp", &["--name", "eu-key"]),
        us: admin.create_key("us-corp", &["--name", "us-key"]),
        nowhere: admin.create_key("no-region", &["--name", "nowhere-key"]),
        deleted: deleted.key,
    }
}

// ---------------------------------------------------------------------------
// curl and openssl

/// A request as curl sends it: HTTP/1.1 unless `h2`, from `src` (default
/// 127.0.0.1) to the listener at `host`.
#[derive(Clone, Copy)]
struct Req<'a> {
    method: &'a str,
    path_and_query: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: Option<&'a str>,
    host: &'a str,
    src: Option<&'a str>,
    h2: bool,
}

impl<'a> Req<'a> {
    fn new(method: &'a str, path_and_query: &'a str, headers: &'a [(&'a str, &'a str)]) -> Req<'a> {
        Req { method, path_and_query, headers, body: None, host: "127.0.0.1", src: None, h2: false }
    }

    fn body(self, body: &'a str) -> Req<'a> {
        Req { body: Some(body), ..self }
    }

    fn from(self, src: &'a str) -> Req<'a> {
        Req { src: Some(src), ..self }
    }

    fn h2(self) -> Req<'a> {
        Req { h2: true, ..self }
    }

    fn to_v6(self) -> Req<'a> {
        Req { host: "[::1]", ..self }
    }

    fn args(&self, gw: &Gateway) -> Vec<String> {
        let mut args = vec!["-X".to_string(), self.method.to_string(), gw.url(self.host, self.path_and_query)];
        // HTTP/2 is what clients negotiate by default (ALPN); HTTP/1.1 for
        // requests with a body, because curl 7.88 sometimes reports a
        // stream error when Envoy answers (e.g. a 403) before reading it.
        args.push(if self.h2 { "--http2" } else { "--http1.1" }.to_string());
        for (name, value) in self.headers {
            args.extend(["-H".to_string(), format!("{name}: {value}")]);
        }
        if let Some(body) = self.body {
            args.extend(["-H".into(), "content-type: application/json".into(), "--data-binary".into(), body.into()]);
        }
        if let Some(src) = self.src {
            args.extend(["--interface".to_string(), src.to_string()]);
        }
        args
    }
}

#[derive(Debug)]
struct CurlResponse {
    status: u16,
    http_version: String,
    headers: String,
    body: String,
}

impl CurlResponse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A response header's value (curl prints names as received).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Runs curl, which must complete an HTTP exchange.
fn curl(cacert: &Path, args: &[String]) -> CurlResponse {
    let out = curl_raw(cacert, args);
    assert!(out.status.success(), "curl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // -D - puts the response head first; -w appends "status version".
    let (head, rest) = stdout.split_once("\r\n\r\n").unwrap_or(("", &stdout));
    let (body, trailer) = rest.rsplit_once('\n').unwrap_or((rest, ""));
    let mut trailer = trailer.split_whitespace();
    let status = trailer.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = trailer.next().unwrap_or_default().to_string();
    CurlResponse { status, http_version, headers: head.to_string(), body: body.to_string() }
}

fn curl_raw(cacert: &Path, args: &[String]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "15", "-D", "-", "-w", "\n%{http_code} %{http_version}", "--cacert"])
        .arg(cacert)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running curl: {e}"))
}

/// `openssl s_client` with one protocol version forced; returns whether
/// the handshake completed and everything it printed.
fn s_client(gw: &Gateway, version_flag: &str) -> (bool, String) {
    let connect = format!("127.0.0.1:{}", gw.envoy.listener().port());
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-servername", "localhost", "-alpn", "h2,http/1.1"])
        .arg(version_flag)
        // Let the client offer the old protocols at all (OpenSSL 3's
        // default security level refuses TLS 1.0/1.1 by itself), so a
        // failure is the server's refusal.
        .args(["-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile"])
        .arg(&gw.cert.cert)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running openssl s_client: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------
// TLS

#[test]
fn tls13_handshake_succeeds_with_alpn_h2_and_http11() {
    let Some(gw) = Gateway::start("sk-tls-test-provider") else { return };
    let (ok, text) = s_client(&gw, "-tls1_3");
    assert!(ok, "TLS 1.3 handshake failed:\n{text}");
    assert!(text.contains("New, TLSv1.3"), "not TLS 1.3:\n{text}");
    assert!(text.contains("ALPN protocol: h2"), "h2 not negotiated:\n{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "certificate not verified:\n{text}");

    let bearer = format!("Bearer {}", gw.tenants.eu.key);
    let headers = [("authorization", bearer.as_str())];
    let h2 = gw.send(Req::new("GET", "/v1/models", &headers).h2());
    assert_eq!((h2.status, h2.http_version.as_str()), (200, "2"), "{h2:?}");
    let h1 = gw.send(Req::new("GET", "/v1/models", &headers));
    assert_eq!((h1.status, h1.http_version.as_str()), (200, "1.1"), "{h1:?}");
    let log = gw.access_log(2);
    assert!(log.iter().all(|l| l["tls_version"] == "TLSv1.3"), "{log:?}");
}

#[test]
fn tls12_and_older_are_refused_with_a_protocol_version_alert() {
    let Some(gw) = Gateway::start("sk-tls-test-provider") else { return };
    for flag in ["-tls1_2", "-tls1_1", "-tls1"] {
        let (ok, text) = s_client(&gw, flag);
        assert!(!ok, "{flag}: handshake completed:\n{text}");
        // Alert 70 comes from the server: the client offered the version.
        assert!(text.contains("alert protocol version"), "{flag}: no protocol_version alert:\n{text}");
    }
    let args: Vec<String> = ["--tlsv1.2", "--tls-max", "1.2"].map(String::from).into();
    let url = gw.url("127.0.0.1", "/v1/models");
    let out = curl_raw(&gw.cert.cert, &[args, vec![url]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // curl exit 35: SSL connect error.
    assert_eq!(out.status.code(), Some(35), "curl with TLS 1.2: {stderr}");
    assert!(stderr.contains("alert protocol version"), "{stderr}");
    assert!(gw.eu.requests().is_empty() && gw.us.requests().is_empty());
    // Nothing was logged as a request: the handshake never completed.
    thread::sleep(Duration::from_millis(300));
    assert!(gw.envoy.access_log().is_empty(), "{:?}", gw.envoy.access_log());
}

// ---------------------------------------------------------------------------
// Data localization

#[test]
fn each_tenant_reaches_only_its_regions_upstream() {
    let Some(gw) = Gateway::start("sk-region-test-provider") else { return };
    let (eu_auth, us_auth) = (format!("Bearer {}", gw.tenants.eu.key), format!("Bearer {}", gw.tenants.us.key));
    // A client-sent region is stripped: the bundle decides.
    let eu_headers = [("authorization", eu_auth.as_str()), ("x-tokenhub-region", "us")];
    let us_headers = [("authorization", us_auth.as_str()), ("x-tokenhub-region", "eu")];
    for _ in 0..3 {
        assert_eq!(gw.send(Req::new("POST", CHAT, &eu_headers).body("{}")).status, 200);
        assert_eq!(gw.send(Req::new("POST", CHAT, &us_headers).body("{}")).status, 200);
    }
    let (eu, us) = (gw.eu.requests(), gw.us.requests());
    assert_eq!((eu.len(), us.len()), (3, 3));
    assert!(eu.iter().all(|r| r.header("x-tokenhub-tenant") == Some("eu-corp")), "{eu:?}");
    assert!(eu.iter().all(|r| r.header_all("x-tokenhub-region") == ["eu"]), "{eu:?}");
    assert!(us.iter().all(|r| r.header("x-tokenhub-tenant") == Some("us-corp")), "{us:?}");
    assert!(us.iter().all(|r| r.header_all("x-tokenhub-region") == ["us"]), "{us:?}");
}

#[test]
fn a_tenant_without_a_region_gets_403_and_reaches_no_upstream() {
    let Some(gw) = Gateway::start("sk-region-test-provider") else { return };
    let auth = format!("Bearer {}", gw.tenants.nowhere.key);
    // Even when the client names a region itself.
    let headers = [("authorization", auth.as_str()), ("x-tokenhub-region", "eu")];
    let resp = gw.send(Req::new("POST", CHAT, &headers).body("{}"));
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(resp.json()["error"]["code"], "region_unavailable", "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert!(gw.eu.requests().is_empty() && gw.us.requests().is_empty());
    let log = gw.access_log(1);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["details"], "direct_response");
    assert_eq!(log[0]["tenant"], "no-region");
    assert!(log[0]["upstream_cluster"].is_null(), "{log:?}");
}

// ---------------------------------------------------------------------------
// Access log

#[test]
fn access_log_has_metadata_fields_for_allowed_and_denied_requests() {
    let Some(gw) = Gateway::start("sk-log-test-provider") else { return };
    let auth = format!("Bearer {}", gw.tenants.eu.key);
    let headers = [("authorization", auth.as_str()), ("x-request-id", "client-chosen-id")];
    let allowed = gw.send(Req::new("POST", "/v1/chat/completions?user=alice", &headers).body("{\"n\":1}"));
    assert_eq!(allowed.status, 200, "{allowed:?}");
    let denied = gw.send(Req::new("POST", "/v1/chat/completions?user=bob", &headers).body("{}").from("127.0.0.2"));
    assert_eq!(denied.status, 403, "{denied:?}");
    let spoofed = [("authorization", auth.as_str()), ("x-tokenhub-tenant", "us-corp")];
    assert_eq!(gw.send(Req::new("GET", "/v1/models", &spoofed)).status, 403);
    let v6 = gw.send(Req::new("GET", "/v1/models", &[("authorization", auth.as_str())]).to_v6().h2());
    assert_eq!(v6.status, 200, "{v6:?}");
    // Refused by Envoy before the guard runs: the claimed tenant is still
    // in the request's headers, and must not reach the log.
    let bad_path = gw.send(Req::new("GET", "/v1/a%2Fb", &spoofed));
    assert_eq!(bad_path.status, 400, "{bad_path:?}");

    let log = gw.access_log(5);
    assert_eq!(log.len(), 5, "{log:?}");
    for line in &log {
        let mut fields: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort_unstable();
        let mut want = ACCESS_LOG_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(fields, want, "{line}");
    }
    // The 400 never got as far as a request id or a response body.
    log[..4].iter().for_each(assert_common_fields);
    assert_allowed_line(&log[0], &allowed, "eu-corp", &gw.tenants.eu.key_id);
    let own = [
        ("tenant", "eu-corp"),
        ("sub_account", "default"),
        ("key_id", gw.tenants.eu.key_id.as_str()),
        ("region", "eu"),
    ];
    assert_denied_line(&log[1], "127.0.0.2", "ip_not_allowed", &own);
    assert_denied_line(&log[2], "127.0.0.1", "tenant_mismatch", &own);
    assert_eq!((log[3]["client_ip"].as_str(), log[3]["protocol"].as_str()), (Some("::1"), Some("HTTP/2")));
    assert_eq!((log[4]["status"].as_u64(), log[4]["details"].as_str()), (Some(400), Some("path_normalization_failed")));
    assert!(log[4]["tenant"].is_null() && log[4]["reason"].is_null(), "{}", log[4]);

    // The incident-response review of the same log: `tokenhub-admin usage`.
    let access_log = gw.envoy.access_log_path().display().to_string();
    let report = gw.admin.json(&["usage", "--access-log", &access_log]);
    let rows = report["rows"].as_array().expect("rows");
    let key_row = rows.iter().find(|r| r["key_id"] == gw.tenants.eu.key_id.as_str()).expect("a row for the key");
    assert_eq!((key_row["tenant"].as_str(), key_row["sub_account"].as_str()), (Some("eu-corp"), Some("default")));
    assert_eq!((key_row["requests"].as_u64(), key_row["allowed"].as_u64()), (Some(4), Some(2)), "{key_row}");
    assert_eq!(key_row["denied"], serde_json::json!({"ip_not_allowed": 1, "tenant_mismatch": 1}), "{key_row}");
    assert_eq!(key_row["distinct_client_ips"], 3, "127.0.0.1, 127.0.0.2 and ::1: {key_row}");
    assert!(key_row["first_seen"].as_str() <= key_row["last_seen"].as_str());
    // Envoy's own 400 is nobody's: never the tenant the client claimed.
    let anonymous = rows.iter().find(|r| r["tenant"] == "-").expect("an anonymous row");
    assert_eq!(anonymous["denied"], serde_json::json!({"status_400": 1}), "{anonymous}");
    assert!(!rows.iter().any(|r| r["tenant"] == "us-corp"), "a claimed tenant was attributed: {report}");
}

/// What every line has, whatever the outcome.
fn assert_common_fields(line: &Value) {
    let time = line["time"].as_str().unwrap_or_default();
    // 2025-01-31T12:34:56.789Z
    assert!(time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{line}");
    let request_id = line["request_id"].as_str().unwrap_or_default();
    assert!(request_id.len() == 36 && request_id != "client-chosen-id", "Envoy's own UUID expected: {line}");
    assert_eq!(line["tls_version"], "TLSv1.3", "{line}");
    assert!(!line["path"].as_str().unwrap_or("?").contains('?'), "query string logged: {line}");
    assert!(line["status"].is_u64() && line["bytes_out"].as_u64() > Some(0), "{line}");
    assert!(line["bytes_in"].is_u64() && line["duration_ms"].is_u64(), "{line}");
}

fn assert_allowed_line(line: &Value, resp: &CurlResponse, tenant: &str, key_id: &str) {
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["request_id"].as_str(), resp.header("x-request-id"), "the id the client was given: {line}");
    assert_eq!((line["tenant"].as_str(), line["sub_account"].as_str()), (Some(tenant), Some("default")), "{line}");
    assert_eq!((line["key_id"].as_str(), line["region"].as_str()), (Some(key_id), Some("eu")), "{line}");
    assert_eq!((line["method"].as_str(), line["path"].as_str()), (Some("POST"), Some(CHAT)), "{line}");
    assert_eq!((line["client_ip"].as_str(), line["upstream_cluster"].as_str()), (Some("127.0.0.1"), Some("eu")));
    assert!(line["reason"].is_null(), "{line}");
    assert_eq!(line["bytes_in"], 7, "the body's length, not the body: {line}");
}

/// A 403 denial: the guard's reason, no upstream, and no identity taken
/// from the client's own x-tokenhub-* headers: each identity field is
/// either absent or the key's own (`own`, should the guard ever record it).
fn assert_denied_line(line: &Value, client_ip: &str, reason: &str, own: &[(&str, &str)]) {
    assert_eq!((line["status"].as_u64(), line["reason"].as_str()), (Some(403), Some(reason)), "{line}");
    assert_eq!(line["client_ip"].as_str(), Some(client_ip), "{line}");
    assert!(line["upstream_cluster"].is_null(), "{line}");
    for (field, value) in own {
        assert!(line[field].is_null() || line[field] == *value, "{field} from the client: {line}");
    }
}

// ---------------------------------------------------------------------------
// Zero data retention

/// Unique markers, one per place they are planted, so a hit names the leak.
struct Canaries {
    run: String,
}

impl Canaries {
    fn new() -> Canaries {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        Canaries { run: format!("{}x{nanos}", std::process::id()) }
    }

    fn get(&self, place: &str) -> String {
        format!("CANARY{place}Z{}", self.run)
    }
}

/// Every value planted, by name.
type Planted = Vec<(String, String)>;

/// What [`send_canary_traffic`] did.
struct Traffic {
    planted: Planted,
    requests: usize,
}

/// Where canaries ride in every request: body, query string, and client
/// headers that are not credentials.
struct CanaryRequest {
    body: String,
    path_and_query: String,
    /// The same query on a stateless GET endpoint.
    h2_path_and_query: String,
    headers: Vec<(String, String)>,
}

impl CanaryRequest {
    fn new(c: &Canaries) -> CanaryRequest {
        CanaryRequest {
            body: format!("{{\"prompt\":\"{}\"}}", c.get("body")),
            path_and_query: format!("{CHAT}?q={}", c.get("query")),
            h2_path_and_query: format!("/v1/models?q={}", c.get("query")),
            headers: vec![
                ("x-client-note".into(), c.get("header")),
                ("cookie".into(), format!("session={}", c.get("cookie"))),
                ("user-agent".into(), c.get("agent")),
                ("x-request-id".into(), c.get("reqid")),
            ],
        }
    }

    /// The common headers plus `extra` (credentials, claimed identity).
    fn headers_with(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let extra = extra.iter().map(|(n, v)| (n.to_string(), v.clone()));
        self.headers.iter().cloned().chain(extra).collect()
    }
}

/// (expected status, headers) of every canary request, allowed and denied.
fn canary_cases(gw: &Gateway, c: &Canaries, req: &CanaryRequest) -> Vec<(u16, Vec<(String, String)>)> {
    let t = &gw.tenants;
    let eu = format!("Bearer {}", t.eu.key);
    vec![
        // Allowed: eu and us, with either credential header.
        (200, req.headers_with(&[("authorization", eu.clone())])),
        (200, req.headers_with(&[("x-api-key", t.us.key.clone())])),
        // Denied: malformed keys carrying a canary, and an unknown (deleted) key.
        (401, req.headers_with(&[("authorization", format!("Bearer thk_{}", c.get("apikey")))])),
        (401, req.headers_with(&[("x-api-key", c.get("apikey"))])),
        (401, req.headers_with(&[("authorization", format!("Bearer {}", t.deleted))])),
        // Denied: a claimed tenant that is not the key's.
        (403, req.headers_with(&[("authorization", eu), ("x-tokenhub-tenant", c.get("tenant"))])),
        // Allowed by the guard, refused by the router (no region).
        (403, req.headers_with(&[("authorization", format!("Bearer {}", t.nowhere.key))])),
    ]
}

/// Sends every canary case twice (POST chat completions with the body over
/// HTTP/1.1, GET models over HTTP/2, both with the canary query: `GET` of
/// chat completions lists stored completions, which the platform's shared
/// credential does not serve), then the eu key from outside its allowlist
/// and with a spoofed key id. Returns what was planted, secrets included.
fn send_canary_traffic(gw: &Gateway, c: &Canaries) -> Traffic {
    let req = CanaryRequest::new(c);
    let cases = canary_cases(gw, c, &req);
    let eu = format!("Bearer {}", gw.tenants.eu.key);
    let outside = (403, req.headers_with(&[("authorization", eu.clone())]));
    let spoofed_key_id = req.headers_with(&[("authorization", eu), ("x-tokenhub-key-id", c.get("keyid"))]);
    let send = |headers: &[(String, String)], h2: bool, src: Option<&str>| {
        let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let r = if h2 {
            Req::new("GET", &req.h2_path_and_query, &refs).h2()
        } else {
            Req::new("POST", &req.path_and_query, &refs).body(&req.body)
        };
        gw.send(if let Some(src) = src { r.from(src) } else { r })
    };
    for (want, headers) in &cases {
        for h2 in [false, true] {
            let resp = send(headers, h2, None);
            assert_eq!(resp.status, *want, "{resp:?}");
        }
    }
    assert_eq!(send(&outside.1, false, Some("127.0.0.2")).status, outside.0);
    // The guard strips (or refuses) a client-sent key id: either is fine here.
    assert!([200, 403].contains(&send(&spoofed_key_id, false, None).status));
    let places = ["body", "query", "header", "cookie", "agent", "reqid", "tenant", "keyid", "apikey"];
    let mut planted: Planted = places.iter().map(|p| (p.to_string(), c.get(p))).collect();
    planted.extend(secrets_planted(gw));
    Traffic { planted, requests: cases.len() * 2 + 2 }
}

/// The real secrets: each key whole and its secret part (after `thk_` and
/// the 12-character key id).
fn secrets_planted(gw: &Gateway) -> Planted {
    let t = &gw.tenants;
    let keys =
        [("eu key", &t.eu.key), ("us key", &t.us.key), ("no-region key", &t.nowhere.key), ("deleted key", &t.deleted)];
    keys.iter()
        .flat_map(|(name, key)| {
            let secret = key.get(16..).unwrap_or_default().to_string();
            [(name.to_string(), key.to_string()), (format!("{name} secret part"), secret)]
        })
        .collect()
}

/// Admin endpoints, read before Envoy stops.
fn admin_dumps(envoy: &Envoy) -> Vec<(String, String)> {
    ["/stats", "/stats/prometheus", "/config_dump", "/config_dump?include_eds", "/clusters", "/listeners"]
        .iter()
        .map(|path| (format!("admin {path}"), envoy.admin_get(path).body_text()))
        .collect()
}

/// Every file under `dir` (the sidecar's store, audit log, bundle), as text.
fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = fs::read(&path) {
                found.push((path.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    found
}

/// (output, canary name) for every canary found in an output.
fn leaks(outputs: &[(String, String)], planted: &Planted) -> Vec<(String, String)> {
    outputs
        .iter()
        .flat_map(|(output, text)| {
            planted
                .iter()
                .filter(|(_, v)| text.contains(v.as_str()))
                .map(move |(name, _)| (output.clone(), name.clone()))
        })
        .collect()
}

#[test]
fn zero_data_retention_no_canary_in_any_output() {
    let c = Canaries::new();
    let provider_secret = format!("sk-{}", c.get("provider"));
    let Some(mut gw) = Gateway::start(&provider_secret) else { return };
    let Traffic { mut planted, requests } = send_canary_traffic(&gw, &c);
    planted.push(("provider secret".into(), provider_secret.clone()));
    assert_canaries_reached_the_upstream(&gw, &c, &provider_secret);

    assert_eq!(gw.access_log(requests).len(), requests, "every request logged");
    let mut outputs = admin_dumps(&gw.envoy);
    for args in
        [&["status"][..], &["key", "list"], &["tenant", "list"], &["provider", "list"], &["audit", "tail", "-n", "200"]]
    {
        let out = gw.admin.run(args);
        outputs.push((format!("tokenhub-admin {args:?}"), format!("{}{}", out.stdout, out.stderr)));
    }
    gw.envoy.stop();
    outputs.push(("envoy stdout+stderr".into(), gw.envoy.log_contents()));
    outputs.push(("access log".into(), fs::read_to_string(gw.envoy.access_log_path()).unwrap_or_default()));
    outputs
        .extend(gw.admin_outputs.iter().enumerate().map(|(i, o)| (format!("tokenhub-admin output #{i}"), o.clone())));
    outputs.extend(files_under(gw.admin.dir()));
    assert!(outputs.iter().any(|(name, _)| name.ends_with("guard.json")), "the published bundle was searched");

    let found = leaks(&outputs, &planted);
    assert!(found.is_empty(), "canaries leaked (output, canary): {found:#?}");
}

/// The canaries were real traffic: they reached the provider, and only the
/// provider (the client's key never does).
fn assert_canaries_reached_the_upstream(gw: &Gateway, c: &Canaries, provider_secret: &str) {
    let eu = gw.eu.requests();
    let first = eu.first().unwrap_or_else(|| panic!("nothing reached the eu upstream"));
    assert!(first.path.contains(&c.get("query")), "{first:?}");
    assert!(String::from_utf8_lossy(&first.body).contains(&c.get("body")), "{first:?}");
    assert_eq!(first.header("authorization"), Some(format!("Bearer {provider_secret}").as_str()));
    let all: Vec<_> = eu.iter().chain(gw.us.requests().iter()).cloned().collect();
    assert!(all.iter().all(|r| !format!("{r:?}").contains(&gw.tenants.eu.key)), "client key forwarded");
}

#[test]
fn at_trace_level_no_canary_in_any_line_the_filter_logs() {
    let c = Canaries::new();
    let provider_secret = format!("sk-{}", c.get("provider"));
    let Some(mut gw) = Gateway::start_at(&provider_secret, "trace", None) else { return };
    let Traffic { mut planted, requests } = send_canary_traffic(&gw, &c);
    planted.push(("provider secret".into(), provider_secret));
    gw.access_log(requests);
    gw.envoy.stop();
    let log = gw.envoy.log_contents();
    let wasm_lines: Vec<(String, String)> =
        log.lines().filter(|l| l.contains("wasm log")).map(|l| ("wasm log line".to_string(), l.to_string())).collect();
    assert!(!wasm_lines.is_empty(), "the filter logged nothing at trace level");
    let found = leaks(&wasm_lines, &planted);
    assert!(found.is_empty(), "canaries in the filter's log lines: {found:#?}");
    // The search works: Envoy's own trace output dumps request headers,
    // which is why the shipped level is warn (and wasm:info).
    let envoy_lines = vec![("envoy trace".to_string(), log.clone())];
    assert!(!leaks(&envoy_lines, &planted).is_empty(), "Envoy's trace log shows no header at all?");
}
