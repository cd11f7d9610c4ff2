//! The one place that names the rate limit descriptors and maps them to
//! limits. Envoy's `rate_limits` actions (see
//! `envoy/global-ratelimit/envoy.yaml.tmpl`) build one descriptor from the
//! guard's authoritative identity headers, which the guard strips from the
//! client's request and sets itself; the limits and their counter names
//! come from `core::quota::limits_for`, exactly as the guard counts in local
//! mode.

use crate::core::bundle::compile::Key;
use crate::core::bundle::Policy;
use crate::core::decision::{KEY_ID_HEADER, SUB_ACCOUNT_HEADER, TENANT_HEADER};
use crate::core::quota::{self, Limit};
use std::collections::HashMap;

/// The rate limit domain Envoy sends (`domain` in the filter's config).
pub const DOMAIN: &str = "tokenhub";
/// Descriptor entry keys, each with the header Envoy reads its value from.
pub const TENANT: (&str, &str) = ("tenant", TENANT_HEADER);
pub const SUB_ACCOUNT: (&str, &str) = ("sub_account", SUB_ACCOUNT_HEADER);
/// Absent for an OIDC identity (no key): then only the sub-account's and
/// the tenant's limits apply.
pub const KEY_ID: (&str, &str) = ("key_id", KEY_ID_HEADER);

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

    /// The limits for one descriptor (key, sub-account, tenant; per minute
    /// and per day), every one of which must admit the request.
    pub fn limits(&self, entries: &[(&str, &str)]) -> Result<Vec<Limit>, DescriptorError> {
        let mut tenant = None;
        let mut sub = None;
        let mut key_id = None;
        for (name, value) in entries {
            let slot = match *name {
                n if n == TENANT.0 => &mut tenant,
                n if n == SUB_ACCOUNT.0 => &mut sub,
                n if n == KEY_ID.0 => &mut key_id,
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
        Ok(quota::limits_for(key, sub_account, tenant_ref))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::apikey;
    use crate::core::bundle::compile;
    use crate::core::bundle::schema::{BundleDoc, KeyDoc, QuotaDoc, SubAccountDoc, TenantDoc, SCHEMA_VERSION};
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
            keys: vec![key(0, "research", q(Some(30), None)), key(1, "sales", None)],
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
    fn the_envoy_template_sends_exactly_these_descriptors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/global-ratelimit/envoy.yaml.tmpl");
        let text: String = std::fs::read_to_string(path).unwrap().split_whitespace().collect();
        assert!(text.contains(&format!("domain:{DOMAIN}")), "domain");
        for (entry, header) in [TENANT, SUB_ACCOUNT, KEY_ID] {
            let action = format!("{{header_name:{header},descriptor_key:{entry}");
            assert!(text.contains(&action), "the template must map {header} to {entry}");
        }
    }
}
