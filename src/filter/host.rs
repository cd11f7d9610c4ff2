//! Host calls that need translation: properties, time, metrics.

use crate::core::bundle::compile::Tenant;
use crate::core::decision::logged_client;
use crate::core::errors::DenyReason;
use crate::core::quota::{CounterStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::Context;
use proxy_wasm::types::{MetricType, Status};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::UNIX_EPOCH;

/// The downstream address as Envoy sees it (`source.address`, after its own
/// trusted-hops rules). `None` when absent or unparsable: callers fail closed.
pub fn source_ip(ctx: &dyn Context) -> Option<IpAddr> {
    let raw = ctx.get_property(vec!["source", "address"])?;
    let text = std::str::from_utf8(&raw).ok()?;
    text.parse::<SocketAddr>().map(|s| s.ip()).or_else(|_| text.parse::<IpAddr>()).ok()
}

/// Where `jwt_authn` puts a verified token's payload (`payload_in_metadata`).
/// Dynamic metadata is written by Envoy's filters only, never by clients.
const JWT_PAYLOAD: [&str; 4] = ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "jwt_payload"];

pub struct JwtClaims {
    pub issuer: String,
    pub claims: Vec<(String, String)>,
}

/// The verified token's issuer and the string claims the bundle maps for
/// that issuer; `None` when no token was verified for this request.
pub fn jwt_claims(ctx: &dyn Context, mapped: &HashMap<String, Vec<String>>) -> Option<JwtClaims> {
    let read = |claim: &str| {
        let mut path = JWT_PAYLOAD.to_vec();
        path.push(claim);
        ctx.get_property(path).and_then(|b| String::from_utf8(b).ok())
    };
    let issuer = read("iss")?;
    let names = mapped.get(&issuer)?;
    let claims = names.iter().filter_map(|c| Some((c.clone(), read(c)?))).collect();
    Some(JwtClaims { issuer, claims })
}

pub fn unix_now(ctx: &dyn Context) -> u64 {
    ctx.get_current_time().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Records the decision label in filter state, readable in access logs as
/// `%FILTER_STATE(wasm.tokenhub_decision:PLAIN)%`. Best effort.
pub fn set_decision(ctx: &dyn Context, label: &str) {
    ctx.set_property(vec!["tokenhub_decision"], Some(label.as_bytes()));
}

/// Records the client address the access log shows (cut to its network
/// for a tenant that asked for it: `core::decision::logged_client`), read
/// as `filter_state['wasm.tokenhub_client']` instead of Envoy's own
/// downstream address. Best effort.
pub fn set_logged_client(ctx: &dyn Context, tenant: Option<&Tenant>, source: Option<IpAddr>) {
    if let Some(address) = logged_client(tenant, source) {
        ctx.set_property(vec!["tokenhub_client"], Some(address.as_bytes()));
    }
}

/// Counter ids, defined once per VM (Envoy shares them across workers).
pub struct Metrics {
    allowed: u32,
    denied: Vec<(DenyReason, u32)>,
    bundle_version: u32,
    bundle_rejected: u32,
    quota_counters: u32,
    soft_limit: u32,
    /// `core::usage_metrics` counters, defined on first use (the bundle
    /// bounds their names; `MAX_USAGE_METRICS` bounds them again).
    usage: std::cell::RefCell<HashMap<String, u32>>,
}

/// Defensive cap on the usage metrics one VM defines.
const MAX_USAGE_METRICS: usize = 50_000;

impl Metrics {
    pub fn define() -> Result<Self, String> {
        let counter = |name: &str| {
            hostcalls::define_metric(MetricType::Counter, name).map_err(|s: Status| format!("{name}: {s:?}"))
        };
        let mut denied = Vec::with_capacity(DenyReason::ALL.len());
        for reason in DenyReason::ALL {
            denied.push((reason, counter(reason.metric_name())?));
        }
        Ok(Self {
            allowed: counter("tokenhub.allowed")?,
            denied,
            bundle_version: hostcalls::define_metric(MetricType::Gauge, "tokenhub.bundle_version")
                .map_err(|s| format!("tokenhub.bundle_version: {s:?}"))?,
            bundle_rejected: counter("tokenhub.bundle_rejected")?,
            quota_counters: hostcalls::define_metric(MetricType::Gauge, "tokenhub.quota_counters")
                .map_err(|s| format!("tokenhub.quota_counters: {s:?}"))?,
            soft_limit: counter("tokenhub.budget_soft_limit")?,
            usage: Default::default(),
        })
    }

    pub fn allowed(&self) {
        let _ = hostcalls::increment_metric(self.allowed, 1);
    }

    pub fn denied(&self, reason: DenyReason) {
        if let Some((_, id)) = self.denied.iter().find(|(r, _)| *r == reason) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }

    pub fn bundle_loaded(&self, version: u64) {
        let _ = hostcalls::record_metric(self.bundle_version, version);
    }

    /// Shared-data entries the current bundle's quotas use: bounded by the
    /// bundle, whatever the traffic.
    pub fn quota_counters(&self, count: usize) {
        let _ = hostcalls::record_metric(self.quota_counters, count as u64);
    }

    /// A metered request admitted past a budget's soft limit.
    pub fn soft_limit(&self) {
        let _ = hostcalls::increment_metric(self.soft_limit, 1);
    }

    /// Adds a response's counts to its tenant and model's usage counters
    /// (`core::usage_metrics::KINDS` order).
    pub fn usage(&self, tenant: &str, model_label: &str, values: [u64; 5]) {
        let Ok(mut ids) = self.usage.try_borrow_mut() else { return };
        for (name, value) in crate::core::usage_metrics::metric_names(tenant, model_label).into_iter().zip(values) {
            let id = match ids.get(&name) {
                Some(id) => *id,
                None if ids.len() < MAX_USAGE_METRICS => match hostcalls::define_metric(MetricType::Counter, &name) {
                    Ok(id) => *ids.entry(name).or_insert(id),
                    Err(_) => continue,
                },
                None => continue,
            };
            if value > 0 {
                let _ = hostcalls::increment_metric(id, value as i64);
            }
        }
    }

    pub fn bundle_rejected(&self) {
        let _ = hostcalls::increment_metric(self.bundle_rejected, 1);
    }
}

/// Proxy-Wasm shared data: one process-wide map that every worker VM sees,
/// with compare-and-swap on writes. It holds the quota counters and the
/// newest accepted bundle (`core::newest`), and outlives the VMs.
pub struct SharedCounters;

impl CounterStore for SharedCounters {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        match hostcalls::get_shared_data(key) {
            Ok((value, cas)) => (value, cas.unwrap_or(0)),
            Err(_) => (None, 0),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, StoreError> {
        match hostcalls::set_shared_data(key, Some(value), Some(cas)) {
            Ok(()) => Ok(true),
            Err(Status::CasMismatch) => Ok(false),
            Err(_) => Err(StoreError),
        }
    }
}
