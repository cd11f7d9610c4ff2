//! Data-protection requests (GDPR): everything the store, the audit log and
//! (optionally) an access log hold about one tenant, as one JSON document
//! (`docs/tenant-export.schema.json`). Never a secret: keys by id and
//! metadata (no hash), provider secrets by provider id, admins without 2FA
//! seeds, recovery codes or token hashes.

use super::admins::admin_json;
use super::keys::key_json;
use super::tenants::tenant_json;
use super::Reply;
use crate::admin::audit::{rfc3339, AuditLog, Target};
use crate::admin::session::{Change, Scope, Session};
use crate::admin::store::{policy, StoreDoc};
use crate::admin::{fsutil, AdminError};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;

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
    Ok(report(lines, &UsageFilter { tenant: Some(tenant.into()), ..UsageFilter::default() }).to_json())
}
