//! Hostile input through a real Envoy: credentials, source addresses, tenant claims, paths, HTTP/2
//! and request smuggling. Every case asserts the exact status and what
//! reached the upstream: nothing, or exactly the expected headers (the
//! client's credential absent, the provider credential injected once, the
//! guard's authoritative `x-tokenhub-*` headers once each and no other).
//! Cases Envoy itself refuses are asserted as Envoy's answer with no guard
//! decision counted and nothing upstream.
//!
//! HTTP/1.1 goes through the harness's raw client (bytes as given); HTTP/2
//! is h2c with prior knowledge to the same plaintext listener
//! (`codec_type: AUTO`), through `curl --http2-prior-knowledge` or, for
//! frames no conforming client sends, the harness's raw HTTP/2 writer.
//!
//! Needs `make wasm`, `make admin` and `make bootstrap`; `curl` with HTTP/2.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;
use tokenhub_integration::guard::*;
use tokenhub_integration::http2::{curl, raw, H2Outcome};
use tokenhub_integration::keys::{forge_key, key_id_of, key_with_id, one_char_off_secret, other_secret, secret_of};
use tokenhub_integration::{addrs, paths, EnvoyOptions, ReceivedRequest, Response};

mod claims;
mod credentials;
mod path_scopes;
mod smuggling;
mod source;
mod upstream;

/// Header fields with byte values, in order.
type Headers = Vec<(&'static str, Vec<u8>)>;
/// Raw HTTP/2 header fields (names and values as bytes), in order.
type RawFields<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Cases tried, over all tests of this binary (printed by each test).
static CASES: AtomicUsize = AtomicUsize::new(0);

/// What a case must come to.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// 200; upstream exactly as [`assert_forwarded`] demands, with the
    /// provider credential of the path's provider.
    Allowed,
    /// The guard's refusal.
    Denied(Denial),
    /// Envoy's own answer with this status; the guard never decides.
    Envoy(u16),
    /// The guard's refusal, for one of these reasons: where supported Envoy
    /// releases differ in what they hand the guard (1.39 folds `..;` into
    /// `..` and resolves it, 1.36 passes it on), the guard refuses either
    /// way and nothing reaches the upstream.
    DeniedAny(&'static [Denial]),
}

/// The provider credential the upstream must receive for `path`.
fn injected_for(path: &str) -> (&'static str, String) {
    if path.starts_with("/anthropic/") {
        ("x-api-key", ANTHROPIC_SECRET.to_string())
    } else {
        ("authorization", format!("Bearer {OPENAI_SECRET}"))
    }
}

/// Runs one case: `send` must come to `want`; for an allowed request the
/// upstream must carry `key_id`'s identity and nothing of `secrets`, and
/// the request the upstream received is returned.
fn check(
    fx: &Fixture,
    case: &str,
    want: Want,
    path: &str,
    key_id: &str,
    secrets: &[&str],
    send: impl FnOnce() -> Response,
) -> Option<ReceivedRequest> {
    CASES.fetch_add(1, Ordering::Relaxed);
    let run = || match want {
        Want::Allowed => {
            let seen = fx.expect_allowed(send);
            let (header, value) = injected_for(path);
            let identity = fixture_identity(key_id);
            assert_forwarded(&seen, (header, &value), &identity, secrets, case);
            Some(seen)
        }
        Want::Denied(denial) => {
            fx.expect_denied(denial, send);
            None
        }
        Want::Envoy(status) => {
            fx.expect_refused_by_envoy(status, send);
            None
        }
        Want::DeniedAny(denials) => {
            fx.expect_denied_any(denials, send);
            None
        }
    };
    // Name the case in the failure message.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(seen) => seen,
        Err(e) => {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("case {case:?} (want {want:?}): {}", msg.unwrap_or_default());
        }
    }
}

/// HTTP/1.1 head lines with byte values: request line, host, the headers
/// as given, content-length 0 for non-GET, connection: close.
fn h1_lines(method: &str, path: &str, headers: &[(&str, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut lines = vec![format!("{method} {path} HTTP/1.1").into_bytes(), b"host: tokenhub.test".to_vec()];
    for (name, value) in headers {
        let mut line = format!("{name}: ").into_bytes();
        line.extend_from_slice(value);
        lines.push(line);
    }
    if method != "GET" {
        lines.push(b"content-length: 0".to_vec());
    }
    lines.push(b"connection: close".to_vec());
    lines
}

fn h1(fx: &Fixture, src: IpAddr, method: &str, path: &str, headers: &[(&str, Vec<u8>)]) -> Response {
    fx.send_raw(src, &h1_lines(method, path, headers), b"")
}

/// The same request over HTTP/2 (curl); a reset is a test failure here.
fn h2(fx: &Fixture, src: IpAddr, method: &str, path: &str, headers: &[(&str, Vec<u8>)]) -> Response {
    let view: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let dst = if src.is_ipv6() { fx.envoy.listener_v6() } else { fx.envoy.listener() };
    let outcome = curl::request(src, dst, method, path, &view, b"").unwrap_or_else(|e| panic!("curl: {e}"));
    outcome.response()
}

/// A request over one protocol: `h1` or `h2`.
type Sender = fn(&Fixture, IpAddr, &str, &str, &[(&str, Vec<u8>)]) -> Response;

/// Both protocols, with the names the cases' labels give them.
const PROTOCOLS: [(&str, Sender); 2] = [("HTTP/1.1", h1), ("HTTP/2", h2)];

fn b(s: impl AsRef<str>) -> Vec<u8> {
    s.as_ref().as_bytes().to_vec()
}

fn auth(key: &str) -> (&'static str, Vec<u8>) {
    ("authorization", b(bearer(key)))
}

fn api_key(key: &str) -> (&'static str, Vec<u8>) {
    ("x-api-key", b(key))
}

/// True when a value starts or ends with a space or tab (or is only that).
fn has_whitespace_edge(v: &[u8]) -> bool {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    v.first().is_some_and(ws) || v.last().is_some_and(ws)
}

/// Sends `GET path` with `headers` over the raw HTTP/2 writer (bytes
/// exactly as given): the guard must refuse it as `want` (status, counter),
/// nothing upstream.
fn expect_h2_raw_denied(fx: &Fixture, case: &str, want: Denial, path: &str, headers: &[(&str, Vec<u8>)]) {
    CASES.fetch_add(1, Ordering::Relaxed);
    let mut frame: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", b"tokenhub.test"),
    ];
    frame.extend(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())));
    let before = fx.guard_counters();
    let outcome = raw::request(addrs::V4_PRIMARY, fx.envoy.listener(), &frame, None).expect("raw HTTP/2");
    assert_eq!(outcome.status(), Some(want.status), "raw h2: {case}: {outcome:?}");
    let upstream = fx.echo.take_requests();
    assert!(upstream.is_empty(), "raw h2: {case}: reached the upstream: {upstream:#?}");
    assert_counted(&before, &fx.guard_counters(), &format!("tokenhub.denied.{}", want.reason));
}

/// Both protocols, every case: the credential table.
struct CredCase {
    name: String,
    path: &'static str,
    headers: Vec<(&'static str, Vec<u8>)>,
    want: Want,
}

fn cred(name: impl Into<String>, want: Want, headers: Vec<(&'static str, Vec<u8>)>) -> CredCase {
    CredCase { name: name.into(), path: "/v1/models", headers, want }
}

/// The credential cases every protocol must decide the same way. `k` is
/// the fixture's key, `k2` another valid key of the same tenant.
fn credential_cases(k: &str, k2: &str) -> Vec<CredCase> {
    use Want::{Allowed, Denied};
    let mut checksum_off = k.to_string();
    let last = checksum_off.pop().unwrap_or('0');
    checksum_off.push(if last == 'A' { 'B' } else { 'A' });
    let mut secret_typo = k.to_string().into_bytes();
    secret_typo[20] = if secret_typo[20] == b'a' { b'b' } else { b'a' };
    let mut id_typo: Vec<u8> = key_id_of(k).bytes().collect();
    id_typo[0] = if id_typo[0] == b'Z' { b'Y' } else { b'Z' };
    let id_typo = key_with_id(k, &String::from_utf8_lossy(&id_typo));
    let case_flipped: String = k[4..]
        .chars()
        .map(|c| if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect();
    let percent_all: String = k.bytes().map(|c| format!("%{c:02X}")).collect();
    let mut latin1 = k.as_bytes().to_vec();
    latin1[10] = 0xE9; // 'é' in Latin-1: not UTF-8
    let mut with_zwsp = k.as_bytes().to_vec();
    with_zwsp.extend_from_slice("\u{200B}".as_bytes());
    let mut fullwidth = b("thk_");
    fullwidth.extend_from_slice("\u{FF10}".as_bytes()); // fullwidth digit zero
    fullwidth.extend_from_slice(&k.as_bytes()[5..]);

    let mut cases = vec![
        // Missing, empty, whitespace.
        cred("no credential", Denied(MISSING_KEY), vec![]),
        cred("empty x-api-key", Denied(MISSING_KEY), vec![("x-api-key", vec![])]),
        cred("whitespace-only x-api-key", Denied(MISSING_KEY), vec![("x-api-key", b("   "))]),
        cred("tab-only x-api-key", Denied(MISSING_KEY), vec![("x-api-key", b("\t"))]),
        cred("empty authorization", Denied(MALFORMED_KEY), vec![("authorization", vec![])]),
        cred("whitespace-only authorization", Denied(MALFORMED_KEY), vec![("authorization", b("  \t "))]),
        // The scheme.
        cred("bearer lower case", Allowed, vec![("authorization", b(format!("bearer {k}")))]),
        cred("BEARER upper case", Allowed, vec![("authorization", b(format!("BEARER {k}")))]),
        cred("double space after Bearer", Allowed, vec![("authorization", b(format!("Bearer  {k}")))]),
        cred("trailing space (OWS, trimmed)", Allowed, vec![("authorization", b(format!("Bearer {k} ")))]),
        cred("trailing tab (OWS, trimmed)", Allowed, vec![("authorization", b(format!("Bearer {k}\t")))]),
        cred("leading OWS before x-api-key", Allowed, vec![("x-api-key", b(format!(" \t{k}")))]),
        cred(
            "tab instead of space after Bearer",
            Denied(MALFORMED_KEY),
            vec![("authorization", b(format!("Bearer\t{k}")))],
        ),
        cred("no space after Bearer", Denied(MALFORMED_KEY), vec![("authorization", b(format!("Bearer{k}")))]),
        cred("Bearer alone", Denied(MALFORMED_KEY), vec![("authorization", b("Bearer"))]),
        cred("Bearer and a space", Denied(MALFORMED_KEY), vec![("authorization", b("Bearer "))]),
        cred("Basic scheme", Denied(MALFORMED_KEY), vec![("authorization", b(format!("Basic {k}")))]),
        cred("Token scheme", Denied(MALFORMED_KEY), vec![("authorization", b(format!("Token {k}")))]),
        cred("key then junk", Denied(MALFORMED_KEY), vec![("authorization", b(format!("Bearer {k} x")))]),
        // Duplicates in every order.
        cred("authorization valid+invalid", Denied(DUPLICATE_KEY), vec![auth(k), auth("thk_invalid")]),
        cred("authorization invalid+valid", Denied(DUPLICATE_KEY), vec![auth("thk_invalid"), auth(k)]),
        cred("authorization valid twice", Denied(DUPLICATE_KEY), vec![auth(k), auth(k)]),
        cred("authorization two valid keys", Denied(DUPLICATE_KEY), vec![auth(k), auth(k2)]),
        cred("x-api-key valid+invalid", Denied(DUPLICATE_KEY), vec![api_key(k), api_key("thk_invalid")]),
        cred("x-api-key invalid+valid", Denied(DUPLICATE_KEY), vec![api_key("thk_invalid"), api_key(k)]),
        cred("x-api-key valid twice", Denied(DUPLICATE_KEY), vec![api_key(k), api_key(k)]),
        cred("x-api-key valid+empty", Denied(DUPLICATE_KEY), vec![api_key(k), ("x-api-key", vec![])]),
        cred("comma-joined in one x-api-key", Denied(DUPLICATE_KEY), vec![("x-api-key", b(format!("{k},{k}")))]),
        cred(
            "comma-joined in one authorization",
            Denied(DUPLICATE_KEY),
            vec![("authorization", b(format!("Bearer {k}, Bearer {k2}")))],
        ),
        cred("authorization k + x-api-key k2", Denied(DUPLICATE_KEY), vec![auth(k), api_key(k2)]),
        cred("x-api-key k2 + authorization k", Denied(DUPLICATE_KEY), vec![api_key(k2), auth(k)]),
        cred("authorization k + x-api-key invalid", Denied(DUPLICATE_KEY), vec![auth(k), api_key("thk_invalid")]),
        cred(
            "Basic authorization + x-api-key k",
            Denied(MALFORMED_KEY),
            vec![("authorization", b("Basic dXNlcjpwYXNz")), api_key(k)],
        ),
        cred("same key in both headers", Allowed, vec![api_key(k), auth(k)]),
        // Elsewhere than the two headers: ignored.
        cred("key in a cookie", Denied(MISSING_KEY), vec![("cookie", b(format!("api_key={k}")))]),
        cred(
            "bearer in a cookie",
            Denied(MISSING_KEY),
            vec![("cookie", b(format!("authorization=Bearer {k}; x-api-key={k}")))],
        ),
        cred("key in another header", Denied(MISSING_KEY), vec![("x-auth-token", b(k)), ("api-key", b(k))]),
        cred("proxy-authorization", Denied(MISSING_KEY), vec![("proxy-authorization", b(bearer(k)))]),
        // Near misses.
        cred("secret one char off, checksum fixed", Denied(WRONG_SECRET), vec![auth(&one_char_off_secret(k, 7))]),
        cred(
            "secret one char off, checksum not fixed",
            Denied(BAD_CHECKSUM),
            vec![("authorization", [b("Bearer "), secret_typo].concat())],
        ),
        cred("checksum one char off", Denied(BAD_CHECKSUM), vec![auth(&checksum_off)]),
        cred("key id one char off, checksum fixed", Denied(UNKNOWN_KEY), vec![auth(&id_typo)]),
        cred(
            "valid checksum, wrong secret",
            Denied(WRONG_SECRET),
            vec![api_key(&forge_key(key_id_of(k), &other_secret(secret_of(k))))],
        ),
        cred("upper-cased key", Denied(MALFORMED_KEY), vec![auth(&k.to_ascii_uppercase())]),
        cred("case-flipped body", Denied(BAD_CHECKSUM), vec![auth(&format!("thk_{case_flipped}"))]),
        cred("one char short", Denied(MALFORMED_KEY), vec![auth(&k[..k.len() - 1])]),
        cred("one char long", Denied(MALFORMED_KEY), vec![auth(&format!("{k}0"))]),
        cred("percent-encoded underscore", Denied(MALFORMED_KEY), vec![auth(&k.replacen('_', "%5F", 1))]),
        cred("percent-encoded throughout", Denied(MALFORMED_KEY), vec![auth(&percent_all)]),
        cred("non-UTF-8 byte inside", Denied(MALFORMED_KEY), vec![("x-api-key", latin1)]),
        cred("non-UTF-8 bytes alone", Denied(MALFORMED_KEY), vec![("x-api-key", vec![0xFF, 0xFE, 0x80])]),
        cred("zero-width space appended", Denied(MALFORMED_KEY), vec![("x-api-key", with_zwsp)]),
        cred("fullwidth digit look-alike", Denied(MALFORMED_KEY), vec![("x-api-key", fullwidth)]),
    ];
    // Query strings are never read for credentials.
    for path in [
        "/v1/models?api_key=K",
        "/v1/models?key=K&x=1",
        "/v1/models?x-api-key=K",
        "/v1/models?authorization=Bearer%20K",
    ] {
        let path: &'static str = Box::leak(path.replace('K', k).into_boxed_str());
        cases.push(CredCase {
            name: "key in the query string".into(),
            path,
            headers: vec![],
            want: Denied(MISSING_KEY),
        });
    }
    cases
}

/// The fixture with a second key of its tenant, and the two keys.
fn with_two_keys() -> (Fixture, String, String) {
    let mut second = None;
    let fx = Fixture::start_with(|admin, _| second = Some(admin.create_key(TENANT, &[])));
    let (k, k2) = (fx.key.key.clone(), second.expect("the second key").key);
    (fx, k, k2)
}

/// Both keys and their secrets: what no answer, upstream or log may show.
fn both_secrets<'a>(k: &'a str, k2: &'a str) -> [&'a str; 4] {
    [k, secret_of(k), k2, secret_of(k2)]
}

/// Asserts that neither Envoy's log nor the access log holds any of
/// `secrets` (the access log is flushed every 100 ms).
fn assert_not_logged(fx: &Fixture, secrets: &[(&str, &str)]) {
    thread::sleep(Duration::from_millis(300));
    let access = std::fs::read(fx.envoy.access_log_path()).unwrap_or_default();
    let access = String::from_utf8_lossy(&access);
    assert!(!access.is_empty(), "the access log is empty: nothing to check");
    let logs = [("Envoy's log", fx.envoy.log_contents()), ("the access log", access.into_owned())];
    for (source, text) in &logs {
        for (what, value) in secrets {
            assert!(!text.contains(value), "{source} contains the {what}");
        }
    }
}
