//! The browser console at `/console/` of `tokenhub-admin serve`, over real
//! HTTP with a plain TcpStream client acting as a browser would (cookie,
//! Host, Origin, form posts): sign-in with the token and 2FA, the cookie's
//! attributes, CSRF, Origin and Host checks, the CSP, 2FA for every change,
//! a tenant admin confined to its tenant, and the audit lines. The same
//! flows in a real headless Chromium: tools/console_e2e.py (`make test-console`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_support;

use admin_support::{enable_2fa, now, published_two_tenants_two_admins, totp, Home, Service};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use tokenhub_testkit::http1;

struct Response {
    status: u16,
    head: http1::Head,
    body: String,
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
            .collect::<String>()
    };
    fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// A browser: its cookie, and the Host/Origin it sends.
struct Browser<'a> {
    svc: &'a Service,
    cookie: Option<String>,
    host: String,
}

impl<'a> Browser<'a> {
    fn new(svc: &'a Service) -> Self {
        Browser { svc, cookie: None, host: svc.addr.clone() }
    }

    fn send(&self, method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> Response {
        let mut stream = TcpStream::connect(&self.svc.addr).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.host,
            body.len()
        );
        if method == "POST" {
            req.push_str("content-type: application/x-www-form-urlencoded\r\n");
        }
        if let Some(c) = &self.cookie {
            req.push_str(&format!("cookie: __Host-tokenhub-console={c}\r\n"));
        }
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes()).unwrap();
        let (status, _, head, body) = http1::read_response(&mut BufReader::new(stream), method).unwrap();
        Response { status, head, body: String::from_utf8(body).unwrap() }
    }

    fn get(&self, path: &str) -> Response {
        self.send("GET", path, "", &[])
    }

    /// A form post from the console's own page.
    fn post(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        let origin = format!("http://{}", self.host);
        self.send("POST", path, &form_encode(fields), &[("origin", &origin)])
    }

    fn sign_in(&mut self, token: &str, code: &str) -> Response {
        let r = self.post("/console/login", &[("token", token), ("code", code)]);
        if let Some(c) = r.head.header("set-cookie") {
            let v = c.split(';').next().unwrap().split_once('=').unwrap().1;
            self.cookie = Some(v.to_string());
        }
        r
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self, path: &str) -> String {
        let page = self.get(path);
        assert_eq!(page.status, 200, "{}", page.body);
        let at = page.body.find("name=\"csrf\" value=\"").unwrap() + 19;
        page.body[at..at + 64].to_string()
    }
}

fn console_actions(home: &Home) -> Vec<(String, String, String)> {
    home.audit_lines()
        .iter()
        .filter(|l| l["via"] == "console")
        .map(|l| {
            (
                l["actor"].as_str().unwrap().into(),
                l["action"].as_str().unwrap().into(),
                l["outcome"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn sign_in_needs_the_token_and_the_second_factor_and_sets_a_strict_cookie() {
    let (home, root, _) = published_two_tenants_two_admins("console-signin");
    let (secret, recovery) = enable_2fa(&home, "root");
    let svc = Service::start(&home);
    let mut b = Browser::new(&svc);

    let page = b.get("/console/login");
    assert_eq!(page.status, 200);
    let csp = page.head.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.head.header("cache-control"), Some("no-store"));
    assert_eq!(b.get("/console/keys").head.header("location"), Some("/console/login"), "no session: sign in first");

    assert_eq!(b.sign_in("tha_notatoken", "").status, 401);
    let r = b.sign_in(&root, "");
    assert_eq!(r.status, 401, "an admin with 2FA needs its code: {}", r.body);
    assert!(r.head.header("set-cookie").is_none());
    assert_eq!(b.sign_in(&root, "000000").status, 401);
    assert!(b.cookie.is_none());

    let r = b.sign_in(&root, &totp(&secret, 1));
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.head.header("location"), Some("/console/keys"));
    let cookie = r.head.header("set-cookie").unwrap();
    for part in ["__Host-tokenhub-console=", "Path=/", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age=3600"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let keys = b.get("/console/keys");
    assert_eq!(keys.status, 200);
    assert!(keys.body.contains("<strong id=\"who\">root</strong>"));
    assert!(!keys.body.contains(&root), "the token never reaches a page");

    // A recovery code signs in too; signing out ends the session server-side.
    let mut b2 = Browser::new(&svc);
    assert_eq!(b2.sign_in(&root, &recovery[0]).status, 303);
    let csrf = b2.csrf("/console/keys");
    let old = b2.cookie.clone();
    assert_eq!(b2.post("/console/logout", &[("csrf", &csrf)]).status, 303);
    b2.cookie = old;
    assert_eq!(b2.get("/console/keys").head.header("location"), Some("/console/login"));

    let actions = console_actions(&home);
    let signins: Vec<&str> = actions.iter().filter(|a| a.1 == "console.sign-in").map(|a| a.2.as_str()).collect();
    assert_eq!(signins, ["auth_failed", "auth_failed", "ok", "ok"], "{actions:?}");
}

#[test]
fn csrf_origin_host_and_the_second_factor_guard_every_change() {
    let (home, root, _) = published_two_tenants_two_admins("console-csrf");
    let (secret, recovery) = enable_2fa(&home, "root");
    let svc = Service::start(&home);
    let mut b = Browser::new(&svc);
    assert_eq!(b.sign_in(&root, &totp(&secret, 1)).status, 303);
    let csrf = b.csrf("/console/keys");
    let create = |csrf: &str, code: &str| {
        b.post("/console/keys", &[("csrf", csrf), ("tenant", "acme"), ("name", "k"), ("code", code)])
    };
    assert_eq!(create("", &recovery[0]).status, 403, "no CSRF token");
    assert_eq!(create(&"0".repeat(64), &recovery[0]).status, 403, "a wrong CSRF token");
    let foreign = b.send(
        "POST",
        "/console/keys",
        &form_encode(&[("csrf", &csrf), ("tenant", "acme"), ("code", &recovery[0])]),
        &[("origin", "http://evil.example")],
    );
    assert_eq!(foreign.status, 403, "a post from another origin");
    let no_origin = b.send(
        "POST",
        "/console/keys",
        &form_encode(&[("csrf", &csrf), ("tenant", "acme"), ("code", &recovery[0])]),
        &[],
    );
    assert_eq!(no_origin.status, 403, "a post without Origin");
    let mut rebound = Browser::new(&svc);
    rebound.host = "evil.example:80".into();
    rebound.cookie = b.cookie.clone();
    assert_eq!(rebound.get("/console/keys").status, 421, "DNS rebinding: a foreign Host");
    let r = create(&csrf, "");
    assert_eq!(r.status, 401, "a change without a 2FA code: {}", r.body);
    assert!(r.body.contains("2FA code is required"), "{}", r.body);
    assert!(home.run(&["--json", "--as", "root", "key", "list"]).ok().json().as_array().unwrap().is_empty());

    let r = create(&csrf, &recovery[1]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("This is the only time the key is shown"));
    let key = r.body.split("<code id=\"new-key\" class=\"secret\">").nth(1).unwrap().split('<').next().unwrap();
    assert!(key.starts_with("thk_") || key.len() > 20, "{key}");
    let keys = home.run(&["--json", "--as", "root", "key", "list"]).ok().json();
    let id = keys[0]["key_id"].as_str().unwrap().to_string();
    assert!(!b.get(&format!("/console/keys/{id}")).body.contains(key), "the key is shown once only");

    // Rotation, allowlist with the lock-out warning, incident revoke.
    let r = b.post(&format!("/console/keys/{id}/rotate"), &[("csrf", &csrf), ("grace", "1h"), ("code", &recovery[2])]);
    assert!(r.body.contains("new-key"), "{}", r.body);
    let r = b.post(
        "/console/ip",
        &[("csrf", &csrf), ("key", &id), ("op", "allow"), ("cidrs", "300.1.1.1/8"), ("code", &recovery[3])],
    );
    assert_eq!(r.status, 400, "an invalid CIDR is refused: {}", r.body);
    let r = b.post(
        "/console/ip",
        &[("csrf", &csrf), ("tenant", "acme"), ("op", "allow"), ("cidrs", "10.0.0.0/8"), ("code", &recovery[4])],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = b.post(
        "/console/ip",
        &[("csrf", &csrf), ("key", &id), ("op", "allow"), ("cidrs", "192.168.0.0/16"), ("code", &recovery[5])],
    );
    assert!(r.body.contains("Warning: no address is in every enabled allowlist"), "{}", r.body);
    let r = b.post(&format!("/console/keys/{id}/revoke"), &[("csrf", &csrf), ("code", &recovery[6])]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("id=\"bundle-version\""), "{}", r.body);
    assert!(r.body.contains("reloads it within about a second"), "no xDS control plane: the file path's timing");
    assert_eq!(b.get("/console/gateways").status, 404, "no xDS control plane, no gateway page");
    let shown = home.run(&["--json", "--as", "root", "key", "show", &id]).ok().json();
    assert_eq!(shown["status"], "disabled");
    assert_eq!(shown["previous_secret_valid_until"], serde_json::Value::Null);

    // Scopes and models, expiry, delete: the key page's other forms.
    let r = b.post(
        &format!("/console/keys/{id}/scopes"),
        &[
            ("csrf", &csrf),
            ("methods", "POST"),
            ("paths", "/v1/chat/"),
            ("models", "gpt-4o-mini, gpt-4*"),
            ("code", &recovery[7]),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = b
        .post(&format!("/console/keys/{id}/expiry"), &[("csrf", &csrf), ("expires_in", "30d"), ("code", &recovery[8])]);
    assert_eq!(r.status, 200, "{}", r.body);
    let shown = home.run(&["--json", "--as", "root", "key", "show", &id]).ok().json();
    assert_eq!(shown["models"], serde_json::json!(["gpt-4o-mini", "gpt-4*"]));
    assert_eq!(shown["scopes"]["methods"], serde_json::json!(["POST"]));
    assert!(shown["expires_at"].as_u64().unwrap() > admin_support::now() + 29 * 86_400);
    let page = b.get(&format!("/console/keys/{id}"));
    assert!(page.body.contains("gpt-4o-mini, gpt-4*") && page.body.contains("/v1/chat/"), "{}", page.body);
    let r = b.post(&format!("/console/keys/{id}/delete"), &[("csrf", &csrf), ("code", &recovery[9])]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.get(&format!("/console/keys/{id}")).status, 404);

    let audit = b.get("/console/audit");
    assert!(audit.body.contains("Audit log intact"), "{}", audit.body);
    let actions: Vec<String> = console_actions(&home).into_iter().filter(|a| a.2 == "ok").map(|a| a.1).collect();
    for a in [
        "console.sign-in",
        "key.create",
        "key.rotate",
        "ip.allow",
        "incident.revoke",
        "key.set-scopes",
        "key.set-expiry",
        "key.delete",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} missing from {actions:?}");
    }
}

#[test]
fn a_tenant_admin_sees_and_touches_only_its_tenant() {
    let (home, root, ann) = published_two_tenants_two_admins("console-tenant");
    let (_, root_recovery) = enable_2fa(&home, "root");
    let (ann_secret, ann_recovery) = enable_2fa(&home, "ann");
    let created =
        home.run(&["--json", "--as", "root", "--otp", &root_recovery[0], "key", "create", "--tenant", "globex"]);
    let globex_id = created.ok().json()["key_id"].as_str().unwrap().to_string();
    let svc = Service::start(&home);
    let mut b = Browser::new(&svc);
    assert_eq!(b.sign_in(&ann, &totp(&ann_secret, 1)).status, 303);
    let keys = b.get("/console/keys");
    assert!(!keys.body.contains(&globex_id) && !keys.body.contains(">globex<"), "{}", keys.body);
    assert_eq!(b.get(&format!("/console/keys/{globex_id}")).status, 404);
    assert_eq!(b.get("/console/keys?tenant=globex").status, 403);
    assert_eq!(b.get("/console/ip?tenant=globex").status, 403);
    let csrf = b.csrf("/console/keys");
    let r = b.post(&format!("/console/keys/{globex_id}/revoke"), &[("csrf", &csrf), ("code", &ann_recovery[0])]);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = b.post("/console/keys", &[("csrf", &csrf), ("tenant", "globex"), ("code", &ann_recovery[1])]);
    assert_eq!(r.status, 403, "{}", r.body);
    let shown = home.run(&["--json", "--as", "root", "key", "show", &globex_id]).ok().json();
    assert_eq!(shown["status"], "active");
    // The platform admin's session sees both tenants' keys.
    let mut p = Browser::new(&svc);
    let (root_secret_code, _) = (root_recovery[1].clone(), ());
    assert_eq!(p.sign_in(&root, &root_secret_code).status, 303);
    assert!(p.get("/console/keys").body.contains(&globex_id));
    assert_eq!(p.get(&format!("/console/keys/{globex_id}")).status, 200);
}

#[test]
fn the_usage_page_shows_tokens_and_cost_per_key_and_day_from_the_usage_report() {
    let (home, root, ann) = published_two_tenants_two_admins("console-usage");
    let (_, root_recovery) = enable_2fa(&home, "root");
    let (_, ann_recovery) = enable_2fa(&home, "ann");
    let today = now() - now() % 86_400;
    let yesterday = today - 86_400;
    let day = |t: u64| tokenhub_guard::admin::audit::rfc3339(t)[..10].to_string();
    // Access-log lines as Envoy writes them (filter state is text; "-" unset).
    let line = |t: u64, tenant: &str, key: &str, input: u64, output: u64, cached: &str, cost: u64, reason: &str| {
        let at = tokenhub_guard::admin::audit::rfc3339(t);
        format!(
            r#"{{"start_time":"{}.125Z","status":"200","reason":"{reason}","tenant":"{tenant}","sub_account":"default","key_id":"{key}","client":"203.0.113.7","model":"gpt-4o","input_tokens":"{input}","output_tokens":"{output}","cached_tokens":"{cached}","reasoning_tokens":"-","cost_nano_usd":"{cost}"}}"#,
            at.trim_end_matches('Z')
        )
    };
    let log = [
        line(yesterday + 3_600, "acme", "K1", 1_000, 200, "400", 1_500_000_000, "allowed"),
        line(yesterday + 7_200, "acme", "K1", 500, 100, "-", 250_000_000, "allowed"),
        line(today, "acme", "K1", 40, 2, "-", 7, "allowed"),
        line(today, "acme", "K2", 0, 0, "-", 0, "ip_not_allowed"),
        line(yesterday + 60, "globex", "G1", 9_999, 9_999, "-", 9_999, "allowed"),
        // Outside the window: not counted.
        line(yesterday - 86_400, "acme", "K1", 77_777, 1, "-", 1, "allowed"),
    ]
    .join("\n")
        + "\n";
    let log_path = home.dir.join("access.log");
    std::fs::write(&log_path, log).unwrap();
    let svc = Service::start_with(&home, &["--access-log", log_path.to_str().unwrap()]);
    let mut b = Browser::new(&svc);
    assert_eq!(b.sign_in(&root, &root_recovery[0]).status, 303);
    let page = b.get("/console/usage?days=2");
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    let row = |cells: &[&str]| cells.iter().map(|c| format!("<td>{c}</td>")).collect::<String>();
    // Per key and day: requests, input, output, cached tokens, cost.
    let (y, t) = (day(yesterday), day(today));
    for want in [
        row(&["acme/default/K1", &y, "2", "1500", "300", "400", "1.750000000"]),
        row(&["acme/default/K1", &t, "1", "40", "2", "0", "0.000000007"]),
        row(&["acme/default/K2", &t, "1", "0", "0", "0", "0.000000000"]),
        row(&["globex/default/G1", &y, "1", "9999", "9999", "0", "0.000009999"]),
    ] {
        assert!(body.contains(&want), "{want} missing from {body}");
    }
    // The window's total per key, with denials and tokens.
    assert!(
        body.contains(&row(&["acme", "default", "K1", "3", "3", "", "1540", "302", "400", "1.750000007"])),
        "{body}"
    );
    assert!(body.contains(&row(&["acme", "default", "K2", "1", "0", "ip_not_allowed: 1", "0", "0", "0"])), "{body}");
    assert!(!body.contains("77777"), "the day before the window is not counted");
    // Charts: requests and tokens (input + output) per day, both days drawn.
    let (yl, tl) = (&y[5..], &t[5..]);
    assert!(body.contains("aria-label=\"Tokens per day for acme/default/K1\""), "{body}");
    assert!(body.contains(&format!("<title>{yl}: 1800</title>")) && body.contains(&format!("<title>{tl}: 42</title>")));
    assert!(body.contains("aria-label=\"Requests per day for acme/default/K1\""));
    // The same figures as `tokenhub-admin usage --per-day` (one report, one parser).
    let cli = home
        .run(&[
            "--json",
            "--as",
            "root",
            "usage",
            "--access-log",
            log_path.to_str().unwrap(),
            "--since",
            &yesterday.to_string(),
            "--per-day",
        ])
        .ok()
        .json();
    let cli_rows = cli["rows"].as_array().unwrap();
    assert_eq!(cli_rows.len(), 4, "{cli}");
    for r in cli_rows {
        let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        let key = format!("{}/{}/{}", text(&r["tenant"]), text(&r["sub_account"]), text(&r["key_id"]));
        let cells =
            [&r["day"], &r["requests"], &r["input_tokens"], &r["output_tokens"], &r["cached_tokens"], &r["cost_usd"]]
                .map(text);
        let mut want = vec![key.as_str()];
        want.extend(cells.iter().map(String::as_str));
        assert!(body.contains(&row(&want)), "CLI row {r} not on the page");
    }
    // A tenant admin sees its own tenant's figures only.
    let mut a = Browser::new(&svc);
    assert_eq!(a.sign_in(&ann, &ann_recovery[0]).status, 303);
    let mine = a.get("/console/usage?days=2");
    assert_eq!(mine.status, 200, "{}", mine.body);
    assert!(mine.body.contains("acme/default/K1") && !mine.body.contains("G1"), "{}", mine.body);
    assert_eq!(a.get("/console/usage?days=2&tenant=globex").status, 403);
}

#[test]
fn with_the_xds_control_plane_the_incident_page_tells_which_gateways_acknowledged() {
    let (home, root, _) = published_two_tenants_two_admins("console-xds");
    let (_, recovery) = enable_2fa(&home, "root");
    let created = home.run(&["--json", "--as", "root", "--otp", &recovery[0], "key", "create", "--tenant", "acme"]);
    let id = created.ok().json()["key_id"].as_str().unwrap().to_string();
    let svc = Service::start_with(&home, &["--xds-listen", "127.0.0.1:0"]);
    let mut b = Browser::new(&svc);
    assert_eq!(b.sign_in(&root, &recovery[1]).status, 303);
    let csrf = b.csrf(&format!("/console/keys/{id}"));
    let r = b.post(&format!("/console/keys/{id}/revoke"), &[("csrf", &csrf), ("code", &recovery[2])]);
    assert_eq!(r.status, 200, "{}", r.body);
    let at = r.body.find("id=\"bundle-version\">").unwrap() + 20;
    let version: u64 = r.body[at..].split('<').next().unwrap().parse().unwrap();
    // No Envoy is connected: the page says none enforces it yet, and links
    // to the gateways' ACK state for this version.
    assert!(r
        .body
        .contains(&format!("No gateway is connected to this control plane: none enforces version {version}")));
    assert!(r.body.contains(&format!("href=\"/console/gateways?version={version}\"")), "{}", r.body);
    assert!(!r.body.contains("reloads it within about a second"));
    let page = b.get(&format!("/console/gateways?version={version}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("none enforces version {version}")), "{}", page.body);
    assert_eq!(b.get("/console/gateways?version=x").status, 400);
}
