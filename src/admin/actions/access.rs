//! Per tenant, sub-account or key: IP allowlists (CIDR, v4 and v6) and
//! quotas (requests per minute and per day). A request must pass every
//! level, so a lower level can only narrow what the level above allows.

use super::render::quota_text;
use super::Reply;
use crate::admin::audit::Target;
use crate::admin::ops;
use crate::admin::session::{Op, Scope, Session};
use crate::admin::store::StoreDoc;
use crate::admin::AdminError;
use crate::core::bundle::schema::{IpAllowlistDoc, QuotaDoc, QuotaMode};
use serde::Deserialize;
use serde_json::json;

/// Which object a command is about: a tenant, one of its sub-accounts, or a key.
#[derive(clap::Args, Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetArgs {
    #[arg(long, required_unless_present = "key")]
    pub tenant: Option<String>,
    #[arg(long, requires = "tenant")]
    pub sub_account: Option<String>,
    #[arg(long, conflicts_with_all = ["tenant", "sub_account"])]
    pub key: Option<String>,
}

impl TargetArgs {
    fn audit_target(&self) -> Result<Target, AdminError> {
        match (&self.key, &self.tenant, &self.sub_account) {
            (Some(k), None, None) => Ok(Target::key(k)),
            (None, Some(t), Some(s)) => Ok(Target::sub_account(t, s)),
            (None, Some(t), None) => Ok(Target::tenant(t)),
            _ => Err(AdminError::Usage("give --tenant, --tenant with --sub-account, or --key".into())),
        }
    }

    fn is_tenant_level(&self) -> bool {
        self.key.is_none() && self.sub_account.is_none()
    }

    fn describe(&self) -> String {
        match (&self.key, &self.tenant, &self.sub_account) {
            (Some(k), _, _) => format!("key {k}"),
            (None, Some(t), Some(s)) => format!("sub-account {t}/{s}"),
            (None, Some(t), None) => format!("tenant {t}"),
            _ => "nothing".into(),
        }
    }
}

/// The allowlist slot a target names.
fn allowlist_mut<'a>(doc: &'a mut StoreDoc, t: &TargetArgs) -> Result<&'a mut Option<IpAllowlistDoc>, AdminError> {
    match (&t.key, &t.tenant, &t.sub_account) {
        (Some(k), _, _) => Ok(&mut ops::key_mut(doc, k)?.ip_allowlist),
        (None, Some(tenant), Some(sub)) => Ok(&mut ops::sub_account_mut(doc, tenant, sub)?.ip_allowlist),
        (None, Some(tenant), None) => Ok(&mut ops::tenant_mut(doc, tenant)?.ip_allowlist),
        (None, None, _) => Err(AdminError::Usage("give --tenant [--sub-account] or --key".into())),
    }
}

fn quota_mut<'a>(doc: &'a mut StoreDoc, t: &TargetArgs) -> Result<&'a mut Option<QuotaDoc>, AdminError> {
    match (&t.key, &t.tenant, &t.sub_account) {
        (Some(k), _, _) => Ok(&mut ops::key_mut(doc, k)?.quota),
        (None, Some(tenant), Some(sub)) => Ok(&mut ops::sub_account_mut(doc, tenant, sub)?.quota),
        (None, Some(tenant), None) => Ok(&mut ops::tenant_mut(doc, tenant)?.quota),
        (None, None, _) => Err(AdminError::Usage("give --tenant [--sub-account] or --key".into())),
    }
}

/// How an `ip` command changes a list.
#[derive(Debug, Clone, Copy)]
pub enum IpChange<'a> {
    Allow(&'a [String]),
    Deny(&'a [String]),
    Enabled(bool),
}

impl IpChange<'_> {
    fn action(&self) -> &'static str {
        match self {
            Self::Allow(_) => "ip.allow",
            Self::Deny(_) => "ip.deny",
            Self::Enabled(true) => "ip.enable",
            Self::Enabled(false) => "ip.disable",
        }
    }

    fn apply(&self, l: &mut IpAllowlistDoc) {
        match self {
            Self::Allow(cidrs) => {
                l.enabled = true;
                for c in cidrs.iter() {
                    if !l.cidrs.contains(c) {
                        l.cidrs.push(c.clone());
                    }
                }
            }
            Self::Deny(cidrs) => l.cidrs.retain(|c| !cidrs.contains(c)),
            Self::Enabled(on) => l.enabled = *on,
        }
    }
}

pub fn ip_change(s: &Session, target: &TargetArgs, change: IpChange<'_>) -> Result<Reply, AdminError> {
    if let IpChange::Allow(cidrs) = change {
        ops::check_cidrs(cidrs)?;
    }
    let op = Op::policy(change.action(), Scope::Tenant, target.audit_target()?);
    let list = s.mutate(op, |d, c| {
        let slot = allowlist_mut(d, target)?;
        let mut list = slot.clone().unwrap_or_default();
        change.apply(&mut list);
        *slot = Some(list.clone());
        ops::validate(d)?;
        c.note = Some(format!("enabled={} cidrs={}", list.enabled, list.cidrs.join(",")));
        Ok(list)
    })?;
    let mut reply = Reply::new(
        format!(
            "{} allowlist: {} {}; {}",
            target.describe(),
            if list.enabled { "enabled" } else { "disabled" },
            list.cidrs.join(","),
            s.apply_hint()
        ),
        json!(list),
    );
    if list.enabled && list.cidrs.is_empty() {
        reply =
            reply.warn(format!("this allowlist is enabled and empty: {} now refuses every address", target.describe()));
    } else {
        let locked_out = s.read(Scope::Anyone, Target::default(), |doc, _| Ok(locked_out(doc, target)))?;
        if !locked_out.is_empty() {
            reply = reply.warn(format!(
                "no address is in every enabled allowlist (tenant, sub-account and key) of: {}",
                locked_out.join(", ")
            ));
        }
    }
    Ok(reply)
}

/// The sub-accounts and keys under `target` that no address can reach:
/// their enabled allowlists, with the ones above them, have an empty
/// intersection.
fn locked_out(doc: &StoreDoc, target: &TargetArgs) -> Vec<String> {
    let tenant_id = match &target.key {
        Some(k) => doc.policy.keys.iter().find(|key| &key.id == k).map(|key| key.tenant.clone()),
        None => target.tenant.clone(),
    };
    let Some(t) = tenant_id.as_ref().and_then(|id| doc.policy.tenants.iter().find(|x| &x.id == id)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for sa in t.sub_accounts.iter().filter(|sa| target.sub_account.as_ref().is_none_or(|s| s == &sa.id)) {
        let upper = [t.ip_allowlist.as_ref(), sa.ip_allowlist.as_ref()];
        if target.key.is_none() && !reachable(&upper) {
            out.push(format!("sub-account {}/{}", t.id, sa.id));
            continue;
        }
        let keys = doc.policy.keys.iter().filter(|k| k.tenant == t.id && k.sub_account == sa.id);
        for k in keys.filter(|k| target.key.as_ref().is_none_or(|id| id == &k.id)) {
            if !reachable(&[upper[0], upper[1], k.ip_allowlist.as_ref()]) {
                out.push(format!("key {}", k.id));
            }
        }
    }
    out
}

/// Whether some address is inside every enabled list. For CIDR blocks, a
/// set of blocks (one per list) has a common address exactly when the most
/// specific of them lies inside all the others.
fn reachable(lists: &[Option<&IpAllowlistDoc>]) -> bool {
    let enabled: Vec<Vec<ipnet::IpNet>> = lists
        .iter()
        .flatten()
        .filter(|l| l.enabled)
        .map(|l| l.cidrs.iter().filter_map(|c| crate::core::cidr::parse_cidr(c).ok()).collect())
        .collect();
    if enabled.is_empty() {
        return true;
    }
    // Try each block of every list as the most specific one.
    enabled.iter().flatten().any(|candidate| enabled.iter().all(|list| list.iter().any(|net| net.contains(candidate))))
}

pub fn ip_list(s: &Session, target: &TargetArgs) -> Result<Reply, AdminError> {
    s.read(Scope::Tenant, target.audit_target()?, |doc, _| {
        let mut doc = doc.clone();
        let list = allowlist_mut(&mut doc, target)?.clone().unwrap_or_default();
        let mut text = format!(
            "{}: allowlist {}",
            target.describe(),
            if list.enabled { "enabled" } else { "disabled (any address)" }
        );
        for c in &list.cidrs {
            text.push_str(&format!("\n{c}"));
        }
        Ok(Reply::new(text, json!(list)))
    })
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct QuotaArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Requests per minute (omit for no per-minute limit).
    #[arg(long)]
    pub per_minute: Option<u64>,
    /// Requests per day (omit for no daily limit).
    #[arg(long)]
    pub per_day: Option<u64>,
}

/// Sets the limits of one level, replacing what it had: a window left out
/// has no limit at this level. A tenant's own quota is the platform's call
/// (it is what the tenant pays for); a tenant admin divides it among its
/// sub-accounts and keys.
pub fn quota_set(s: &Session, args: &QuotaArgs) -> Result<Reply, AdminError> {
    if args.per_minute.is_none() && args.per_day.is_none() {
        return Err(AdminError::Usage("give --per-minute and/or --per-day (or use `quota clear`)".into()));
    }
    if args.per_minute == Some(0) || args.per_day == Some(0) {
        return Err(AdminError::Usage("a limit of 0 would refuse everything; disable the key instead".into()));
    }
    let quota = QuotaDoc { per_minute: args.per_minute, per_day: args.per_day };
    write_quota(s, &args.target, Some(quota), "quota.set")
}

pub fn quota_clear(s: &Session, target: &TargetArgs) -> Result<Reply, AdminError> {
    write_quota(s, target, None, "quota.clear")
}

fn write_quota(
    s: &Session,
    target: &TargetArgs,
    quota: Option<QuotaDoc>,
    action: &'static str,
) -> Result<Reply, AdminError> {
    let scope = if target.is_tenant_level() { Scope::Platform } else { Scope::Tenant };
    let effective = s.mutate(Op::policy(action, scope, target.audit_target()?), |d, c| {
        *quota_mut(d, target)? = quota;
        ops::validate(d)?;
        c.note = Some(quota_text(quota.as_ref()));
        Ok(effective_quota(d, target))
    })?;
    let mut reply = Reply::new(
        format!("{} quota: {}; {}", target.describe(), quota_text(quota.as_ref()), s.apply_hint()),
        json!({"quota": quota, "effective": effective}),
    );
    if let (Some(q), Some(e)) = (quota, effective) {
        if q.per_minute.is_some_and(|n| e.per_minute.is_some_and(|m| m < n))
            || q.per_day.is_some_and(|n| e.per_day.is_some_and(|m| m < n))
        {
            reply = reply.warn(format!("a level above is stricter: the effective limit is {}", quota_text(Some(&e))));
        }
    }
    Ok(reply)
}

pub fn quota_show(s: &Session, target: &TargetArgs) -> Result<Reply, AdminError> {
    s.read(Scope::Tenant, target.audit_target()?, |doc, _| {
        let mut copy = doc.clone();
        let own = *quota_mut(&mut copy, target)?;
        let effective = effective_quota(doc, target);
        Ok(Reply::new(
            format!(
                "{}: {} (effective, with the levels above: {})",
                target.describe(),
                quota_text(own.as_ref()),
                quota_text(effective.as_ref())
            ),
            json!({"quota": own, "effective": effective}),
        ))
    })
}

/// `quota mode`: where every quota is counted. `local`: by the guard in
/// each Envoy (exact per Envoy, nothing else to run); `global`: by the rate
/// limit service, counters in Redis, exact across every replica (Envoy must
/// run `envoy/global-ratelimit/envoy.yaml.tmpl` or the like, else nothing
/// counts). The platform's call: it changes how every tenant is limited.
pub fn quota_mode_set(s: &Session, mode: QuotaMode) -> Result<Reply, AdminError> {
    let previous = s.mutate(Op::policy("quota.mode", Scope::Platform, Target::default()), |d, c| {
        let previous = d.policy.quota_mode;
        d.policy.quota_mode = mode;
        ops::validate(d)?;
        c.note = Some(format!("{} -> {}", previous.label(), mode.label()));
        Ok(previous)
    })?;
    let mut reply = Reply::new(
        format!("quota mode: {} (was {}); {}", mode.label(), previous.label(), s.apply_hint()),
        json!({"quota_mode": mode, "previous": previous}),
    );
    if mode == QuotaMode::Global && previous != mode {
        reply = reply.warn(
            "in global mode the guard counts nothing: every Envoy must send its requests to `tokenhub-admin ratelimit` \
             (see envoy/global-ratelimit/envoy.yaml.tmpl), or quotas are not enforced"
                .to_string(),
        );
    }
    Ok(reply)
}

pub fn quota_mode_show(s: &Session) -> Result<Reply, AdminError> {
    s.read(Scope::Anyone, Target::default(), |doc, _| {
        let mode = doc.policy.quota_mode;
        Ok(Reply::new(format!("quota mode: {}", mode.label()), json!({"quota_mode": mode})))
    })
}

/// The strictest limit per window across the target and the levels above it
/// (key → sub-account → tenant), which is what the filter enforces.
fn effective_quota(doc: &StoreDoc, t: &TargetArgs) -> Option<QuotaDoc> {
    let mut levels: Vec<Option<QuotaDoc>> = Vec::new();
    let (tenant, sub) = match &t.key {
        Some(k) => match doc.policy.keys.iter().find(|key| &key.id == k) {
            Some(key) => {
                levels.push(key.quota);
                (Some(key.tenant.clone()), Some(key.sub_account.clone()))
            }
            None => (None, None),
        },
        None => (t.tenant.clone(), t.sub_account.clone()),
    };
    if let Some(tdoc) = tenant.as_ref().and_then(|id| doc.policy.tenants.iter().find(|x| &x.id == id)) {
        if let Some(sa) = sub.as_ref().and_then(|id| tdoc.sub_accounts.iter().find(|x| &x.id == id)) {
            levels.push(sa.quota);
        }
        levels.push(tdoc.quota);
    }
    let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let q = levels.into_iter().flatten().fold(QuotaDoc::default(), |acc, q| QuotaDoc {
        per_minute: min(acc.per_minute, q.per_minute),
        per_day: min(acc.per_day, q.per_day),
    });
    (q.per_minute.is_some() || q.per_day.is_some()).then_some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(enabled: bool, cidrs: &[&str]) -> IpAllowlistDoc {
        IpAllowlistDoc { enabled, cidrs: cidrs.iter().map(|c| c.to_string()).collect() }
    }

    #[test]
    fn reachability_of_nested_allowlists() {
        let tenant = list(true, &["10.0.0.0/8", "2001:db8::/32"]);
        let inside = list(true, &["10.1.0.0/16"]);
        let outside = list(true, &["192.168.0.0/16"]);
        let v6 = list(true, &["2001:db8:1::/48"]);
        assert!(reachable(&[]));
        assert!(reachable(&[Some(&tenant), None, Some(&inside)]));
        assert!(reachable(&[Some(&tenant), Some(&v6)]));
        assert!(reachable(&[Some(&inside), Some(&tenant)]), "order does not matter");
        assert!(!reachable(&[Some(&tenant), Some(&outside)]));
        assert!(!reachable(&[Some(&inside), Some(&v6)]), "v4 and v6 never meet");
        assert!(!reachable(&[Some(&list(true, &[]))]));
        assert!(reachable(&[Some(&tenant), Some(&list(false, &["192.168.0.0/16"]))]), "a disabled list allows all");
        let wide = list(true, &["0.0.0.0/0"]);
        assert!(!reachable(&[Some(&wide), Some(&inside), Some(&outside)]));
    }
}
