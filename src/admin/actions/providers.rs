//! Upstream providers: the route prefix, the header and format to inject,
//! and the secret (the platform's default, or a tenant's own). Secrets come
//! from stdin, a file, or the API body; they are never echoed back.

use super::render::table;
use super::Reply;
use crate::admin::audit::Target;
use crate::admin::session::{Change, Scope, Session};
use crate::admin::store::policy::{self, ProviderSpec};
use crate::admin::AdminError;
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Defining a provider changes every tenant's routing, so it is the
/// platform's; so is each tenant's own upstream secret (billing).
pub fn set(
    s: &Session,
    spec: ProviderSpec,
    tenant: Option<&str>,
    secret: Zeroizing<String>,
) -> Result<Reply, AdminError> {
    let id = spec.id.clone();
    s.mutate(Change::policy("provider.set", Scope::Platform, Target::provider(&id, tenant)), |d, _| {
        policy::set_provider(d, spec, tenant, secret)
    })?;
    let whose = tenant.map_or("platform default".to_string(), |t| format!("tenant {t}'s own"));
    Ok(Reply::new(
        format!("provider {id} set ({whose} secret); {}", s.apply_hint()),
        json!({"provider": id, "tenant": tenant}),
    ))
}

pub fn list(s: &Session) -> Result<Reply, AdminError> {
    s.read(Scope::Anyone, Target::default(), |doc, who| {
        let rows: Vec<Value> = doc
            .policy
            .providers
            .iter()
            .map(|p| {
                // A tenant admin learns whether its own tenant brings a secret, not others.
                let own: Vec<&String> = doc
                    .policy
                    .tenants
                    .iter()
                    .filter(|t| who.sees(Some(&t.id)) && t.provider_secrets.contains_key(&p.id))
                    .map(|t| &t.id)
                    .collect();
                json!({"id": p.id, "path_prefix": p.path_prefix, "header": p.header, "format": p.format,
                       "has_default_secret": p.secret.is_some(), "shared_endpoints": p.shared_endpoints,
                       "tenants_with_own_secret": own})
            })
            .collect();
        let text_rows: Vec<Vec<String>> = doc
            .policy
            .providers
            .iter()
            .map(|p| {
                vec![
                    p.id.clone(),
                    p.path_prefix.clone(),
                    p.header.clone(),
                    p.format.clone(),
                    if p.secret.is_some() { "set" } else { "-" }.into(),
                ]
            })
            .collect();
        let text = table(&["PROVIDER", "PATH PREFIX", "HEADER", "FORMAT", "DEFAULT SECRET"], &text_rows);
        Ok(Reply::new(text, Value::Array(rows)))
    })
}

pub fn remove(s: &Session, id: &str) -> Result<Reply, AdminError> {
    s.mutate(Change::policy("provider.remove", Scope::Platform, Target::provider(id, None)), |d, _| {
        if !d.policy.providers.iter().any(|p| p.id == id) {
            return Err(AdminError::NotFound(format!("no provider {id:?}")));
        }
        d.policy.providers.retain(|p| p.id != id);
        // Its prices go with it.
        d.policy.prices.retain(|p| p.provider != id);
        for t in &mut d.policy.tenants {
            t.provider_secrets.remove(id);
        }
        Ok(())
    })?;
    Ok(Reply::new(format!("provider {id} removed; {}", s.apply_hint()), json!({"provider": id, "removed": true})))
}
