//! The guard end to end (issue 2): a real Envoy loading the built
//! `tokenhub_guard.wasm`, the bundle created and published by the real
//! `tokenhub-admin` binary into the directory Envoy watches, the bundle key
//! passed to Envoy as TOKENHUB_BUNDLE_KEY, and an echo upstream that
//! reports exactly what reached it.
//!
//! Every test starts its own store, echo upstream and Envoy (own ports and
//! directories), so they run in parallel. Every request checks the exact
//! status, the JSON error shape, what reached the upstream, and which
//! `tokenhub.*` counter moved. Envoy's log is printed when a test fails.
//!
//! Needs the filter (`make wasm`), the sidecar (`make admin`, or
//! `cargo build --features admin --bin tokenhub-admin`) and Envoy
//! (`make bootstrap`).

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokenhub_integration::{
    addrs, paths, Admin, Connection, EcdsOutcome, EchoUpstream, Envoy, EnvoyOptions, IssuedKey, ReceivedRequest,
    Response,
};

const TENANT: &str = "zebra-widgets";
/// Spaces cannot occur in base64, so a match in a dump is a real leak.
const TENANT_NAME: &str = "Zebra Widgets Ltd";
const REGION: &str = "eu";
const SUB_ACCOUNT: &str = "default";
/// Provider secrets with characters outside every base64 alphabet.
const OPENAI_SECRET: &str = "sk-openai.Provider~Secret:4242";
const ANTHROPIC_SECRET: &str = "ant-api.Provider~Secret:0707";
const BUNDLE_KEY_ENV: &str = "TOKENHUB_BUNDLE_KEY";
/// The issue's promise for hot reload and revocation.
const RELOAD_LIMIT: Duration = Duration::from_secs(2);
const ECDS_PREFIX: &str = "extension_config_discovery.http_filter.tokenhub.guard.";

// ---------------------------------------------------------------------------
// Expected denials: status, OpenAI error type and code, and the reason label
// of the `tokenhub.denied.<reason>` counter (src/core/errors.rs).

#[derive(Debug, Clone, Copy)]
struct Denial {
    status: u16,
    kind: &'static str,
    code: &'static str,
    reason: &'static str,
}

const fn unauthenticated(code: &'static str, reason: &'static str) -> Denial {
    Denial { status: 401, kind: "authentication_error", code, reason }
}

const fn forbidden(code: &'static str, reason: &'static str) -> Denial {
    Denial { status: 403, kind: "permission_error", code, reason }
}

const MISSING_KEY: Denial = unauthenticated("missing_api_key", "missing_credential");
const MALFORMED_KEY: Denial = unauthenticated("invalid_api_key", "malformed_credential");
const DUPLICATE_KEY: Denial = unauthenticated("invalid_api_key", "duplicate_credential");
const BAD_CHECKSUM: Denial = unauthenticated("invalid_api_key", "bad_checksum");
const UNKNOWN_KEY: Denial = unauthenticated("invalid_api_key", "unknown_key");
const WRONG_SECRET: Denial = unauthenticated("invalid_api_key", "wrong_secret");
const KEY_DISABLED: Denial = unauthenticated("invalid_api_key", "key_disabled");
const KEY_EXPIRED: Denial = unauthenticated("invalid_api_key", "key_expired");
const IP_NOT_ALLOWED: Denial = forbidden("ip_not_allowed", "ip_not_allowed");
const TENANT_MISMATCH: Denial = forbidden("tenant_mismatch", "tenant_mismatch");
const METHOD_NOT_ALLOWED: Denial = forbidden("insufficient_scope", "method_not_allowed");
const PATH_NOT_ALLOWED: Denial = forbidden("insufficient_scope", "path_not_allowed");
const NO_PROVIDER: Denial =
    Denial { status: 404, kind: "invalid_request_error", code: "unknown_url", reason: "no_provider" };
const NO_BUNDLE: Denial =
    Denial { status: 503, kind: "service_unavailable", code: "policy_unavailable", reason: "no_bundle" };

/// Every reason label the filter defines a counter for (src/core/errors.rs).
const DENY_LABELS: [&str; 20] = [
    "no_bundle",
    "missing_credential",
    "duplicate_credential",
    "malformed_credential",
    "bad_checksum",
    "unknown_key",
    "wrong_secret",
    "key_disabled",
    "key_expired",
    "tenant_disabled",
    "sub_account_disabled",
    "ip_not_allowed",
    "tenant_mismatch",
    "method_not_allowed",
    "path_not_allowed",
    "path_not_normalized",
    "no_provider",
    "provider_not_configured",
    "quota_exceeded",
    "filter_fault",
];

// ---------------------------------------------------------------------------
// The fixture: store + echo + Envoy, one per test.

struct Fixture {
    // Dropped first: Envoy stops (and prints its log if the test failed)
    // before the upstream and the store go away.
    envoy: Envoy,
    echo: EchoUpstream,
    admin: Admin,
    /// An unrestricted key of TENANT / SUB_ACCOUNT.
    key: IssuedKey,
}

/// A store with TENANT, two providers (the header and format of each are
/// what the upstream must receive) and one key. Nothing published yet.
fn new_store() -> (Admin, IssuedKey) {
    let wasm = paths::guard_wasm();
    assert!(wasm.is_file(), "{} is not built: run `make wasm`", wasm.display());
    let admin = Admin::init(&wasm);
    admin.json(&["tenant", "add", TENANT, "--name", TENANT_NAME, "--region", REGION]);
    admin.set_provider(
        &["openai", "--path-prefix", "/v1/", "--header", "authorization", "--format", "Bearer {secret}"],
        OPENAI_SECRET,
    );
    admin.set_provider(
        &["anthropic", "--path-prefix", "/anthropic/", "--header", "x-api-key", "--format", "{secret}"],
        ANTHROPIC_SECRET,
    );
    let key = admin.create_key(TENANT, &[]);
    (admin, key)
}

impl Fixture {
    fn start() -> Fixture {
        Self::start_with(|_, _| {})
    }

    /// The store, then `customize` (more keys, allowlists…), then the first
    /// publish, then Envoy reading what was published.
    fn start_with(customize: impl FnOnce(&Admin, &IssuedKey)) -> Fixture {
        let (admin, key) = new_store();
        customize(&admin, &key);
        admin.publish();
        let fx = Self::start_envoy(admin, key, None, None);
        let version = fx.admin.published_version();
        fx.envoy.wait_for_stat("wasmcustom.tokenhub.bundle_version", |v| v == version, Duration::from_secs(10));
        fx
    }

    /// Nothing published: Envoy starts with `initial_ecds` as guard.yaml.
    fn start_unpublished(initial_ecds: &str) -> Fixture {
        let (admin, key) = new_store();
        Self::start_envoy(admin, key, Some(initial_ecds.to_string()), None)
    }

    fn start_envoy(admin: Admin, key: IssuedKey, initial_ecds: Option<String>, bundle_key: Option<String>) -> Fixture {
        let echo = EchoUpstream::start().expect("echo upstream");
        let mut opts = EnvoyOptions::new(echo.port());
        opts.bundle_dir = Some(admin.bundle_dir());
        opts.initial_ecds = initial_ecds;
        opts.env.push((BUNDLE_KEY_ENV.to_string(), bundle_key.unwrap_or_else(|| admin.bundle_key().to_string())));
        // Any debug line the filter writes must hold no secret either.
        opts.component_log_level = Some("wasm:debug".to_string());
        let envoy = Envoy::start(opts);
        Fixture { envoy, echo, admin, key }
    }

    /// One request on a fresh connection from `src`.
    fn send(&self, src: IpAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let lines = request_lines(method, path, headers, true);
        self.envoy.request(src, &lines, b"").unwrap_or_else(|e| panic!("{method} {path} from {src}: {e}"))
    }

    /// `GET path` from 127.0.0.1.
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send(addrs::V4_PRIMARY, "GET", path, headers)
    }

    /// `GET /v1/models` with `authorization: Bearer <key>` from `src`.
    fn with_key_from(&self, src: IpAddr, key: &str) -> Response {
        self.send(src, "GET", "/v1/models", &[("authorization", &bearer(key))])
    }

    fn with_key(&self, key: &str) -> Response {
        self.with_key_from(addrs::V4_PRIMARY, key)
    }

    /// Publishes with the CLI and waits until Envoy has taken the file.
    fn publish(&self) -> u64 {
        let (out, outcome) = self.envoy.await_ecds(|| self.admin.publish());
        assert_eq!(outcome, EcdsOutcome::Accepted, "tokenhub-admin publish: {out}");
        out["version"].as_u64().unwrap_or_else(|| panic!("no version in {out}"))
    }

    /// `send` must be allowed: 200, exactly one request upstream (returned),
    /// and exactly `tokenhub.allowed` counted.
    fn expect_allowed(&self, send: impl FnOnce() -> Response) -> ReceivedRequest {
        let before = self.guard_counters();
        let resp = send();
        assert_eq!(resp.status, 200, "expected 200, got {} {}", resp.status, resp.body_text());
        let mut upstream = self.echo.take_requests();
        assert_eq!(upstream.len(), 1, "requests upstream for one allowed request: {upstream:#?}");
        assert_counted(&before, &self.guard_counters(), "tokenhub.allowed");
        upstream.remove(0)
    }

    /// `send` must be refused as `want`: exact status, the JSON error
    /// shape, nothing upstream, and exactly `tokenhub.denied.<reason>`
    /// counted.
    fn expect_denied(&self, want: Denial, send: impl FnOnce() -> Response) -> Response {
        let before = self.guard_counters();
        let resp = send();
        assert_error(&resp, want);
        let upstream = self.echo.take_requests();
        assert!(upstream.is_empty(), "a refused request ({want:?}) reached the upstream: {upstream:#?}");
        assert_counted(&before, &self.guard_counters(), &format!("tokenhub.denied.{}", want.reason));
        resp
    }

    /// The guard's decision counters from /stats (`tokenhub.allowed` and
    /// `tokenhub.denied.*`, shown as `wasmcustom.<name>`), by name.
    fn guard_counters(&self) -> BTreeMap<String, u64> {
        self.envoy
            .stats_text()
            .lines()
            .filter_map(|line| line.strip_prefix("wasmcustom."))
            .filter_map(|line| line.split_once(": "))
            .filter(|(name, _)| *name == "tokenhub.allowed" || name.starts_with("tokenhub.denied."))
            .map(|(name, value)| (name.to_string(), value.trim().parse().unwrap_or(u64::MAX)))
            .collect()
    }

    fn ecds_stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("{ECDS_PREFIX}{name}")).unwrap_or(0)
    }
}

fn request_lines(method: &str, path: &str, headers: &[(&str, &str)], close: bool) -> Vec<String> {
    let mut lines = vec![format!("{method} {path} HTTP/1.1"), "host: tokenhub.test".to_string()];
    lines.extend(headers.iter().map(|(n, v)| format!("{n}: {v}")));
    if method != "GET" && !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        lines.push("content-length: 0".to_string());
    }
    if close {
        lines.push("connection: close".to_string());
    }
    lines
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Exactly one counter moved, by exactly one.
fn assert_counted(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) {
    assert!(after.contains_key(name), "counter {name} is not defined; guard counters: {after:?}");
    let moved: BTreeMap<&str, (u64, u64)> = after
        .iter()
        .map(|(n, v)| (n.as_str(), (before.get(n).copied().unwrap_or(0), *v)))
        .filter(|(_, (b, a))| b != a)
        .collect();
    let want_after = before.get(name).copied().unwrap_or(0) + 1;
    let want: BTreeMap<&str, (u64, u64)> = [(name, (want_after - 1, want_after))].into();
    assert_eq!(moved, want, "guard counters that moved (before, after)");
}

/// The OpenAI-style error: exact status, JSON content type, an object with
/// exactly `error.{type,code,message}`, the expected type and code, and a
/// message that is constant text.
fn assert_error(resp: &Response, want: Denial) {
    assert_eq!(resp.status, want.status, "{want:?}: got {} {}", resp.status, resp.body_text());
    assert_eq!(resp.header("content-type"), Some("application/json"), "{want:?}: {:?}", resp.headers);
    let body = resp.json();
    let top: Vec<&String> = body.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    assert_eq!(top, ["error"], "{want:?}: {body}");
    let mut fields: Vec<&String> = body["error"].as_object().map(|o| o.keys().collect()).unwrap_or_default();
    fields.sort();
    assert_eq!(fields, ["code", "message", "type"], "{want:?}: {body}");
    assert_eq!(body["error"]["type"], want.kind, "{want:?}: {body}");
    assert_eq!(body["error"]["code"], want.code, "{want:?}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{want:?}: empty message in {body}");
    // The message may show the key format ("thk_..."), never a key.
    let echoes_key = message
        .match_indices("thk_")
        .any(|(at, _)| message[at + 4..].bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()));
    assert!(!echoes_key, "{want:?}: the message echoes a key: {body}");
}

// ---------------------------------------------------------------------------
// Keys: an independent implementation of the format (`thk_` + 12-char id +
// 32-char secret + CRC32 of id‖secret as 6 base62 digits), to forge
// well-formed keys the store never issued.

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn key_id_of(key: &str) -> &str {
    &key[4..16]
}

fn secret_of(key: &str) -> &str {
    &key[16..48]
}

fn forge_key(key_id: &str, secret: &str) -> String {
    let payload = format!("{key_id}{secret}");
    let mut crc = crc32fast::hash(payload.as_bytes());
    let mut digits = [b'0'; 6];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    format!("thk_{payload}{}", String::from_utf8_lossy(&digits))
}

/// 32 base62 characters that differ from `secret` in every position.
fn other_secret(secret: &str) -> String {
    secret.bytes().map(|b| if b == b'Q' { 'R' } else { 'Q' }).collect()
}

/// The stored form of a key's secret (src/core/secret.rs): hex SHA-256 of
/// "tokenhub-key-v1\0" ‖ key id ‖ 0 ‖ secret.
fn secret_hash_hex(key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tokenhub-key-v1\0");
    h.update(key_id_of(key).as_bytes());
    h.update([0u8]);
    h.update(secret_of(key).as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Time.

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Sleeps until the wall clock has reached `unix_secs` (plus a margin for
/// the clock reads on either side).
fn sleep_until_unix(unix_secs: u64) {
    let target = Duration::from_secs(unix_secs) + Duration::from_millis(50);
    let now = unix_now();
    if target > now {
        thread::sleep(target - now);
    }
}

/// Calls `check` every 10 ms until it returns true; the time it took since
/// `start`, or None after `limit` (plus one last check).
fn poll_until(start: Instant, limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    loop {
        let past_limit = start.elapsed() > limit;
        if check() {
            return Some(start.elapsed());
        }
        if past_limit {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The JSON path of the sealed bundle in an ECDS file.
fn sealed_of(ecds: &serde_json::Value) -> &str {
    ecds["resources"][0]["typed_config"]["config"]["configuration"]["value"].as_str().unwrap_or_default()
}

fn parse_ecds(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the published ECDS file is not JSON ({e}): {text}"))
}

/// Lines of Envoy's log written after byte `from` that mention `needle`,
/// waiting up to 5 s for one to appear.
fn log_lines_since(envoy: &Envoy, from: usize, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = envoy.log_contents();
        let lines: Vec<String> =
            log.get(from..).unwrap_or("").lines().filter(|l| l.contains(needle)).map(str::to_string).collect();
        if !lines.is_empty() || Instant::now() >= deadline {
            return lines;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `name{...} value` or `name value` in Prometheus text.
fn prometheus_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value =
            if let Some(labels) = rest.strip_prefix('{') { labels.split_once('}')?.1 } else { rest.strip_prefix(' ')? };
        value.trim().parse().ok()
    })
}

// ===========================================================================
// Valid keys.

/// (client credential headers, method, path, provider header, the value
/// the upstream must receive in it)
struct Injection<'a>(&'a [(&'a str, &'a str)], &'a str, &'a str, &'a str, &'a str);

#[test]
fn valid_key_reaches_upstream_with_provider_credential_and_authoritative_identity() {
    let fx = Fixture::start();
    let key = fx.key.key.clone();
    assert_eq!(forge_key(key_id_of(&key), secret_of(&key)), key, "the test's key format must match the CLI's");
    let identity = [
        ("x-tokenhub-tenant", TENANT),
        ("x-tokenhub-sub-account", SUB_ACCOUNT),
        ("x-tokenhub-key-id", fx.key.key_id.as_str()),
        ("x-tokenhub-region", REGION),
        ("x-tokenhub-auth", "api_key"),
    ];
    let auth = bearer(&key);
    let openai = format!("Bearer {OPENAI_SECRET}");
    let cases: [Injection; 6] = [
        Injection(&[("authorization", &auth)], "POST", "/v1/chat/completions", "authorization", &openai),
        Injection(&[("x-api-key", &key)], "GET", "/v1/models?limit=2", "authorization", &openai),
        Injection(&[("x-api-key", &key)], "POST", "/anthropic/v1/messages", "x-api-key", ANTHROPIC_SECRET),
        Injection(&[("authorization", &auth)], "GET", "/anthropic/v1/models", "x-api-key", ANTHROPIC_SECRET),
        // The scheme is case-insensitive (RFC 6750).
        Injection(&[("authorization", &format!("bearer {key}"))], "GET", "/v1/models", "authorization", &openai),
        // Both headers carrying the same key is one credential.
        Injection(&[("authorization", &auth), ("x-api-key", &key)], "GET", "/v1/models", "authorization", &openai),
    ];
    for Injection(creds, method, path, header, injected) in cases {
        let seen = fx.expect_allowed(|| fx.send(addrs::V4_PRIMARY, method, path, creds));
        let case = format!("{method} {path} with {:?}", creds.iter().map(|(n, _)| n).collect::<Vec<_>>());
        assert_eq!((seen.method.as_str(), seen.path.as_str()), (method, path), "{case}");
        assert_eq!(seen.header_all(header), [injected], "{case}: provider credential upstream");
        let other = if header == "authorization" { "x-api-key" } else { "authorization" };
        assert!(seen.header_all(other).is_empty(), "{case}: the client's {other} reached the upstream");
        for (name, value) in identity {
            assert_eq!(seen.header_all(name), [value], "{case}: {name}");
        }
        for (name, value) in &seen.headers {
            for leaked in [key.as_str(), secret_of(&key)] {
                assert!(!value.contains(leaked), "{case}: the client key reached the upstream in {name}: {value}");
            }
        }
    }
    // The body is passed on untouched (the guard never reads it).
    let body = br#"{"model":"gpt-x","messages":[{"role":"user","content":"hi"}]}"#;
    let length = body.len().to_string();
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json"), ("content-length", &length)];
    let lines = request_lines("POST", "/v1/chat/completions", &headers, true);
    let seen = fx.expect_allowed(|| fx.envoy.request(addrs::V4_PRIMARY, &lines, body).unwrap());
    assert_eq!(seen.body, body);
}

// ===========================================================================
// Refused credentials: 401.

#[test]
fn missing_malformed_and_unknown_keys_are_401() {
    let mut deleted = None;
    let fx = Fixture::start_with(|admin, _| {
        // Issued, then deleted before publishing: unknown to the bundle.
        let key = admin.create_key(TENANT, &[]);
        admin.json(&["key", "delete", &key.key_id]);
        deleted = Some(key.key);
    });
    let deleted = deleted.unwrap();
    let key = fx.key.key.clone();
    let mut bad_checksum = key.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let bad_alphabet = format!("{}-{}", &key[..20], &key[21..]);
    let unknown = forge_key("UnknownKeyId", secret_of(&key));
    let wrong_secret = forge_key(key_id_of(&key), &other_secret(secret_of(&key)));

    let cases: Vec<(Denial, Vec<(&str, String)>)> = vec![
        (MISSING_KEY, vec![]),
        (MISSING_KEY, vec![("x-api-key", String::new())]),
        (MALFORMED_KEY, vec![("authorization", "Bearer".to_string())]),
        (MALFORMED_KEY, vec![("authorization", format!("Basic {key}"))]),
        (MALFORMED_KEY, vec![("authorization", bearer("sk-not-a-tokenhub-key"))]),
        (MALFORMED_KEY, vec![("authorization", bearer(&key[..40]))]),
        (MALFORMED_KEY, vec![("x-api-key", bad_alphabet)]),
        (BAD_CHECKSUM, vec![("authorization", bearer(&bad_checksum))]),
        (BAD_CHECKSUM, vec![("x-api-key", bad_checksum.clone())]),
        (UNKNOWN_KEY, vec![("authorization", bearer(&unknown))]),
        (UNKNOWN_KEY, vec![("authorization", bearer(&deleted))]),
        (WRONG_SECRET, vec![("authorization", bearer(&wrong_secret))]),
        (WRONG_SECRET, vec![("x-api-key", wrong_secret.clone())]),
        // Two credentials: the same header twice, or two different keys.
        (DUPLICATE_KEY, vec![("x-api-key", key.clone()), ("x-api-key", key.clone())]),
        // Envoy's codec joins a repeated `authorization` (an inline header)
        // into one value, "Bearer k,Bearer k"; the guard sees the comma.
        (DUPLICATE_KEY, vec![("authorization", bearer(&key)), ("authorization", bearer(&key))]),
        (DUPLICATE_KEY, vec![("authorization", bearer(&key)), ("x-api-key", wrong_secret.clone())]),
    ];
    for (want, headers) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let resp = fx.expect_denied(*want, || fx.send(addrs::V4_PRIMARY, "GET", "/v1/models", &headers));
        // Unknown id and wrong secret must look the same to the client.
        if want.reason == "wrong_secret" || want.reason == "unknown_key" {
            assert_eq!(resp.json()["error"]["message"], "Incorrect API key provided.");
        }
    }
    // The genuine key still works after all that.
    fx.expect_allowed(|| fx.with_key(&key));
}

#[test]
fn disabled_and_expired_keys_are_401() {
    let mut expiring = None;
    let fx = Fixture::start_with(|admin, key| {
        admin.json(&["key", "disable", &key.key_id]);
        let issued = admin.create_key(TENANT, &[]);
        let out = admin.json(&["key", "set-expiry", &issued.key_id, "--in", "1s"]);
        let at = out["expires_at"].as_u64().unwrap_or_else(|| panic!("no expires_at in {out}"));
        expiring = Some((issued.key, at));
    });
    let (expiring, expires_at) = expiring.unwrap();
    let disabled = fx.key.key.clone();

    fx.expect_denied(KEY_DISABLED, || fx.with_key(&disabled));
    fx.expect_denied(KEY_DISABLED, || fx.send(addrs::V4_PRIMARY, "GET", "/v1/models", &[("x-api-key", &disabled)]));
    sleep_until_unix(expires_at);
    let resp = fx.expect_denied(KEY_EXPIRED, || fx.with_key(&expiring));
    assert_ne!(resp.json()["error"]["message"], "Incorrect API key provided.");

    // Re-enabling is as immediate as disabling.
    fx.admin.json(&["key", "enable", &fx.key.key_id]);
    fx.publish();
    fx.expect_allowed(|| fx.with_key(&disabled));
    fx.expect_denied(KEY_EXPIRED, || fx.with_key(&expiring));
}

// ===========================================================================
// Rotation.

#[test]
fn rotated_key_previous_secret_works_inside_grace_only() {
    let fx = Fixture::start();
    let old = fx.key.clone();
    fx.expect_allowed(|| fx.with_key(&old.key));
    let new = fx.admin.rotate_key(&old.key_id, "3s");
    assert_eq!(new.key_id, old.key_id, "rotation keeps the key id");
    assert_ne!(secret_of(&new.key), secret_of(&old.key));
    let shown = fx.admin.json(&["key", "show", &old.key_id]);
    let valid_until = shown["previous_secret_valid_until"]
        .as_u64()
        .unwrap_or_else(|| panic!("no previous_secret_valid_until in {shown}"));
    fx.publish();
    assert!(unix_now().as_secs() < valid_until, "the grace period ran out before the first check");

    // Inside the grace period both secrets work, as the same key.
    for key in [&new.key, &old.key] {
        let seen = fx.expect_allowed(|| fx.with_key(key));
        assert_eq!(seen.header_all("x-tokenhub-key-id"), [old.key_id.as_str()]);
    }
    // After the deadline only the new one, without another publish.
    sleep_until_unix(valid_until + 1);
    fx.expect_denied(WRONG_SECRET, || fx.with_key(&old.key));
    fx.expect_allowed(|| fx.with_key(&new.key));
}

#[test]
fn rotation_without_grace_refuses_the_previous_secret_at_once() {
    let fx = Fixture::start();
    let old = fx.key.clone();
    let new = fx.admin.rotate_key(&old.key_id, "0");
    fx.publish();
    fx.expect_denied(WRONG_SECRET, || fx.with_key(&old.key));
    fx.expect_allowed(|| fx.with_key(&new.key));
}

// ===========================================================================
// IP allowlists: 403.

#[test]
fn tenant_ip_allowlist_uses_the_tcp_peer_for_ipv4_and_ipv6() {
    let fx = Fixture::start_with(|admin, _| {
        admin.json(&["ip", "allow", "--tenant", TENANT, "127.0.0.1/32"]);
    });
    let key = fx.key.key.clone();
    fx.expect_allowed(|| fx.with_key_from(addrs::V4_PRIMARY, &key));
    fx.expect_denied(IP_NOT_ALLOWED, || fx.with_key_from(addrs::V4_OTHER, &key));
    // A client cannot choose its address with forwarding headers.
    let auth = bearer(&key);
    for spoof in [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-envoy-external-address", "127.0.0.1"),
        ("x-real-ip", "127.0.0.1"),
        ("forwarded", "for=127.0.0.1"),
    ] {
        fx.expect_denied(IP_NOT_ALLOWED, || {
            fx.send(addrs::V4_OTHER, "GET", "/v1/models", &[("authorization", &auth), spoof])
        });
    }
    // IPv6: refused while not listed, allowed once listed and published.
    fx.expect_denied(IP_NOT_ALLOWED, || fx.with_key_from(addrs::V6_LOOPBACK, &key));
    fx.admin.json(&["ip", "allow", "--tenant", TENANT, "::1/128"]);
    fx.publish();
    let seen = fx.expect_allowed(|| fx.with_key_from(addrs::V6_LOOPBACK, &key));
    assert_eq!(seen.header_all("x-tokenhub-tenant"), [TENANT]);
    fx.expect_allowed(|| fx.with_key_from(addrs::V4_PRIMARY, &key));
    fx.expect_denied(IP_NOT_ALLOWED, || fx.with_key_from(addrs::V4_OTHER, &key));
}

#[test]
fn sub_account_and_key_allowlists_narrow_the_tenant_one() {
    let mut keys = Vec::new();
    let fx = Fixture::start_with(|admin, key| {
        admin.json(&["ip", "allow", "--tenant", TENANT, "127.0.0.0/8", "::1/128"]);
        // A sub-account narrowed to 127.0.0.2.
        admin.json(&["subaccount", "add", TENANT, "lab"]);
        admin.json(&["ip", "allow", "--tenant", TENANT, "--sub-account", "lab", "127.0.0.2/32"]);
        keys.push(admin.create_key(TENANT, &["--sub-account", "lab"]));
        // A key narrowed to ::1.
        let v6 = admin.create_key(TENANT, &[]);
        admin.json(&["ip", "allow", "--key", &v6.key_id, "::1/128"]);
        keys.push(v6);
        // An enabled, empty list refuses everyone.
        admin.json(&["ip", "allow", "--key", &key.key_id, "127.0.0.1/32"]);
        admin.json(&["ip", "deny", "--key", &key.key_id, "127.0.0.1/32"]);
    });
    let (lab, v6) = (keys[0].key.clone(), keys[1].key.clone());
    let seen = fx.expect_allowed(|| fx.with_key_from(addrs::V4_OTHER, &lab));
    assert_eq!(seen.header_all("x-tokenhub-sub-account"), ["lab"]);
    fx.expect_denied(IP_NOT_ALLOWED, || fx.with_key_from(addrs::V4_PRIMARY, &lab));
    fx.expect_denied(IP_NOT_ALLOWED, || fx.with_key_from(addrs::V6_LOOPBACK, &lab));

    fx.expect_allowed(|| fx.with_key_from(addrs::V6_LOOPBACK, &v6));
    fx.expect_denied(IP_NOT_ALLOWED, || fx.with_key_from(addrs::V4_PRIMARY, &v6));

    for src in [addrs::V4_PRIMARY, addrs::V4_OTHER, addrs::V6_LOOPBACK] {
        fx.expect_denied(IP_NOT_ALLOWED, || fx.with_key_from(src, &fx.key.key));
    }
}

// ===========================================================================
// Tenant headers: spoofing refused, inbound x-tokenhub-* stripped.

#[test]
fn spoofed_tenant_headers_are_403() {
    let fx = Fixture::start();
    let auth = bearer(&fx.key.key);
    for claim in [
        ("x-tokenhub-tenant", "other"),
        ("x-tokenhub-tenant", "ZEBRA-WIDGETS"),
        ("x-tokenhub-sub-account", "other"),
        // Underscores: some proxies treat them as dashes.
        ("x_tokenhub_tenant", "other"),
        ("X-TokenHub-Tenant", "other"),
    ] {
        fx.expect_denied(TENANT_MISMATCH, || {
            fx.send(addrs::V4_PRIMARY, "GET", "/v1/models", &[("authorization", &auth), claim])
        });
    }
    // Repeating one's own tenant and sub-account is fine.
    fx.expect_allowed(|| {
        fx.send(
            addrs::V4_PRIMARY,
            "GET",
            "/v1/models",
            &[("x-tokenhub-tenant", TENANT), ("authorization", &auth), ("x-tokenhub-sub-account", SUB_ACCOUNT)],
        )
    });
}

#[test]
fn inbound_tokenhub_headers_are_stripped_and_authoritative_ones_set_once() {
    let fx = Fixture::start();
    let auth = bearer(&fx.key.key);
    let seen = fx.expect_allowed(|| {
        fx.send(
            addrs::V4_PRIMARY,
            "GET",
            "/v1/models",
            &[
                ("x-tokenhub-region", "us"),
                ("authorization", &auth),
                ("x-tokenhub-key-id", "AAAAAAAAAAAA"),
                ("x-tokenhub-tenant", TENANT),
                ("x-tokenhub-region", "ap"),
                ("x-tokenhub-debug", "1"),
                ("x_tokenhub_region", "us"),
                ("x-tokenhub-sub-account", SUB_ACCOUNT),
            ],
        )
    });
    let tokenhub: Vec<(String, &str)> = seen
        .headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().replace('_', "-").starts_with("x-tokenhub-"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .collect();
    let mut sorted = tokenhub.clone();
    sorted.sort();
    let want = [
        ("x-tokenhub-auth".to_string(), "api_key"),
        ("x-tokenhub-key-id".to_string(), fx.key.key_id.as_str()),
        ("x-tokenhub-region".to_string(), REGION),
        ("x-tokenhub-sub-account".to_string(), SUB_ACCOUNT),
        ("x-tokenhub-tenant".to_string(), TENANT),
    ];
    assert_eq!(sorted, want, "x-tokenhub-* headers upstream: {tokenhub:?}");
}

// ===========================================================================
// Scopes: 403.

#[test]
fn scope_violations_are_403() {
    let mut scoped = None;
    let fx = Fixture::start_with(|admin, _| {
        scoped = Some(admin.create_key(TENANT, &["--methods", "POST", "--paths", "/v1/chat"]));
    });
    let key = scoped.unwrap().key;
    let auth = bearer(&key);
    let h: &[(&str, &str)] = &[("authorization", &auth)];
    fx.expect_allowed(|| fx.send(addrs::V4_PRIMARY, "POST", "/v1/chat/completions", h));
    fx.expect_allowed(|| fx.send(addrs::V4_PRIMARY, "POST", "/v1/chat", h));
    fx.expect_denied(METHOD_NOT_ALLOWED, || fx.send(addrs::V4_PRIMARY, "GET", "/v1/chat/completions", h));
    fx.expect_denied(METHOD_NOT_ALLOWED, || fx.send(addrs::V4_PRIMARY, "DELETE", "/v1/chat/completions", h));
    fx.expect_denied(PATH_NOT_ALLOWED, || fx.send(addrs::V4_PRIMARY, "POST", "/v1/embeddings", h));
    // Prefixes match whole segments.
    fx.expect_denied(PATH_NOT_ALLOWED, || fx.send(addrs::V4_PRIMARY, "POST", "/v1/chatty", h));
    // Envoy normalizes the path before the guard sees it: no escaping the
    // prefix with dot segments.
    fx.expect_denied(PATH_NOT_ALLOWED, || fx.send(addrs::V4_PRIMARY, "POST", "/v1/chat/../embeddings", h));
    fx.expect_denied(PATH_NOT_ALLOWED, || fx.send(addrs::V4_PRIMARY, "POST", "/anthropic/v1/messages", h));

    // Scopes changed after Envoy started apply at the next publish.
    fx.admin.json(&["key", "set-scopes", key_id_of(&key), "--methods", "GET"]);
    fx.publish();
    fx.expect_allowed(|| fx.send(addrs::V4_PRIMARY, "GET", "/v1/embeddings", h));
    fx.expect_denied(METHOD_NOT_ALLOWED, || fx.send(addrs::V4_PRIMARY, "POST", "/v1/chat/completions", h));
    // An unrestricted key on a path no provider serves.
    fx.expect_denied(NO_PROVIDER, || fx.with_key_path("/internal/admin", &fx.key.key));
}

impl Fixture {
    fn with_key_path(&self, path: &str, key: &str) -> Response {
        self.get(path, &[("authorization", &bearer(key))])
    }
}

// ===========================================================================
// Hot reload.

#[test]
fn hot_reload_new_key_works_and_disabled_key_fails_within_2s_without_restart() {
    let fx = Fixture::start();
    let pid = fx.envoy.pid();
    let (success, created) = (fx.ecds_stat("update_success"), fx.envoy.stat("wasm.envoy.wasm.runtime.v8.created"));

    // A key created after Envoy started is unknown until published.
    let new = fx.admin.create_key(TENANT, &[]);
    fx.expect_denied(UNKNOWN_KEY, || fx.with_key(&new.key));
    let start = Instant::now();
    fx.admin.publish();
    let publish_took = start.elapsed();
    let works_after = poll_until(start, RELOAD_LIMIT, || fx.with_key(&new.key).status == 200);
    fx.echo.take_requests();
    let works_after =
        works_after.unwrap_or_else(|| panic!("a newly published key was not accepted within {RELOAD_LIMIT:?}"));
    fx.expect_allowed(|| fx.with_key(&new.key));

    // Disable it while a client holds a kept-alive connection: the next
    // request on that same connection must be refused.
    let mut conn = fx.envoy.connect(addrs::V4_PRIMARY).unwrap();
    let lines = request_lines("GET", "/v1/models", &[("authorization", &bearer(&new.key))], false);
    assert_eq!(conn.send(&lines, b"").unwrap().status, 200);
    fx.admin.json(&["key", "disable", &new.key_id]);
    let start = Instant::now();
    fx.admin.publish();
    let disable_publish_took = start.elapsed();
    let mut last = None;
    let fails_after = poll_until(start, RELOAD_LIMIT, || {
        let resp = conn_send(&mut conn, &lines);
        let refused = resp.status == 401;
        last = Some(resp);
        refused
    });
    fx.echo.take_requests();
    let fails_after =
        fails_after.unwrap_or_else(|| panic!("a disabled key still served {RELOAD_LIMIT:?} after publish"));
    assert_error(last.as_ref().unwrap(), KEY_DISABLED);
    fx.expect_denied(KEY_DISABLED, || fx.with_key(&new.key));
    fx.expect_allowed(|| fx.with_key(&fx.key.key));

    println!(
        "hot reload: new key accepted {works_after:?} after `tokenhub-admin publish` started (publish took \
         {publish_took:?}); disabled key refused on a kept-alive connection {fails_after:?} after publish started \
         (publish took {disable_publish_took:?})"
    );
    // Same process, two ECDS updates, new VMs: a reload, not a restart.
    assert_eq!(fx.envoy.pid(), pid);
    assert_eq!(fx.ecds_stat("update_success"), success + 2);
    assert!(fx.envoy.stat("wasm.envoy.wasm.runtime.v8.created") > created, "no new VMs after publishing");
}

fn conn_send(conn: &mut Connection, lines: &[String]) -> Response {
    conn.send(lines, b"").unwrap_or_else(|e| panic!("request on the kept-alive connection: {e}"))
}

// ===========================================================================
// Bad bundles: rejected, the last good one keeps serving.

/// Publishes a second version (with a second key) after the fixture's
/// first; returns the first version's ECDS text, the second key and the
/// second version.
fn two_versions(fx: &Fixture) -> (String, IssuedKey, u64) {
    let v1 = fx.admin.ecds_contents();
    let second = fx.admin.create_key(TENANT, &[]);
    let version = fx.publish();
    fx.expect_allowed(|| fx.with_key(&second.key));
    (v1, second, version)
}

/// Publishes `text` behind the CLI's back; it must be rejected with a log
/// line naming `reason`, and version `serving` must keep serving.
fn assert_rejected(fx: &Fixture, text: &str, reason: &str, serving: u64, still_valid: &[&str]) {
    let rejected = fx.ecds_stat("update_rejected");
    let log_from = fx.envoy.log_contents().len();
    assert_eq!(fx.envoy.publish_ecds_and_wait(text), EcdsOutcome::Rejected);
    assert_eq!(fx.ecds_stat("update_rejected"), rejected + 1);
    let lines = log_lines_since(&fx.envoy, log_from, "bundle rejected");
    assert!(
        lines.iter().any(|l| l.contains(reason)),
        "no log line names the reason ({reason}) for the rejection: {lines:#?}"
    );
    for key in still_valid {
        fx.expect_allowed(|| fx.with_key(key));
    }
    let gauge = prometheus_value(&fx.envoy.stats_prometheus(), "tokenhub_bundle_version");
    assert_eq!(gauge, Some(serving), "tokenhub_bundle_version after a rejected bundle");
}

#[test]
fn tampered_bundle_is_rejected_and_the_old_one_keeps_serving() {
    let fx = Fixture::start();
    let (_, second, version) = two_versions(&fx);
    let mut ecds = parse_ecds(&fx.admin.ecds_contents());
    let sealed = sealed_of(&ecds).to_string();
    // Flip one character in the middle of the ciphertext.
    let body_start = sealed.rfind('.').unwrap() + 1;
    let at = body_start + (sealed.len() - body_start) / 2;
    let flipped = if &sealed[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &sealed[..at], &sealed[at + 1..]);
    ecds["resources"][0]["typed_config"]["config"]["configuration"]["value"] = tampered.into();
    assert_rejected(
        &fx,
        &ecds.to_string(),
        "authentication failed: the bundle was altered or truncated",
        version,
        &[&fx.key.key, &second.key],
    );
}

#[test]
fn bundle_sealed_with_another_key_is_rejected_and_the_old_one_keeps_serving() {
    let fx = Fixture::start();
    let (_, second, version) = two_versions(&fx);
    // Another store: same tenant id, its own bundle key and keys.
    let (other, other_key) = new_store();
    other.publish();
    let reason = format!(
        "sealed with key {} but TOKENHUB_BUNDLE_KEY is key {}",
        other.bundle_key_id(),
        fx.admin.bundle_key_id()
    );
    assert_rejected(&fx, &other.ecds_contents(), &reason, version, &[&fx.key.key, &second.key]);
    fx.expect_denied(UNKNOWN_KEY, || fx.with_key(&other_key.key));
}

#[test]
fn rollback_to_an_older_bundle_is_refused_and_never_fails_open() {
    let fx = Fixture::start();
    let v1_version = fx.admin.published_version();
    let v1 = fx.admin.ecds_contents();
    // v2 disables the fixture's key and adds another one: replaying v1
    // would bring the disabled key back and drop the new one.
    fx.admin.json(&["key", "disable", &fx.key.key_id]);
    let second = fx.admin.create_key(TENANT, &[]);
    let v2_version = fx.publish();
    assert!(v2_version > v1_version);
    let disabled = fx.key.key.clone();
    fx.expect_denied(KEY_DISABLED, || fx.with_key(&disabled));
    fx.expect_allowed(|| fx.with_key(&second.key));

    // The old bundle in an ECDS file Envoy has never seen (another plugin
    // name). The filter accepts the file but keeps serving v2: it never
    // returns false for a state-dependent reason, because Envoy caches a
    // config's first verdict and runs workers whose configure later fails
    // without the filter at all (fail open).
    let renamed = v1.replace("\"name\": \"tokenhub_guard\"", "\"name\": \"tokenhub_guard_restored\"");
    assert_ne!(renamed, v1);
    assert_replay_refused(&fx, &renamed, v1_version, v2_version, &disabled, &second.key);

    // The very file Envoy loaded at startup, byte for byte. Envoy caches the
    // canary verdict per plugin config, so it may count this as accepted;
    // whatever it counts, v2 must keep deciding, and nothing may pass
    // unchecked.
    assert_replay_refused(&fx, &v1, v1_version, v2_version, &disabled, &second.key);

    // After another accepted publish (new VMs), replays of v1 and v2 are
    // both refused.
    let v2 = fx.admin.ecds_contents();
    let third = fx.admin.create_key(TENANT, &[]);
    let v3_version = fx.publish();
    fx.expect_allowed(|| fx.with_key(&third.key));
    assert_replay_refused(&fx, &v2, v2_version, v3_version, &disabled, &third.key);
    assert_replay_refused(&fx, &v1, v1_version, v3_version, &disabled, &third.key);
    fx.expect_allowed(|| fx.with_key(&second.key));
}

/// Replays an older, genuinely sealed ECDS file and checks that the newest
/// bundle (`serving`) still decides: `disabled` stays refused, `valid`
/// works, a request without a key is refused (not passed on with the
/// filter skipped), the gauge stays, and the log names the rollback.
fn assert_replay_refused(fx: &Fixture, old: &str, old_version: u64, serving: u64, disabled: &str, valid: &str) {
    let log_from = fx.envoy.log_contents().len();
    let outcome = fx.envoy.publish_ecds_and_wait(old);
    assert_ne!(outcome, EcdsOutcome::Failed, "replay of version {old_version}");
    // Every worker (connections are spread over them), several times.
    for _ in 0..4 {
        fx.expect_denied(MISSING_KEY, || fx.get("/v1/models", &[]));
        fx.expect_denied(KEY_DISABLED, || fx.with_key(disabled));
        fx.expect_allowed(|| fx.with_key(valid));
    }
    let gauge = prometheus_value(&fx.envoy.stats_prometheus(), "tokenhub_bundle_version");
    assert_eq!(gauge, Some(serving), "tokenhub_bundle_version after replaying version {old_version} ({outcome:?})");
    // Envoy caches plugins per configuration, so a replayed file may not
    // reach the filter's configure at all, or reach it for another cached
    // old configuration. Whatever ran, the filter never loaded an old
    // version, and any reconfigure named the rollback.
    let reconfigured = log_lines_since(&fx.envoy, log_from, "tokenhub guard:");
    assert!(
        !reconfigured.iter().any(|l| l.contains(&format!("bundle version {old_version} loaded"))),
        "the filter loaded the old version {old_version}: {reconfigured:#?}"
    );
    assert!(
        reconfigured.is_empty() || reconfigured.iter().any(|l| l.contains("rollback refused")),
        "the filter reconfigured without naming the rollback ({outcome:?}): {reconfigured:#?}"
    );
}

// ===========================================================================
// No bundle: fail closed with 503.

fn assert_fails_closed(fx: &Fixture) {
    for src in [addrs::V4_PRIMARY, addrs::V4_OTHER, addrs::V6_LOOPBACK] {
        fx.expect_denied(NO_BUNDLE, || fx.with_key_from(src, &fx.key.key));
    }
    fx.expect_denied(NO_BUNDLE, || fx.get("/v1/models", &[]));
}

#[test]
fn no_bundle_at_start_is_503_until_the_first_publish() {
    let fx = Fixture::start_unpublished("resources: []\n");
    assert_fails_closed(&fx);
    let version = fx.publish();
    fx.expect_allowed(|| fx.with_key(&fx.key.key));
    assert_eq!(prometheus_value(&fx.envoy.stats_prometheus(), "tokenhub_bundle_version"), Some(version));
}

#[test]
fn empty_ecds_file_at_start_is_503() {
    let fx = Fixture::start_unpublished("");
    assert_fails_closed(&fx);
}

#[test]
fn envoy_with_another_bundle_key_fails_closed() {
    let (admin, key) = new_store();
    admin.publish();
    let (other, _) = new_store();
    let fx = Fixture::start_envoy(admin, key, None, Some(other.bundle_key().to_string()));
    assert_fails_closed(&fx);
    let reason = format!("TOKENHUB_BUNDLE_KEY is key {}", other.bundle_key_id());
    assert!(fx.envoy.wait_for_log(&reason, Duration::from_secs(5)), "no log line says the bundle key is wrong");
}

// ===========================================================================
// What Envoy exposes: no secrets; counters and the bundle version.

#[test]
fn config_dump_stats_and_logs_hold_no_secret() {
    let mut rotated = None;
    let fx = Fixture::start_with(|admin, key| {
        admin.json(&["subaccount", "add", TENANT, "research-lab"]);
        admin.json(&["ip", "allow", "--tenant", TENANT, "127.0.0.1/32", "::1/128"]);
        // A rotation inside its grace: the bundle holds two hashes.
        rotated = Some(admin.rotate_key(&key.key_id, "1h"));
    });
    let (old, new) = (fx.key.key.clone(), rotated.unwrap().key);
    fx.expect_allowed(|| fx.with_key(&old));
    fx.expect_allowed(|| fx.send(addrs::V4_PRIMARY, "GET", "/anthropic/v1/models", &[("x-api-key", &new)]));
    fx.expect_denied(IP_NOT_ALLOWED, || fx.with_key_from(addrs::V4_OTHER, &new));
    fx.expect_denied(WRONG_SECRET, || fx.with_key(&forge_key(key_id_of(&new), &other_secret(secret_of(&new)))));

    let secrets: Vec<(&str, String)> = vec![
        ("API key", old.clone()),
        ("rotated API key", new.clone()),
        ("API key secret", secret_of(&old).to_string()),
        ("rotated API key secret", secret_of(&new).to_string()),
        ("key hash", secret_hash_hex(&new)),
        ("previous key hash", secret_hash_hex(&old)),
        ("OpenAI provider secret", OPENAI_SECRET.to_string()),
        ("Anthropic provider secret", ANTHROPIC_SECRET.to_string()),
        ("bundle key", fx.admin.bundle_key().to_string()),
    ];
    let identities: Vec<(&str, String)> = vec![
        ("tenant id", TENANT.to_string()),
        ("tenant name", TENANT_NAME.to_string()),
        ("sub-account", "research-lab".to_string()),
        ("key id", fx.key.key_id.clone()),
    ];
    let dump = fx.envoy.admin_get("/config_dump");
    assert_eq!(dump.status, 200);
    let dump_eds = fx.envoy.admin_get("/config_dump?include_eds");
    assert_eq!(dump_eds.status, 200);
    // The dump does hold the guard's config, sealed.
    let sealed = sealed_of(&parse_ecds(&fx.admin.ecds_contents())).to_string();
    assert!(sealed.starts_with("thb1."), "{sealed}");
    assert!(dump.body_text().contains(&sealed), "/config_dump does not show the ECDS config at all");
    let sources = [
        ("/config_dump", dump.body_text()),
        ("/config_dump?include_eds", dump_eds.body_text()),
        ("/stats", fx.envoy.stats_text()),
        ("/stats/prometheus", fx.envoy.stats_prometheus()),
        ("/server_info", fx.envoy.admin_get("/server_info").body_text()),
    ];
    for (source, text) in &sources {
        for (what, value) in secrets.iter().chain(&identities) {
            assert!(!text.contains(value.as_str()), "{source} contains the {what}");
        }
    }
    // Logs carry metadata (tenant and key id in the access log) but never
    // a secret. The access log is flushed every 100 ms.
    thread::sleep(Duration::from_millis(250));
    let logs = [("Envoy's log", fx.envoy.log_contents()), ("the access log", format!("{:?}", fx.envoy.access_log()))];
    for (source, text) in &logs {
        for (what, value) in &secrets {
            assert!(!text.contains(value.as_str()), "{source} contains the {what}");
        }
    }
}

#[test]
fn prometheus_counts_decisions_and_shows_the_published_version() {
    let fx = Fixture::start_with(|admin, _| {
        admin.json(&["ip", "allow", "--tenant", TENANT, "127.0.0.1/32"]);
    });
    let key = fx.key.key.clone();
    let wrong = forge_key(key_id_of(&key), &other_secret(secret_of(&key)));
    fx.expect_allowed(|| fx.with_key(&key));
    fx.expect_allowed(|| fx.with_key(&key));
    fx.expect_allowed(|| fx.send(addrs::V4_PRIMARY, "GET", "/anthropic/v1/models", &[("x-api-key", &key)]));
    fx.expect_denied(WRONG_SECRET, || fx.with_key(&wrong));
    fx.expect_denied(WRONG_SECRET, || fx.with_key(&wrong));
    fx.expect_denied(MISSING_KEY, || fx.get("/v1/models", &[]));
    fx.expect_denied(IP_NOT_ALLOWED, || fx.with_key_from(addrs::V4_OTHER, &key));
    fx.expect_denied(TENANT_MISMATCH, || {
        fx.get("/v1/models", &[("authorization", &bearer(&key)), ("x-tokenhub-tenant", "other")])
    });
    fx.expect_denied(NO_PROVIDER, || fx.with_key_path("/nowhere", &key));
    // Counters survive a publish (new VMs), and the gauge follows it.
    let second = fx.admin.create_key(TENANT, &[]);
    let version = fx.publish();
    assert_eq!(version, fx.admin.published_version());
    fx.expect_allowed(|| fx.with_key(&second.key));
    fx.expect_denied(UNKNOWN_KEY, || fx.with_key(&forge_key("UnknownKeyId", secret_of(&key))));

    let text = fx.envoy.stats_prometheus();
    let want: BTreeMap<String, u64> = [
        ("tokenhub_allowed", 4),
        ("tokenhub_denied_wrong_secret", 2),
        ("tokenhub_denied_missing_credential", 1),
        ("tokenhub_denied_ip_not_allowed", 1),
        ("tokenhub_denied_tenant_mismatch", 1),
        ("tokenhub_denied_no_provider", 1),
        ("tokenhub_denied_unknown_key", 1),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    for name in ["tokenhub_allowed".to_string()].into_iter().chain(DENY_LABELS.map(|l| format!("tokenhub_denied_{l}")))
    {
        assert!(prometheus_value(&text, &name).is_some(), "{name} missing from /stats/prometheus");
        assert!(text.contains(&format!("# TYPE {name} counter")), "{name} is not a counter");
    }
    // Every decision counter, including reasons this test does not know.
    let got: BTreeMap<String, u64> = text
        .lines()
        .filter(|l| l.starts_with("tokenhub_allowed") || l.starts_with("tokenhub_denied_"))
        .filter_map(|l| {
            let name = l.split(['{', ' ']).next()?;
            Some((name.to_string(), prometheus_value(&text, name)?))
        })
        .filter(|(_, v)| *v != 0)
        .collect();
    assert_eq!(got, want, "non-zero guard counters in /stats/prometheus");
    assert!(text.contains("# TYPE tokenhub_bundle_version gauge"), "tokenhub_bundle_version is not a gauge");
    assert_eq!(prometheus_value(&text, "tokenhub_bundle_version"), Some(version));
}
