//! The scaled-out shape: `tokenhub-admin serve` as the control plane
//! pushing the bundle over xDS (mTLS) to several gateway Envoys rendered
//! from envoy/xds/envoy.yaml.tmpl.

use crate::admin::Admin;
use crate::envoy::EnvoyOptions;
use crate::paths;
use crate::ports::free_port;
use crate::process::ChildGuard;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub const XDS_TEMPLATE: &str = "envoy/xds/envoy.yaml.tmpl";
/// The name in the control plane's certificate, pinned by every gateway.
pub const SERVER_NAME: &str = "tokenhub-control-plane";

/// CA, server and per-gateway client certificates from tools/xds-certs.sh.
pub struct XdsCerts {
    pub dir: PathBuf,
}

impl XdsCerts {
    pub fn make(dir: &Path, gateways: &[&str]) -> XdsCerts {
        let status = Command::new(paths::repo_root().join("tools/xds-certs.sh"))
            .arg(dir)
            .args(["--server-name", SERVER_NAME])
            .args(gateways)
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("tools/xds-certs.sh: {e}"));
        assert!(status.success(), "tools/xds-certs.sh failed: {status}");
        XdsCerts { dir: dir.to_path_buf() }
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// A running `tokenhub-admin serve --xds-listen` on a fixed port (so a
/// restart comes back where the gateways look for it).
pub struct ControlPlane {
    child: Option<ChildGuard>,
    pub xds_port: u16,
    pub metrics: Option<SocketAddr>,
}

impl ControlPlane {
    pub fn start(admin: &Admin, certs: &XdsCerts) -> ControlPlane {
        let mut plane = ControlPlane { child: None, xds_port: free_port(), metrics: None };
        plane.restart(admin, certs);
        plane
    }

    /// Starts the process (again), waiting until it prints its addresses.
    pub fn restart(&mut self, admin: &Admin, certs: &XdsCerts) {
        self.stop();
        let xds = format!("127.0.0.1:{}", self.xds_port);
        let (cert, key, ca) = (certs.file("server.crt"), certs.file("server.key"), certs.file("ca.crt"));
        let mut child = admin
            .command(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--xds-listen",
                &xds,
                "--xds-cert",
                &cert,
                "--xds-key",
                &key,
                "--xds-client-ca",
                &ca,
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting tokenhub-admin serve: {e}"));
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.map(BufReader::new).into_iter().flat_map(|r| r.lines()).map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let guard = ChildGuard::new("tokenhub-admin serve", child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while !seen.iter().any(|l: &String| l.contains("listening on")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("tokenhub-admin serve did not start; it printed {seen:?}"),
            }
        }
        let metrics = seen.iter().find_map(|l| l.split("http://").nth(1)?.strip_suffix("/metrics")?.parse().ok());
        assert!(seen.iter().any(|l| l.contains(&format!("grpc://{xds} (mTLS)"))), "no xDS line in {seen:?}");
        self.metrics = metrics;
        self.child = Some(guard);
    }

    /// SIGTERM (then SIGKILL): the control plane is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop();
        }
    }

    /// The Prometheus text of the metrics listener.
    pub fn metrics_text(&self) -> String {
        let addr = self.metrics.unwrap_or_else(|| panic!("no metrics listener"));
        crate::client::get(addr, "/metrics", &[]).map(|r| r.body_text()).unwrap_or_default()
    }

    /// Options for a gateway Envoy subscribing to this control plane as
    /// `node_id` with its own client certificate.
    pub fn gateway_options(
        &self,
        upstream_port: u16,
        node_id: &str,
        certs: &XdsCerts,
        bundle_key: &str,
    ) -> EnvoyOptions {
        let mut opts = EnvoyOptions::new(upstream_port)
            .var("NODE_ID", node_id)
            .var("XDS_HOST", "127.0.0.1")
            .var("XDS_PORT", self.xds_port)
            .var("XDS_SERVER_NAME", SERVER_NAME)
            .var("XDS_CA", certs.file("ca.crt"))
            .var("XDS_CERT", certs.file(&format!("{node_id}.crt")))
            .var("XDS_KEY", certs.file(&format!("{node_id}.key")));
        opts.template = PathBuf::from(XDS_TEMPLATE);
        opts.env.push(("TOKENHUB_BUNDLE_KEY".into(), bundle_key.into()));
        opts
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
