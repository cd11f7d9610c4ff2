//! Tenant claims: mismatched, duplicated, cased, spaced, look-alike;
//! header names with underscores.

use super::*;

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
