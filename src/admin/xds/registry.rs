//! Which Envoys the control plane knows, what each acknowledged or refused,
//! and when it was last heard from. Kept in memory by `serve`, mirrored to a
//! file in the store's home so `tokenhub-admin status` (another process) and
//! the metrics endpoint read the same facts.

use crate::admin::{fsutil, unix_now};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The mirror's file name in the store's home.
pub const STATE_FILE: &str = "xds-gateways.json";

/// One Envoy, by node id.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gateway {
    pub node_id: String,
    pub cluster: String,
    /// The peer address of its current (or last) stream.
    pub peer: String,
    pub connected: bool,
    pub connected_at: u64,
    pub last_seen: u64,
    /// The bundle version last pushed to it.
    pub sent_version: Option<u64>,
    /// The bundle version it last acknowledged (what it enforces).
    pub acked_version: Option<u64>,
    pub nacks: u64,
    pub last_nack: Option<Nack>,
}

/// A refused push: the version and Envoy's reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Nack {
    pub version: u64,
    pub reason: String,
    pub at: u64,
}

/// What the registry and its mirror hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// The version the control plane currently serves.
    pub serving_version: Option<u64>,
    pub gateways: BTreeMap<String, Gateway>,
}

pub struct Registry {
    state: Mutex<State>,
    mirror: PathBuf,
}

impl Registry {
    /// An empty registry mirrored to `home`/[`STATE_FILE`]; Envoys seen by an
    /// earlier run are kept as disconnected until they come back.
    pub fn new(home: &Path) -> Self {
        let mirror = home.join(STATE_FILE);
        let mut state = read(home);
        for gateway in state.gateways.values_mut() {
            gateway.connected = false;
        }
        let registry = Self { state: Mutex::new(state), mirror };
        registry.update(|_| ());
        registry
    }

    /// Applies `f` and rewrites the mirror.
    pub fn update(&self, f: impl FnOnce(&mut State)) {
        let Ok(mut state) = self.state.lock() else { return };
        f(&mut state);
        match serde_json::to_vec_pretty(&*state) {
            Ok(bytes) => {
                if let Err(e) = fsutil::write_atomic(&self.mirror, &bytes, 0o640) {
                    log::warn!("xds: cannot write {}: {e}", self.mirror.display());
                }
            }
            Err(e) => log::warn!("xds: gateway state: {e}"),
        }
    }

    /// Applies `f` to one gateway (created on first sight), stamping it seen.
    pub fn gateway(&self, node_id: &str, f: impl FnOnce(&mut Gateway)) {
        self.update(|state| {
            let gateway = state
                .gateways
                .entry(node_id.to_string())
                .or_insert_with(|| Gateway { node_id: node_id.to_string(), ..Gateway::default() });
            gateway.last_seen = unix_now();
            f(gateway);
        });
    }

    pub fn snapshot(&self) -> State {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The mirror as last written (empty when serve never ran with xDS).
pub fn read(home: &Path) -> State {
    std::fs::read(home.join(STATE_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Prometheus text exposition of the state. Labels: node ids only (one per
/// gateway, so the set is bounded by the fleet), never addresses.
pub fn render_metrics(state: &State) -> String {
    let mut out = String::new();
    let connected = state.gateways.values().filter(|g| g.connected).count();
    let _ = writeln!(out, "# HELP tokenhub_xds_serving_version Bundle version the control plane pushes.");
    let _ = writeln!(out, "# TYPE tokenhub_xds_serving_version gauge");
    let _ = writeln!(out, "tokenhub_xds_serving_version {}", state.serving_version.unwrap_or(0));
    let _ = writeln!(out, "# HELP tokenhub_xds_gateways_connected Envoys with an open xDS stream.");
    let _ = writeln!(out, "# TYPE tokenhub_xds_gateways_connected gauge");
    let _ = writeln!(out, "tokenhub_xds_gateways_connected {connected}");
    let series: [Series; 4] = [
        ("tokenhub_xds_gateway_connected", "gauge", "1 while the gateway's stream is open.", |g, _| {
            u64::from(g.connected)
        }),
        ("tokenhub_xds_gateway_acked_version", "gauge", "Bundle version the gateway acknowledged.", |g, _| {
            g.acked_version.unwrap_or(0)
        }),
        ("tokenhub_xds_gateway_in_sync", "gauge", "1 when the gateway acknowledged the serving version.", |g, v| {
            u64::from(v.is_some() && g.acked_version == v)
        }),
        ("tokenhub_xds_gateway_nacks_total", "counter", "Pushes the gateway refused.", |g, _| g.nacks),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for g in state.gateways.values() {
            let _ =
                writeln!(out, "{name}{{node=\"{}\"}} {}", escape_label(&g.node_id), value(g, state.serving_version));
        }
    }
    out
}

/// A per-gateway series: name, type, help, value (given the serving version).
type Series = (&'static str, &'static str, &'static str, fn(&Gateway, Option<u64>) -> u64);

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_follows_every_change_and_a_restart_marks_gateways_disconnected() {
        let home = crate::admin::fsutil::fresh_test_dir("xds-registry");
        let registry = Registry::new(&home);
        registry.update(|s| s.serving_version = Some(7));
        registry.gateway("gw-1", |g| {
            g.connected = true;
            g.acked_version = Some(7);
        });
        registry.gateway("gw-2", |g| {
            g.connected = true;
            g.nacks += 1;
            g.last_nack = Some(Nack { version: 7, reason: "Unable to create Wasm plugin".into(), at: 1 });
        });
        assert_eq!(read(&home), registry.snapshot());
        let metrics = render_metrics(&registry.snapshot());
        assert!(metrics.contains("tokenhub_xds_gateways_connected 2"), "{metrics}");
        assert!(metrics.contains("tokenhub_xds_gateway_in_sync{node=\"gw-1\"} 1"), "{metrics}");
        assert!(metrics.contains("tokenhub_xds_gateway_in_sync{node=\"gw-2\"} 0"), "{metrics}");
        assert!(metrics.contains("tokenhub_xds_gateway_nacks_total{node=\"gw-2\"} 1"), "{metrics}");
        let restarted = Registry::new(&home);
        assert!(restarted.snapshot().gateways.values().all(|g| !g.connected));
        assert_eq!(restarted.snapshot().gateways["gw-2"].nacks, 1);
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
