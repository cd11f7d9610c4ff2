//! Hostile input through a real Envoy (issue 7, "Adversarial end-to-end
//! suite"): credentials, source addresses, tenant claims, paths, HTTP/2
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
use tokenhub_integration::{addrs, paths, Admin, EnvoyOptions, IssuedKey, ReceivedRequest, Response};

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

/// Stores a second key of the fixture's tenant in `slot`.
fn with_second_key(slot: &mut Option<IssuedKey>) -> impl FnOnce(&Admin, &IssuedKey) + '_ {
    move |admin, _| *slot = Some(admin.create_key(TENANT, &[]))
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

// ===========================================================================
// Credentials.

#[test]
fn credentials_over_http1_exact_status_and_upstream() {
    let mut second = None;
    let fx = Fixture::start_with(with_second_key(&mut second));
    let (k, k2) = (fx.key.key.clone(), second.unwrap().key);
    let secrets = [k.as_str(), secret_of(&k), k2.as_str(), secret_of(&k2)];
    let cases = credential_cases(&k, &k2);
    for c in &cases {
        check(&fx, &c.name, c.want, c.path, &fx.key.key_id, &secrets, || {
            h1(&fx, addrs::V4_PRIMARY, "GET", c.path, &c.headers)
        });
    }
    // A NUL inside a value: Envoy's HTTP/1 parser refuses the request.
    let nul = [b(&k), vec![0], b("x")].concat();
    check(&fx, "NUL in the key", Want::Envoy(400), "/v1/models", "", &secrets, || {
        h1(&fx, addrs::V4_PRIMARY, "GET", "/v1/models", &[("x-api-key", nul.clone())])
    });
    // A bare CR inside a value is passed on by Envoy's parser; the guard
    // refuses it as a malformed key.
    let cr = [b(&k), b("\rx")].concat();
    check(&fx, "bare CR in the key", Want::Denied(MALFORMED_KEY), "/v1/models", "", &secrets, || {
        h1(&fx, addrs::V4_PRIMARY, "GET", "/v1/models", &[("x-api-key", cr.clone())])
    });
    assert_not_logged(
        &fx,
        &[("API key", &k), ("API key secret", secret_of(&k)), ("second key", &k2), ("second secret", secret_of(&k2))],
    );
    println!("credentials over HTTP/1.1: {} cases", cases.len() + 2);
}

#[test]
fn credentials_over_http2_decide_as_over_http1() {
    let mut second = None;
    let fx = Fixture::start_with(with_second_key(&mut second));
    let (k, k2) = (fx.key.key.clone(), second.unwrap().key);
    let secrets = [k.as_str(), secret_of(&k), k2.as_str(), secret_of(&k2)];
    let cases = credential_cases(&k, &k2);
    let mut raw_cases = 0;
    for c in &cases {
        if c.headers.iter().any(|(_, v)| has_whitespace_edge(v)) {
            // curl trims leading whitespace (and drops whitespace-only
            // headers): send these bytes exactly. HTTP/2 has no OWS, and
            // Envoy passes such values to the filter untrimmed, where they
            // are not a well-formed credential.
            raw_cases += 1;
            expect_h2_raw_denied(&fx, &c.name, MALFORMED_KEY, c.path, &c.headers);
            continue;
        }
        check(&fx, &format!("h2: {}", c.name), c.want, c.path, &fx.key.key_id, &secrets, || {
            h2(&fx, addrs::V4_PRIMARY, "GET", c.path, &c.headers)
        });
    }
    println!("credentials over HTTP/2: {raw_cases} cases with whitespace at a value's edge sent as raw frames");
    // A NUL byte is invalid in an HTTP/2 field value: the stream (or the
    // connection) is refused, nothing decided, nothing upstream.
    let before = fx.guard_counters();
    let nul = [b(&k), vec![0], b("x")].concat();
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/v1/models"),
        (b":authority", b"tokenhub.test"),
        (b"x-api-key", &nul),
    ];
    let outcome = raw::request(addrs::V4_PRIMARY, fx.envoy.listener(), &headers, None).expect("raw HTTP/2");
    assert!(matches!(outcome, H2Outcome::Reset(_) | H2Outcome::GoAway(_)), "NUL in a value over HTTP/2: {outcome:?}");
    assert!(fx.echo.take_requests().is_empty());
    assert_eq!(fx.guard_counters(), before);
    assert_not_logged(&fx, &[("API key", &k), ("API key secret", secret_of(&k)), ("second key", &k2)]);
    println!("credentials over HTTP/2: {} cases", cases.len() + 1);
}

#[test]
fn header_size_and_count_limits_are_envoys_and_junk_is_forwarded_without_tokenhub_names() {
    let fx = Fixture::start();
    let k = fx.key.key.clone();
    let secrets = [k.as_str(), secret_of(&k)];
    let path = "/v1/models";
    // Envoy's default max_request_headers_kb is 60: a 60 KiB value alone
    // exceeds it (431), in a credential or in any other header.
    let huge = vec![b'A'; 60 * 1024];
    check(&fx, "60 KiB x-api-key", Want::Envoy(431), path, "", &secrets, || {
        h1(&fx, addrs::V4_PRIMARY, "GET", path, &[("x-api-key", huge.clone())])
    });
    check(&fx, "60 KiB junk header with a valid key", Want::Envoy(431), path, "", &secrets, || {
        h1(&fx, addrs::V4_PRIMARY, "GET", path, &[auth(&k), ("x-junk", huge.clone())])
    });
    // Below the limit the guard decides: a 50 KiB non-key is malformed, a
    // 50 KiB junk header does not stop a valid key.
    let big = vec![b'A'; 50 * 1024];
    check(&fx, "50 KiB x-api-key", Want::Denied(MALFORMED_KEY), path, "", &secrets, || {
        h1(&fx, addrs::V4_PRIMARY, "GET", path, &[("x-api-key", big.clone())])
    });
    let bearer_big = [b("Bearer "), big.clone()].concat();
    check(&fx, "50 KiB bearer token", Want::Denied(MALFORMED_KEY), path, "", &secrets, || {
        h1(&fx, addrs::V4_PRIMARY, "GET", path, &[("authorization", bearer_big.clone())])
    });
    let seen = fx.expect_allowed(|| h1(&fx, addrs::V4_PRIMARY, "GET", path, &[auth(&k), ("x-junk", big.clone())]));
    assert_eq!(seen.header_all("x-junk").len(), 1);
    assert_eq!(seen.header("x-junk").map(str::len), Some(big.len()));
    CASES.fetch_add(1, Ordering::Relaxed);

    // Junk headers: 90 of them (with host, authorization and connection,
    // under Envoy's default max_request_headers_count of 100), among them
    // look-alikes of the guard's namespace. Forwarded, except every
    // x-tokenhub-* one.
    let mut headers = vec![auth(&k)];
    for i in 0..90 {
        let name: &'static str = match i % 6 {
            0 => Box::leak(format!("x-tokenhub-junk-{i}").into_boxed_str()),
            1 => Box::leak(format!("X-TokenHub-Junk-{i}").into_boxed_str()),
            2 => Box::leak(format!("x-tokenhubjunk-{i}").into_boxed_str()),
            _ => Box::leak(format!("x-junk-{i}").into_boxed_str()),
        };
        headers.push((name, b(format!("value-{i}"))));
    }
    let seen = fx.expect_allowed(|| h1(&fx, addrs::V4_PRIMARY, "GET", path, &headers));
    let identity = fixture_identity(&fx.key.key_id);
    assert_forwarded(&seen, ("authorization", &format!("Bearer {OPENAI_SECRET}")), &identity, &secrets, "90 junk");
    let junk: Vec<&(String, String)> =
        seen.headers.iter().filter(|(n, _)| n.starts_with("x-junk-") || n.starts_with("x-tokenhubjunk-")).collect();
    assert_eq!(junk.len(), 60, "junk headers forwarded (4 of every 6 names)");
    CASES.fetch_add(1, Ordering::Relaxed);
    // 120 junk headers: over Envoy's count limit, refused before the guard.
    let mut many = vec![auth(&k)];
    many.extend(
        (0..120).map(|i| -> (&'static str, Vec<u8>) { (Box::leak(format!("x-junk-{i}").into_boxed_str()), b("v")) }),
    );
    check(&fx, "120 junk headers", Want::Envoy(431), path, "", &secrets, || {
        h1(&fx, addrs::V4_PRIMARY, "GET", path, &many)
    });
    // The same limits over HTTP/2.
    // Over HTTP/2 the oversized header block resets the stream.
    let before = fx.guard_counters();
    let bearer_k = bearer(&k);
    let huge_view: Vec<(&str, &[u8])> = vec![("authorization", bearer_k.as_bytes()), ("x-junk", &huge)];
    let outcome = curl::request(addrs::V4_PRIMARY, fx.envoy.listener(), "GET", path, &huge_view, b"").expect("curl");
    assert!(matches!(outcome, H2Outcome::Reset(_)), "60 KiB header over HTTP/2: {outcome:?}");
    assert!(fx.echo.take_requests().is_empty());
    assert_eq!(fx.guard_counters(), before);
    let seen = fx.expect_allowed(|| h2(&fx, addrs::V4_PRIMARY, "GET", path, &headers));
    assert_forwarded(&seen, ("authorization", &format!("Bearer {OPENAI_SECRET}")), &identity, &secrets, "h2: 90 junk");
    CASES.fetch_add(2, Ordering::Relaxed);
    println!("header limits: 60 KiB value -> 431, 120 headers -> 431, 90 junk headers forwarded minus x-tokenhub-*");
}

// ===========================================================================
// What the upstream gets: the guard's headers, never the client's.

#[test]
fn client_sent_identity_and_credentials_are_replaced_never_duplicated() {
    let fx = Fixture::start();
    let k = fx.key.key.clone();
    let secrets = [k.as_str(), secret_of(&k)];
    let spoofed: Vec<(&'static str, Vec<u8>)> = vec![
        ("x-tokenhub-tenant", b(TENANT)),
        ("x-tokenhub-sub-account", b(SUB_ACCOUNT)),
        ("x-tokenhub-key-id", b("AAAAAAAAAAAA")),
        ("x-tokenhub-region", b("us")),
        ("X-TOKENHUB-REGION", b("ap")),
        ("x-tokenhub-auth", b("oidc")),
        ("x-tokenhub-admin", b("true")),
        ("x-tokenhub-", b("empty-suffix")),
    ];
    let variants: Vec<(&str, &'static str, Headers)> = vec![
        ("bearer to an authorization provider", "/v1/chat/completions", vec![auth(&k)]),
        ("x-api-key to an authorization provider", "/v1/chat/completions", vec![api_key(&k)]),
        ("both to an authorization provider", "/v1/chat/completions", vec![auth(&k), api_key(&k)]),
        ("bearer to an x-api-key provider", "/anthropic/v1/messages", vec![auth(&k)]),
        ("x-api-key to an x-api-key provider", "/anthropic/v1/messages", vec![api_key(&k)]),
        ("both to an x-api-key provider", "/anthropic/v1/messages", vec![api_key(&k), auth(&k)]),
    ];
    for (name, path, creds) in &variants {
        let mut headers = spoofed.clone();
        headers.splice(1..1, creds.iter().cloned());
        for (proto, send) in
            [("HTTP/1.1", h1 as fn(&Fixture, IpAddr, &str, &str, &[(&str, Vec<u8>)]) -> Response), ("HTTP/2", h2)]
        {
            let case = format!("{proto}: {name}");
            check(&fx, &case, Want::Allowed, path, &fx.key.key_id, &secrets, || {
                send(&fx, addrs::V4_PRIMARY, "POST", path, &headers)
            });
        }
    }
    println!("identity replacement: {} cases", variants.len() * 2);
}

// ===========================================================================
// Source address.

#[test]
fn forwarding_headers_cannot_choose_the_source_address() {
    let fx = Fixture::start_with(|admin, _| {
        admin.json(&["ip", "allow", "--tenant", TENANT, "127.0.0.1/32", "::1/128"]);
    });
    let k = fx.key.key.clone();
    let secrets = [k.as_str(), secret_of(&k)];
    let spoofs: Vec<Vec<(&'static str, Vec<u8>)>> = vec![
        vec![("x-forwarded-for", b("127.0.0.1"))],
        vec![("x-forwarded-for", b("127.0.0.1, 127.0.0.1"))],
        vec![("x-forwarded-for", b("::1"))],
        vec![("forwarded", b("for=127.0.0.1"))],
        vec![("forwarded", b("for=\"[::1]\";proto=https"))],
        vec![("x-real-ip", b("127.0.0.1"))],
        vec![("x-envoy-external-address", b("127.0.0.1"))],
        vec![("x-envoy-internal", b("true")), ("x-forwarded-for", b("127.0.0.1"))],
        vec![("true-client-ip", b("127.0.0.1")), ("x-client-ip", b("127.0.0.1")), ("cf-connecting-ip", b("127.0.0.1"))],
        vec![
            ("x-forwarded-for", b("127.0.0.1")),
            ("forwarded", b("for=127.0.0.1")),
            ("x-real-ip", b("127.0.0.1")),
            ("x-envoy-external-address", b("127.0.0.1")),
        ],
    ];
    let mut n = 0;
    for spoof in &spoofs {
        let mut headers = vec![auth(&k)];
        headers.extend(spoof.iter().cloned());
        let names: Vec<&str> = spoof.iter().map(|(n, _)| *n).collect();
        check(
            &fx,
            &format!("HTTP/1.1 from 127.0.0.2 with {names:?}"),
            Want::Denied(IP_NOT_ALLOWED),
            "/v1/models",
            "",
            &secrets,
            || h1(&fx, addrs::V4_OTHER, "GET", "/v1/models", &headers),
        );
        check(
            &fx,
            &format!("HTTP/2 from 127.0.0.2 with {names:?}"),
            Want::Denied(IP_NOT_ALLOWED),
            "/v1/models",
            "",
            &secrets,
            || h2(&fx, addrs::V4_OTHER, "GET", "/v1/models", &headers),
        );
        // From an allowed address the same headers change nothing, and the
        // upstream sees none of them (no client address to the provider).
        let seen = fx.expect_allowed(|| h1(&fx, addrs::V4_PRIMARY, "GET", "/v1/models", &headers));
        for name in ["x-forwarded-for", "forwarded", "x-real-ip", "x-envoy-external-address", "true-client-ip"] {
            assert!(seen.header_all(name).is_empty(), "{names:?}: {name} reached the upstream");
        }
        n += 3;
    }
    CASES.fetch_add(spoofs.len(), Ordering::Relaxed);
    println!("source address spoofing: {n} cases");
}

#[test]
fn cidr_rules_zero_full_length_and_ipv4_mapped() {
    // One key per rule (key allowlists; the tenant has none).
    let rules: [(&str, &[&str]); 6] = [
        ("mapped", &["::ffff:127.0.0.1/128"]),
        ("v4-any", &["0.0.0.0/0"]),
        ("v6-any", &["::/0"]),
        ("v4-32", &["127.0.0.2/32"]),
        ("v6-128", &["::1/128"]),
        ("mapped-net", &["::ffff:127.0.0.0/104"]),
    ];
    let mut keys = Vec::new();
    let fx = Fixture::start_with(|admin, _| {
        for (name, cidrs) in rules {
            let key = admin.create_key(TENANT, &["--name", name]);
            let mut args = vec!["ip", "allow", "--key", key.key_id.as_str()];
            args.extend_from_slice(cidrs);
            admin.json(&args);
            keys.push(key);
        }
    });
    let (v4, v4b, v6) = (addrs::V4_PRIMARY, addrs::V4_OTHER, addrs::V6_LOOPBACK);
    // (rule, source, allowed?)
    let table = [
        // An IPv4-mapped rule means the IPv4 address it carries.
        (0, v4, true),
        (0, v4b, false),
        (0, v6, false),
        // /0 covers its whole family, and only its family.
        (1, v4, true),
        (1, v4b, true),
        (1, v6, false),
        (2, v6, true),
        (2, v4, false),
        (2, v4b, false),
        // /32 and /128: exactly one address.
        (3, v4b, true),
        (3, v4, false),
        (3, v6, false),
        (4, v6, true),
        (4, v4, false),
        // A mapped /104 is 127.0.0.0/8.
        (5, v4, true),
        (5, v4b, true),
        (5, v6, false),
    ];
    for (i, src, allowed) in table {
        let key = &keys[i];
        let secrets = [key.key.as_str(), secret_of(&key.key)];
        let want = if allowed { Want::Allowed } else { Want::Denied(IP_NOT_ALLOWED) };
        let case = format!("rule {:?} from {src}", rules[i].1);
        check(&fx, &case, want, "/v1/models", &key.key_id, &secrets, || {
            h1(&fx, src, "GET", "/v1/models", &[auth(&key.key)])
        });
        check(&fx, &format!("h2: {case}"), want, "/v1/models", &key.key_id, &secrets, || {
            h2(&fx, src, "GET", "/v1/models", &[auth(&key.key)])
        });
    }
    println!("CIDR edge rules: {} cases", table.len() * 2);
}

// ===========================================================================
// Tenant claims.

#[test]
fn tenant_claims_mismatched_duplicated_cased_spaced_and_look_alike() {
    let fx = Fixture::start_with(|admin, _| {
        admin.json(&["tenant", "add", "other-co", "--region", "us"]);
    });
    let k = fx.key.key.clone();
    let secrets = [k.as_str(), secret_of(&k)];
    let t = |v: &str| ("x-tokenhub-tenant", b(v));
    let s = |v: &str| ("x-tokenhub-sub-account", b(v));
    let raw_t = |v: Vec<u8>| ("x-tokenhub-tenant", v);
    use Want::{Allowed, Denied};
    let cases: Vec<(&str, Want, Headers)> = vec![
        ("own tenant", Allowed, vec![t(TENANT)]),
        ("own tenant and sub-account", Allowed, vec![t(TENANT), s(SUB_ACCOUNT)]),
        ("another existing tenant", Denied(TENANT_MISMATCH), vec![t("other-co")]),
        ("a made-up tenant", Denied(TENANT_MISMATCH), vec![t("nobody")]),
        ("another sub-account", Denied(TENANT_MISMATCH), vec![s("research")]),
        ("own tenant twice", Allowed, vec![t(TENANT), t(TENANT)]),
        ("own then other", Denied(TENANT_MISMATCH), vec![t(TENANT), t("other-co")]),
        ("other then own", Denied(TENANT_MISMATCH), vec![t("other-co"), t(TENANT)]),
        ("comma-joined own,other", Denied(TENANT_MISMATCH), vec![t(&format!("{TENANT},other-co"))]),
        ("upper-cased value", Denied(TENANT_MISMATCH), vec![t(&TENANT.to_uppercase())]),
        ("capitalised value", Denied(TENANT_MISMATCH), vec![t("Zebra-Widgets")]),
        ("upper-cased header name, own value", Allowed, vec![("X-TOKENHUB-TENANT", b(TENANT))]),
        ("upper-cased header name, other value", Denied(TENANT_MISMATCH), vec![("X-TokenHub-Tenant", b("other-co"))]),
        // HTTP/1.1 trims OWS; HTTP/2 has none, Envoy passes the spaces on
        // and the guard compares bytes (the HTTP/2 run expects 403).
        ("surrounding spaces (OWS, trimmed)", Allowed, vec![t(&format!("  {TENANT}  "))]),
        ("surrounding tabs (OWS, trimmed)", Allowed, vec![t(&format!("\t{TENANT}\t"))]),
        ("inner space", Denied(TENANT_MISMATCH), vec![t("zebra -widgets")]),
        ("empty", Denied(TENANT_MISMATCH), vec![t("")]),
        // Raw UTF-8 look-alikes: Cyrillic 'е' for 'e', fullwidth letters,
        // a Unicode hyphen, a trailing zero-width space, NFKC-equal forms.
        ("Cyrillic e", Denied(TENANT_MISMATCH), vec![raw_t(b("z\u{0435}bra-widgets"))]),
        ("fullwidth", Denied(TENANT_MISMATCH), vec![raw_t(b("\u{FF5A}ebra-widgets"))]),
        ("Unicode hyphen", Denied(TENANT_MISMATCH), vec![raw_t(b("zebra\u{2010}widgets"))]),
        ("zero-width space", Denied(TENANT_MISMATCH), vec![raw_t(b(format!("{TENANT}\u{200B}")))]),
        ("Latin-1 byte", Denied(TENANT_MISMATCH), vec![raw_t([b("zebra-widget"), vec![0xF3]].concat())]),
    ];
    for (name, want, claims) in &cases {
        let mut headers = vec![auth(&k)];
        headers.extend(claims.iter().cloned());
        check(&fx, &format!("HTTP/1.1: {name}"), *want, "/v1/models", &fx.key.key_id, &secrets, || {
            h1(&fx, addrs::V4_PRIMARY, "GET", "/v1/models", &headers)
        });
        let want_h2 = if claims.iter().any(|(_, v)| has_whitespace_edge(v)) { Denied(TENANT_MISMATCH) } else { *want };
        check(&fx, &format!("HTTP/2: {name}"), want_h2, "/v1/models", &fx.key.key_id, &secrets, || {
            h2(&fx, addrs::V4_PRIMARY, "GET", "/v1/models", &headers)
        });
    }
    println!("tenant claims: {} cases", cases.len() * 2);
}

#[test]
fn header_names_with_underscores_are_refused_by_envoy() {
    let fx = Fixture::start();
    let k = fx.key.key.clone();
    let secrets = [k.as_str(), secret_of(&k)];
    let names =
        ["x_tokenhub_tenant", "x_tokenhub_region", "X_TokenHub_Key_Id", "x_api_key", "x_forwarded_for", "my_header"];
    let rejected_h1 = fx.envoy.stat("http1.requests_rejected_with_underscores_in_headers").unwrap_or(0);
    let rejected_h2 = fx.envoy.stat("http2.requests_rejected_with_underscores_in_headers").unwrap_or(0);
    for name in names {
        // With a valid key and an own-tenant value: refused anyway.
        let value = if name.contains("tenant") { TENANT.to_string() } else { "x".to_string() };
        let headers = vec![auth(&k), (name, b(&value))];
        check(&fx, &format!("HTTP/1.1 {name}"), Want::Envoy(400), "/v1/models", "", &secrets, || {
            h1(&fx, addrs::V4_PRIMARY, "GET", "/v1/models", &headers)
        });
        // HTTP/2: the stream is reset.
        let before = fx.guard_counters();
        let view: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let outcome =
            curl::request(addrs::V4_PRIMARY, fx.envoy.listener(), "GET", "/v1/models", &view, b"").expect("curl");
        assert!(matches!(outcome, H2Outcome::Reset(_)), "HTTP/2 {name}: {outcome:?}");
        assert!(fx.echo.take_requests().is_empty(), "HTTP/2 {name} reached the upstream");
        assert_eq!(fx.guard_counters(), before, "HTTP/2 {name}: the guard decided");
        CASES.fetch_add(1, Ordering::Relaxed);
    }
    let n = names.len() as u64;
    assert_eq!(fx.envoy.stat("http1.requests_rejected_with_underscores_in_headers"), Some(rejected_h1 + n));
    assert_eq!(fx.envoy.stat("http2.requests_rejected_with_underscores_in_headers"), Some(rejected_h2 + n));
    println!("underscored header names: {} cases, all refused by Envoy", names.len() * 2);
}

// ===========================================================================
// Paths against path-prefix scopes.

/// (path, outcome over HTTP/1.1, the path the upstream must receive when
/// allowed). The key may use POST on /v1/chat only.
/// How a dot segment with path parameters is refused: out of scope once
/// Envoy resolved it, or not normalized when Envoy passed it as sent.
const DOT_PARAMS: &[Denial] = &[PATH_NOT_ALLOWED, PATH_NOT_NORMALIZED];

fn path_cases() -> Vec<(&'static str, Want, &'static str)> {
    use Want::{Allowed, Denied, DeniedAny, Envoy};
    vec![
        ("/v1/chat", Allowed, "/v1/chat"),
        ("/v1/chat/completions", Allowed, "/v1/chat/completions"),
        // Dot segments: Envoy resolves them (normalize_path) before the guard.
        ("/v1/chat/../embeddings", Denied(PATH_NOT_ALLOWED), ""),
        ("/v1/chat/x/../../embeddings", Denied(PATH_NOT_ALLOWED), ""),
        ("/v1/embeddings/../chat", Allowed, "/v1/chat"),
        ("/../v1/chat", Allowed, "/v1/chat"),
        ("/v1/chat/./completions", Allowed, "/v1/chat/completions"),
        ("/v1/chat/.", Allowed, "/v1/chat/"),
        ("/v1/chat/..", Denied(PATH_NOT_ALLOWED), ""),
        // Encoded dots are dots.
        ("/v1/chat/%2e%2e/embeddings", Denied(PATH_NOT_ALLOWED), ""),
        ("/v1/chat/%2E%2E/embeddings", Denied(PATH_NOT_ALLOWED), ""),
        ("/v1/chat/.%2e/embeddings", Denied(PATH_NOT_ALLOWED), ""),
        ("/v1/chat/%2e", Allowed, "/v1/chat/"),
        // Unreserved characters are decoded; double encoding is left alone.
        ("/v1/ch%61t", Allowed, "/v1/chat"),
        ("/v1/chat/%252e%252e/embeddings", Allowed, "/v1/chat/%252e%252e/embeddings"),
        // Slashes: merged.
        ("//v1/chat", Allowed, "/v1/chat"),
        ("/v1//chat", Allowed, "/v1/chat"),
        ("/v1//embeddings", Denied(PATH_NOT_ALLOWED), ""),
        // Escaped slashes and backslashes: refused by Envoy
        // (path_with_escaped_slashes_action: REJECT_REQUEST).
        ("/v1/chat%2F..%2Fembeddings", Envoy(400), ""),
        ("/v1/chat%2fx", Envoy(400), ""),
        ("/v1%2Fchat", Envoy(400), ""),
        ("/v1/chat%5C..%5Cembeddings", Envoy(400), ""),
        ("/v1/chat/%2e%2e%2fembeddings", Envoy(400), ""),
        // A raw backslash is a slash to Envoy's normalizer.
        ("/v1/chat\\..\\embeddings", Denied(PATH_NOT_ALLOWED), ""),
        // Case matters; so do segment boundaries.
        ("/V1/chat", Denied(PATH_NOT_ALLOWED), ""),
        ("/v1/CHAT", Denied(PATH_NOT_ALLOWED), ""),
        ("/v1/chatty", Denied(PATH_NOT_ALLOWED), ""),
        // Trailing dots are part of the segment.
        ("/v1/chat.", Denied(PATH_NOT_ALLOWED), ""),
        ("/v1/chat..", Denied(PATH_NOT_ALLOWED), ""),
        // Path parameters are not a way out. A dot segment with parameters
        // is `..` to servlet-style upstreams (the classic `..;` bypass):
        // refused whichever supported Envoy runs the guard. (`.;` can only
        // fold into the same directory: Envoy 1.39 folds it and forwards,
        // the guard refuses it when it gets it, see the lax listener.)
        ("/v1/chat;/../embeddings", Denied(PATH_NOT_ALLOWED), ""),
        ("/v1/chat/..;/embeddings", DeniedAny(DOT_PARAMS), ""),
        ("/v1/chat/..;x=1/embeddings", DeniedAny(DOT_PARAMS), ""),
        ("/v1/chat/x/..;/..;/embeddings", DeniedAny(DOT_PARAMS), ""),
        ("/v1/chat/..;", DeniedAny(DOT_PARAMS), ""),
        ("/v1/chat/%2e%2e;/embeddings", DeniedAny(DOT_PARAMS), ""),
        ("/v1/chat/..%3b/embeddings", DeniedAny(DOT_PARAMS), ""),
        ("/v1/chat/..%3B/embeddings", DeniedAny(DOT_PARAMS), ""),
        // The query is not the path.
        ("/v1/chat?next=/../embeddings", Allowed, "/v1/chat?next=/../embeddings"),
        ("/v1/embeddings?/v1/chat", Denied(PATH_NOT_ALLOWED), ""),
        // NUL and fragments are not in a request target.
        ("/v1/chat%00", Envoy(400), ""),
    ]
}

#[test]
fn paths_against_prefix_scopes_over_http1_and_http2() {
    let mut scoped = None;
    let fx = Fixture::start_with(|admin, _| {
        share_everything_under_v1(admin);
        scoped = Some(admin.create_key(TENANT, &["--methods", "POST", "--paths", "/v1/chat"]));
    });
    let key = scoped.unwrap();
    let secrets = [key.key.as_str(), secret_of(&key.key)];
    let mut n = 0;
    for (path, want, upstream_path) in path_cases() {
        let headers = [auth(&key.key)];
        for proto in ["HTTP/1.1", "HTTP/2"] {
            let case = format!("{proto} POST {path}");
            let seen = check(&fx, &case, want, path, &key.key_id, &secrets, || {
                if proto == "HTTP/1.1" {
                    h1(&fx, addrs::V4_PRIMARY, "POST", path, &headers)
                } else {
                    h2(&fx, addrs::V4_PRIMARY, "POST", path, &headers)
                }
            });
            n += 1;
            if let Some(seen) = seen {
                assert_eq!(seen.path, upstream_path, "{case}: the path the upstream received");
            }
        }
    }
    // A fragment can only be sent raw (curl strips it): Envoy refuses it.
    check(&fx, "HTTP/1.1 fragment", Want::Envoy(400), "/v1/chat", "", &secrets, || {
        h1(&fx, addrs::V4_PRIMARY, "POST", "/v1/chat#/../embeddings", &[auth(&key.key)])
    });
    // Methods are compared exactly.
    for method in ["post", "GET", "PUT", "DELETE"] {
        // A lower-case method is not a token Envoy's HTTP/1 parser accepts.
        let want = if method == "post" { Want::Envoy(400) } else { Want::Denied(METHOD_NOT_ALLOWED) };
        check(&fx, &format!("method {method}"), want, "/v1/chat", "", &secrets, || {
            h1(&fx, addrs::V4_PRIMARY, method, "/v1/chat", &[auth(&key.key)])
        });
        n += 1;
    }
    println!("paths and scopes: {} cases", n + 1);
}

/// A listener with every Envoy-side defence turned off (no path
/// normalization, no slash merging, escaped slashes kept, underscores
/// allowed): the guard must still refuse what it cannot vouch for.
#[test]
fn guard_alone_refuses_unnormalized_paths_and_strips_underscore_identity_headers() {
    let template = lax_template();
    let mut scoped = None;
    let fx = Fixture::start_with_module(
        &paths::guard_wasm(),
        |admin, _| {
            share_everything_under_v1(admin);
            scoped = Some(admin.create_key(TENANT, &["--methods", "POST", "--paths", "/v1/chat"]));
        },
        |opts: &mut EnvoyOptions| opts.template = template.clone(),
    );
    let key = scoped.unwrap();
    let k = fx.key.key.clone();
    let secrets = [k.as_str(), secret_of(&k), key.key.as_str()];
    let not_normalized = PATH_NOT_NORMALIZED;
    use Want::{Allowed, Denied};
    let cases: Vec<(&str, Want)> = vec![
        ("/v1/chat/../embeddings", Denied(not_normalized)),
        ("/v1/chat/./x", Denied(not_normalized)),
        ("//v1/chat", Denied(not_normalized)),
        ("/v1//chat", Denied(not_normalized)),
        ("/v1/chat/%2e%2e/embeddings", Denied(not_normalized)),
        ("/v1/chat%2F..%2Fembeddings", Denied(not_normalized)),
        ("/v1/chat%5cx", Denied(not_normalized)),
        ("/v1/chat\\x", Denied(not_normalized)),
        // Dot segments with path parameters, which Envoy would not resolve
        // here: the guard refuses them itself.
        ("/v1/chat/..;/embeddings", Denied(not_normalized)),
        ("/v1/chat/..;x=1/embeddings", Denied(not_normalized)),
        ("/v1/chat/.;/completions", Denied(not_normalized)),
        ("/v1/chat/..%3B/embeddings", Denied(not_normalized)),
        ("/v1/chat/completions", Allowed),
        ("/v1/chat/a;b/completions", Allowed),
    ];
    for (path, want) in &cases {
        check(&fx, &format!("lax listener POST {path}"), *want, path, &key.key_id, &secrets, || {
            h1(&fx, addrs::V4_PRIMARY, "POST", path, &[auth(&key.key)])
        });
    }
    // Underscored identity headers reach the filter here: a claim of
    // another tenant is refused, and every x_tokenhub_* name is stripped.
    check(
        &fx,
        "lax listener x_tokenhub_tenant other",
        Want::Denied(TENANT_MISMATCH),
        "/v1/models",
        "",
        &secrets,
        || h1(&fx, addrs::V4_PRIMARY, "GET", "/v1/models", &[auth(&k), ("x_tokenhub_tenant", b("other-co"))]),
    );
    let headers = vec![
        auth(&k),
        ("x_tokenhub_tenant", b(TENANT)),
        ("x_tokenhub_region", b("us")),
        ("X_TOKENHUB_KEY_ID", b("AAAAAAAAAAAA")),
        ("x-tokenhub_auth", b("oidc")),
    ];
    check(
        &fx,
        "lax listener underscored identity headers stripped",
        Want::Allowed,
        "/v1/models",
        &fx.key.key_id,
        &secrets,
        || h1(&fx, addrs::V4_PRIMARY, "GET", "/v1/models", &headers),
    );
    println!("guard alone (lax listener): {} cases", cases.len() + 2);
}

/// envoy/local/envoy.yaml.tmpl with Envoy's own path and header defences
/// switched off, written next to the test binary's temp files.
fn lax_template() -> PathBuf {
    let shipped = std::fs::read_to_string(paths::repo_root().join("envoy/local/envoy.yaml.tmpl")).expect("template");
    let lax = shipped
        .replace("normalize_path: true", "normalize_path: false")
        .replace("merge_slashes: true", "merge_slashes: false")
        .replace("path_with_escaped_slashes_action: REJECT_REQUEST", "path_with_escaped_slashes_action: KEEP_UNCHANGED")
        .replace("headers_with_underscores_action: REJECT_REQUEST", "headers_with_underscores_action: ALLOW");
    for off in
        ["normalize_path: false", "merge_slashes: false", "KEEP_UNCHANGED", "headers_with_underscores_action: ALLOW"]
    {
        assert!(lax.contains(off), "the shipped template no longer has the setting this test turns off: {off}");
    }
    let path = std::env::temp_dir().join(format!("tokenhub-lax-{}.yaml.tmpl", std::process::id()));
    std::fs::write(&path, lax).expect("writing the lax template");
    path
}

// ===========================================================================
// HTTP/1.1 framing and request smuggling.

#[test]
fn request_smuggling_shapes_never_reach_the_upstream() {
    let fx = Fixture::start();
    let k = fx.key.key.clone();
    let a = format!("authorization: Bearer {k}");
    // Each request carries a valid key and, after its body, a second
    // request without one: if Envoy framed the body differently from the
    // upstream, the upstream would see two requests.
    let smuggled = "GET /v1/models HTTP/1.1\r\nhost: tokenhub.test\r\n\r\n";
    let cases: Vec<(&str, u16, Vec<&str>, String)> = vec![
        (
            "Content-Length with Transfer-Encoding",
            400,
            vec!["content-length: 4", "transfer-encoding: chunked"],
            format!("0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding with Content-Length",
            400,
            vec!["transfer-encoding: chunked", "content-length: 4"],
            format!("0\r\n\r\n{smuggled}"),
        ),
        (
            "two differing Content-Length",
            400,
            vec!["content-length: 4", "content-length: 48"],
            format!("abcd{smuggled}"),
        ),
        ("two equal Content-Length", 400, vec!["content-length: 4", "content-length: 4"], format!("abcd{smuggled}")),
        ("Content-Length list", 400, vec!["content-length: 4, 48"], format!("abcd{smuggled}")),
        ("negative Content-Length", 400, vec!["content-length: -1"], smuggled.to_string()),
        ("Content-Length with a sign", 400, vec!["content-length: +4"], format!("abcd{smuggled}")),
        ("space before the colon", 400, vec!["transfer-encoding : chunked"], format!("0\r\n\r\n{smuggled}")),
        (
            "Transfer-Encoding identity, chunked",
            501,
            vec!["transfer-encoding: identity, chunked"],
            format!("0\r\n\r\n{smuggled}"),
        ),
        ("Transfer-Encoding xchunked", 501, vec!["transfer-encoding: xchunked"], format!("0\r\n\r\n{smuggled}")),
        (
            "chunked, gzip (chunked not last)",
            501,
            vec!["transfer-encoding: chunked, gzip"],
            format!("0\r\n\r\n{smuggled}"),
        ),
        ("invalid chunk size", 400, vec!["transfer-encoding: chunked"], format!("zz\r\nabcd\r\n0\r\n\r\n{smuggled}")),
        ("HTTP/1.0 request", 426, vec![], String::new()),
    ];
    let mut n = 0;
    for (name, status, framing, body) in &cases {
        let version = if name.contains("1.0") { "HTTP/1.0" } else { "HTTP/1.1" };
        let mut lines =
            vec![format!("POST /v1/chat/completions {version}"), "host: tokenhub.test".to_string(), a.clone()];
        lines.extend(framing.iter().map(|s| s.to_string()));
        let before = fx.guard_counters();
        let resp = fx.send_raw(addrs::V4_PRIMARY, &lines, body.as_bytes());
        CASES.fetch_add(1, Ordering::Relaxed);
        n += 1;
        assert_eq!(resp.status, *status, "{name}: {}", resp.body_text());
        // Nothing, not even the outer request, reached the upstream.
        thread::sleep(Duration::from_millis(50));
        let upstream = fx.echo.take_requests();
        assert!(upstream.is_empty(), "{name}: reached the upstream: {upstream:#?}");
        if name.contains("chunk size") {
            // A bad chunk is found in the body, after the headers passed the
            // guard: it may have allowed them, the upstream still got nothing
            // complete.
            continue;
        }
        assert_eq!(fx.guard_counters(), before, "{name}: the guard decided a request Envoy must refuse");
    }
    // Obsolete line folding and bare-LF line ends are tolerated by Envoy's
    // parser; they still decide exactly as the header says.
    let folded = vec![
        "GET /v1/models HTTP/1.1".to_string(),
        "host: tokenhub.test".to_string(),
        a.clone(),
        "x-fold: a".into(),
        " x-tokenhub-tenant: other-co".into(),
        "connection: close".into(),
    ];
    let resp = fx.send_raw(addrs::V4_PRIMARY, &folded, b"");
    let upstream = fx.echo.take_requests();
    assert!(
        resp.status == 400 || (resp.status == 200 && upstream.len() == 1),
        "folded header: {} {upstream:?}",
        resp.status
    );
    if let Some(seen) = upstream.first() {
        assert_eq!(seen.header_all("x-tokenhub-tenant"), [TENANT], "a folded line smuggled an identity header");
    }
    n += 1;

    // HTTP/2: framing lies are refused by Envoy's codec.
    let raw_base: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/v1/chat/completions"),
        (b":authority", b"tokenhub.test"),
    ];
    let bearer_value = format!("Bearer {k}");
    let h2_cases: Vec<(&str, RawFields, &[u8])> = vec![
        ("transfer-encoding: chunked", vec![(b"transfer-encoding", b"chunked")], b"0\r\n\r\n"),
        (
            "content-length with transfer-encoding",
            vec![(b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
            b"0\r\n\r\n",
        ),
        ("two differing content-length", vec![(b"content-length", b"4"), (b"content-length", b"5")], b"abcd"),
        ("content-length larger than the body", vec![(b"content-length", b"10")], b"abcd"),
        ("content-length smaller than the body", vec![(b"content-length", b"2")], b"abcd"),
        ("connection-specific header", vec![(b"connection", b"keep-alive")], b"abcd"),
        ("te other than trailers", vec![(b"te", b"gzip")], b"abcd"),
        ("upper-case header name", vec![(b"X-Tokenhub-Tenant", b"other-co")], b"abcd"),
        ("CR LF in a value", vec![(b"x-a", b"a\r\nx-tokenhub-tenant: other-co")], b"abcd"),
    ];
    for (name, extra, body) in &h2_cases {
        let mut headers = raw_base.clone();
        headers.push((b"authorization", bearer_value.as_bytes()));
        headers.extend(extra.iter().copied());
        let outcome = raw::request(addrs::V4_PRIMARY, fx.envoy.listener(), &headers, Some(body)).expect("raw HTTP/2");
        CASES.fetch_add(1, Ordering::Relaxed);
        n += 1;
        assert!(matches!(outcome, H2Outcome::Reset(_) | H2Outcome::GoAway(_)), "HTTP/2 {name}: {outcome:?}");
        // A content-length lie is only found at the end of the stream, after
        // the guard allowed the headers and the router opened the upstream
        // request: the upstream may see a partial request, never a
        // complete one.
        thread::sleep(Duration::from_millis(100));
        let upstream = fx.echo.take_requests();
        assert!(upstream.is_empty(), "HTTP/2 {name}: a complete request reached the upstream: {upstream:#?}");
    }
    // The same valid request is answered normally over both protocols.
    fx.expect_allowed(|| fx.with_key(&k));
    let headers = [auth(&k)];
    fx.expect_allowed(|| h2(&fx, addrs::V4_PRIMARY, "GET", "/v1/models", &headers));
    println!("request smuggling shapes: {n} cases, none reached the upstream");
}
