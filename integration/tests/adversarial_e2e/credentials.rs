//! Credentials: every shape of a key over HTTP/1.1 and HTTP/2, header size
//! and count limits.

use super::*;

#[test]
fn credentials_over_http1_exact_status_and_upstream() {
    let (fx, k, k2) = with_two_keys();
    let secrets = both_secrets(&k, &k2);
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
    let (fx, k, k2) = with_two_keys();
    let secrets = both_secrets(&k, &k2);
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
