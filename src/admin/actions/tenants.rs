//! Tenants (the unit of isolation) and their sub-accounts (departments).

use super::render::{quota_text, status_str, table};
use super::Reply;
use crate::admin::audit::Target;
use crate::admin::retention::{DEFAULT_RETAIN_DAYS, DEFAULT_TRUNCATE_IPS_AFTER_DAYS};
use crate::admin::session::{Change, Scope, Session};
use crate::admin::store::policy;
use crate::admin::store::StoreDoc;
use crate::admin::AdminError;
use crate::core::bundle::schema::{LogRetentionDoc, Status, TenantDoc};
use serde_json::{json, Value};

pub fn add(s: &Session, id: &str, name: &str, region: &str) -> Result<Reply, AdminError> {
    s.mutate(Change::policy("tenant.add", Scope::Platform, Target::tenant(id)), |d, c| {
        policy::add_tenant(d, id, name, region, c.now)
    })?;
    Ok(Reply::new(format!("tenant {id} added (with sub-account default); {}", s.apply_hint()), json!({"tenant": id})))
}

pub fn list(s: &Session) -> Result<Reply, AdminError> {
    s.read(Scope::Anyone, Target::default(), |doc, who| {
        let visible: Vec<&TenantDoc> = doc.policy.tenants.iter().filter(|t| who.sees(Some(&t.id))).collect();
        let rows: Vec<Vec<String>> = visible
            .iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    status_str(t.status).into(),
                    t.region.clone(),
                    t.sub_accounts.len().to_string(),
                    doc.policy.keys.iter().filter(|k| k.tenant == t.id).count().to_string(),
                    quota_text(t.quota.as_ref()),
                ]
            })
            .collect();
        let text = table(&["TENANT", "STATUS", "REGION", "SUBS", "KEYS", "QUOTA"], &rows);
        Ok(Reply::new(text, Value::Array(visible.iter().map(|t| tenant_json(doc, t)).collect())))
    })
}

pub fn show(s: &Session, id: &str) -> Result<Reply, AdminError> {
    s.read(Scope::Tenant, Target::tenant(id), |doc, _| {
        let v = tenant_json(doc, policy::tenant(doc, id)?);
        Ok(Reply::new(serde_json::to_string_pretty(&v).unwrap_or_default(), v))
    })
}

pub fn set_status(s: &Session, id: &str, status: Status) -> Result<Reply, AdminError> {
    let action = if status == Status::Disabled { "tenant.disable" } else { "tenant.enable" };
    s.mutate(Change::policy(action, Scope::Platform, Target::tenant(id)), |d, _| {
        policy::tenant_mut(d, id)?.status = status;
        Ok(())
    })?;
    Ok(Reply::new(
        format!("tenant {id} {}; {}", status_str(status), s.apply_hint()),
        json!({"tenant": id, "status": status}),
    ))
}

pub fn set_region(s: &Session, id: &str, region: &str) -> Result<Reply, AdminError> {
    s.mutate(Change::policy("tenant.set-region", Scope::Platform, Target::tenant(id)), |d, _| {
        policy::tenant_mut(d, id)?.region = region.into();
        policy::validate(d)
    })?;
    Ok(Reply::new(
        format!("tenant {id} region set to {region}; {}", s.apply_hint()),
        json!({"tenant": id, "region": region}),
    ))
}

/// Whether the tenant's provider gets the client's address
/// (`x-forwarded-for`); off by default (GDPR minimisation).
pub fn set_client_address(s: &Session, id: &str, forward: bool) -> Result<Reply, AdminError> {
    s.mutate(Change::policy("tenant.set-client-address", Scope::Platform, Target::tenant(id)), |d, _| {
        policy::tenant_mut(d, id)?.forward_client_address = forward;
        Ok(())
    })?;
    let what = if forward { "forwarded to its provider" } else { "withheld from its provider" };
    Ok(Reply::new(
        format!("tenant {id}: client address {what}; {}", s.apply_hint()),
        json!({"tenant": id, "forward_client_address": forward}),
    ))
}

/// The tenant's access-log retention (`None` fields: the platform's
/// defaults); `truncate_ips_after_days: 0` makes the gateway log only the
/// network of its clients' addresses (after publish).
pub fn set_log_retention(s: &Session, id: &str, rules: LogRetentionDoc) -> Result<Reply, AdminError> {
    if rules.retain_days == Some(0) {
        return Err(AdminError::Usage(
            "retain_days: 0 would drop every line at once; give at least 1 day, or leave it out for the platform's default".into(),
        ));
    }
    let set = (rules != LogRetentionDoc::default()).then_some(rules);
    s.mutate(Change::policy("tenant.set-log-retention", Scope::Platform, Target::tenant(id)), |d, _| {
        policy::tenant_mut(d, id)?.log_retention = set;
        Ok(())
    })?;
    let days =
        |d: Option<u64>, default: u64| d.map_or(format!("{default} days (platform default)"), |d| format!("{d} days"));
    let cut = if rules.truncates_at_write() {
        "cut to their network when written (the gateway logs no full address)".to_string()
    } else {
        format!("cut to their network after {}", days(rules.truncate_ips_after_days, DEFAULT_TRUNCATE_IPS_AFTER_DAYS))
    };
    Ok(Reply::new(
        format!(
            "tenant {id}: access-log lines kept {}, client addresses {cut}; {}",
            days(rules.retain_days, DEFAULT_RETAIN_DAYS),
            s.apply_hint()
        ),
        json!({"tenant": id, "log_retention": set}),
    ))
}

/// Replaces the models a tenant (`sub = None`) or one of its sub-accounts
/// may use: exact names or `prefix*`; empty = any model.
pub fn set_models(s: &Session, tenant: &str, sub: Option<&str>, models: &[String]) -> Result<Reply, AdminError> {
    let models: Vec<String> = models.iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
    let (action, scope, target, what) = match sub {
        None => ("tenant.set-models", Scope::Platform, Target::tenant(tenant), format!("tenant {tenant}")),
        Some(id) => (
            "subaccount.set-models",
            Scope::Tenant,
            Target::sub_account(tenant, id),
            format!("sub-account {tenant}/{id}"),
        ),
    };
    s.mutate(Change::policy(action, scope, target), |d, _| {
        match sub {
            None => policy::tenant_mut(d, tenant)?.models = models.clone(),
            Some(id) => policy::sub_account_mut(d, tenant, id)?.models = models.clone(),
        }
        policy::validate(d)
    })?;
    Ok(Reply::new(
        format!("{what} models set to {}; {}", super::keys::models_text(&models), s.apply_hint()),
        json!({"tenant": tenant, "sub_account": sub, "models": models}),
    ))
}

/// A tenant without secrets: provider secrets are shown by provider id only.
pub fn tenant_json(doc: &StoreDoc, t: &TenantDoc) -> Value {
    json!({
        "id": t.id, "name": t.name, "status": t.status, "region": t.region,
        "forward_client_address": t.forward_client_address, "log_retention": t.log_retention,
        "models": t.models,
        "ip_allowlist": t.ip_allowlist, "quota": t.quota, "budget": t.budget,
        "own_provider_secrets": t.provider_secrets.keys().collect::<Vec<_>>(),
        "sub_accounts": t.sub_accounts,
        "keys": doc.policy.keys.iter().filter(|k| k.tenant == t.id).count(),
        "created_at": doc.tenant_meta.get(&t.id).map(|m| m.created_at),
    })
}

pub fn sub_add(s: &Session, tenant: &str, id: &str) -> Result<Reply, AdminError> {
    s.mutate(Change::policy("subaccount.add", Scope::Tenant, Target::sub_account(tenant, id)), |d, _| {
        policy::add_sub_account(d, tenant, id)
    })?;
    Ok(Reply::new(format!("sub-account {tenant}/{id} added"), json!({"tenant": tenant, "sub_account": id})))
}

pub fn sub_list(s: &Session, tenant: &str) -> Result<Reply, AdminError> {
    s.read(Scope::Tenant, Target::tenant(tenant), |doc, _| {
        let t = policy::tenant(doc, tenant)?;
        let rows: Vec<Vec<String>> = t
            .sub_accounts
            .iter()
            .map(|sa| {
                let keys = doc.policy.keys.iter().filter(|k| k.tenant == t.id && k.sub_account == sa.id).count();
                let ips = sa.ip_allowlist.as_ref().filter(|l| l.enabled).map_or("-".into(), |l| l.cidrs.join(","));
                vec![sa.id.clone(), status_str(sa.status).into(), keys.to_string(), quota_text(sa.quota.as_ref()), ips]
            })
            .collect();
        let text = table(&["SUB-ACCOUNT", "STATUS", "KEYS", "QUOTA", "IP ALLOWLIST"], &rows);
        Ok(Reply::new(text, json!(t.sub_accounts)))
    })
}

pub fn sub_set_status(s: &Session, tenant: &str, id: &str, status: Status) -> Result<Reply, AdminError> {
    let action = if status == Status::Disabled { "subaccount.disable" } else { "subaccount.enable" };
    s.mutate(Change::policy(action, Scope::Tenant, Target::sub_account(tenant, id)), |d, _| {
        policy::sub_account_mut(d, tenant, id)?.status = status;
        Ok(())
    })?;
    Ok(Reply::new(
        format!("sub-account {tenant}/{id} {}; {}", status_str(status), s.apply_hint()),
        json!({"tenant": tenant, "sub_account": id, "status": status}),
    ))
}
