//! The guard fixture shared by the end-to-end suites: a store made with
//! the real `tokenhub-admin` (one tenant, two providers, one key), an echo
//! upstream, and a real Envoy reading what the CLI published; plus the
//! assertions every suite makes on a decision: the exact status and JSON
//! error shape, what reached the upstream, and which `tokenhub.*` counter
//! moved.

use crate::admin::{Admin, IssuedKey};
use crate::client::Response;
use crate::echo::{EchoUpstream, ReceivedRequest};
use crate::envoy::{EcdsOutcome, Envoy, EnvoyOptions};
use crate::{addrs, paths};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

pub const TENANT: &str = "zebra-widgets";
/// Spaces cannot occur in base64, so a match in a dump is a real leak.
pub const TENANT_NAME: &str = "Zebra Widgets Ltd";
pub const REGION: &str = "eu";
pub const SUB_ACCOUNT: &str = "default";
/// Provider secrets with characters outside every base64 alphabet.
pub const OPENAI_SECRET: &str = "sk-openai.Provider~Secret:4242";
pub const ANTHROPIC_SECRET: &str = "ant-api.Provider~Secret:0707";
pub const BUNDLE_KEY_ENV: &str = "TOKENHUB_BUNDLE_KEY";
pub const ECDS_PREFIX: &str = "extension_config_discovery.http_filter.tokenhub.guard.";

// ---------------------------------------------------------------------------
// Expected denials: status, OpenAI error type and code, and the reason label
// of the `tokenhub.denied.<reason>` counter (src/core/errors.rs).

#[derive(Debug, Clone, Copy)]
pub struct Denial {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub reason: &'static str,
}

pub const fn unauthenticated(code: &'static str, reason: &'static str) -> Denial {
    Denial { status: 401, kind: "authentication_error", code, reason }
}

pub const fn forbidden(code: &'static str, reason: &'static str) -> Denial {
    Denial { status: 403, kind: "permission_error", code, reason }
}

pub const MISSING_KEY: Denial = unauthenticated("missing_api_key", "missing_credential");
pub const MALFORMED_KEY: Denial = unauthenticated("invalid_api_key", "malformed_credential");
pub const DUPLICATE_KEY: Denial = unauthenticated("invalid_api_key", "duplicate_credential");
pub const BAD_CHECKSUM: Denial = unauthenticated("invalid_api_key", "bad_checksum");
pub const UNKNOWN_KEY: Denial = unauthenticated("invalid_api_key", "unknown_key");
pub const WRONG_SECRET: Denial = unauthenticated("invalid_api_key", "wrong_secret");
pub const KEY_DISABLED: Denial = unauthenticated("invalid_api_key", "key_disabled");
pub const KEY_EXPIRED: Denial = unauthenticated("invalid_api_key", "key_expired");
pub const IP_NOT_ALLOWED: Denial = forbidden("ip_not_allowed", "ip_not_allowed");
pub const TENANT_MISMATCH: Denial = forbidden("tenant_mismatch", "tenant_mismatch");
pub const METHOD_NOT_ALLOWED: Denial = forbidden("insufficient_scope", "method_not_allowed");
pub const PATH_NOT_ALLOWED: Denial = forbidden("insufficient_scope", "path_not_allowed");
pub const PATH_NOT_NORMALIZED: Denial =
    Denial { status: 400, kind: "invalid_request_error", code: "invalid_path", reason: "path_not_normalized" };
pub const NO_PROVIDER: Denial =
    Denial { status: 404, kind: "invalid_request_error", code: "unknown_url", reason: "no_provider" };
pub const SHARED_CREDENTIAL_REFUSED: Denial = forbidden("provider_credential_required", "shared_credential_refused");
pub const NO_BUNDLE: Denial =
    Denial { status: 503, kind: "service_unavailable", code: "policy_unavailable", reason: "no_bundle" };

/// Every reason label the filter defines a counter for: the guard's own
/// list (`DenyReason::ALL`, src/core/errors.rs), not a copy.
pub fn deny_labels() -> impl Iterator<Item = &'static str> {
    tokenhub_guard::core::errors::DenyReason::ALL.into_iter().map(|r| r.label())
}

// ---------------------------------------------------------------------------
// The fixture: store + echo + Envoy, one per test.

pub struct Fixture {
    // Dropped first: Envoy stops (and prints its log if the test failed)
    // before the upstream and the store go away.
    pub envoy: Envoy,
    pub echo: EchoUpstream,
    pub admin: Admin,
    /// An unrestricted key of TENANT / SUB_ACCOUNT.
    pub key: IssuedKey,
}

/// A store with TENANT, two providers (the header and format of each are
/// what the upstream must receive) and one key. Nothing published yet.
pub fn new_store() -> (Admin, IssuedKey) {
    new_store_for(&paths::built_guard_wasm())
}

/// [`new_store`] whose published ECDS files name the module `wasm` (e.g.
/// the fault-injection build).
pub fn new_store_for(wasm: &Path) -> (Admin, IssuedKey) {
    let admin = Admin::init(wasm);
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

/// Lets the platform's OpenAI secret serve every method and path under
/// `/v1/` (not only the stateless preset), for suites about scopes and
/// paths rather than about the shared credential.
pub fn share_everything_under_v1(admin: &Admin) {
    admin.set_provider(
        &["openai", "--path-prefix", "/v1/", "--shared-endpoint", "* /v1/", "--shared-endpoint", "* /v1/*"],
        OPENAI_SECRET,
    );
}

/// For `Fixture::start_with`: [`share_everything_under_v1`], and a key that
/// may only POST under `/v1/chat`, stored in `slot` (the scope suites' key).
pub fn with_chat_post_key(slot: &mut Option<IssuedKey>) -> impl FnOnce(&Admin, &IssuedKey) + '_ {
    move |admin, _| {
        share_everything_under_v1(admin);
        *slot = Some(admin.create_key(TENANT, &["--methods", "POST", "--paths", "/v1/chat"]));
    }
}

impl Fixture {
    pub fn start() -> Fixture {
        Self::start_with(|_, _| {})
    }

    /// The store, then `customize` (more keys, allowlists…), then the first
    /// publish, then Envoy reading what was published.
    pub fn start_with(customize: impl FnOnce(&Admin, &IssuedKey)) -> Fixture {
        let (admin, key) = new_store();
        customize(&admin, &key);
        admin.publish();
        let fx = Self::start_envoy(admin, key, None, None);
        let version = fx.admin.published_version();
        fx.envoy.wait_for_stat("wasmcustom.tokenhub.bundle_version", |v| v == version, Duration::from_secs(10));
        fx
    }

    /// The general form: a store whose ECDS files name `wasm`,
    /// `customize_store`, the first publish, then Envoy (running `wasm`)
    /// with its options adjusted by `customize_envoy`; waits until the
    /// published version serves.
    pub fn start_with_module(
        wasm: &Path,
        customize_store: impl FnOnce(&Admin, &IssuedKey),
        customize_envoy: impl FnOnce(&mut EnvoyOptions),
    ) -> Fixture {
        assert!(wasm.is_file(), "{} is not built", wasm.display());
        let (admin, key) = new_store_for(wasm);
        customize_store(&admin, &key);
        admin.publish();
        let wasm = wasm.to_path_buf();
        let fx = Self::start_envoy_with(admin, key, None, |opts| {
            opts.wasm_path = wasm;
            customize_envoy(opts);
        });
        let version = fx.admin.published_version();
        fx.envoy.wait_for_stat("wasmcustom.tokenhub.bundle_version", |v| v == version, Duration::from_secs(10));
        fx
    }

    /// `send` must be answered by Envoy itself with `status`, before or
    /// instead of the guard: nothing upstream and no guard decision
    /// counted.
    pub fn expect_refused_by_envoy(&self, status: u16, send: impl FnOnce() -> Response) -> Response {
        let before = self.guard_counters();
        let resp = send();
        assert_eq!(resp.status, status, "expected Envoy's {status}, got {} {}", resp.status, resp.body_text());
        let upstream = self.echo.take_requests();
        assert!(upstream.is_empty(), "a request Envoy refused ({status}) reached the upstream: {upstream:#?}");
        assert_eq!(self.guard_counters(), before, "the guard decided a request Envoy refuses ({status})");
        resp
    }

    /// Nothing published: Envoy starts with `initial_ecds` as guard.json.
    pub fn start_unpublished(initial_ecds: &str) -> Fixture {
        let (admin, key) = new_store();
        Self::start_envoy(admin, key, Some(initial_ecds.to_string()), None)
    }

    pub fn start_envoy(
        admin: Admin,
        key: IssuedKey,
        initial_ecds: Option<String>,
        bundle_key: Option<String>,
    ) -> Fixture {
        Self::start_envoy_with(admin, key, initial_ecds, |opts| {
            if let Some(bundle_key) = bundle_key {
                set_env(opts, BUNDLE_KEY_ENV, &bundle_key);
            }
        })
    }

    /// Like [`Fixture::start_envoy`], with the options (module, workers,
    /// environment…) adjusted by `customize` before Envoy starts. The
    /// defaults: the store's bundle directory and bundle key, wasm:debug.
    pub fn start_envoy_with(
        admin: Admin,
        key: IssuedKey,
        initial_ecds: Option<String>,
        customize: impl FnOnce(&mut EnvoyOptions),
    ) -> Fixture {
        let echo = EchoUpstream::start().expect("echo upstream");
        let mut opts = EnvoyOptions::new(echo.port()).publisher(&admin);
        opts.initial_ecds = initial_ecds;
        // Any debug line the filter writes must hold no secret either.
        opts.component_log_level = Some("wasm:debug".to_string());
        customize(&mut opts);
        let envoy = Envoy::start(opts);
        Fixture { envoy, echo, admin, key }
    }

    /// Raw request bytes (head lines, each sent as given plus CRLF) on a
    /// fresh connection from `src`: for non-UTF-8 values and odd framing.
    pub fn send_raw<L: AsRef<[u8]>>(&self, src: IpAddr, head_lines: &[L], body: &[u8]) -> Response {
        self.envoy.request(src, head_lines, body).unwrap_or_else(|e| panic!("raw request from {src}: {e}"))
    }

    /// The stat `wasmcustom.<name>` (a guard metric), 0 when absent.
    pub fn guard_stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.{name}")).unwrap_or(0)
    }

    /// One request on a fresh connection from `src`.
    pub fn send(&self, src: IpAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let lines = request_lines(method, path, headers, true);
        self.envoy.request(src, &lines, b"").unwrap_or_else(|e| panic!("{method} {path} from {src}: {e}"))
    }

    /// `GET path` from 127.0.0.1.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send(addrs::V4_PRIMARY, "GET", path, headers)
    }

    /// `GET /v1/models` with `authorization: Bearer <key>` from `src`.
    pub fn with_key_from(&self, src: IpAddr, key: &str) -> Response {
        self.send(src, "GET", "/v1/models", &[("authorization", &bearer(key))])
    }

    pub fn with_key(&self, key: &str) -> Response {
        self.with_key_from(addrs::V4_PRIMARY, key)
    }

    /// A JSON `POST` with `authorization: Bearer <key>` from the primary
    /// address (content-length framing).
    pub fn post_json(&self, key: &str, path: &str, body: &[u8]) -> Response {
        let auth = bearer(key);
        let len = body.len().to_string();
        let headers =
            [("authorization", auth.as_str()), ("content-type", "application/json"), ("content-length", len.as_str())];
        self.send_raw(addrs::V4_PRIMARY, &request_lines("POST", path, &headers, true), body)
    }

    /// Publishes with the CLI and waits until Envoy has taken the file.
    pub fn publish(&self) -> u64 {
        let (out, outcome) = self.envoy.await_ecds(|| self.admin.publish());
        assert_eq!(outcome, EcdsOutcome::Accepted, "tokenhub-admin publish: {out}");
        out["version"].as_u64().unwrap_or_else(|| panic!("no version in {out}"))
    }

    /// `send` must be allowed: 200, exactly one request upstream (returned),
    /// and exactly `tokenhub.allowed` counted.
    pub fn expect_allowed(&self, send: impl FnOnce() -> Response) -> ReceivedRequest {
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
    pub fn expect_denied(&self, want: Denial, send: impl FnOnce() -> Response) -> Response {
        let before = self.guard_counters();
        let resp = send();
        assert_error(&resp, want);
        let upstream = self.echo.take_requests();
        assert!(upstream.is_empty(), "a refused request ({want:?}) reached the upstream: {upstream:#?}");
        assert_counted(&before, &self.guard_counters(), &format!("tokenhub.denied.{}", want.reason));
        resp
    }

    /// `send` must be refused for one of `wants` (the one whose status and
    /// error code the answer has), as [`Fixture::expect_denied`] checks it.
    pub fn expect_denied_any(&self, wants: &[Denial], send: impl FnOnce() -> Response) -> Response {
        let before = self.guard_counters();
        let resp = send();
        let code = resp.json()["error"]["code"].as_str().unwrap_or_default().to_string();
        let want = *wants
            .iter()
            .find(|w| w.status == resp.status && w.code == code)
            .unwrap_or_else(|| panic!("expected one of {wants:?}, got {} {}", resp.status, resp.body_text()));
        assert_error(&resp, want);
        let upstream = self.echo.take_requests();
        assert!(upstream.is_empty(), "a refused request ({want:?}) reached the upstream: {upstream:#?}");
        assert_counted(&before, &self.guard_counters(), &format!("tokenhub.denied.{}", want.reason));
        resp
    }

    /// The guard's decision counters from /stats (`tokenhub.allowed` and
    /// `tokenhub.denied.*`, shown as `wasmcustom.<name>`), by name.
    pub fn guard_counters(&self) -> BTreeMap<String, u64> {
        self.envoy
            .stats_text()
            .lines()
            .filter_map(|line| line.strip_prefix("wasmcustom."))
            .filter_map(|line| line.split_once(": "))
            .filter(|(name, _)| *name == "tokenhub.allowed" || name.starts_with("tokenhub.denied."))
            .map(|(name, value)| (name.to_string(), value.trim().parse().unwrap_or(u64::MAX)))
            .collect()
    }

    pub fn ecds_stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("{ECDS_PREFIX}{name}")).unwrap_or(0)
    }
}

pub fn request_lines(method: &str, path: &str, headers: &[(&str, &str)], close: bool) -> Vec<String> {
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

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Exactly one counter moved, by exactly one.
pub fn assert_counted(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) {
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
pub fn assert_error(resp: &Response, want: Denial) {
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

const BYTES_VALUE: &str = "type.googleapis.com/google.protobuf.BytesValue";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// The sealed bundle of an ECDS file in its text form (`thb1.<header>.<body>`),
/// whether the file carries it as `publish` writes it (the binary form
/// `thb1b.<header>.<raw body>` in a BytesValue, base64) or as a StringValue.
pub fn sealed_of(ecds: &serde_json::Value) -> String {
    let raw = sealed_bytes_of(ecds);
    match raw.strip_prefix(b"thb1b.") {
        Some(rest) => {
            let mut parts = rest.splitn(2, |&b| b == b'.');
            let header = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            format!("thb1.{header}.{}", URL_SAFE_NO_PAD.encode(parts.next().unwrap_or_default()))
        }
        None => String::from_utf8_lossy(&raw).into_owned(),
    }
}

/// The configuration bytes Envoy hands the filter.
pub fn sealed_bytes_of(ecds: &serde_json::Value) -> Vec<u8> {
    let configuration = &ecds["resources"][0]["typed_config"]["config"]["configuration"];
    let value = configuration["value"].as_str().unwrap_or_default();
    if configuration["@type"] == BYTES_VALUE {
        STANDARD.decode(value).unwrap_or_default()
    } else {
        value.as_bytes().to_vec()
    }
}

/// The configuration value exactly as the file (and `/config_dump`) shows it.
pub fn configuration_value_of(ecds: &serde_json::Value) -> String {
    ecds["resources"][0]["typed_config"]["config"]["configuration"]["value"].as_str().unwrap_or_default().to_string()
}

/// Replaces the sealed bundle: `bytes` as a BytesValue, as `publish` does.
pub fn set_sealed_bytes(ecds: &mut serde_json::Value, bytes: &[u8]) {
    ecds["resources"][0]["typed_config"]["config"]["configuration"] =
        serde_json::json!({ "@type": BYTES_VALUE, "value": STANDARD.encode(bytes) });
}

/// Replaces the sealed bundle with `text` as a StringValue, as a hand-written
/// configuration would carry it.
pub fn set_sealed_text(ecds: &mut serde_json::Value, text: &str) {
    ecds["resources"][0]["typed_config"]["config"]["configuration"] =
        serde_json::json!({ "@type": STRING_VALUE, "value": text });
}

pub fn parse_ecds(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the published ECDS file is not JSON ({e}): {text}"))
}

/// Lines of Envoy's log written after byte `from` that mention `needle`,
/// waiting up to 5 s for one to appear.
pub fn log_lines_since(envoy: &Envoy, from: usize, needle: &str) -> Vec<String> {
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
pub fn prometheus_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value =
            if let Some(labels) = rest.strip_prefix('{') { labels.split_once('}')?.1 } else { rest.strip_prefix(' ')? };
        value.trim().parse().ok()
    })
}

impl Fixture {
    /// Publishes a second version (with a second key) after the fixture's
    /// first; returns the first version's ECDS text, the second key and the
    /// second version.
    /// A bundle published by another store (its own bundle key and keys):
    /// its ECDS text, one of its keys, and the reason the filter here logs
    /// when it refuses it.
    pub fn foreign_bundle(&self) -> (String, IssuedKey, String) {
        let (other, other_key) = new_store();
        other.publish();
        let reason = format!(
            "sealed with key {} but TOKENHUB_BUNDLE_KEY is key {}",
            other.bundle_key_id(),
            self.admin.bundle_key_id()
        );
        (other.ecds_contents(), other_key, reason)
    }

    pub fn two_versions(&self) -> (String, IssuedKey, u64) {
        let v1 = self.admin.ecds_contents();
        let second = self.admin.create_key(TENANT, &[]);
        let version = self.publish();
        self.expect_allowed(|| self.with_key(&second.key));
        (v1, second, version)
    }
}

impl Fixture {
    pub fn with_key_path(&self, path: &str, key: &str) -> Response {
        self.get(path, &[("authorization", &bearer(key))])
    }
}

// ===========================================================================
/// Publishes `text` behind the CLI's back; it must be rejected with a log
/// line naming `reason`, and version `serving` must keep serving.
pub fn assert_rejected(fx: &Fixture, text: &str, reason: &str, serving: u64, still_valid: &[&str]) {
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

pub fn assert_fails_closed(fx: &Fixture) {
    for src in [addrs::V4_PRIMARY, addrs::V4_OTHER, addrs::V6_LOOPBACK] {
        fx.expect_denied(NO_BUNDLE, || fx.with_key_from(src, &fx.key.key));
    }
    fx.expect_denied(NO_BUNDLE, || fx.get("/v1/models", &[]));
}

/// Sets (or replaces) one environment variable for Envoy.
pub fn set_env(opts: &mut EnvoyOptions, name: &str, value: &str) {
    opts.env.retain(|(n, _)| n != name);
    opts.env.push((name.to_string(), value.to_string()));
}

/// The identity headers the fixture's key must carry upstream.
pub fn fixture_identity(key_id: &str) -> [(&'static str, String); 5] {
    [
        ("x-tokenhub-tenant", TENANT.to_string()),
        ("x-tokenhub-sub-account", SUB_ACCOUNT.to_string()),
        ("x-tokenhub-key-id", key_id.to_string()),
        ("x-tokenhub-region", REGION.to_string()),
        ("x-tokenhub-auth", "api_key".to_string()),
    ]
}

/// What an allowed request must look like upstream: the provider
/// credential `inject` exactly once (and the other credential header
/// absent), exactly the `identity` headers once each and no other
/// `x-tokenhub-*` (nor `x_tokenhub_*`) header, and no header value holding
/// any of `client_secrets` (the client's key, its secret).
pub fn assert_forwarded(
    seen: &ReceivedRequest,
    inject: (&str, &str),
    identity: &[(&str, String)],
    client_secrets: &[&str],
    case: &str,
) {
    let (header, value) = inject;
    assert_eq!(seen.header_all(header), [value], "{case}: provider credential upstream: {:#?}", seen.headers);
    let other = if header.eq_ignore_ascii_case("authorization") { "x-api-key" } else { "authorization" };
    assert!(seen.header_all(other).is_empty(), "{case}: a client {other} reached the upstream: {:#?}", seen.headers);
    let mut got: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().replace('_', "-").starts_with("x-tokenhub-"))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = identity.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    want.sort();
    assert_eq!(got, want, "{case}: x-tokenhub-* headers upstream");
    for (name, value) in &seen.headers {
        for secret in client_secrets.iter().filter(|s| !s.is_empty()) {
            assert!(!value.contains(secret), "{case}: a client secret reached the upstream in {name}: {value}");
            assert!(!name.contains(secret), "{case}: a client secret reached the upstream as a header name");
        }
    }
}
