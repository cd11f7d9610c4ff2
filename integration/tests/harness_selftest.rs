//! The harness's own parts, without Envoy: the raw client against the echo
//! upstream. If these fail, end-to-end failures mean nothing.

use std::net::SocketAddr;
use std::time::Duration;
use tokenhub_integration::{addrs, free_port, get, request, Connection, EchoUpstream};

fn pairs(json: &serde_json::Value) -> Vec<(String, String)> {
    json["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .map(|pair| (pair[0].as_str().unwrap().to_string(), pair[1].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn echo_lists_headers_in_order_with_duplicates() {
    let echo = EchoUpstream::start().unwrap();
    let lines = ["GET /a/b?q=1 HTTP/1.1", "Host: x", "X-Dup: 1", "x-other:  spaced  ", "X-Dup: 2", "Connection: close"];
    let resp = request(addrs::V4_PRIMARY, echo.addr(), &lines, b"").unwrap();
    assert_eq!(resp.status, 200);
    let json = resp.json();
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/a/b?q=1");
    let want: Vec<(String, String)> =
        [("Host", "x"), ("X-Dup", "1"), ("x-other", "spaced"), ("X-Dup", "2"), ("Connection", "close")]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
    assert_eq!(pairs(&json), want);
    let seen = echo.last_request().unwrap();
    assert_eq!(seen.header_all("x-dup"), ["1", "2"]);
}

#[test]
fn client_binds_the_requested_source_address() {
    let echo = EchoUpstream::start().unwrap();
    let lines = tokenhub_integration::get_lines("/", &[]);
    request(addrs::V4_OTHER, echo.addr(), &lines, b"").unwrap();
    assert_eq!(echo.last_request().unwrap().peer.ip(), addrs::V4_OTHER);
}

#[test]
fn ipv6_loopback_works_end_to_end() {
    let echo = EchoUpstream::bind(SocketAddr::new(addrs::V6_LOOPBACK, 0)).unwrap();
    let lines = tokenhub_integration::get_lines("/v6", &[]);
    let resp = request(addrs::V6_LOOPBACK, echo.addr(), &lines, b"").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(echo.last_request().unwrap().peer.ip(), addrs::V6_LOOPBACK);
}

#[test]
fn request_bodies_by_length_and_chunked() {
    let echo = EchoUpstream::start().unwrap();
    let mut conn = Connection::open(addrs::V4_PRIMARY, echo.addr()).unwrap();
    let sized = ["POST /sized HTTP/1.1", "Host: x", "Content-Length: 5"];
    assert_eq!(conn.send(&sized, b"hello").unwrap().json()["body_bytes"], 5);
    let chunked = ["POST /chunked HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"];
    assert_eq!(conn.send(&chunked, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap().json()["body_bytes"], 5);
    let got = echo.wait_for_requests(2, Duration::from_secs(5));
    assert_eq!(got[0].body, b"hello");
    assert_eq!(got[1].body, b"abcde");
    // Both requests used one kept-alive connection.
    assert_eq!(got[0].peer, got[1].peer);
}

#[test]
fn non_utf8_header_bytes_are_sent_verbatim() {
    let echo = EchoUpstream::start().unwrap();
    let lines: [&[u8]; 4] = [b"GET / HTTP/1.1", b"Host: x", b"X-Bin: caf\xe9", b"Connection: close"];
    let resp = request(addrs::V4_PRIMARY, echo.addr(), &lines, b"").unwrap();
    assert_eq!(resp.status, 200);
    // Decoded lossily on receipt: the byte arrived, unchanged and alone.
    assert_eq!(echo.last_request().unwrap().header("x-bin"), Some("caf\u{fffd}"));
}

#[test]
fn get_helper_and_take_requests() {
    let echo = EchoUpstream::start().unwrap();
    let resp = get(echo.addr(), "/models", &[("authorization", "Bearer t")]).unwrap();
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let taken = echo.take_requests();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].header("authorization"), Some("Bearer t"));
    assert!(echo.requests().is_empty());
}

#[test]
fn free_ports_are_distinct() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
}

/// The harness's expected denials (written out by hand, so the e2e tests
/// check the guard rather than repeat it) agree with the guard's one list
/// of reasons: same status, error type and code for the same label.
#[test]
fn expected_denials_agree_with_the_guards_reasons() {
    use tokenhub_guard::core::errors::DenyReason;
    use tokenhub_integration::guard::*;
    let expected = [
        MISSING_KEY,
        MALFORMED_KEY,
        DUPLICATE_KEY,
        BAD_CHECKSUM,
        UNKNOWN_KEY,
        WRONG_SECRET,
        KEY_DISABLED,
        KEY_EXPIRED,
        IP_NOT_ALLOWED,
        TENANT_MISMATCH,
        METHOD_NOT_ALLOWED,
        PATH_NOT_ALLOWED,
        NO_PROVIDER,
        NO_BUNDLE,
        SHARED_CREDENTIAL_REFUSED,
    ];
    for want in expected {
        let reason = DenyReason::ALL
            .into_iter()
            .find(|r| r.label() == want.reason)
            .unwrap_or_else(|| panic!("{want:?}: no such reason in DenyReason::ALL"));
        let (kind, code, _) = reason.parts();
        assert_eq!((u32::from(want.status), want.kind, want.code), (reason.status(), kind, code), "{want:?}");
    }
    assert_eq!(deny_labels().count(), DenyReason::COUNT);
}
