//! The tenant console: server-rendered HTML pages at `/console/`, served by
//! `tokenhub-admin serve` beside the JSON API. A third adapter of the same
//! actions (`crate::admin::actions`): it only translates forms into action
//! calls and replies into HTML. Who may read or change what is decided by the
//! `Session` exactly as for the CLI and the API (least privilege, 2FA for
//! every change, the audit line); the console adds only the browser's own
//! defences:
//!
//! - sign-in with an admin token (the API's principal) and, for an admin with
//!   2FA, a TOTP or recovery code, through the session's write path (audited
//!   as `console.sign-in`);
//! - a server-side session table (`sessions`): the cookie
//!   `__Host-tokenhub-console` is `Secure; HttpOnly; SameSite=Strict;
//!   Path=/`, random, short-lived (15 minutes idle, 1 hour at most), and
//!   names nothing but a row of the table, which holds the admin's token;
//! - a synchronizer CSRF token on every POST, and the `Origin` of every POST
//!   and the `Host` of every request checked against the service's own
//!   names (no DNS rebinding);
//! - a strict Content-Security-Policy (`default-src 'self'`, no inline script
//!   or style; the one stylesheet and the one small script are embedded in
//!   the binary); `no-store` on every page; nothing secret in a URL.

mod pages;
mod sessions;
mod svg;

pub use sessions::Sessions;

use super::http::{self, Head, Method};
use super::{percent_decode, Shared};
use crate::admin::session::{Claim, Session};
use crate::admin::unix_now;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use zeroize::Zeroizing;

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the console knows beside the store: its own names (for the `Host`
/// and `Origin` checks), the access log (for usage), where the xDS control
/// plane mirrors its gateways' state (when `serve` runs it), its sessions.
pub struct Console {
    hosts: Vec<String>,
    pub access_log: Option<PathBuf>,
    /// The store's home when `serve` runs the xDS control plane: its
    /// per-gateway ACK state (`xds::registry`, what `status` reads).
    pub xds_home: Option<PathBuf>,
    pub sessions: Sessions,
}

impl Console {
    /// `bound`: the address the service listens on; `extra`: further names
    /// it is reached by (`--console-host`, e.g. behind a TLS proxy).
    pub fn new(bound: SocketAddr, extra: &[String], access_log: Option<PathBuf>, xds_home: Option<PathBuf>) -> Self {
        let port = bound.port();
        let mut hosts = vec![format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")];
        if !bound.ip().is_loopback() && !bound.ip().is_unspecified() {
            hosts.push(bound.to_string());
        }
        hosts.extend(extra.iter().map(|h| h.trim().to_ascii_lowercase()));
        Self { hosts, access_log, xds_home, sessions: Sessions::new() }
    }

    fn host_allowed(&self, host: Option<&str>) -> bool {
        host.is_some_and(|h| self.hosts.iter().any(|a| a.eq_ignore_ascii_case(h)))
    }

    /// A POST must come from a page of this service (`Origin` is sent by
    /// every browser on a form POST).
    fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(o) = origin else { return false };
        let host = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
        self.host_allowed(host)
    }
}

/// A form body or a query, decoded. Values may be secrets (a token, a
/// code): they are zeroed when dropped.
#[derive(Default)]
pub struct Form(Vec<(String, Zeroizing<String>)>);

impl Form {
    fn parse(raw: &str) -> Self {
        Self(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), Zeroizing::new(percent_decode(v)))
                })
                .collect(),
        )
    }

    fn from_query(q: &[(String, String)]) -> Self {
        Self(q.iter().map(|(k, v)| (k.clone(), Zeroizing::new(v.clone()))).collect())
    }

    /// A field's value, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    /// A comma- or whitespace-separated list.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| v.split([',', ' ', '\n', '\r', '\t']).filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// What a page handler answers.
pub enum Out {
    Html {
        status: u16,
        body: String,
    },
    Redirect(String),
    /// A text file to save (recovery codes).
    Download {
        name: &'static str,
        body: Zeroizing<String>,
    },
}

/// The request a page handler sees.
pub struct Req<'a> {
    pub method: &'a Method,
    pub path: Vec<&'a str>,
    pub form: Form,
    pub session: Session<'a>,
    /// The row of the session table (its CSRF token, for the forms).
    pub csrf: String,
    pub sid: String,
    /// The admin the session was issued to.
    pub admin: String,
    pub console: &'a Console,
}

/// Serves `/console/…` (`path` without the `console` segment).
pub(super) fn handle(
    sh: &Shared,
    mut stream: TcpStream,
    mut head: Head,
    peer: IpAddr,
    path: &[String],
    query: &[(String, String)],
) {
    let console = &sh.console;
    if !console.host_allowed(head.header("host")) {
        return send(
            stream,
            plain(421, "unknown Host: the console answers only to its own names (see --console-host)"),
        );
    }
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match (&head.method, path.as_slice()) {
        (Method::Get, ["static", "console.css"]) => return send_static(stream, "text/css; charset=utf-8", CSS),
        (Method::Get, ["static", "console.js"]) => return send_static(stream, "text/javascript; charset=utf-8", JS),
        (Method::Get | Method::Post, _) => {}
        _ => return send(stream, plain(405, "the console answers GET and POST only")),
    }
    let post = head.method == Method::Post;
    if post && !console.origin_allowed(head.header("origin")) {
        return send(stream, plain(403, "refused: this form was not sent from a page of this console (Origin)"));
    }
    let form = if post {
        match http::body_length(&head).and_then(|n| http::read_body(&mut stream, &mut head, n)) {
            Ok(raw) => Form::parse(&String::from_utf8_lossy(&raw)),
            Err(r) => return send(stream, plain(r.status, &r.message)),
        }
    } else {
        Form::from_query(query)
    };
    let now = unix_now();
    // Sign-in and the pages before it: no session yet.
    match (post, path.as_slice()) {
        (false, []) => {
            let to = if sessions::cookie(&head).and_then(|c| console.sessions.get(&c)).is_some() {
                "/console/keys"
            } else {
                "/console/login"
            };
            return send(stream, (Out::Redirect(to.into()), None));
        }
        (false, ["login"]) => return send(stream, (pages::login_page(None), None)),
        (true, ["login"]) => {
            let out = {
                let _permit = sh.workers.acquire();
                sign_in(sh, peer, &form, now)
            };
            return send(stream, out);
        }
        _ => {}
    }
    let Some((sid, row)) = sessions::cookie(&head).and_then(|c| console.sessions.get(&c).map(|r| (c, r))) else {
        if post {
            return send(stream, plain(401, "your console session has ended: sign in again"));
        }
        return send(stream, (Out::Redirect("/console/login".into()), None));
    };
    if post && !sessions::same_token(form.get("csrf").unwrap_or(""), &row.csrf) {
        return send(stream, plain(403, "refused: the form's CSRF token is missing or stale; reload the page"));
    }
    if post && path.as_slice() == ["logout"] {
        console.sessions.remove(&sid);
        return send(stream, (Out::Redirect("/console/login".into()), Some(sessions::clear_cookie())));
    }
    let session = Session {
        store: sh.store,
        claim: Claim::Token(row.token.clone()),
        otp: form.get("code").map(|c| Zeroizing::new(c.to_string())),
        via: "console",
        now,
        publish: Some(crate::admin::publish::publish_hook),
    };
    let req = Req {
        method: &head.method,
        path,
        form,
        session,
        csrf: row.csrf.clone(),
        sid,
        admin: row.admin.clone(),
        console,
    };
    let out = {
        let _permit = sh.workers.acquire();
        pages::route(&req)
    };
    send(stream, (out, None))
}

/// Checks the token (as the API does, counting failures per address), then
/// proves the second factor through the session's write path.
fn sign_in(sh: &Shared, peer: IpAddr, form: &Form, now: u64) -> (Out, Option<String>) {
    let token = Zeroizing::new(form.get("token").unwrap_or("").to_string());
    let known = !token.is_empty() && matches!(sh.auth.check(sh.store, &token), Ok(true));
    if !known {
        let why = "console sign-in: invalid or revoked admin token";
        if sh.failures.record(sh.store, peer, why).is_some() {
            return (pages::login_error(429, "too many failed sign-ins from this address; retry later"), None);
        }
        return (pages::login_error(401, "invalid or revoked admin token"), None);
    }
    let session = Session {
        store: sh.store,
        claim: Claim::Token(token.clone()),
        otp: form.get("code").map(|c| Zeroizing::new(c.to_string())),
        via: "console",
        now,
        publish: None,
    };
    match pages::prove_sign_in(&session) {
        Ok((admin, has_2fa)) => {
            let sid = sh.console.sessions.create(&admin, token);
            let to = if has_2fa { "/console/keys" } else { "/console/2fa" };
            (Out::Redirect(to.into()), Some(sessions::set_cookie(&sid)))
        }
        Err(e) => (pages::login_error(e.http_status(), &e.to_string()), None),
    }
}

fn plain(status: u16, message: &str) -> (Out, Option<String>) {
    (Out::Html { status, body: pages::bare_page("Refused", message) }, None)
}

fn security_headers() -> Vec<(&'static str, String)> {
    vec![
        ("content-security-policy", CSP.into()),
        ("x-content-type-options", "nosniff".into()),
        ("x-frame-options", "DENY".into()),
        ("referrer-policy", "same-origin".into()),
        ("cross-origin-opener-policy", "same-origin".into()),
    ]
}

fn send(stream: TcpStream, (out, cookie): (Out, Option<String>)) {
    let mut headers = security_headers();
    if let Some(c) = cookie {
        headers.push(("set-cookie", c));
    }
    match out {
        Out::Html { status, body } => {
            http::respond_with(stream, status, "text/html; charset=utf-8", &headers, body.as_bytes());
        }
        Out::Redirect(to) => {
            headers.push(("location", to));
            http::respond_with(stream, 303, "text/plain; charset=utf-8", &headers, b"");
        }
        Out::Download { name, body } => {
            headers.push(("content-disposition", format!("attachment; filename=\"{name}\"")));
            http::respond_with(stream, 200, "text/plain; charset=utf-8", &headers, body.as_bytes());
        }
    }
}

fn send_static(stream: TcpStream, content_type: &str, text: &str) {
    http::respond_with(stream, 200, content_type, &security_headers(), text.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn only_the_consoles_own_names_pass_the_host_and_origin_checks() {
        let c = Console::new("127.0.0.1:8081".parse().unwrap(), &["Console.Example.com".into()], None, None);
        for host in ["127.0.0.1:8081", "localhost:8081", "[::1]:8081", "console.example.com"] {
            assert!(c.host_allowed(Some(host)), "{host}");
        }
        for host in ["127.0.0.1:8082", "evil.example:8081", "localhost", ""] {
            assert!(!c.host_allowed(Some(host)), "{host}");
        }
        assert!(!c.host_allowed(None));
        assert!(c.origin_allowed(Some("http://localhost:8081")));
        assert!(c.origin_allowed(Some("https://console.example.com")));
        for origin in ["null", "http://evil.example", "localhost:8081", "ftp://localhost:8081", ""] {
            assert!(!c.origin_allowed(Some(origin)), "{origin}");
        }
        assert!(!c.origin_allowed(None));
    }

    #[test]
    fn forms_decode_trim_and_split() {
        let f = Form::parse("token=tha_a%2Bb&code=+123456+&cidrs=10.0.0.0%2F8%2C+192.168.0.0%2F16&empty=");
        assert_eq!(f.get("token"), Some("tha_a+b"));
        assert_eq!(f.get("code"), Some("123456"));
        assert_eq!(f.get("empty"), None);
        assert_eq!(f.get("missing"), None);
        assert_eq!(f.list("cidrs"), ["10.0.0.0/8", "192.168.0.0/16"]);
    }
}
