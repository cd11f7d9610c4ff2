//! The seed corpus, generated (deterministically) from the fixture, so it
//! can be rewritten when the bundle format changes: `make fuzz-seeds`.

use super::decision::{encode, encode_with_oidc, Value};
use super::fixture::{self, fixture, key_string, KEYS, NOW};

/// (target, file name, bytes).
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let sealed = fixture::sealed_bundles();
    for (i, s) in sealed.iter().enumerate() {
        out.push(("bundle_open", format!("sealed-{i}"), s.clone().into_bytes()));
    }
    out.push(("bundle_open", "foreign-key".into(), fixture::foreign_sealed().into_bytes()));
    out.push(("bundle_compile", "fixture.json".into(), fixture::fixture_json()));
    out.push(("bundle_compile", "minimal.json".into(), br#"{"schema":1,"version":1}"#.to_vec()));
    out.push((
        "bundle_compile",
        "rotation.json".into(),
        br#"{"schema":1,"version":2,"tenants":[{"id":"t","ip_allowlist":{"enabled":true,"cidrs":["::ffff:10.0.0.0/104","2001:db8::/32"]},"sub_accounts":[{"id":"s","scopes":{"methods":["GET"],"path_prefixes":["/v1/"]}}]}],"keys":[{"id":"AAAAAAAAAAAA","tenant":"t","sub_account":"s","hash":"00000000000000000000000000000000000000000000000000000000000000ff","previous":{"hash":"ff00000000000000000000000000000000000000000000000000000000000000","valid_until":5},"status":"disabled","expires_at":9}],"providers":[{"id":"p","path_prefix":"/v1/","header":"x-api-key","format":"{secret}"}]}"#.to_vec(),
    ));
    for (i, k) in KEYS.iter().take(3).enumerate() {
        out.push(("apikey", format!("key-{i}"), key_string(k.id, k.secret).into_bytes()));
    }
    out.push(("apikey", "raw-44".into(), b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQR0".to_vec()));
    let cidrs: [(&str, &[u8]); 5] = [
        ("v4", b"10.0.0.0/8\n192.168.1.0/24\n203.0.113.7\0\x00\x0a\x01\x02\x03"),
        ("v6", b"2001:db8::/32\n::1\nfe80::/10\0\x01\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01"),
        ("mapped", b"::ffff:198.51.100.0/120\n::ffff:0:0/96\0\x02\xc6\x33\x64\x07"),
        ("zero", b"0.0.0.0/0\n::/0\n255.255.255.255/32"),
        ("bad", b"10.0.0.1/8\n300.1.1.1\n10.0.0.0/33"),
    ];
    for (name, bytes) in cidrs {
        out.push(("cidr", name.into(), bytes.to_vec()));
    }
    let fx = fixture();
    let key = |i: usize| fx.current[i].as_str();
    let bearer = |i: usize| Value::Token(fx.current[i].as_str(), 1);
    let chat = "/v1/chat/completions";
    let requests: Vec<(&str, Vec<u8>)> = vec![
        ("allow-bearer", encode(NOW, "POST", chat, "127.0.0.1", &[("authorization", bearer(0))])),
        (
            "allow-x-api-key-claims",
            encode(
                NOW,
                "GET",
                "/v1/embeddings",
                "10.1.2.3",
                &[("x-api-key", Value::Token(key(0), 0)), ("x-tokenhub-tenant", Value::Ident("acme"))],
            ),
        ),
        (
            "deny-tenant-mismatch",
            encode(
                NOW,
                "POST",
                chat,
                "127.0.0.1",
                &[("authorization", bearer(0)), ("x_tokenhub_tenant", Value::Ident("globex"))],
            ),
        ),
        (
            "allow-previous-secret",
            encode(
                NOW + 100,
                "POST",
                chat,
                "::ffff:127.0.0.1",
                &[("authorization", Value::Token(fx.previous[1].as_deref().unwrap_or(""), 2))],
            ),
        ),
        ("allow-sales-scoped", encode(NOW, "POST", chat, "2001:db8:1::5", &[("authorization", bearer(2))])),
        ("deny-sales-method", encode(NOW, "GET", chat, "10.1.2.3", &[("authorization", bearer(2))])),
        ("allow-globex-byo", encode(NOW, "PUT", "/byo/v2/run", "8.8.8.8", &[("x-api-key", Value::Token(key(6), 0))])),
        ("deny-lab-v6", encode(NOW, "GET", "/byo/v2/run", "2001:db8::1", &[("authorization", bearer(7))])),
        (
            "allow-both-headers",
            encode(
                NOW,
                "POST",
                "/anthropic/v1/messages",
                "10.255.255.255",
                &[("authorization", bearer(0)), ("x-api-key", Value::Token(key(0), 0))],
            ),
        ),
        ("deny-disabled", encode(NOW, "POST", chat, "127.0.0.1", &[("authorization", bearer(3))])),
        ("deny-expired", encode(NOW + 50, "POST", chat, "127.0.0.1", &[("authorization", bearer(4))])),
        ("deny-tenant-disabled", encode(NOW, "POST", chat, "127.0.0.1", &[("authorization", bearer(8))])),
        ("deny-traversal", encode(NOW, "POST", "/v1/chat/../../admin", "127.0.0.1", &[("authorization", bearer(0))])),
        (
            "deny-duplicate",
            encode(
                NOW,
                "POST",
                chat,
                "127.0.0.1",
                &[("authorization", bearer(0)), ("authorization", Value::Raw(b"Bearer x"))],
            ),
        ),
        (
            "allow-oidc",
            encode_with_oidc(
                NOW,
                "GET",
                "/v1/embeddings",
                "10.255.255.255",
                Some(("https://accounts.google.com", &[("email", "0"), ("sub", "1234567890")])),
                &[],
            ),
        ),
        (
            "deny-oidc-with-key",
            encode_with_oidc(
                NOW,
                "GET",
                chat,
                "127.0.0.1",
                Some(("https://github.com", &[("sub", "1234567890")])),
                &[("x-api-key", Value::Token(key(6), 0))],
            ),
        ),
        (
            "deny-oidc-unknown",
            encode_with_oidc(
                NOW,
                "GET",
                chat,
                "127.0.0.1",
                Some(("http://accounts.google.com", &[("sub", "1234567890")])),
                &[],
            ),
        ),
    ];
    for (name, bytes) in requests {
        out.push(("decision", name.into(), bytes));
    }
    let bodies: [(&str, &[u8]); 5] = [
        ("openai", br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#),
        ("late", br#"{"messages":[{"role":"user","content":"say \"model\""}],"model":"gpt-4o"}"#),
        ("escaped", br#"{"mod\u0065l":"claude-3-5-\u0073onnet","x":[1,{"model":"n"}]}"#),
        ("duplicate", br#"{"model":"a","model":"b"}"#),
        ("not-json", b"model=gpt-4o"),
    ];
    for (name, body) in bodies {
        let mut bytes = vec![3];
        bytes.extend_from_slice(body);
        out.push(("model_scan", name.into(), bytes));
    }
    let responses: [(&str, u8, &[u8]); 4] = [
        ("openai-json", 0, br#"{"model":"gpt-4o","usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":8},"completion_tokens_details":{"reasoning_tokens":1}}}"#),
        ("gemini-json", 2, br#"{"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"thoughtsTokenCount":1},"modelVersion":"gemini-2.5-flash"}"#),
        ("openai-sse", 5, b"data: {\"model\":\"gpt-4o\",\"usage\":null}\n\ndata: {\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12}}\r\n\r\ndata: [DONE]\n\n"),
        ("anthropic-sse", 7, b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n"),
    ];
    for (name, first, body) in responses {
        let mut bytes = vec![first];
        bytes.extend_from_slice(body);
        out.push(("usage", name.into(), bytes));
    }
    out
}
