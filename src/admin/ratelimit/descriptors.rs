//! The one place that names the rate limit descriptors and maps them to
//! limits. Envoy's `rate_limits` actions (see
//! `envoy/global-ratelimit/envoy.yaml.tmpl`) build one descriptor from the
//! guard's authoritative identity headers, which the guard strips from the
//! client's request and sets itself; the limits and their counter names
//! come from `core::quota::limits_for`, exactly as the guard counts in local
//! mode.

use crate::core::budget::{self, Charge, MeteredLimit, Settlement};
use crate::core::bundle::compile::Key;
use crate::core::bundle::Policy;
use crate::core::decision::{KEY_ID_HEADER, SUB_ACCOUNT_HEADER, TENANT_HEADER};
use crate::core::quota::{self, Limit};
use crate::core::ratelimit_wire as wire;
use std::collections::HashMap;

/// The rate limit domain Envoy sends (`domain` in the filter's config);
/// the guard's body-time top-up sends it too (`core::ratelimit_wire`).
pub use crate::core::ratelimit_wire::DOMAIN;
/// Descriptor entry keys, each with the header Envoy reads its value from.
pub const TENANT: (&str, &str) = (wire::TENANT_ENTRY, TENANT_HEADER);
pub const SUB_ACCOUNT: (&str, &str) = (wire::SUB_ACCOUNT_ENTRY, SUB_ACCOUNT_HEADER);
/// Absent for an OIDC identity (no key): then only the sub-account's and
/// the tenant's limits apply.
pub const KEY_ID: (&str, &str) = (wire::KEY_ID_ENTRY, KEY_ID_HEADER);

/// The global mode's token and dollar budgets: a descriptor with the
/// identity entries and one of these (its value from the guard's filter
/// state, `core::budget::RESERVE_STATE` / `SETTLE_STATE`; Envoy sends the
/// descriptor only when the guard wrote it, i.e. for a request with budgets).
pub const BUDGET_RESERVE: &str = wire::BUDGET_RESERVE_ENTRY;
/// Sent when the stream is done (`apply_on_stream_done` in the template).
pub const BUDGET_SETTLE: &str = "budget_settle";

/// What one descriptor asks of the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Count one request against these limits (the request quotas).
    Requests(Vec<Limit>),
    /// Admission: refused when a budget is spent, else reserve this.
    Reserve(Vec<MeteredLimit>, Charge),
    /// The stream is done: replace the reservation (and add to the month's
    /// usage totals of `identity`).
    Settle(Vec<MeteredLimit>, Settlement, Identity),
}

/// Whose usage a settlement is: the descriptor's tenant, sub-account and
/// key (`-` for an identity without a key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant: String,
    pub sub_account: String,
    pub key_id: String,
}

/// Why a descriptor was not answered. Envoy treats the error as a service
/// failure: with `failure_mode_deny` the request is refused (fail closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescriptorError {
    /// Not what the guard's headers produce (a misconfigured Envoy).
    Malformed(String),
    /// The identity is not in this service's bundle (it is older or newer
    /// than the guard's; it catches up on the next reload).
    Unknown(String),
}

impl std::fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(m) => write!(
                f,
                "descriptor {m}: Envoy must send the entries {}, {} and optionally {} from the guard's headers (see envoy/global-ratelimit/envoy.yaml.tmpl)",
                TENANT.0, SUB_ACCOUNT.0, KEY_ID.0
            ),
            Self::Unknown(m) => write!(f, "{m} is not in the loaded bundle (is the service reading the bundle Envoy runs?)"),
        }
    }
}

/// A loaded policy with the index the descriptor lookup needs.
#[derive(Debug)]
pub struct LimitTable {
    pub policy: Policy,
    subs: HashMap<(String, String), usize>,
}

impl LimitTable {
    pub fn new(policy: Policy) -> Self {
        let subs = policy
            .sub_accounts
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some(((policy.tenants.get(s.tenant)?.id.clone(), s.id.clone()), i)))
            .collect();
        Self { policy, subs }
    }

    /// The limits for one request-quota descriptor (key, sub-account,
    /// tenant; per minute and per day), every one of which must admit the
    /// request.
    pub fn limits(&self, entries: &[(&str, &str)]) -> Result<Vec<Limit>, DescriptorError> {
        match self.ask(entries)? {
            Ask::Requests(limits) => Ok(limits),
            _ => Err(DescriptorError::Malformed("is a budget descriptor".into())),
        }
    }

    /// What one descriptor asks: the request quotas, or (with a budget
    /// entry) a reservation or a settlement against the identity's token and
    /// dollar budgets (`core::budget::metered_limits_for`, the guard's own
    /// limits and counter names).
    pub fn ask(&self, entries: &[(&str, &str)]) -> Result<Ask, DescriptorError> {
        let mut tenant = None;
        let mut sub = None;
        let mut key_id = None;
        let mut budget = None;
        for (name, value) in entries {
            let slot = match *name {
                n if n == TENANT.0 => &mut tenant,
                n if n == SUB_ACCOUNT.0 => &mut sub,
                n if n == KEY_ID.0 => &mut key_id,
                n if n == BUDGET_RESERVE || n == BUDGET_SETTLE => {
                    if budget.replace((n, *value)).is_some() {
                        return Err(DescriptorError::Malformed("has two budget entries".into()));
                    }
                    continue;
                }
                other => return Err(DescriptorError::Malformed(format!("has an unexpected entry {other:?}"))),
            };
            if slot.replace(*value).is_some() {
                return Err(DescriptorError::Malformed(format!("repeats the entry {name:?}")));
            }
        }
        let (Some(tenant), Some(sub)) = (tenant, sub) else {
            return Err(DescriptorError::Malformed("lacks the tenant or the sub-account".into()));
        };
        let index = *self
            .subs
            .get(&(tenant.to_string(), sub.to_string()))
            .ok_or_else(|| DescriptorError::Unknown(format!("sub-account {tenant}/{sub}")))?;
        let sub_account = self.policy.sub_accounts.get(index).ok_or_else(|| DescriptorError::Unknown(sub.into()))?;
        let tenant_ref =
            self.policy.tenants.get(sub_account.tenant).ok_or_else(|| DescriptorError::Unknown(tenant.into()))?;
        let key: Option<Key<'_>> = match key_id {
            None => None,
            Some(id) => {
                let key =
                    self.policy.keys.get(id.as_bytes()).ok_or_else(|| DescriptorError::Unknown(format!("key {id}")))?;
                if key.sub_account != index {
                    return Err(DescriptorError::Malformed(format!("names key {id} of another sub-account")));
                }
                Some(key)
            }
        };
        let Some((kind, value)) = budget else {
            return Ok(Ask::Requests(quota::limits_for(key, sub_account, tenant_ref)));
        };
        let metered = budget::metered_limits_for(key, sub_account, tenant_ref);
        let unreadable = || DescriptorError::Malformed(format!("has a {kind} value that is not the guard's"));
        if kind == BUDGET_RESERVE {
            return Ok(Ask::Reserve(metered, Charge::from_wire(value).ok_or_else(unreadable)?));
        }
        let identity = Identity {
            tenant: tenant.to_string(),
            sub_account: sub.to_string(),
            key_id: key_id.unwrap_or("-").to_string(),
        };
        Ok(Ask::Settle(metered, Settlement::from_wire(value).ok_or_else(unreadable)?, identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::apikey;
    use crate::core::bundle::compile;
    use crate::core::bundle::schema::{
        BundleDoc, KeyDoc, QuotaDoc, SubAccountDoc, TenantDoc, TokenBudgetDoc, SCHEMA_VERSION,
    };
    use crate::core::quota::{DAY, MINUTE};

    fn key_id(n: u8) -> String {
        let c = char::from(b'a' + n);
        std::iter::repeat_n(c, apikey::KEY_ID_LEN).collect()
    }

    fn table() -> LimitTable {
        let q = |m, d| Some(QuotaDoc { per_minute: m, per_day: d });
        let key = |n: u8, sub: &str, quota| KeyDoc {
            id: key_id(n),
            tenant: "acme".into(),
            sub_account: sub.into(),
            hash: "0".repeat(64),
            quota,
            ..Default::default()
        };
        let doc = BundleDoc {
            schema: SCHEMA_VERSION,
            version: 1,
            tenants: vec![TenantDoc {
                id: "acme".into(),
                quota: q(Some(100), Some(5000)),
                sub_accounts: vec![
                    SubAccountDoc { id: "research".into(), quota: q(Some(50), None), ..Default::default() },
                    SubAccountDoc { id: "sales".into(), ..Default::default() },
                ],
                ..Default::default()
            }],
            keys: vec![
                KeyDoc {
                    budget: Some(TokenBudgetDoc { tokens_per_minute: Some(1_000), ..Default::default() }),
                    ..key(0, "research", q(Some(30), None))
                },
                key(1, "sales", None),
            ],
            ..Default::default()
        };
        match compile(&doc) {
            Ok(p) => LimitTable::new(p),
            Err(e) => unreachable!("test bundle: {e}"),
        }
    }

    fn names(limits: &[Limit]) -> Vec<(String, u64, u64)> {
        limits.iter().map(|l| (l.counter.clone(), l.limit, l.window)).collect()
    }

    #[test]
    fn a_key_descriptor_gets_the_key_sub_account_and_tenant_limits_with_the_guards_counter_names() {
        let t = table();
        let k = key_id(0);
        let limits = t.limits(&[("tenant", "acme"), ("sub_account", "research"), ("key_id", &k)]);
        assert_eq!(
            names(&limits.unwrap()),
            vec![
                (format!("tokenhub.q|k|{k}|m"), 30, MINUTE),
                ("tokenhub.q|s|acme|research|m".into(), 50, MINUTE),
                ("tokenhub.q|t|acme|m".into(), 100, MINUTE),
                ("tokenhub.q|t|acme|d".into(), 5000, DAY),
            ]
        );
    }

    #[test]
    fn without_a_key_only_the_sub_account_and_tenant_limits_apply() {
        let t = table();
        let limits = t.limits(&[("sub_account", "sales"), ("tenant", "acme")]).unwrap();
        assert_eq!(
            names(&limits),
            vec![("tokenhub.q|t|acme|m".into(), 100, MINUTE), ("tokenhub.q|t|acme|d".into(), 5000, DAY)]
        );
        // A key without limits of its own adds none.
        let k = key_id(1);
        assert_eq!(t.limits(&[("tenant", "acme"), ("sub_account", "sales"), ("key_id", &k)]).unwrap(), limits);
    }

    #[test]
    fn descriptors_that_the_guards_headers_cannot_produce_are_errors() {
        let t = table();
        let k0 = key_id(0);
        let cases: [&[(&str, &str)]; 6] = [
            &[("tenant", "acme")],
            &[("sub_account", "research")],
            &[("tenant", "acme"), ("sub_account", "research"), ("generic_key", "x")],
            &[("tenant", "acme"), ("tenant", "acme"), ("sub_account", "research")],
            // A key of research presented as sales.
            &[("tenant", "acme"), ("sub_account", "sales"), ("key_id", &k0)],
            &[],
        ];
        for entries in cases {
            assert!(matches!(t.limits(entries), Err(DescriptorError::Malformed(_))), "{entries:?}");
        }
    }

    #[test]
    fn identities_missing_from_the_bundle_are_unknown() {
        let t = table();
        let ghost = key_id(9);
        for entries in [
            vec![("tenant", "globex"), ("sub_account", "research")],
            vec![("tenant", "acme"), ("sub_account", "ops")],
            vec![("tenant", "acme"), ("sub_account", "research"), ("key_id", ghost.as_str())],
        ] {
            let err = t.limits(&entries).unwrap_err();
            assert!(matches!(err, DescriptorError::Unknown(_)), "{entries:?}");
            assert!(err.to_string().contains("not in the loaded bundle"), "{err}");
        }
    }

    #[test]
    fn budget_descriptors_reserve_and_settle_against_the_guards_metered_limits() {
        let t = table();
        let k = key_id(0);
        let id: [(&str, &str); 3] = [("tenant", "acme"), ("sub_account", "research"), ("key_id", &k)];
        let with = |entry: (&'static str, &'static str)| {
            let mut e = id.to_vec();
            e.push(entry);
            t.ask(&e)
        };
        let Ok(Ask::Reserve(limits, charge)) = with(("budget_reserve", "612,0")) else { panic!("a reservation") };
        assert_eq!(charge, Charge { tokens: 612, cost: 0 });
        let names: Vec<(&str, u64)> = limits.iter().map(|m| (m.limit.counter.as_str(), m.limit.limit)).collect();
        let counter = format!("tokenhub.q|k|{k}|tm");
        assert_eq!(names, [(counter.as_str(), 1_000)]);
        let Ok(Ask::Settle(limits, s, who)) = with(("budget_settle", "35,1,10,0,612,0,60")) else {
            panic!("a settlement")
        };
        assert_eq!((limits.len(), s.charge().tokens, s.reserved.tokens, s.reserved_at), (1, 36, 612, 60));
        assert_eq!(
            (who.tenant.as_str(), who.sub_account.as_str(), who.key_id.as_str()),
            ("acme", "research", k.as_str())
        );
        // An identity without budgets has none to count (Envoy sends no such
        // descriptor for it: the guard writes no filter state).
        let Ok(Ask::Reserve(none, _)) =
            t.ask(&[("tenant", "acme"), ("sub_account", "sales"), ("budget_reserve", "1,0")])
        else {
            panic!("a reservation")
        };
        assert!(none.is_empty());
        for bad in [("budget_reserve", "612"), ("budget_settle", "1,2"), ("budget_reserve", "-1,0")] {
            assert!(matches!(with(bad), Err(DescriptorError::Malformed(_))), "{bad:?}");
        }
        let mut two = id.to_vec();
        two.extend([("budget_reserve", "1,0"), ("budget_settle", "0,0,0,0,1,0,0")]);
        assert!(matches!(t.ask(&two), Err(DescriptorError::Malformed(_))));
        assert!(t.limits(&[id[0], id[1], ("budget_reserve", "1,0")]).is_err(), "not a request quota");
    }

    #[test]
    fn the_envoy_template_sends_exactly_these_descriptors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/global-ratelimit/envoy.yaml.tmpl");
        let text: String = std::fs::read_to_string(path).unwrap().split_whitespace().collect();
        assert!(text.contains(&format!("domain:{DOMAIN}")), "domain");
        // The guard's own top-up call goes to the cluster Envoy's filter uses.
        let cluster = format!("envoy_grpc:{{cluster_name:{}}}", wire::CLUSTER);
        assert!(text.contains(&cluster), "the ratelimit filter's cluster must be {}", wire::CLUSTER);
        assert!(text.contains(&format!("-name:{}type:STATIC", wire::CLUSTER)), "cluster {}", wire::CLUSTER);
        for (entry, header) in [TENANT, SUB_ACCOUNT, KEY_ID] {
            let action = format!("{{header_name:{header},descriptor_key:{entry}");
            assert!(text.contains(&action), "the template must map {header} to {entry}");
        }
        for (entry, state) in [(BUDGET_RESERVE, budget::RESERVE_STATE), (BUDGET_SETTLE, budget::SETTLE_STATE)] {
            let action = format!("descriptor_key:{entry}text:\"filter_state['wasm.{state}']\"");
            assert!(text.contains(&action), "the template must send {entry} from wasm.{state}");
        }
    }
}
