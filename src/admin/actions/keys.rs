//! API keys: create (shown once), list, rotate with a grace period, disable,
//! delete, scopes, expiry; and the incident response in one step.

use super::render::{date, quota_text, scopes_text, status_str, table};
use super::Reply;
use crate::admin::audit::{AuditLog, Filter, Target};
use crate::admin::session::{Change, Scope, Session};
use crate::admin::store::admins::no_such_key;
use crate::admin::store::policy::{self, IssuedKey, NewKey};
use crate::admin::store::StoreDoc;
use crate::admin::{parse_duration, publish, AdminError};
use crate::core::bundle::schema::{KeyDoc, ScopesDoc, Status};
use serde_json::{json, Value};

/// Scopes of a key or an identity: methods and path prefixes (none = any),
/// as given; `to_doc` normalises them.
#[derive(Debug, Default, Clone)]
pub struct Scopes {
    pub methods: Vec<String>,
    pub paths: Vec<String>,
    /// Allowed models: exact names or `prefix*` (none = any; with a list,
    /// the request body is read for its model).
    pub models: Vec<String>,
}

impl Scopes {
    pub fn to_doc(&self) -> Option<ScopesDoc> {
        if self.methods.is_empty() && self.paths.is_empty() {
            return None;
        }
        Some(ScopesDoc {
            methods: self.methods.iter().map(|m| m.trim().to_ascii_uppercase()).collect(),
            path_prefixes: self.paths.iter().map(|p| p.trim().to_string()).collect(),
        })
    }

    /// The model list (trimmed; empty = any model).
    pub fn models(&self) -> Vec<String> {
        self.models.iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect()
    }
}

/// A key to create.
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    pub tenant: String,
    /// `None`: the tenant's `default` sub-account.
    pub sub_account: Option<String>,
    /// A label to recognise the key by (not secret).
    pub name: String,
    /// Expire after this long, e.g. 90d.
    pub expires_in: Option<String>,
    pub scopes: Scopes,
}

fn duration(text: &str) -> Result<u64, AdminError> {
    parse_duration(text).map_err(AdminError::Usage)
}

pub fn create(s: &Session, args: &KeySpec) -> Result<Reply, AdminError> {
    let expires_at = args.expires_in.as_deref().map(duration).transpose()?.map(|d| s.now.saturating_add(d));
    let sub_account = args.sub_account.as_deref().unwrap_or(policy::DEFAULT_SUB_ACCOUNT);
    let target = Target::sub_account(&args.tenant, sub_account);
    let issued = s.mutate(Change::policy("key.create", Scope::Tenant, target), |d, c| {
        let new =
            NewKey { tenant: &args.tenant, sub_account, name: &args.name, expires_at, scopes: args.scopes.to_doc() };
        let issued = policy::create_key(d, new, c.now)?;
        let models = args.scopes.models();
        if !models.is_empty() {
            policy::key_mut(d, &issued.key_id)?.models = models;
            policy::validate(d)?;
        }
        c.target.key_id = Some(issued.key_id.clone());
        Ok(issued)
    })?;
    Ok(issued_reply(&issued, &format!("created; {}", s.apply_hint())))
}

pub fn rotate(s: &Session, id: &str, grace: &str) -> Result<Reply, AdminError> {
    let grace = duration(grace)?;
    let issued = s.mutate(Change::policy("key.rotate", Scope::Tenant, Target::key(id)), |d, c| {
        c.note = Some(format!("previous secret valid for {grace}s"));
        policy::rotate_key(d, id, grace, c.now)
    })?;
    Ok(issued_reply(&issued, &format!("rotated (previous secret valid for {grace}s); {}", s.apply_hint())))
}

/// The key, shown once: in the reply's text and JSON, with a warning.
fn issued_reply(issued: &IssuedKey, what: &str) -> Reply {
    Reply::new(
        format!("key {} {what}\n{}", issued.key_id, issued.key.as_str()),
        json!({"key_id": issued.key_id, "key": issued.key.as_str()}),
    )
    .shown_once("This is the only time the key is shown. Store it in a secret manager.")
}

pub fn list(s: &Session, tenant: Option<&str>) -> Result<Reply, AdminError> {
    let (scope, target) = match tenant {
        Some(t) => (Scope::Tenant, Target::tenant(t)),
        None => (Scope::Anyone, Target::default()),
    };
    s.read(scope, target, |doc, who| {
        let keys: Vec<&KeyDoc> = doc
            .policy
            .keys
            .iter()
            .filter(|k| who.sees(Some(&k.tenant)) && tenant.is_none_or(|t| k.tenant == t))
            .collect();
        let rows: Vec<Vec<String>> = keys.iter().map(|k| key_row(doc, k)).collect();
        let text = table(
            &["KEY ID", "TENANT", "SUB-ACCOUNT", "STATUS", "CREATED", "ROTATED", "EXPIRES", "QUOTA", "SCOPES"],
            &rows,
        );
        Ok(Reply::new(text, Value::Array(keys.iter().map(|k| key_json(doc, k)).collect())))
    })
}

fn key_row(doc: &StoreDoc, k: &KeyDoc) -> Vec<String> {
    let meta = doc.key_meta.get(&k.id);
    vec![
        k.id.clone(),
        k.tenant.clone(),
        k.sub_account.clone(),
        status_str(k.status).into(),
        date(meta.map(|m| m.created_at)),
        date(meta.and_then(|m| m.last_rotated_at)),
        date(k.expires_at),
        quota_text(k.quota.as_ref()),
        scopes_text(k.scopes.as_ref()),
    ]
}

pub fn show(s: &Session, id: &str) -> Result<Reply, AdminError> {
    s.read(Scope::Tenant, Target::key(id), |doc, _| {
        let k = doc.policy.keys.iter().find(|k| k.id == id).ok_or_else(|| no_such_key(id))?;
        let v = key_json(doc, k);
        Ok(Reply::new(serde_json::to_string_pretty(&v).unwrap_or_default(), v))
    })
}

/// Everything about a key except its hashes.
pub fn key_json(doc: &StoreDoc, k: &KeyDoc) -> Value {
    let meta = doc.key_meta.get(&k.id);
    json!({
        "key_id": k.id, "tenant": k.tenant, "sub_account": k.sub_account, "status": k.status,
        "name": meta.map(|m| m.name.as_str()),
        "created_at": meta.map(|m| m.created_at), "last_rotated_at": meta.and_then(|m| m.last_rotated_at),
        "previous_secret_valid_until": k.previous.as_ref().map(|p| p.valid_until),
        "expires_at": k.expires_at, "scopes": k.scopes, "models": k.models, "ip_allowlist": k.ip_allowlist,
        "quota": k.quota, "budget": k.budget,
    })
}

pub fn set_status(s: &Session, id: &str, status: Status) -> Result<Reply, AdminError> {
    let action = if status == Status::Disabled { "key.disable" } else { "key.enable" };
    s.mutate(Change::policy(action, Scope::Tenant, Target::key(id)), |d, _| policy::set_key_status(d, id, status))?;
    Ok(Reply::new(
        format!("key {id} {}; {}", status_str(status), s.apply_hint()),
        json!({"key_id": id, "status": status}),
    ))
}

pub fn delete(s: &Session, id: &str) -> Result<Reply, AdminError> {
    s.mutate(Change::policy("key.delete", Scope::Tenant, Target::key(id)), |d, _| {
        policy::key_mut(d, id)?;
        d.policy.keys.retain(|k| k.id != id);
        d.key_meta.remove(id);
        Ok(())
    })?;
    Ok(Reply::new(format!("key {id} deleted; {}", s.apply_hint()), json!({"key_id": id, "deleted": true})))
}

pub fn set_scopes(s: &Session, id: &str, scopes: &Scopes) -> Result<Reply, AdminError> {
    let doc_scopes = scopes.to_doc();
    let models = scopes.models();
    s.mutate(Change::policy("key.set-scopes", Scope::Tenant, Target::key(id)), |d, _| {
        let key = policy::key_mut(d, id)?;
        key.scopes = doc_scopes.clone();
        key.models = models.clone();
        policy::validate(d)
    })?;
    Ok(Reply::new(
        format!(
            "key {id} scopes set to {}, models {}; {}",
            scopes_text(doc_scopes.as_ref()),
            models_text(&models),
            s.apply_hint()
        ),
        json!({"key_id": id, "scopes": doc_scopes, "models": models}),
    ))
}

/// A model list for messages: "any" when empty.
pub fn models_text(models: &[String]) -> String {
    if models.is_empty() {
        "any".into()
    } else {
        models.join(",")
    }
}

/// `expires_in`: a duration from now, or `None` for never.
pub fn set_expiry(s: &Session, id: &str, expires_in: Option<&str>) -> Result<Reply, AdminError> {
    let at = expires_in.map(duration).transpose()?.map(|d| s.now.saturating_add(d));
    s.mutate(Change::policy("key.set-expiry", Scope::Tenant, Target::key(id)), |d, _| {
        policy::key_mut(d, id)?.expires_at = at;
        Ok(())
    })?;
    Ok(Reply::new(
        format!("key {id} expires {}; {}", if at.is_some() { date(at) } else { "never".into() }, s.apply_hint()),
        json!({"key_id": id, "expires_at": at}),
    ))
}

/// The incident response of the security page in one step: disable the key
/// (its previous secret too), publish at once, and show the key's history.
pub fn incident_revoke(s: &Session, id: &str) -> Result<Reply, AdminError> {
    let info = s.mutate(Change::new("incident.revoke", Scope::Tenant, Target::key(id)), |d, c| {
        policy::set_key_status(d, id, Status::Disabled)?;
        let info = publish::publish_configured(d, None, None, c.now)?;
        c.note = Some(format!("published version {}", info.published.version));
        Ok(info)
    })?;
    let filter = Filter { key_id: Some(id.into()), ..Filter::default() };
    let entries: Vec<_> =
        AuditLog::new(s.store.paths.audit()).entries()?.into_iter().filter(|e| filter.matches(e)).collect();
    let mut text = format!(
        "key {id} disabled and published (bundle version {}); Envoy refuses it as soon as it reloads the bundle\naudit trail of key {id}:",
        info.published.version
    );
    for e in &entries {
        text.push_str(&format!("\n{}", super::auditing::entry_line(e)));
    }
    text.push_str("\nnext: create a replacement with `tokenhub-admin key create`, then review the log with `tokenhub-admin audit search`");
    Ok(Reply::new(text, json!({"key_id": id, "status": "disabled", "published": info, "audit": entries})))
}
