//! What the upstream gets: the guard's headers, never the client's.

use super::*;

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
