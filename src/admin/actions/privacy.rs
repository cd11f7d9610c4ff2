//! Data-protection requests (GDPR): everything the store, the audit log and
//! (optionally) an access log hold about one tenant, as one JSON document
//! (`docs/tenant-export.schema.json`). Never a secret: keys by id and
//! metadata (no hash), provider secrets by provider id, admins without 2FA
//! seeds, recovery codes or token hashes.
//!
//! Erasure (`tenant erase`, `admin erase`): the tenant or admin leaves the
//! store (and so the next bundle), its provider secrets are overwritten in
//! memory and gone from the store, and every audit line about it keeps its
//! place in the chain with its personal fields replaced by `[erased]`
//! (`AuditLog::erase`). The erase line itself names nobody.

use super::admins::admin_json;
use super::keys::key_json;
use super::tenants::tenant_json;
use super::Reply;
use crate::admin::audit::{rfc3339, AuditLog, Subject, Target};
use crate::admin::session::{Change, Scope, Session};
use crate::admin::store::{policy, Store, StoreDoc};
use crate::admin::{fsutil, AdminError};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The export's format tag; a reader refuses another.
pub const EXPORT_FORMAT: &str = "tokenhub.tenant-export/1";

/// Exports tenant `id` (its platform admin or its own tenant admins, with
/// 2FA; audited as `tenant.export`): to `out` (written atomically, 0600: it
/// holds personal data) or in the reply.
pub fn export(s: &Session, id: &str, access_log: Option<&Path>, out: Option<&Path>) -> Result<Reply, AdminError> {
    let document = s.mutate(Change::new("tenant.export", Scope::Tenant, Target::tenant(id)), |doc, _| {
        document(s, doc, id, access_log)
    })?;
    let Some(out) = out else {
        return Ok(Reply::new(serde_json::to_string_pretty(&document).unwrap_or_default(), document));
    };
    let text = serde_json::to_string_pretty(&document).map_err(|e| AdminError::Io(e.to_string()))?;
    fsutil::write_atomic(out, text.as_bytes(), 0o600).map_err(|e| AdminError::io(out, e))?;
    let count = |field: &str| document[field].as_array().map_or(0, Vec::len);
    Ok(Reply::new(
        format!(
            "tenant {id} exported to {} (mode 0600): {} keys, {} admins, {} OIDC mappings, {} audit lines",
            out.display(),
            count("keys"),
            count("admins"),
            count("oidc_mappings"),
            count("audit")
        ),
        json!({"tenant": id, "file": out, "format": EXPORT_FORMAT}),
    ))
}

fn document(s: &Session, doc: &StoreDoc, id: &str, access_log: Option<&Path>) -> Result<Value, AdminError> {
    let tenant = policy::tenant(doc, id)?;
    let admins: Vec<_> = doc.admins.iter().filter(|a| a.tenant.as_deref() == Some(id)).collect();
    let names: BTreeSet<&str> = admins.iter().map(|a| a.name.as_str()).collect();
    // The tenant's own lines, and every line its admins wrote.
    let audit: Vec<Value> = AuditLog::new(s.store.paths.audit())
        .entries()?
        .into_iter()
        .filter(|e| e.target.tenant.as_deref() == Some(id) || names.contains(e.actor.as_str()))
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    Ok(json!({
        "format": EXPORT_FORMAT,
        "exported_at": rfc3339(s.now),
        "tenant": tenant_json(doc, tenant),
        "keys": doc.policy.keys.iter().filter(|k| k.tenant == id).map(|k| key_json(doc, k)).collect::<Vec<_>>(),
        "oidc_mappings": doc.policy.oidc.iter().filter(|o| o.tenant == id).collect::<Vec<_>>(),
        "admins": admins.iter().map(|a| admin_json(a, s.now)).collect::<Vec<_>>(),
        "audit": audit,
        "usage": access_log.map(|path| usage(path, id)).transpose()?,
    }))
}

/// The tenant's rows of an access log's usage report.
fn usage(path: &Path, tenant: &str) -> Result<Value, AdminError> {
    use crate::admin::usage::{report, UsageFilter};
    let file = std::fs::File::open(path).map_err(|e| AdminError::io(path, e))?;
    let lines = std::io::BufReader::new(file).lines().map_while(Result::ok);
    let filter = UsageFilter { tenant: Some(tenant.into()), ..UsageFilter::default() };
    Ok(report(lines, &filter, Default::default()).to_json())
}

/// Refuses an erasure whose `--confirm` does not repeat the name.
fn confirmed(kind: &str, id: &str, confirm: &str) -> Result<(), AdminError> {
    if confirm == id {
        return Ok(());
    }
    Err(AdminError::Usage(format!(
        "erasing {kind} {id:?} cannot be undone: confirm it by repeating its name, `--confirm {id}` (over HTTP: {{\"confirm\": \"{id}\"}})"
    )))
}

/// Erases tenant `id` (platform admin, 2FA, `confirm` = `id`): its
/// sub-accounts, keys, allowlists, quotas, model lists, provider secrets,
/// OIDC mappings and tenant admins leave the store, then its audit lines
/// are erased. A tenant no longer in the store (an erasure interrupted
/// after its commit) has its audit lines erased again.
pub fn erase_tenant(s: &Session, id: &str, confirm: &str, access_logs: &[PathBuf]) -> Result<Reply, AdminError> {
    confirmed("tenant", id, confirm)?;
    // The line names no one: target empty, counts only.
    let change = Change::policy("tenant.erase", Scope::Platform, Target::default());
    // Absent from the store, only an interrupted erasure's audit lines are
    // left to erase; a name found nowhere is a typo, refused before the
    // change so that no audit line records the name. (A tenant admin is
    // refused, and audited, by the change itself.)
    let known = s.read(Scope::Platform, Target::default(), |d, _| {
        Ok(policy::tenant(d, id).is_ok()
            || AuditLog::new(s.store.paths.audit()).entries()?.iter().any(|e| e.target.tenant.as_deref() == Some(id)))
    });
    if let Ok(false) = known {
        return Err(policy::not_found("tenant", id));
    }
    let (subject, removed) = s.mutate(change, |d, c| {
        let subject = remove_tenant(d, id);
        let removed = json!({"keys": subject.key_ids.len(), "admins": subject.admins.len()});
        c.note = Some(format!("a tenant erased ({} keys, {} admins)", subject.key_ids.len(), subject.admins.len()));
        Ok((subject, removed))
    })?;
    let lines = erase_lines(s.store, &subject, s.now)?;
    let (logs, warnings) = drop_from_access_logs(id, access_logs);
    let mut reply = Reply::new(
        format!(
            "tenant {id} erased: {} keys and {} admins removed from the store, {lines} audit lines made unreadable{}; {}",
            removed["keys"],
            removed["admins"],
            if access_logs.is_empty() {
                String::new()
            } else {
                format!(", its lines dropped from {} of {} access logs", access_logs.len() - warnings.len(), access_logs.len())
            },
            s.apply_hint()
        ),
        json!({"tenant": id, "erased": true, "removed": removed, "audit_lines_erased": lines, "access_logs": logs}),
    );
    if access_logs.is_empty() {
        reply = reply.warn(format!(
            "no access log was given (--access-log): the tenant's lines in Envoy's access logs stay until the retention drops them; run `tokenhub-admin logs prune --access-log FILE --drop-tenant {id}` on the rotated files"
        ));
    }
    for w in warnings {
        reply = reply.warn(w);
    }
    Ok(reply)
}

/// Drops every line of an erased tenant from the given (rotated) access
/// logs, touching nothing else; a file that cannot be pruned (Envoy's live
/// log, a missing file) is named with the reason and the fix, and the
/// erasure stands.
fn drop_from_access_logs(id: &str, files: &[PathBuf]) -> (Vec<Value>, Vec<String>) {
    use crate::admin::retention::{prune_file, Retention};
    let keep_all = Retention { retain_days: u64::MAX, truncate_ips_after_days: None, ..Retention::default() };
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for file in files {
        match prune_file(file, &keep_all, Some(id)) {
            Ok(stats) => out.push(json!({"file": file, "lines_dropped": stats.erased})),
            Err(e) => {
                warnings.push(format!(
                    "{}: the tenant's lines were not dropped ({e}); once it is rotated, run `tokenhub-admin logs prune --access-log FILE --drop-tenant {id}` on it",
                    file.display()
                ));
                out.push(json!({"file": file, "error": e.to_string()}));
            }
        }
    }
    (out, warnings)
}

/// Removes everything of tenant `id` from the document; returns what its
/// audit lines name (its key ids and admins).
fn remove_tenant(d: &mut StoreDoc, id: &str) -> Subject {
    let mut subject = Subject { tenant: Some(id.into()), ..Subject::default() };
    // Its provider secrets zero themselves as they are dropped.
    d.policy.tenants.retain(|t| t.id != id);
    subject.key_ids = d.policy.keys.iter().filter(|k| k.tenant == id).map(|k| k.id.clone()).collect();
    d.policy.keys.retain(|k| k.tenant != id);
    d.key_meta.retain(|k, _| !subject.key_ids.contains(k));
    d.policy.oidc.retain(|o| o.tenant != id);
    d.tenant_meta.remove(id);
    subject.admins = d.admins.iter().filter(|a| a.tenant.as_deref() == Some(id)).map(|a| a.name.clone()).collect();
    d.admins.retain(|a| a.tenant.as_deref() != Some(id));
    subject
}

/// Erases admin account `name` (platform admin, 2FA, `confirm` = `name`;
/// never the last platform admin): the account leaves the store, then every
/// audit line it wrote or that names it is erased.
pub fn erase_admin(s: &Session, name: &str, confirm: &str) -> Result<Reply, AdminError> {
    use super::admins::{keeps_a_platform_admin, last_admin_error};
    confirmed("admin", name, confirm)?;
    let known = s.read(Scope::Platform, Target::default(), |d, _| {
        Ok(crate::admin::store::admins::find(&d.admins, name).is_some()
            || AuditLog::new(s.store.paths.audit())
                .entries()?
                .iter()
                .any(|e| e.actor == name || e.target.admin.as_deref() == Some(name)))
    });
    if let Ok(false) = known {
        return Err(policy::not_found("admin", name));
    }
    s.mutate(Change::new("admin.erase", Scope::Platform, Target::default()), |d, c| {
        if c.actor.name == name {
            return Err(AdminError::Usage("an admin cannot erase itself: ask another platform admin".into()));
        }
        if !keeps_a_platform_admin(d, |admins| admins.retain(|a| a.name != name)) {
            return Err(last_admin_error(name));
        }
        d.admins.retain(|a| a.name != name);
        c.note = Some("an admin erased".into());
        Ok(())
    })?;
    let subject = Subject { admins: BTreeSet::from([name.to_string()]), ..Subject::default() };
    let lines = erase_lines(s.store, &subject, s.now)?;
    Ok(Reply::new(
        format!("admin {name} erased: removed from the store, {lines} audit lines made unreadable"),
        json!({"admin": name, "erased": true, "audit_lines_erased": lines}),
    ))
}

/// Erases `subject`'s audit lines under the store lock, after the store
/// change is committed (a crash in between: run the erase again).
fn erase_lines(store: &Store, subject: &Subject, now: u64) -> Result<usize, AdminError> {
    store.locked(|store| {
        let mut audit = store.load()?.audit.clone();
        let key = audit.key_bytes()?;
        AuditLog::new(store.paths.audit()).erase(&key, subject, now)
    })?
}
