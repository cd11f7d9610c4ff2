//! HTTP/1.1 framing and request smuggling.

use super::*;

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
