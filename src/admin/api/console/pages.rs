//! The console's pages: each one calls an action (`crate::admin::actions`)
//! with the request's `Session` and renders its reply. No page decides who
//! may see or do what; the action's session does.

use super::{svg, Out, Req};
use crate::admin::actions::access::{self, IpChange, Level};
use crate::admin::actions::auditing::{self, AuditQuery, UsageQuery};
use crate::admin::actions::keys::{self, KeySpec, Scopes};
use crate::admin::actions::render::date;
use crate::admin::actions::{admins, tenants, Reply, Warning};
use crate::admin::audit::Target;
use crate::admin::session::{Change, Scope, Session};
use crate::admin::store::admins as accounts;
use crate::admin::usage::Grouping;
use crate::admin::AdminError;
use crate::core::bundle::schema::Status;
use serde_json::Value;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value (ids in links).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The escaped text of `fields` of a JSON row, in order.
fn cells(row: &Value, fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| esc(&text(&row[*f]))).collect()
}

fn time(v: &Value) -> String {
    v.as_u64().map_or_else(|| "—".into(), crate::admin::audit::rfc3339)
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · TokenHub console</title><link rel=\"stylesheet\" href=\"/console/static/console.css\"><script src=\"/console/static/console.js\" defer></script></head>",
        esc(title)
    )
}

/// A page outside a session (sign-in, refusals).
pub fn bare_page(title: &str, message: &str) -> String {
    format!(
        "{}<body><main id=\"main\"><h1>{}</h1><p role=\"alert\" class=\"error\">{}</p><p><a href=\"/console/\">Back to the console</a></p></main></body></html>",
        head(title),
        esc(title),
        esc(message)
    )
}

fn layout(title: &str, who: &Value, csrf: &str, body: &str) -> String {
    let name = text(&who["name"]);
    let role = match (who["role"].as_str(), who["tenant"].as_str()) {
        (Some("tenant"), Some(t)) => format!("tenant admin of {t}"),
        (Some(r), _) => format!("{r} admin"),
        _ => String::new(),
    };
    let nav = [
        ("/console/keys", "Keys"),
        ("/console/ip", "IP allowlists"),
        ("/console/usage", "Usage"),
        ("/console/audit", "Audit log"),
        ("/console/2fa", "Two-factor"),
    ]
    .iter()
    .map(|(href, label)| format!("<li><a href=\"{href}\">{label}</a></li>"))
    .collect::<String>();
    format!(
        "{}<body><a class=\"skip\" href=\"#main\">Skip to content</a><header><p class=\"brand\">TokenHub console</p><nav aria-label=\"Main\"><ul>{nav}</ul></nav><div class=\"who\">Signed in as <strong id=\"who\">{}</strong> ({})<form method=\"post\" action=\"/console/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form></div></header><main id=\"main\"><h1>{}</h1>{body}</main></body></html>",
        head(title),
        esc(&name),
        esc(&role),
        esc(csrf),
        esc(title)
    )
}

const CODE_FIELD: &str = "<label>2FA code (authenticator or recovery code) <input name=\"code\" autocomplete=\"one-time-code\" inputmode=\"text\" spellcheck=\"false\" size=\"12\"></label>";

/// A POST form with the CSRF token and, for a change, the 2FA code field.
fn form(r: &Req, action: &str, fields: &str, button: &str, class: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"{class}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{fields}{CODE_FIELD}<button type=\"submit\">{}</button></form>",
        esc(action),
        esc(&r.csrf),
        esc(button)
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc(name), esc(value))
}

fn input(label: &str, name: &str, value: &str, hint: &str) -> String {
    let hint = if hint.is_empty() { String::new() } else { format!(" <small>{}</small>", esc(hint)) };
    format!("<label>{} <input name=\"{}\" value=\"{}\">{hint}</label>", esc(label), esc(name), esc(value))
}

fn table(headers: &[&str], rows: &[Vec<String>], caption: &str) -> String {
    let th: String = headers.iter().map(|h| format!("<th scope=\"col\">{}</th>", esc(h))).collect();
    let tr: String = rows
        .iter()
        .map(|r| format!("<tr>{}</tr>", r.iter().map(|c| format!("<td>{c}</td>")).collect::<String>()))
        .collect();
    format!("<table><caption>{}</caption><thead><tr>{th}</tr></thead><tbody>{tr}</tbody></table>", esc(caption))
}

fn warnings(reply: &Reply) -> String {
    reply
        .warnings
        .iter()
        .map(|w| match w {
            Warning::ShownOnce(m) => format!("<p role=\"alert\" class=\"warning\">{}</p>", esc(m)),
            Warning::Consequence(m) => format!("<p role=\"alert\" class=\"warning\">Warning: {}</p>", esc(m)),
        })
        .collect()
}

/// A page's title and content (the layout adds the rest).
struct Content {
    title: String,
    body: String,
}

fn content(title: &str, body: String) -> Result<Content, AdminError> {
    Ok(Content { title: title.into(), body })
}

pub fn login_page(error: Option<&str>) -> Out {
    let alert =
        error.map(|e| format!("<p role=\"alert\" class=\"error\" id=\"error\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "{}<body><main id=\"main\" class=\"narrow\"><h1>Sign in to the TokenHub console</h1>{alert}<form method=\"post\" action=\"/console/login\"><label>Admin token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required spellcheck=\"false\"></label><label>2FA code (authenticator or recovery code; blank until you have enrolled) <input name=\"code\" autocomplete=\"one-time-code\" spellcheck=\"false\"></label><button type=\"submit\">Sign in</button></form><p><small>The token is the one the admin API takes (<code>tokenhub-admin admin token create</code>). Sessions end after 15 minutes idle.</small></p></main></body></html>",
        head("Sign in")
    );
    Out::Html { status: if error.is_some() { 401 } else { 200 }, body }
}

pub fn login_error(status: u16, message: &str) -> Out {
    match login_page(Some(message)) {
        Out::Html { body, .. } => Out::Html { status, body },
        other => other,
    }
}

/// The sign-in proof: the token names an admin; an admin with 2FA proves a
/// code. Through the session's write path, so it is checked (and a failure
/// counted and locked out) exactly like the second factor of any change,
/// and audited as `console.sign-in`. An admin without 2FA may sign in to
/// enrol (the session then refuses its changes, as the API does).
pub fn prove_sign_in(s: &Session) -> Result<(String, bool), AdminError> {
    let (name, has_2fa) = s.read(Scope::Anyone, Target::default(), |doc, who| {
        let enabled = accounts::find(&doc.admins, &who.name).is_some_and(|a| a.second_factor.enabled());
        Ok((who.name.clone(), enabled))
    })?;
    let mut op = Change::new("console.sign-in", Scope::Itself, Target::admin(&name));
    op.enrolling = true;
    s.mutate(op, |_, _| Ok(()))?;
    Ok((name, has_2fa))
}

pub fn route(r: &Req) -> Out {
    use super::super::http::Method::{Get, Post};
    let who = match admins::status(&r.session) {
        Ok(reply) => reply.into_json(),
        Err(e) => {
            r.console.sessions.remove(&r.sid);
            return Out::Html { status: e.http_status(), body: bare_page("Refused", &e.to_string()) };
        }
    };
    // Bound to the admin it was issued to: a token now naming another
    // admin (or none) ends the session.
    if who["name"].as_str() != Some(r.admin.as_str()) {
        r.console.sessions.remove(&r.sid);
        return Out::Html {
            status: 401,
            body: bare_page("Signed out", "this session no longer matches its admin: sign in again"),
        };
    }
    let result = match (r.method, r.path.as_slice()) {
        (Get, ["keys"]) => keys_page(r),
        (Post, ["keys"]) => key_create(r),
        (Get, ["keys", id]) => key_page(r, id),
        (Post, ["keys", id, op]) => key_op(r, id, op),
        (Get, ["ip"]) => ip_page(r),
        (Post, ["ip"]) => ip_op(r),
        (Get, ["usage"]) => usage_page(r),
        (Get, ["gateways"]) => gateways_page(r),
        (Get, ["audit"]) => audit_page(r),
        (Get, ["2fa"]) => two_factor_page(r, &who),
        (Post, ["2fa", "enroll"]) => enroll(r),
        (Post, ["2fa", "verify"]) => admins::verify(&r.session).map(|reply| recovery_page(r, &reply)),
        (Post, ["2fa", "recovery-codes"]) => admins::recovery_codes(&r.session).map(|reply| recovery_page(r, &reply)),
        (Get, ["2fa", "recovery-codes.txt"]) => {
            return match r.console.sessions.take_download(&r.sid) {
                Some(body) => Out::Download { name: "tokenhub-recovery-codes.txt", body },
                None => Out::Html {
                    status: 404,
                    body: layout("Not found", &who, &r.csrf, "<p role=\"alert\" class=\"error\">The recovery codes were already downloaded (or are too old): they are given once.</p>"),
                },
            };
        }
        _ => Err(AdminError::NotFound("no such console page".into())),
    };
    match result {
        Ok(c) => Out::Html { status: 200, body: layout(&c.title, &who, &r.csrf, &c.body) },
        Err(e) => {
            let body = format!(
                "<p role=\"alert\" class=\"error\" id=\"error\">{}</p><p><a href=\"/console/keys\">Back to keys</a></p>",
                esc(&e.to_string())
            );
            Out::Html { status: e.http_status(), body: layout("Refused", &who, &r.csrf, &body) }
        }
    }
}

fn tenant_options(r: &Req, selected: Option<&str>, any: bool) -> Result<String, AdminError> {
    let list = tenants::list(&r.session)?.into_json();
    let mut out = if any { "<option value=\"\">all</option>".to_string() } else { String::new() };
    for t in list.as_array().into_iter().flatten() {
        let id = text(&t["id"]);
        let sel = if selected == Some(id.as_str()) { " selected" } else { "" };
        out.push_str(&format!("<option value=\"{}\"{sel}>{}</option>", esc(&id), esc(&id)));
    }
    Ok(out)
}

fn keys_page(r: &Req) -> Result<Content, AdminError> {
    let f = &r.form;
    let tenant = f.get("tenant");
    let list = keys::list(&r.session, tenant)?.into_json();
    let sub = f.get("sub_account");
    let status = f.get("status");
    let rows: Vec<Vec<String>> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| sub.is_none_or(|s| k["sub_account"] == s) && status.is_none_or(|s| k["status"] == s))
        .map(|k| {
            let id = text(&k["key_id"]);
            let mut row = vec![format!("<a href=\"/console/keys/{}\">{}</a>", enc(&id), esc(&id))];
            row.extend(cells(k, &["name", "tenant", "sub_account", "status"]));
            row.extend([time(&k["created_at"]), time(&k["expires_at"])]);
            row
        })
        .collect();
    let status_opts: String = ["", "active", "disabled"]
        .iter()
        .map(|s| {
            let sel = if status == Some(*s) || (status.is_none() && s.is_empty()) { " selected" } else { "" };
            format!("<option value=\"{s}\"{sel}>{}</option>", if s.is_empty() { "any" } else { s })
        })
        .collect();
    let filter = format!(
        "<form method=\"get\" action=\"/console/keys\" class=\"filters\" aria-label=\"Filter keys\"><label>Tenant <select name=\"tenant\">{}</select></label>{}<label>Status <select name=\"status\">{status_opts}</select></label><button type=\"submit\">Filter</button></form>",
        tenant_options(r, tenant, true)?,
        input("Sub-account", "sub_account", sub.unwrap_or(""), "")
    );
    let create = form(
        r,
        "/console/keys",
        &format!(
            "<label>Tenant <select name=\"tenant\" required>{}</select></label>{}{}{}{}{}{}",
            tenant_options(r, tenant, false)?,
            input("Sub-account", "sub_account", "", "blank: default"),
            input("Name", "name", "", "a label, not secret"),
            input("Expires in", "expires_in", "", "e.g. 90d; blank: never"),
            input("Methods", "methods", "", "e.g. POST; blank: any"),
            input("Path prefixes", "paths", "", "e.g. /v1/chat/; blank: any"),
            input("Allowed models", "models", "", "e.g. gpt-4o-mini, gpt-4*; blank: any"),
        ),
        "Create key",
        "stack",
    );
    let body = format!(
        "{filter}{}<h2>Create a key</h2>{create}",
        table(&["Key ID", "Name", "Tenant", "Sub-account", "Status", "Created", "Expires"], &rows, "API keys")
    );
    content("Keys", body)
}

fn shown_once(r: &Req, reply: &Reply, what: &str) -> Content {
    let key = text(&reply.json()["key"]);
    let id = text(&reply.json()["key_id"]);
    let body = format!(
        "{}<p>Key <a href=\"/console/keys/{}\">{}</a> {}.</p><p><code id=\"new-key\" class=\"secret\">{}</code> <button type=\"button\" data-copy=\"new-key\">Copy key</button> <span id=\"copy-status\" role=\"status\"></span></p><p><a href=\"/console/keys\">Back to keys</a></p>",
        warnings(reply),
        enc(&id),
        esc(&id),
        esc(what),
        esc(&key)
    );
    let _ = r;
    Content { title: "Key shown once".into(), body }
}

fn key_create(r: &Req) -> Result<Content, AdminError> {
    let f = &r.form;
    let spec = KeySpec {
        tenant: f.get("tenant").unwrap_or("").to_string(),
        sub_account: f.get("sub_account").map(str::to_string),
        name: f.get("name").unwrap_or("").to_string(),
        expires_in: f.get("expires_in").map(str::to_string),
        scopes: Scopes { methods: f.list("methods"), paths: f.list("paths"), models: f.list("models") },
    };
    let reply = keys::create(&r.session, &spec)?;
    Ok(shown_once(r, &reply, "created"))
}

fn key_page(r: &Req, id: &str) -> Result<Content, AdminError> {
    let k = keys::show(&r.session, id)?.into_json();
    let scopes = &k["scopes"];
    let join = |v: &Value| v.as_array().map(|a| a.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    let info = table(
        &["Field", "Value"],
        &[
            vec!["Name".into(), esc(&text(&k["name"]))],
            vec!["Tenant / sub-account".into(), esc(&format!("{} / {}", text(&k["tenant"]), text(&k["sub_account"])))],
            vec!["Status".into(), format!("<span id=\"key-status\">{}</span>", esc(&text(&k["status"])))],
            vec!["Created".into(), time(&k["created_at"])],
            vec!["Last rotated".into(), time(&k["last_rotated_at"])],
            vec!["Previous secret valid until".into(), time(&k["previous_secret_valid_until"])],
            vec!["Expires".into(), time(&k["expires_at"])],
            vec!["Methods".into(), esc(&join(&scopes["methods"]))],
            vec!["Path prefixes".into(), esc(&join(&scopes["path_prefixes"]))],
            vec!["Allowed models".into(), esc(&join(&k["models"]))],
            vec![
                "IP allowlist".into(),
                format!("{} <a href=\"/console/ip?key={}\">edit</a>", esc(&join(&k["ip_allowlist"]["cidrs"])), enc(id)),
            ],
        ],
        "Key details",
    );
    let base = format!("/console/keys/{}", enc(id));
    let toggle = if k["status"] == "active" {
        form(r, &format!("{base}/disable"), "", "Disable key", "inline")
    } else {
        form(r, &format!("{base}/enable"), "", "Enable key", "inline")
    };
    let body = format!(
        "{info}<h2>Rotate</h2>{}<h2>Scopes and models</h2>{}<h2>Expiry</h2>{}<h2>Status</h2>{toggle}<h2>Incident</h2><p>Disables the key and its previous secret, publishes at once, then shows its recent usage and audit trail.</p>{}<h2>Delete</h2>{}",
        form(r, &format!("{base}/rotate"), &input("Grace period for the previous secret", "grace", "1h", "e.g. 0s, 15m, 1h"), "Rotate key", "stack"),
        form(
            r,
            &format!("{base}/scopes"),
            &format!(
                "{}{}{}",
                input("Methods", "methods", &join(&scopes["methods"]), "blank: any"),
                input("Path prefixes", "paths", &join(&scopes["path_prefixes"]), "blank: any"),
                input("Allowed models", "models", &join(&k["models"]), "blank: any")
            ),
            "Save scopes",
            "stack"
        ),
        form(r, &format!("{base}/expiry"), &input("Expires in", "expires_in", "", "e.g. 30d; blank: never"), "Set expiry", "stack"),
        form(r, &format!("{base}/revoke"), "", "Revoke this key", "danger"),
        form(r, &format!("{base}/delete"), "", "Delete key", "danger"),
    );
    content(&format!("Key {id}"), body)
}

fn done(reply: &Reply, back: &str) -> Content {
    Content {
        title: "Done".into(),
        body: format!(
            "<p role=\"status\" id=\"result\">{}</p>{}<p><a href=\"{}\">Back</a></p>",
            esc(&reply.text()),
            warnings(reply),
            esc(back)
        ),
    }
}

fn key_op(r: &Req, id: &str, op: &str) -> Result<Content, AdminError> {
    let s = &r.session;
    let f = &r.form;
    let back = format!("/console/keys/{}", enc(id));
    match op {
        "rotate" => keys::rotate(s, id, f.get("grace").unwrap_or("0s")).map(|rep| shown_once(r, &rep, "rotated")),
        "disable" => keys::set_status(s, id, Status::Disabled).map(|rep| done(&rep, &back)),
        "enable" => keys::set_status(s, id, Status::Active).map(|rep| done(&rep, &back)),
        "delete" => keys::delete(s, id).map(|rep| done(&rep, "/console/keys")),
        "scopes" => {
            let scopes = Scopes { methods: f.list("methods"), paths: f.list("paths"), models: f.list("models") };
            keys::set_scopes(s, id, &scopes).map(|rep| done(&rep, &back))
        }
        "expiry" => keys::set_expiry(s, id, f.get("expires_in")).map(|rep| done(&rep, &back)),
        "revoke" => incident(r, id),
        _ => Err(AdminError::NotFound(format!("no key operation {op:?}"))),
    }
}

fn audit_table(entries: &Value, caption: &str) -> String {
    let rows: Vec<Vec<String>> = entries
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .take(200)
        .map(|e| {
            let t = &e["target"];
            let target: Vec<String> = ["tenant", "sub_account", "key_id", "admin"]
                .iter()
                .filter_map(|k| t[*k].as_str().map(|v| format!("{k}={v}")))
                .collect();
            let mut row = cells(e, &["seq", "time", "actor", "via", "action"]);
            row.push(esc(&target.join(" ")));
            row.extend(cells(e, &["outcome"]));
            row.push(esc(e["detail"].as_str().unwrap_or("")));
            row
        })
        .collect();
    table(&["#", "Time", "Actor", "Via", "Action", "Target", "Outcome", "Detail"], &rows, caption)
}

/// The usage report of one window, from the same action as `tokenhub-admin usage`
/// (per key; with `per_day`, per key and UTC day).
fn usage_rows(
    r: &Req,
    tenant: Option<&str>,
    key: Option<&str>,
    since: u64,
    until: u64,
    per_day: bool,
) -> Result<Vec<Value>, AdminError> {
    let Some(log) = r.console.access_log.clone() else {
        return Err(AdminError::Usage(
            "usage needs Envoy's access log: start the service with `tokenhub-admin serve --access-log FILE`".into(),
        ));
    };
    let q = UsageQuery {
        access_log: log,
        tenant: tenant.map(str::to_string),
        key: key.map(str::to_string),
        since: Some(since.to_string()),
        until: Some(until.to_string()),
        grouping: Grouping { per_day, ..Grouping::default() },
        ..Default::default()
    };
    let json = auditing::usage(&r.session, &q)?.into_json();
    Ok(json["rows"].as_array().cloned().unwrap_or_default())
}

/// A usage row's owner as `tenant/sub-account/key`.
fn usage_owner(u: &Value) -> String {
    format!("{}/{}/{}", text(&u["tenant"]), text(&u["sub_account"]), text(&u["key_id"]))
}

/// Input plus output tokens of a usage row (cached tokens are part of the input).
fn usage_tokens(u: &Value) -> u64 {
    u["input_tokens"].as_u64().unwrap_or(0).saturating_add(u["output_tokens"].as_u64().unwrap_or(0))
}

/// The token and cost cells of a usage row.
fn usage_token_cells(u: &Value) -> Vec<String> {
    cells(u, &["input_tokens", "output_tokens", "cached_tokens", "cost_usd"])
}

fn usage_table(rows: &[Value], caption: &str) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|u| {
            let denied: Vec<String> =
                u["denied"].as_object().into_iter().flatten().map(|(reason, n)| format!("{reason}: {n}")).collect();
            let mut row = cells(u, &["tenant", "sub_account", "key_id", "requests", "allowed"]);
            row.push(esc(&denied.join(", ")));
            row.extend(usage_token_cells(u));
            row.extend(cells(u, &["distinct_client_ips", "last_seen"]));
            row
        })
        .collect();
    table(
        &[
            "Tenant",
            "Sub-account",
            "Key",
            "Requests",
            "Allowed",
            "Denied by reason",
            "Input tokens",
            "Output tokens",
            "Cached tokens",
            "Cost (USD)",
            "Client IPs",
            "Last seen",
        ],
        &body,
        caption,
    )
}

/// Requests, tokens and cost per key and day (rows of a `per_day` report).
fn usage_day_table(rows: &[Value], caption: &str) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|u| {
            let mut row = vec![esc(&usage_owner(u))];
            row.extend(cells(u, &["day", "requests"]));
            row.extend(usage_token_cells(u));
            row
        })
        .collect();
    table(&["Key", "Day", "Requests", "Input tokens", "Output tokens", "Cached tokens", "Cost (USD)"], &body, caption)
}

fn incident(r: &Req, id: &str) -> Result<Content, AdminError> {
    let reply = keys::incident_revoke(&r.session, id)?;
    let p = &reply.json()["published"];
    let version = text(&p["version"]);
    let usage = match usage_rows(r, None, Some(id), r.session.now.saturating_sub(86_400), r.session.now, false) {
        Ok(rows) => usage_table(&rows, "Requests with this key in the last 24 hours"),
        Err(e) => format!("<p class=\"warning\">{}</p>", esc(&e.to_string())),
    };
    let body = format!(
        "<p role=\"status\" id=\"result\">Key <strong>{}</strong> is disabled (its previous secret too) and published as bundle version <strong id=\"bundle-version\">{}</strong> at {}.</p>{}<h2>Recent usage</h2>{usage}<h2>Audit trail of this key</h2>{}<p>Next: create a replacement key, then review the <a href=\"/console/audit?key={}\">audit log</a>.</p>",
        esc(id),
        esc(&version),
        time(&p["at"]),
        enforcement(r, p["version"].as_u64()),
        audit_table(&reply.json()["audit"], "Audit entries of this key, newest first"),
        enc(id)
    );
    content("Incident: key revoked", body)
}

fn ip_level(f: &super::Form) -> Option<Result<Level, AdminError>> {
    let (t, s, k) = (f.get("tenant"), f.get("sub_account"), f.get("key"));
    if t.is_none() && s.is_none() && k.is_none() {
        return None;
    }
    Some(Level::parse(t.map(str::to_string), s.map(str::to_string), k.map(str::to_string)))
}

fn level_fields(l: &Level) -> String {
    match l {
        Level::Tenant(t) => hidden("tenant", t),
        Level::SubAccount { tenant, sub_account } => {
            format!("{}{}", hidden("tenant", tenant), hidden("sub_account", sub_account))
        }
        Level::Key(k) => hidden("key", k),
    }
}

fn level_query(l: &Level) -> String {
    match l {
        Level::Tenant(t) => format!("tenant={}", enc(t)),
        Level::SubAccount { tenant, sub_account } => format!("tenant={}&sub_account={}", enc(tenant), enc(sub_account)),
        Level::Key(k) => format!("key={}", enc(k)),
    }
}

fn ip_page(r: &Req) -> Result<Content, AdminError> {
    let f = &r.form;
    let picker = format!(
        "<form method=\"get\" action=\"/console/ip\" class=\"filters\" aria-label=\"Choose a level\"><label>Tenant <select name=\"tenant\">{}</select></label>{}{}<button type=\"submit\">Show</button></form><p><small>A request must pass every enabled list above it: tenant, then sub-account, then key. Give a tenant, a tenant and a sub-account, or a key alone.</small></p>",
        tenant_options(r, f.get("tenant"), true)?,
        input("Sub-account", "sub_account", f.get("sub_account").unwrap_or(""), ""),
        input("or key ID", "key", f.get("key").unwrap_or(""), "")
    );
    let Some(level) = ip_level(f) else {
        return content("IP allowlists", picker);
    };
    let level = level?;
    let list = access::ip_list(&r.session, &level)?.into_json();
    let enabled = list["enabled"].as_bool().unwrap_or(false);
    let fields = level_fields(&level);
    let rows: Vec<Vec<String>> = list["cidrs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let c = text(c);
            vec![
                format!("<code>{}</code>", esc(&c)),
                form(
                    r,
                    "/console/ip",
                    &format!("{fields}{}{}", hidden("op", "deny"), hidden("cidrs", &c)),
                    &format!("Remove {c}"),
                    "inline",
                ),
            ]
        })
        .collect();
    let toggle = if enabled {
        form(
            r,
            "/console/ip",
            &format!("{fields}{}", hidden("op", "disable")),
            "Disable allowlist (allow any address)",
            "inline",
        )
    } else {
        form(r, "/console/ip", &format!("{fields}{}", hidden("op", "enable")), "Enable allowlist", "inline")
    };
    let body = format!(
        "{picker}<h2>{}</h2><p id=\"ip-state\">Allowlist {}.</p>{}<h2>Add addresses</h2>{}<h2>On or off</h2>{toggle}",
        esc(&level_describe(&level)),
        if enabled { "enabled: only these addresses are allowed" } else { "disabled: any address is allowed" },
        table(&["CIDR", ""], &rows, "Allowed addresses"),
        form(
            r,
            "/console/ip",
            &format!(
                "{fields}{}<label>CIDR blocks (IPv4 or IPv6, comma or space separated) <input name=\"cidrs\" required pattern=\"[0-9A-Fa-f:.,/ ]+\" placeholder=\"203.0.113.0/24, 2001:db8::/32\"></label>",
                hidden("op", "allow")
            ),
            "Allow",
            "stack"
        ),
    );
    content("IP allowlists", body)
}

fn level_describe(l: &Level) -> String {
    match l {
        Level::Tenant(t) => format!("Tenant {t}"),
        Level::SubAccount { tenant, sub_account } => format!("Sub-account {tenant}/{sub_account}"),
        Level::Key(k) => format!("Key {k}"),
    }
}

fn ip_op(r: &Req) -> Result<Content, AdminError> {
    let f = &r.form;
    let level = ip_level(f).ok_or_else(|| AdminError::Usage("give a tenant, a sub-account or a key".into()))??;
    let cidrs = f.list("cidrs");
    let change = match f.get("op") {
        Some("allow") => IpChange::Allow(&cidrs),
        Some("deny") => IpChange::Deny(&cidrs),
        Some("enable") => IpChange::Enabled(true),
        Some("disable") => IpChange::Enabled(false),
        _ => return Err(AdminError::Usage("op must be allow, deny, enable or disable".into())),
    };
    let reply = access::ip_change(&r.session, &level, change)?;
    Ok(done(&reply, &format!("/console/ip?{}", level_query(&level))))
}

/// When the gateways enforce a published version: per gateway of the xDS
/// control plane `serve` runs (its ACK state), else the file path's timing.
fn enforcement(r: &Req, version: Option<u64>) -> String {
    match (&r.console.xds_home, version) {
        (Some(home), Some(v)) => format!(
            "<div id=\"enforcement\">{}<p>Requests with the key are refused with 401 by every gateway that acknowledged version {v}. <a href=\"/console/gateways?version={v}\">Check the gateways again</a> (or refresh that page) until each one has.</p></div>",
            gateway_table(&crate::admin::xds::registry::read(home), v)
        ),
        _ => "<p id=\"enforcement\">Gateways enforce it once they load this version: a gateway reading the ECDS file reloads it within about a second of the write; a gateway on xDS receives it on its open stream at once. Requests with the key are then refused with 401.</p>".into(),
    }
}

/// Each gateway the control plane knows: has it acknowledged `version`?
fn gateway_table(state: &crate::admin::xds::registry::State, version: u64) -> String {
    let connected = state.gateways.values().filter(|g| g.connected).count();
    if connected == 0 {
        return format!("<p class=\"warning\" role=\"status\">No gateway is connected to this control plane: none enforces version {version} yet (a gateway that connects receives it at once).</p>");
    }
    let acked =
        state.gateways.values().filter(|g| g.connected && g.acked_version.is_some_and(|a| a >= version)).count();
    let rows: Vec<Vec<String>> = state
        .gateways
        .values()
        .map(|g| {
            let verdict = match (g.connected, g.acked_version) {
                (false, _) => "disconnected: receives it when it reconnects",
                (true, Some(a)) if a >= version => "enforces it",
                (true, _) if g.last_nack.as_ref().is_some_and(|n| n.version >= version) => {
                    "refused it (NACK): see `tokenhub-admin status`"
                }
                (true, _) => "not yet",
            };
            vec![
                esc(&g.node_id),
                esc(&g.cluster),
                g.acked_version.map_or_else(|| "—".into(), |a| a.to_string()),
                esc(verdict),
                esc(&crate::admin::audit::rfc3339(g.last_seen)),
            ]
        })
        .collect();
    format!(
        "<p role=\"status\" id=\"gateways-acked\">{acked} of {connected} connected gateways acknowledged version {version}.</p>{}",
        table(
            &["Gateway (node)", "Cluster", "Acknowledged version", &format!("Version {version}"), "Last seen"],
            &rows,
            "Gateways of the xDS control plane"
        )
    )
}

/// The gateways' ACK state for a version (the incident page's "check again").
fn gateways_page(r: &Req) -> Result<Content, AdminError> {
    let Some(home) = &r.console.xds_home else {
        return Err(AdminError::NotFound(
            "this service runs no xDS control plane: gateways read the ECDS file and reload it within about a second"
                .into(),
        ));
    };
    let state = crate::admin::xds::registry::read(home);
    let version = match r.form.get("version") {
        Some(v) => {
            v.parse().map_err(|_| AdminError::Usage(format!("version {v:?}: expected a bundle version number")))?
        }
        None => state.serving_version.unwrap_or(0),
    };
    let serving = state.serving_version.map_or_else(|| "none yet".into(), |v| v.to_string());
    let body = format!(
        "<p>The control plane serves bundle version <strong>{serving}</strong>.</p>{}<p><a href=\"/console/gateways?version={version}\">Refresh</a></p>",
        gateway_table(&state, version)
    );
    content("Gateways", body)
}

fn usage_page(r: &Req) -> Result<Content, AdminError> {
    let f = &r.form;
    let days: u64 = f.get("days").and_then(|d| d.parse().ok()).unwrap_or(7).clamp(1, 31);
    let tenant = f.get("tenant");
    let key = f.get("key");
    let now = r.session.now;
    let today = now - now % 86_400;
    let since = today - (days - 1) * 86_400;
    // The UTC days of the window, oldest first: (YYYY-MM-DD, MM-DD).
    let day_labels: Vec<(String, String)> = (0..days)
        .map(|i| {
            let d = date(Some(since + i * 86_400));
            (d.get(..10).unwrap_or("").to_string(), d.get(5..10).unwrap_or("").to_string())
        })
        .collect();
    let per_day = usage_rows(r, tenant, key, since, now, true)?;
    // Per key: (requests, tokens) per day.
    let mut per_key: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    for u in &per_day {
        let cell = per_key.entry(usage_owner(u)).or_default().entry(text(&u["day"])).or_default();
        cell.0 += u["requests"].as_u64().unwrap_or(0);
        cell.1 += usage_tokens(u);
    }
    let total = usage_rows(r, tenant, key, since, now, false)?;
    let charts: String = per_key
        .iter()
        .map(|(k, by_day)| {
            let series = |pick: fn(&(u64, u64)) -> u64| -> Vec<(String, u64)> {
                day_labels.iter().map(|(d, l)| (l.clone(), by_day.get(d).map_or(0, pick))).collect()
            };
            format!(
                "<figure><figcaption>Requests per day: {}</figcaption>{}</figure><figure><figcaption>Tokens (input + output) per day: {}</figcaption>{}</figure>",
                esc(k),
                svg::bars(&format!("Requests per day for {k}"), &series(|c| c.0)),
                esc(k),
                svg::bars(&format!("Tokens per day for {k}"), &series(|c| c.1))
            )
        })
        .collect();
    let filter = format!(
        "<form method=\"get\" action=\"/console/usage\" class=\"filters\" aria-label=\"Filter usage\"><label>Tenant <select name=\"tenant\">{}</select></label>{}{}<button type=\"submit\">Show</button></form>",
        tenant_options(r, tenant, true)?,
        input("Key ID", "key", key.unwrap_or(""), ""),
        input("Days", "days", &days.to_string(), "1 to 31")
    );
    let body = format!(
        "{filter}<p><small>From Envoy's access log, through the same report as <code>tokenhub-admin usage</code> (days in UTC; tokens and cost as the gateway metered them).</small></p>{}<h2>Per key and day</h2><div class=\"charts\">{charts}</div>{}",
        usage_table(&total, &format!("Usage in the last {days} days: requests, denials by reason, tokens, cost, distinct client IPs")),
        usage_day_table(&per_day, &format!("Requests, tokens and cost per key and day, last {days} days"))
    );
    content("Usage", body)
}

fn audit_page(r: &Req) -> Result<Content, AdminError> {
    let f = &r.form;
    let q = AuditQuery {
        tenant: f.get("tenant").map(str::to_string),
        key_id: f.get("key").map(str::to_string),
        actor: f.get("actor").map(str::to_string),
        action: f.get("action").map(str::to_string),
        since: f.get("since").map(str::to_string),
        until: f.get("until").map(str::to_string),
        failures: f.get("failures").is_some(),
    };
    let entries = auditing::search(&r.session, &q)?.into_json();
    let verify = match auditing::verify_report(&r.session) {
        Ok(rep) if rep.ok() => format!("<p id=\"audit-verify\" class=\"ok\" role=\"status\">Audit log intact: {} entries, chain and MACs verified.</p>", rep.entries),
        Ok(rep) => {
            let lines: String = rep.problems.iter().map(|p| format!("<li>line {}: {}</li>", p.line, esc(&p.message))).collect();
            format!("<div id=\"audit-verify\" class=\"error\" role=\"alert\"><p>The audit log does not verify:</p><ul>{lines}</ul></div>")
        }
        Err(e) => format!("<p id=\"audit-verify\" class=\"error\" role=\"alert\">{}</p>", esc(&e.to_string())),
    };
    let filter = format!(
        "<form method=\"get\" action=\"/console/audit\" class=\"filters\" aria-label=\"Search the audit log\">{}{}{}{}{}<label><input type=\"checkbox\" name=\"failures\" value=\"1\"{}> Refusals only</label><button type=\"submit\">Search</button></form>",
        input("Actor", "actor", f.get("actor").unwrap_or(""), ""),
        input("Action", "action", f.get("action").unwrap_or(""), "e.g. key.rotate or key."),
        input("Key ID", "key", f.get("key").unwrap_or(""), ""),
        input("Since", "since", f.get("since").unwrap_or(""), "e.g. 24h or 2025-01-31"),
        input("Until", "until", f.get("until").unwrap_or(""), ""),
        if q.failures { " checked" } else { "" }
    );
    let n = entries.as_array().map_or(0, Vec::len);
    let body = format!(
        "{verify}{filter}{}",
        audit_table(&entries, &format!("{n} matching entries, newest first (200 at most shown)"))
    );
    content("Audit log", body)
}

fn two_factor_page(r: &Req, who: &Value) -> Result<Content, AdminError> {
    let tf = &who["two_factor"];
    let enabled = tf["enabled"].as_bool().unwrap_or(false);
    let state = if enabled {
        format!("2FA is on; {} recovery codes left.", text(&tf["recovery_codes_left"]))
    } else if tf["pending"].as_bool().unwrap_or(false) {
        "Enrolment started but not verified: enrol again to see a new QR code.".into()
    } else {
        "2FA is off: every change on a secured store needs it. Enrol now.".into()
    };
    let mut body = format!("<p id=\"twofa-state\" role=\"status\">{}</p>", esc(&state));
    body.push_str(&form(
        r,
        "/console/2fa/enroll",
        "",
        if enabled { "Re-enrol (new secret)" } else { "Enrol 2FA" },
        "stack",
    ));
    if enabled {
        body.push_str("<h2>Recovery codes</h2><p>New codes replace the old ones, which stop working.</p>");
        body.push_str(&form(r, "/console/2fa/recovery-codes", "", "Regenerate recovery codes", "stack"));
    }
    content("Two-factor authentication", body)
}

fn enroll(r: &Req) -> Result<Content, AdminError> {
    let reply = admins::enroll(&r.session, None)?;
    let uri = Zeroizing::new(text(&reply.json()["otpauth_uri"]));
    let secret = Zeroizing::new(text(&reply.json()["secret"]));
    let qr = svg::qr(&uri, "QR code of the 2FA secret: scan it with an authenticator app")?;
    let body = format!(
        "{}<p>Scan the QR code with Google Authenticator, Authy or any TOTP app, or type the secret.</p><div class=\"qr-box\">{qr}</div><p>Secret: <code id=\"totp-secret\" class=\"secret\">{}</code> <button type=\"button\" data-copy=\"totp-secret\">Copy secret</button></p><h2>Verify</h2><p>Enter the code the app now shows to turn 2FA on.</p>{}",
        warnings(&reply),
        esc(&secret),
        form(r, "/console/2fa/verify", "", "Verify and turn on 2FA", "stack")
    );
    content("Enrol two-factor authentication", body)
}

fn recovery_page(r: &Req, reply: &Reply) -> Content {
    let codes: Vec<String> = reply.json()["recovery_codes"].as_array().into_iter().flatten().map(text).collect();
    let file = Zeroizing::new(format!(
        "TokenHub admin {} recovery codes (each works once in place of a 2FA code):\n{}\n",
        text(&reply.json()["admin"]),
        codes.join("\n")
    ));
    r.console.sessions.keep_download(&r.sid, file);
    let items: String = codes.iter().map(|c| format!("<li><code>{}</code></li>", esc(c))).collect();
    Content {
        title: "Recovery codes".into(),
        body: format!(
            "{}<p>{}</p><ol id=\"recovery-codes\">{items}</ol><p><a href=\"/console/2fa/recovery-codes.txt\" download>Download as a text file</a> (once) · <button type=\"button\" data-copy=\"recovery-codes\">Copy codes</button> <span id=\"copy-status\" role=\"status\"></span></p><p><a href=\"/console/keys\">Continue to keys</a></p>",
            warnings(reply),
            esc(reply.text().lines().next().unwrap_or(""))
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_ids_encoded() {
        assert_eq!(esc("<a href=\"x\">'&"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn the_sign_in_page_has_no_inline_script_or_style() {
        let Out::Html { body, .. } = login_page(Some("<x>")) else { panic!() };
        assert!(!body.contains("<script>") && !body.contains("style="));
        assert!(body.contains("&lt;x&gt;"));
        assert!(body.contains("<label>Admin token <input type=\"password\""));
    }

    #[test]
    fn the_gateway_table_says_which_gateway_acknowledged_the_version() {
        use crate::admin::xds::registry::{Gateway, Nack, State};
        let g = |node: &str, connected: bool, acked: Option<u64>, nack: Option<u64>| Gateway {
            node_id: node.into(),
            cluster: "edge".into(),
            connected,
            acked_version: acked,
            last_nack: nack.map(|version| Nack { version, reason: "bad".into(), at: 0 }),
            ..Gateway::default()
        };
        let mut state = State::default();
        assert!(gateway_table(&state, 7).contains("No gateway is connected"));
        for gw in [
            g("gw-<a>", true, Some(7), None),
            g("gw-b", true, Some(6), None),
            g("gw-c", true, Some(6), Some(7)),
            g("gw-d", false, Some(7), None),
        ] {
            state.gateways.insert(gw.node_id.clone(), gw);
        }
        let t = gateway_table(&state, 7);
        assert!(t.contains("1 of 3 connected gateways acknowledged version 7"), "{t}");
        assert!(t.contains("<td>gw-&lt;a&gt;</td><td>edge</td><td>7</td><td>enforces it</td>"), "{t}");
        assert!(t.contains("<td>gw-b</td><td>edge</td><td>6</td><td>not yet</td>"), "{t}");
        assert!(t.contains("<td>gw-c</td><td>edge</td><td>6</td><td>refused it (NACK)"), "{t}");
        assert!(t.contains("<td>gw-d</td><td>edge</td><td>7</td><td>disconnected"), "{t}");
        assert!(gateway_table(&state, 6).contains("3 of 3 connected gateways acknowledged version 6"));
    }
}
