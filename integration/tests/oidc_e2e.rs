//! OAuth / OIDC identities end to end: Envoy's own `jwt_authn`
//! verifies a token signed by a locally generated RSA key (inline JWKS);
//! the guard maps the verified (issuer, subject) through the bundle, which
//! the real `tokenhub-admin oidc map` wrote, and applies the same IP,
//! tenant, scope and provider rules as for an API key.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};
use tokenhub_integration::{addrs, paths, Admin, EchoUpstream, Envoy, EnvoyOptions, Response};

const ISSUER: &str = "https://issuer.tokenhub.test";
const SUBJECT: &str = "alice-4242";
const TENANT: &str = "acme";
const UPSTREAM_SECRET: &str = "sk-oidc-upstream.Secret~1";

/// An RSA signing key made with openssl for this test run.
struct Signer {
    key_pem: std::path::PathBuf,
    jwks: String,
}

impl Signer {
    fn new(dir: &Path) -> Signer {
        let key_pem = dir.join("oidc-signing.pem");
        run("openssl", &["genrsa", "-out", &key_pem.display().to_string(), "2048"], None);
        let modulus = run("openssl", &["rsa", "-in", &key_pem.display().to_string(), "-noout", "-modulus"], None);
        let hex = String::from_utf8_lossy(&modulus).trim().trim_start_matches("Modulus=").to_string();
        let n: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("modulus hex")).collect();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"RSA","alg":"RS256","use":"sig","kid":"test","n":"{}","e":"AQAB"}}]}}"#,
            b64url(&n)
        );
        Signer { key_pem, jwks }
    }

    /// An RS256 JWT with `claims` (a JSON object's members).
    fn token(&self, claims: &serde_json::Value) -> String {
        let header = b64url(br#"{"alg":"RS256","typ":"JWT","kid":"test"}"#);
        let payload = b64url(claims.to_string().as_bytes());
        let input = format!("{header}.{payload}");
        let sig =
            run("openssl", &["dgst", "-sha256", "-sign", &self.key_pem.display().to_string()], Some(input.as_bytes()));
        format!("{input}.{}", b64url(&sig))
    }
}

fn run(cmd: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn claims(iss: &str, sub: &str, aud: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({"iss": iss, "sub": sub, "aud": aud, "iat": now() - 10, "exp": exp})
}

struct Fixture {
    envoy: Envoy,
    echo: EchoUpstream,
    _admin: Admin,
    signer: Signer,
    key: String,
}

fn start() -> Fixture {
    let admin = Admin::init(&paths::guard_wasm());
    admin.json(&["tenant", "add", TENANT, "--region", "eu"]);
    admin.json(&["subaccount", "add", TENANT, "research"]);
    admin.set_provider(&["openai", "--path-prefix", "/v1/"], UPSTREAM_SECRET);
    admin.json(&[
        "oidc",
        "map",
        "--issuer",
        ISSUER,
        "--value",
        SUBJECT,
        "--tenant",
        TENANT,
        "--sub-account",
        "research",
    ]);
    admin.json(&["ip", "allow", "--tenant", TENANT, "127.0.0.1/32"]);
    let key = admin.create_key(TENANT, &[]).key;
    admin.publish();
    let signer = Signer::new(admin.dir());
    let echo = EchoUpstream::start().expect("echo upstream");
    let opts =
        EnvoyOptions::new(echo.port()).var("OIDC_ISSUER", ISSUER).var("OIDC_JWKS", &signer.jwks).publisher(&admin);
    let envoy = Envoy::start(opts);
    let version = admin.published_version();
    envoy.wait_for_stat("wasmcustom.tokenhub.bundle_version", |v| v == version, std::time::Duration::from_secs(10));
    Fixture { envoy, echo, _admin: admin, signer, key }
}

impl Fixture {
    fn call(&self, src: std::net::IpAddr, headers: &[(&str, &str)]) -> Response {
        let mut lines = vec!["POST /v1/chat/completions HTTP/1.1".to_string(), "host: oidc.test".to_string()];
        lines.extend(headers.iter().map(|(n, v)| format!("{n}: {v}")));
        lines.push("content-length: 0".into());
        lines.push("connection: close".into());
        self.envoy.request(src, &lines, b"").expect("request")
    }

    fn refused(&self, resp: &Response, status: u16, code: &str) {
        assert_eq!(resp.status, status, "{}", resp.body_text());
        assert_eq!(resp.json()["error"]["code"], code, "{}", resp.body_text());
        assert!(self.echo.take_requests().is_empty(), "a refused request reached the upstream");
    }
}

#[test]
fn verified_identity_maps_to_its_tenant_and_everything_else_is_refused() {
    let fx = start();
    let valid = fx.signer.token(&claims(ISSUER, SUBJECT, "tokenhub", now() + 300));
    let bearer = |t: &str| format!("Bearer {t}");

    // Valid token → allowed as the mapped tenant/sub-account; the upstream
    // gets the provider credential, never the token; no key id.
    let resp = fx.call(addrs::V4_PRIMARY, &[("authorization", &bearer(&valid))]);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let got = fx.echo.take_requests().pop().expect("upstream request");
    assert_eq!(got.header_all("x-tokenhub-tenant"), vec![TENANT]);
    assert_eq!(got.header_all("x-tokenhub-sub-account"), vec!["research"]);
    assert_eq!(got.header_all("x-tokenhub-auth"), vec!["oidc"]);
    assert!(got.header("x-tokenhub-key-id").is_none());
    assert_eq!(got.header_all("authorization"), vec![format!("Bearer {UPSTREAM_SECRET}")]);
    assert!(!got.headers.iter().any(|(_, v)| v.contains(&valid)), "the token reached the upstream");

    // The same rules as for a key: the tenant's IP allowlist.
    fx.refused(&fx.call(addrs::V4_OTHER, &[("authorization", &bearer(&valid))]), 403, "ip_not_allowed");
    // A claimed tenant that is not the identity's.
    let spoof = [("authorization", bearer(&valid)), ("x-tokenhub-tenant", "globex".to_string())];
    let spoof: Vec<(&str, &str)> = spoof.iter().map(|(n, v)| (*n, v.as_str())).collect();
    fx.refused(&fx.call(addrs::V4_PRIMARY, &spoof), 403, "tenant_mismatch");
    // A verified token and an API key at once.
    let both = [("authorization", bearer(&valid)), ("x-api-key", fx.key.clone())];
    let both: Vec<(&str, &str)> = both.iter().map(|(n, v)| (*n, v.as_str())).collect();
    fx.refused(&fx.call(addrs::V4_PRIMARY, &both), 401, "invalid_api_key");

    // Verified, but nobody mapped this subject.
    let stranger = fx.signer.token(&claims(ISSUER, "mallory-1", "tokenhub", now() + 300));
    fx.refused(&fx.call(addrs::V4_PRIMARY, &[("authorization", &bearer(&stranger))]), 401, "unknown_principal");

    // Not verified by Envoy: the guard never takes its claims.
    let cases = [
        ("wrong issuer", fx.signer.token(&claims("https://evil.example", SUBJECT, "tokenhub", now() + 300))),
        ("wrong audience", fx.signer.token(&claims(ISSUER, SUBJECT, "someone-else", now() + 300))),
        ("expired", fx.signer.token(&claims(ISSUER, SUBJECT, "tokenhub", now() - 120))),
        ("tampered", {
            let mut parts: Vec<String> = valid.split('.').map(String::from).collect();
            parts[1] = b64url(claims(ISSUER, SUBJECT, "tokenhub", now() + 3000).to_string().as_bytes());
            parts.join(".")
        }),
    ];
    for (what, token) in cases {
        let resp = fx.call(addrs::V4_PRIMARY, &[("authorization", &bearer(&token))]);
        assert_eq!(resp.status, 401, "{what}: {}", resp.body_text());
        assert_eq!(resp.json()["error"]["code"], "invalid_token", "{what}");
        assert!(fx.echo.take_requests().is_empty(), "{what} reached the upstream");
    }

    // API keys keep working beside OIDC.
    assert_eq!(fx.call(addrs::V4_PRIMARY, &[("x-api-key", &fx.key)]).status, 200);
    assert_eq!(fx.envoy.stat("wasmcustom.tokenhub.denied.invalid_token"), Some(4));
    assert_eq!(fx.envoy.stat("wasmcustom.tokenhub.denied.unknown_principal"), Some(1));
}
