//! OIDC identities (Google, GitHub, Microsoft…) mapped to a tenant and
//! sub-account. Envoy's `jwt_authn` verifies the token; the guard maps its
//! (issuer, claim value) through these entries and applies the same IP,
//! tenant, scope and quota rules as for an API key.

use super::keys::Scopes;
use super::render::table;
use super::Reply;
use crate::admin::audit::Target;
use crate::admin::session::{Change, Scope, Session};
use crate::admin::store::policy;
use crate::admin::AdminError;
use crate::core::bundle::schema::OidcPrincipalDoc;
use serde_json::json;

/// An identity mapped to a tenant's sub-account, with its scopes.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// The token issuer (`iss`), e.g. https://accounts.google.com.
    pub issuer: String,
    /// The claim that identifies the person or workload (`sub`, `email`…).
    pub claim: String,
    /// The claim's value, e.g. the subject id or the email address.
    pub value: String,
    pub tenant: String,
    pub sub_account: String,
    pub scopes: Scopes,
}

/// Maps an identity (replacing an existing mapping of the same identity).
pub fn map(s: &Session, a: &Mapping) -> Result<Reply, AdminError> {
    let target = Target::sub_account(&a.tenant, &a.sub_account);
    s.mutate(Change::policy("oidc.map", Scope::Tenant, target), |d, c| {
        // Replacing another tenant's mapping moves that identity away from
        // it: the actor must be allowed to act on the old owner too, and
        // the old owner's admins see it in their audit view either way.
        let previous: Vec<String> = d
            .policy
            .oidc
            .iter()
            .filter(|o| o.issuer == a.issuer && o.claim == a.claim && o.value == a.value && o.tenant != a.tenant)
            .map(|o| o.tenant.clone())
            .collect();
        for owner in previous {
            c.also_tenants.push(owner.clone());
            if !c.actor.sees(Some(&owner)) {
                return Err(AdminError::Forbidden(format!(
                    "{} {}={} is mapped to another tenant; only an admin of that tenant (or a platform admin) may move it: ask them to `oidc unmap` it first",
                    a.issuer, a.claim, a.value
                )));
            }
        }
        d.policy.oidc.retain(|o| !(o.issuer == a.issuer && o.claim == a.claim && o.value == a.value));
        d.policy.oidc.push(OidcPrincipalDoc {
            issuer: a.issuer.clone(),
            claim: a.claim.clone(),
            value: a.value.clone(),
            tenant: a.tenant.clone(),
            sub_account: a.sub_account.clone(),
            scopes: a.scopes.to_doc(),
        });
        policy::validate(d)
    })?;
    Ok(Reply::new(
        format!("{} {}={} maps to {}/{}; {}", a.issuer, a.claim, a.value, a.tenant, a.sub_account, s.apply_hint()),
        json!({"issuer": a.issuer, "claim": a.claim, "value": a.value, "tenant": a.tenant, "sub_account": a.sub_account}),
    ))
}

/// A mapped identity: issuer and claim value.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub issuer: String,
    pub claim: String,
    pub value: String,
}

pub fn unmap(s: &Session, a: &Identity) -> Result<Reply, AdminError> {
    // Only a mapping the admin may see is found: another tenant's is "not
    // found", as its keys are.
    let tenant = s.read(Scope::Anyone, Target::default(), |doc, who| {
        doc.policy
            .oidc
            .iter()
            .filter(|o| who.sees(Some(&o.tenant)))
            .find(|o| o.issuer == a.issuer && o.claim == a.claim && o.value == a.value)
            .map(|o| o.tenant.clone())
            .ok_or_else(|| AdminError::NotFound(format!("no mapping for {} {}={}", a.issuer, a.claim, a.value)))
    })?;
    s.mutate(Change::policy("oidc.unmap", Scope::Tenant, Target::tenant(&tenant)), |d, _| {
        d.policy.oidc.retain(|o| !(o.issuer == a.issuer && o.claim == a.claim && o.value == a.value));
        Ok(())
    })?;
    Ok(Reply::new(format!("mapping removed; {}", s.apply_hint()), json!({"removed": true})))
}

pub fn list(s: &Session) -> Result<Reply, AdminError> {
    s.read(Scope::Anyone, Target::default(), |doc, who| {
        let visible: Vec<&OidcPrincipalDoc> = doc.policy.oidc.iter().filter(|o| who.sees(Some(&o.tenant))).collect();
        let rows: Vec<Vec<String>> = visible
            .iter()
            .map(|o| {
                vec![o.issuer.clone(), format!("{}={}", o.claim, o.value), format!("{}/{}", o.tenant, o.sub_account)]
            })
            .collect();
        Ok(Reply::new(table(&["ISSUER", "IDENTITY", "TENANT/SUB-ACCOUNT"], &rows), json!(visible)))
    })
}
