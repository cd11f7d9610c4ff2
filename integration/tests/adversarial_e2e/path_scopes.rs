//! Paths against path-prefix scopes, over HTTP/1.1 and HTTP/2, and the
//! guard alone behind a lax Envoy.

use super::*;

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
    let fx = Fixture::start_with(with_chat_post_key(&mut scoped));
    let key = scoped.unwrap();
    let secrets = [key.key.as_str(), secret_of(&key.key)];
    let mut n = 0;
    for (path, want, upstream_path) in path_cases() {
        let headers = [auth(&key.key)];
        for (proto, send) in PROTOCOLS {
            let case = format!("{proto} POST {path}");
            let seen = check(&fx, &case, want, path, &key.key_id, &secrets, || {
                send(&fx, addrs::V4_PRIMARY, "POST", path, &headers)
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
    let fx =
        Fixture::start_with_module(&paths::guard_wasm(), with_chat_post_key(&mut scoped), |opts: &mut EnvoyOptions| {
            opts.template = template.clone()
        });
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
