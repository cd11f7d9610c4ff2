//! Source address: forwarding headers cannot choose it; CIDR edge cases.

use super::*;

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
        for (proto, send) in PROTOCOLS {
            let case = format!("{proto} from 127.0.0.2 with {names:?}");
            check(&fx, &case, Want::Denied(IP_NOT_ALLOWED), "/v1/models", "", &secrets, || {
                send(&fx, addrs::V4_OTHER, "GET", "/v1/models", &headers)
            });
        }
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
        for (proto, send) in PROTOCOLS {
            let case = format!("{proto}: rule {:?} from {src}", rules[i].1);
            check(&fx, &case, want, "/v1/models", &key.key_id, &secrets, || {
                send(&fx, src, "GET", "/v1/models", &[auth(&key.key)])
            });
        }
    }
    println!("CIDR edge rules: {} cases", table.len() * 2);
}
