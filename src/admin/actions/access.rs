//! Per tenant, sub-account or key: IP allowlists (CIDR, v4 and v6),
//! quotas (requests per minute and per day) and token budgets (tokens per
//! minute and per day, dollars per month). A request must pass every
//! level, so a lower level can only narrow what the level above allows.

use super::render::{budget_text, quota_text};
use super::Reply;
use crate::admin::audit::Target;
use crate::admin::session::{Change, Scope, Session};
use crate::admin::store::policy;
use crate::admin::store::StoreDoc;
use crate::admin::AdminError;
use crate::core::budget::DEFAULT_OUTPUT_RESERVATION;
use crate::core::bundle::compile::DEFAULT_SOFT_LIMIT_PERCENT;
use crate::core::bundle::schema::{
    IpAllowlistDoc, KeyDoc, QuotaDoc, QuotaMode, SubAccountDoc, TenantDoc, TokenBudgetDoc,
};
use serde_json::{json, Value};

/// Which level a command is about: a tenant, one of its sub-accounts, or
/// a key. Parsed once from what the CLI or the HTTP API was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    Tenant(String),
    SubAccount { tenant: String, sub_account: String },
    Key(String),
}

impl Level {
    /// The one way in: `--tenant`, `--tenant` with `--sub-account`, or `--key`.
    pub fn parse(tenant: Option<String>, sub_account: Option<String>, key: Option<String>) -> Result<Self, AdminError> {
        match (key, tenant, sub_account) {
            (Some(k), None, None) => Ok(Self::Key(k)),
            (None, Some(tenant), Some(sub_account)) => Ok(Self::SubAccount { tenant, sub_account }),
            (None, Some(t), None) => Ok(Self::Tenant(t)),
            _ => Err(AdminError::Usage("give --tenant, --tenant with --sub-account, or --key".into())),
        }
    }

    fn audit_target(&self) -> Target {
        match self {
            Self::Tenant(t) => Target::tenant(t),
            Self::SubAccount { tenant, sub_account } => Target::sub_account(tenant, sub_account),
            Self::Key(k) => Target::key(k),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Tenant(t) => format!("tenant {t}"),
            Self::SubAccount { tenant, sub_account } => format!("sub-account {tenant}/{sub_account}"),
            Self::Key(k) => format!("key {k}"),
        }
    }

    fn key_id(&self) -> Option<&str> {
        match self {
            Self::Key(k) => Some(k),
            _ => None,
        }
    }
}

/// The allowlist and quota slots of one level.
struct Limits<'a> {
    ip_allowlist: &'a mut Option<IpAllowlistDoc>,
    quota: &'a mut Option<QuotaDoc>,
    budget: &'a mut Option<TokenBudgetDoc>,
}

fn limits_mut<'a>(doc: &'a mut StoreDoc, level: &Level) -> Result<Limits<'a>, AdminError> {
    Ok(match level {
        Level::Key(k) => {
            let k = policy::key_mut(doc, k)?;
            Limits { ip_allowlist: &mut k.ip_allowlist, quota: &mut k.quota, budget: &mut k.budget }
        }
        Level::SubAccount { tenant, sub_account } => {
            let s = policy::sub_account_mut(doc, tenant, sub_account)?;
            Limits { ip_allowlist: &mut s.ip_allowlist, quota: &mut s.quota, budget: &mut s.budget }
        }
        Level::Tenant(t) => {
            let t = policy::tenant_mut(doc, t)?;
            Limits { ip_allowlist: &mut t.ip_allowlist, quota: &mut t.quota, budget: &mut t.budget }
        }
    })
}

/// A level and the levels above it, as far as they exist (a key names its
/// own sub-account and tenant).
struct Chain<'a> {
    tenant: Option<&'a TenantDoc>,
    sub_account: Option<&'a SubAccountDoc>,
    key: Option<&'a KeyDoc>,
}

fn chain<'a>(doc: &'a StoreDoc, level: &Level) -> Chain<'a> {
    let key = level.key_id().and_then(|id| doc.policy.keys.iter().find(|k| k.id == id));
    let (tenant, sub) = match (level, key) {
        (Level::Key(_), Some(k)) => (Some(k.tenant.as_str()), Some(k.sub_account.as_str())),
        (Level::Key(_), None) => (None, None),
        (Level::SubAccount { tenant, sub_account }, _) => (Some(tenant.as_str()), Some(sub_account.as_str())),
        (Level::Tenant(t), _) => (Some(t.as_str()), None),
    };
    let tenant = tenant.and_then(|id| doc.policy.tenants.iter().find(|t| t.id == id));
    let sub_account = tenant.zip(sub).and_then(|(t, id)| t.sub_accounts.iter().find(|s| s.id == id));
    Chain { tenant, sub_account, key }
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

pub fn ip_change(s: &Session, target: &Level, change: IpChange<'_>) -> Result<Reply, AdminError> {
    if let IpChange::Allow(cidrs) = change {
        policy::check_cidrs(cidrs)?;
    }
    let op = Change::policy(change.action(), Scope::Tenant, target.audit_target());
    let list = s.mutate(op, |d, c| {
        let slot = limits_mut(d, target)?.ip_allowlist;
        let mut list = slot.clone().unwrap_or_default();
        change.apply(&mut list);
        *slot = Some(list.clone());
        policy::validate(d)?;
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
fn locked_out(doc: &StoreDoc, target: &Level) -> Vec<String> {
    let chain = chain(doc, target);
    let Some(t) = chain.tenant else {
        return Vec::new();
    };
    let key_id = target.key_id();
    let mut out = Vec::new();
    let only_sub = chain.sub_account.map(|sa| sa.id.as_str());
    for sa in t.sub_accounts.iter().filter(|sa| only_sub.is_none_or(|s| s == sa.id)) {
        let upper = [t.ip_allowlist.as_ref(), sa.ip_allowlist.as_ref()];
        if key_id.is_none() && !reachable(&upper) {
            out.push(format!("sub-account {}/{}", t.id, sa.id));
            continue;
        }
        let keys = doc.policy.keys.iter().filter(|k| k.tenant == t.id && k.sub_account == sa.id);
        for k in keys.filter(|k| key_id.is_none_or(|id| id == k.id)) {
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

pub fn ip_list(s: &Session, target: &Level) -> Result<Reply, AdminError> {
    s.read(Scope::Tenant, target.audit_target(), |doc, _| {
        let list = own_limits(doc, target)?.0.unwrap_or_default();
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

/// A level's own allowlist and quota (not found: the level does not exist).
fn own_limits(doc: &StoreDoc, level: &Level) -> Result<(Option<IpAllowlistDoc>, Option<QuotaDoc>), AdminError> {
    let chain = chain(doc, level);
    let found = match level {
        Level::Key(id) => chain.key.map(|k| (&k.ip_allowlist, &k.quota)).ok_or_else(|| policy::not_found("key", id)),
        Level::SubAccount { tenant, sub_account } => {
            policy::tenant(doc, tenant)?;
            chain
                .sub_account
                .map(|s| (&s.ip_allowlist, &s.quota))
                .ok_or_else(|| policy::not_found("sub-account", &format!("{tenant}/{sub_account}")))
        }
        Level::Tenant(t) => policy::tenant(doc, t).map(|t| (&t.ip_allowlist, &t.quota)),
    }?;
    Ok((found.0.clone(), *found.1))
}

/// Sets the limits of one level, replacing what it had: a window left out
/// has no limit at this level. A tenant's own quota is the platform's call
/// (it is what the tenant pays for); a tenant admin divides it among its
/// sub-accounts and keys. Request quotas and token budgets are set
/// together (`budget`: tokens per minute and per day, nano-dollars per
/// month).
pub fn quota_set(s: &Session, target: &Level, quota: QuotaDoc, budget: TokenBudgetDoc) -> Result<Reply, AdminError> {
    let no_requests = quota.per_minute.is_none() && quota.per_day.is_none();
    if no_requests && budget.is_empty() {
        return Err(AdminError::Usage(
            "give --per-minute, --per-day, --tokens-per-minute, --tokens-per-day and/or --monthly-budget \
             (or use `quota clear`)"
                .into(),
        ));
    }
    let zero = [quota.per_minute, quota.per_day, budget.tokens_per_minute, budget.tokens_per_day].contains(&Some(0))
        || budget.monthly_budget_nano_usd == Some(0);
    if zero {
        return Err(AdminError::Usage("a limit of 0 would refuse everything; disable the key instead".into()));
    }
    let quota = (!no_requests).then_some(quota);
    let budget = (!budget.is_empty()).then_some(budget);
    write_quota(s, target, quota, budget, "quota.set")
}

pub fn quota_clear(s: &Session, target: &Level) -> Result<Reply, AdminError> {
    write_quota(s, target, None, None, "quota.clear")
}

fn write_quota(
    s: &Session,
    target: &Level,
    quota: Option<QuotaDoc>,
    budget: Option<TokenBudgetDoc>,
    action: &'static str,
) -> Result<Reply, AdminError> {
    let scope = if matches!(target, Level::Tenant(_)) { Scope::Platform } else { Scope::Tenant };
    let (effective, effective_budget) = s.mutate(Change::policy(action, scope, target.audit_target()), |d, c| {
        let limits = limits_mut(d, target)?;
        *limits.quota = quota;
        *limits.budget = budget;
        policy::validate(d)?;
        c.note = Some(match budget {
            None => quota_text(quota.as_ref()),
            Some(b) => format!("{}; {}", quota_text(quota.as_ref()), budget_text(Some(&b))),
        });
        Ok((effective_quota(d, target), effective_budget(d, target)))
    })?;
    let mut reply = Reply::new(
        format!(
            "{} quota: {}; {}; {}",
            target.describe(),
            quota_text(quota.as_ref()),
            budget_text(budget.as_ref()),
            s.apply_hint()
        ),
        json!({"quota": quota, "effective": effective, "budget": budget, "effective_budget": effective_budget}),
    );
    if let (Some(q), Some(e)) = (quota, effective) {
        if q.per_minute.is_some_and(|n| e.per_minute.is_some_and(|m| m < n))
            || q.per_day.is_some_and(|n| e.per_day.is_some_and(|m| m < n))
        {
            reply = reply.warn(format!("a level above is stricter: the effective limit is {}", quota_text(Some(&e))));
        }
    }
    if let (Some(b), Some(e)) = (budget, effective_budget) {
        let lowered = |own: Option<u64>, effective: Option<u64>| own.is_some_and(|n| effective.is_some_and(|m| m < n));
        if lowered(b.tokens_per_minute, e.tokens_per_minute)
            || lowered(b.tokens_per_day, e.tokens_per_day)
            || lowered(b.monthly_budget_nano_usd, e.monthly_budget_nano_usd)
        {
            reply = reply.warn(format!("a level above is stricter: the effective budget is {}", budget_text(Some(&e))));
        }
    }
    Ok(reply)
}

pub fn quota_show(s: &Session, target: &Level) -> Result<Reply, AdminError> {
    s.read(Scope::Tenant, target.audit_target(), |doc, _| {
        let own = own_limits(doc, target)?.1;
        let effective = effective_quota(doc, target);
        let own_budget = own_budget(doc, target);
        let effective_budget = effective_budget(doc, target);
        Ok(Reply::new(
            format!(
                "{}: {}; {} (effective, with the levels above: {}; {})",
                target.describe(),
                quota_text(own.as_ref()),
                budget_text(own_budget.as_ref()),
                quota_text(effective.as_ref()),
                budget_text(effective_budget.as_ref()),
            ),
            json!({"quota": own, "effective": effective, "budget": own_budget, "effective_budget": effective_budget}),
        ))
    })
}

/// `quota mode`: where every quota is counted. `local`: by the guard in
/// each Envoy (exact per Envoy, nothing else to run); `global`: by the rate
/// limit service, counters in Redis, exact across every replica (Envoy must
/// run `envoy/global-ratelimit/envoy.yaml.tmpl` or the like, else nothing
/// counts). The platform's call: it changes how every tenant is limited.
pub fn quota_mode_set(s: &Session, mode: QuotaMode) -> Result<Reply, AdminError> {
    let previous = s.mutate(Change::policy("quota.mode", Scope::Platform, Target::default()), |d, c| {
        let previous = d.policy.quota_mode;
        d.policy.quota_mode = mode;
        policy::validate(d)?;
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

/// The metering settings as the filter applies them (defaults filled in).
fn metering_json(doc: &StoreDoc) -> Value {
    json!({
        "soft_limit_percent": doc.policy.soft_limit_percent.unwrap_or(DEFAULT_SOFT_LIMIT_PERCENT),
        "default_output_tokens": doc.policy.default_output_tokens.unwrap_or(DEFAULT_OUTPUT_RESERVATION),
    })
}

fn metering_text(v: &Value) -> String {
    format!(
        "soft limit: {}% of a budget; output tokens reserved without max_tokens: {}",
        v["soft_limit_percent"], v["default_output_tokens"]
    )
}

/// Sets the soft limit and/or the default output reservation (platform).
pub fn metering_set(
    s: &Session,
    soft_limit_percent: Option<u8>,
    default_output_tokens: Option<u64>,
) -> Result<Reply, AdminError> {
    if soft_limit_percent.is_none() && default_output_tokens.is_none() {
        return Err(AdminError::Usage(
            "nothing to set: give --soft-limit-percent and/or --default-output-tokens".to_string(),
        ));
    }
    let after = s.mutate(Change::policy("quota.metering", Scope::Platform, Target::default()), |d, c| {
        if let Some(p) = soft_limit_percent {
            d.policy.soft_limit_percent = Some(p);
        }
        if let Some(n) = default_output_tokens {
            d.policy.default_output_tokens = Some(n);
        }
        policy::validate(d)?;
        let after = metering_json(d);
        c.note = Some(metering_text(&after));
        Ok(after)
    })?;
    Ok(Reply::new(format!("{}; {}", metering_text(&after), s.apply_hint()), after))
}

pub fn metering_show(s: &Session) -> Result<Reply, AdminError> {
    s.read(Scope::Anyone, Target::default(), |doc, _| {
        let v = metering_json(doc);
        Ok(Reply::new(metering_text(&v), v))
    })
}

/// The level's own token budget (the level exists: see `own_limits`).
fn own_budget(doc: &StoreDoc, level: &Level) -> Option<TokenBudgetDoc> {
    let c = chain(doc, level);
    match level {
        Level::Key(_) => c.key.and_then(|k| k.budget),
        Level::SubAccount { .. } => c.sub_account.and_then(|s| s.budget),
        Level::Tenant(_) => c.tenant.and_then(|t| t.budget),
    }
}

/// The stricter of two limits of one window (`None`: no limit).
fn stricter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Limits of several windows, each enforced at every level that sets it.
trait Windows: Copy + Default {
    /// Per window, the stricter of the two.
    fn stricter(self, other: Self) -> Self;
    fn is_empty(&self) -> bool;
}

impl Windows for QuotaDoc {
    fn stricter(self, o: Self) -> Self {
        QuotaDoc { per_minute: stricter(self.per_minute, o.per_minute), per_day: stricter(self.per_day, o.per_day) }
    }
    fn is_empty(&self) -> bool {
        self.per_minute.is_none() && self.per_day.is_none()
    }
}

impl Windows for TokenBudgetDoc {
    fn stricter(self, o: Self) -> Self {
        TokenBudgetDoc {
            tokens_per_minute: stricter(self.tokens_per_minute, o.tokens_per_minute),
            tokens_per_day: stricter(self.tokens_per_day, o.tokens_per_day),
            monthly_budget_nano_usd: stricter(self.monthly_budget_nano_usd, o.monthly_budget_nano_usd),
        }
    }
    fn is_empty(&self) -> bool {
        TokenBudgetDoc::is_empty(self)
    }
}

/// The strictest limit per window across the target and the levels above
/// it (key → sub-account → tenant, each `None` where the level is absent),
/// which is what the filter enforces.
fn strictest<T: Windows>(levels: [Option<Option<T>>; 3]) -> Option<T> {
    let all = levels.into_iter().flatten().flatten().fold(T::default(), T::stricter);
    (!all.is_empty()).then_some(all)
}

fn effective_budget(doc: &StoreDoc, level: &Level) -> Option<TokenBudgetDoc> {
    let c = chain(doc, level);
    strictest([c.key.map(|k| k.budget), c.sub_account.map(|s| s.budget), c.tenant.map(|t| t.budget)])
}

fn effective_quota(doc: &StoreDoc, level: &Level) -> Option<QuotaDoc> {
    let c = chain(doc, level);
    strictest([c.key.map(|k| k.quota), c.sub_account.map(|s| s.quota), c.tenant.map(|t| t.quota)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(enabled: bool, cidrs: &[&str]) -> IpAllowlistDoc {
        IpAllowlistDoc { enabled, cidrs: cidrs.iter().map(|c| c.to_string()).collect() }
    }

    /// Tenant acme (60/min), sub-account default (30/min, 1000/day), key k1 in it (no limits, an allowlist).
    fn doc() -> StoreDoc {
        let mut d = StoreDoc::default();
        d.policy.tenants.push(TenantDoc {
            id: "acme".into(),
            quota: Some(QuotaDoc { per_minute: Some(60), per_day: None }),
            ip_allowlist: Some(list(true, &["10.0.0.0/8"])),
            sub_accounts: vec![SubAccountDoc {
                id: "default".into(),
                quota: Some(QuotaDoc { per_minute: Some(30), per_day: Some(1000) }),
                ..Default::default()
            }],
            ..Default::default()
        });
        d.policy.keys.push(KeyDoc {
            id: "k1".into(),
            tenant: "acme".into(),
            sub_account: "default".into(),
            ip_allowlist: Some(list(true, &["192.168.0.0/16"])),
            ..Default::default()
        });
        d
    }

    #[test]
    fn levels_parse_once_and_resolve_their_chain() {
        let p = |t: Option<&str>, s: Option<&str>, k: Option<&str>| {
            Level::parse(t.map(Into::into), s.map(Into::into), k.map(Into::into))
        };
        assert_eq!(p(Some("acme"), None, None).unwrap(), Level::Tenant("acme".into()));
        assert_eq!(p(None, None, Some("k1")).unwrap(), Level::Key("k1".into()));
        assert!(p(Some("acme"), None, Some("k1")).is_err());
        assert!(p(None, Some("default"), None).is_err());
        assert!(p(None, None, None).is_err());

        let d = doc();
        let strictest = QuotaDoc { per_minute: Some(30), per_day: Some(1000) };
        assert_eq!(effective_quota(&d, &Level::Key("k1".into())), Some(strictest));
        let sub = Level::SubAccount { tenant: "acme".into(), sub_account: "default".into() };
        assert_eq!(effective_quota(&d, &sub), Some(strictest));
        assert_eq!(effective_quota(&d, &Level::Tenant("acme".into())).and_then(|q| q.per_minute), Some(60));
        assert_eq!(effective_quota(&d, &Level::Key("nope".into())), None);

        assert_eq!(own_limits(&d, &Level::Key("k1".into())).unwrap().1, None);
        assert_eq!(effective_budget(&d, &sub), None);
        let mut d2 = d.clone();
        d2.policy.tenants[0].budget = Some(TokenBudgetDoc { tokens_per_day: Some(9), ..Default::default() });
        d2.policy.keys[0].budget =
            Some(TokenBudgetDoc { tokens_per_day: Some(50), tokens_per_minute: Some(5), ..Default::default() });
        assert_eq!(
            effective_budget(&d2, &Level::Key("k1".into())),
            Some(TokenBudgetDoc { tokens_per_minute: Some(5), tokens_per_day: Some(9), monthly_budget_nano_usd: None })
        );
        assert_eq!(own_budget(&d2, &sub), None);
        assert_eq!(own_budget(&d2, &Level::Key("k1".into())).and_then(|b| b.tokens_per_minute), Some(5));
        assert_eq!(own_limits(&d, &sub).unwrap().1, Some(strictest));
        let missing = Level::SubAccount { tenant: "acme".into(), sub_account: "x".into() };
        assert!(own_limits(&d, &missing).unwrap_err().to_string().contains("sub-account \"acme/x\""));
        assert!(own_limits(&d, &Level::Tenant("globex".into())).unwrap_err().to_string().contains("tenant"));

        // The key's allowlist lies outside its tenant's: only the key is unreachable.
        assert_eq!(locked_out(&d, &Level::Tenant("acme".into())), ["key k1"]);
        assert_eq!(locked_out(&d, &Level::Key("k1".into())), ["key k1"]);
        assert!(locked_out(&d, &Level::Key("nope".into())).is_empty());
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
