//! Operations on the store document. Shared by the CLI and the admin HTTP
//! service; each validates its input and names what is wrong.

use super::{KeyMeta, StoreDoc, TenantMeta};
use crate::admin::{random_base62, AdminError};
use crate::core::apikey;
use crate::core::bundle::schema::*;
use crate::core::cidr::parse_cidr;
use crate::core::secret::{hash_secret, to_hex};
use zeroize::Zeroizing;

pub fn tenant<'a>(doc: &'a StoreDoc, id: &str) -> Result<&'a TenantDoc, AdminError> {
    doc.policy.tenants.iter().find(|t| t.id == id).ok_or_else(|| not_found("tenant", id))
}

pub fn tenant_mut<'a>(doc: &'a mut StoreDoc, id: &str) -> Result<&'a mut TenantDoc, AdminError> {
    doc.policy.tenants.iter_mut().find(|t| t.id == id).ok_or_else(|| not_found("tenant", id))
}

pub fn sub_account_mut<'a>(doc: &'a mut StoreDoc, tenant: &str, id: &str) -> Result<&'a mut SubAccountDoc, AdminError> {
    tenant_mut(doc, tenant)?
        .sub_accounts
        .iter_mut()
        .find(|s| s.id == id)
        .ok_or_else(|| not_found("sub-account", &format!("{tenant}/{id}")))
}

pub fn key_mut<'a>(doc: &'a mut StoreDoc, id: &str) -> Result<&'a mut KeyDoc, AdminError> {
    doc.policy.keys.iter_mut().find(|k| k.id == id).ok_or_else(|| not_found("key", id))
}

pub fn not_found(kind: &str, id: &str) -> AdminError {
    AdminError::NotFound(format!("no {kind} {id:?}; list them with `tokenhub-admin {} list`", kind.replace('-', "")))
}

/// The sub-account every tenant starts with, and the one a key or an
/// identity goes to when none is named.
pub const DEFAULT_SUB_ACCOUNT: &str = "default";

pub fn add_tenant(doc: &mut StoreDoc, id: &str, name: &str, region: &str, now: u64) -> Result<(), AdminError> {
    if doc.policy.tenants.iter().any(|t| t.id == id) {
        return Err(AdminError::Usage(format!("tenant {id:?} already exists")));
    }
    doc.policy.tenants.push(TenantDoc {
        id: id.into(),
        name: name.into(),
        region: region.into(),
        // Every tenant starts with a default sub-account, so a key can be
        // created at once; departments get their own with `subaccount add`.
        sub_accounts: vec![SubAccountDoc { id: DEFAULT_SUB_ACCOUNT.into(), ..Default::default() }],
        ..Default::default()
    });
    doc.tenant_meta.insert(id.into(), TenantMeta { created_at: now });
    validate(doc)
}

pub fn add_sub_account(doc: &mut StoreDoc, tenant: &str, id: &str) -> Result<(), AdminError> {
    let t = tenant_mut(doc, tenant)?;
    if t.sub_accounts.iter().any(|s| s.id == id) {
        return Err(AdminError::Usage(format!("sub-account {tenant}/{id} already exists")));
    }
    t.sub_accounts.push(SubAccountDoc { id: id.into(), ..Default::default() });
    validate(doc)
}

/// A newly created or rotated key: shown once, zeroized when dropped.
pub struct IssuedKey {
    pub key_id: String,
    pub key: Zeroizing<String>,
}

pub struct NewKey<'a> {
    pub tenant: &'a str,
    pub sub_account: &'a str,
    pub name: &'a str,
    pub expires_at: Option<u64>,
    pub scopes: Option<ScopesDoc>,
}

pub fn create_key(doc: &mut StoreDoc, new: NewKey<'_>, now: u64) -> Result<IssuedKey, AdminError> {
    let t = tenant(doc, new.tenant)?;
    if !t.sub_accounts.iter().any(|s| s.id == new.sub_account) {
        return Err(not_found("sub-account", &format!("{}/{}", new.tenant, new.sub_account)));
    }
    let key_id = loop {
        let id = random_base62(apikey::KEY_ID_LEN);
        if !doc.policy.keys.iter().any(|k| k.id == id) {
            break id;
        }
    };
    let secret = Zeroizing::new(random_base62(apikey::SECRET_LEN));
    let key = apikey::assemble(&key_id, &secret).ok_or_else(|| AdminError::Internal("key assembly failed".into()))?;
    doc.policy.keys.push(KeyDoc {
        id: key_id.clone(),
        tenant: new.tenant.into(),
        sub_account: new.sub_account.into(),
        hash: to_hex(&hash_secret(&key_id, &secret)),
        expires_at: new.expires_at,
        scopes: new.scopes,
        ..Default::default()
    });
    doc.key_meta.insert(key_id.clone(), KeyMeta { created_at: now, last_rotated_at: None, name: new.name.into() });
    validate(doc)?;
    Ok(IssuedKey { key_id, key: Zeroizing::new(key) })
}

/// New secret, same key id (quotas and audit follow the key); the previous
/// secret stays valid for `grace` seconds (0 = refused at once).
pub fn rotate_key(doc: &mut StoreDoc, id: &str, grace: u64, now: u64) -> Result<IssuedKey, AdminError> {
    let k = key_mut(doc, id)?;
    let secret = Zeroizing::new(random_base62(apikey::SECRET_LEN));
    let key = apikey::assemble(id, &secret).ok_or_else(|| AdminError::Internal("key assembly failed".into()))?;
    let old = std::mem::replace(&mut k.hash, to_hex(&hash_secret(id, &secret)));
    k.previous = (grace > 0).then(|| PreviousSecretDoc { hash: old, valid_until: now.saturating_add(grace) });
    doc.key_meta.entry(id.into()).or_default().last_rotated_at = Some(now);
    Ok(IssuedKey { key_id: id.into(), key: Zeroizing::new(key) })
}

pub fn set_key_status(doc: &mut StoreDoc, id: &str, status: Status) -> Result<(), AdminError> {
    let k = key_mut(doc, id)?;
    k.status = status;
    if status == Status::Disabled {
        // Incident response: the previous secret must not outlive a disable.
        k.previous = None;
    }
    Ok(())
}

/// Validates CIDRs before they reach the store, naming the bad one.
pub fn check_cidrs(cidrs: &[String]) -> Result<(), AdminError> {
    for c in cidrs {
        parse_cidr(c).map_err(|e| AdminError::Usage(e.to_string()))?;
    }
    Ok(())
}

pub struct ProviderSpec {
    pub id: String,
    pub path_prefix: String,
    pub header: String,
    pub format: String,
    /// `openai`, `anthropic` (their stateless endpoints under the path
    /// prefix, see `core::bundle::shared`) or `none`.
    pub shared_preset: Option<String>,
    /// More `"METHOD /path"` entries the platform's secret may serve.
    pub shared_endpoints: Vec<String>,
}

/// The endpoints the platform's secret may serve after a `provider set`:
/// what was asked for (a preset and/or entries); else what the provider
/// already had; else, for a new platform secret of a provider whose id
/// names a preset (`openai`, `anthropic`), that preset.
fn shared_endpoints_after(spec: &ProviderSpec, current: &[String], platform: bool) -> Result<Vec<String>, AdminError> {
    use crate::core::bundle::shared;
    let mut list = match spec.shared_preset.as_deref() {
        None | Some("none") => Vec::new(),
        Some(name) => shared::expand(
            &spec.path_prefix,
            shared::preset(name).ok_or_else(|| {
                AdminError::Usage(format!("unknown --shared-preset {name:?}: use openai, anthropic or none"))
            })?,
        ),
    };
    list.extend(spec.shared_endpoints.iter().map(|e| e.trim().to_string()));
    if spec.shared_preset.is_some() || !spec.shared_endpoints.is_empty() {
        return Ok(list);
    }
    if !current.is_empty() || !platform {
        return Ok(current.to_vec());
    }
    Ok(shared::preset(&spec.id).map(|p| shared::expand(&spec.path_prefix, p)).unwrap_or_default())
}

/// Sets a provider (route, header, format) and its secret: the platform's
/// default, or one tenant's own when `tenant` is given.
pub fn set_provider(
    doc: &mut StoreDoc,
    spec: ProviderSpec,
    tenant: Option<&str>,
    secret: Zeroizing<String>,
) -> Result<(), AdminError> {
    let existing = doc.policy.providers.iter_mut().find(|p| p.id == spec.id);
    let provider = match existing {
        Some(p) => p,
        None => {
            doc.policy.providers.push(ProviderDoc { id: spec.id.clone(), ..Default::default() });
            doc.policy.providers.last_mut().ok_or_else(|| AdminError::Internal("provider insert".into()))?
        }
    };
    provider.shared_endpoints = shared_endpoints_after(&spec, &provider.shared_endpoints, tenant.is_none())?;
    provider.path_prefix = spec.path_prefix;
    // Header names are case-insensitive; Envoy's are lower case.
    provider.header = spec.header.to_ascii_lowercase();
    provider.format = spec.format;
    match tenant {
        None => provider.secret = Some(Secret::from(secret.as_str())),
        Some(t) => {
            tenant_mut(doc, t)?.provider_secrets.insert(spec.id, Secret::from(secret.as_str()));
        }
    }
    validate(doc)
}

/// The filter's own validation, so the store never holds what could not be
/// published. Secrets never appear in its messages.
pub fn validate(doc: &StoreDoc) -> Result<(), AdminError> {
    crate::core::bundle::compile(&doc.policy).map(|_| ()).map_err(AdminError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_header_is_stored_lower_case_whoever_gave_it() {
        let mut doc = StoreDoc::default();
        doc.policy.schema = SCHEMA_VERSION;
        let spec = ProviderSpec {
            id: "openai".into(),
            path_prefix: "/v1/".into(),
            header: "X-Api-Key".into(),
            format: "{secret}".into(),
            shared_preset: None,
            shared_endpoints: vec![],
        };
        set_provider(&mut doc, spec, None, Zeroizing::new("s".into())).unwrap();
        assert_eq!(doc.policy.providers[0].header, "x-api-key");
    }
}
