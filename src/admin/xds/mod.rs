//! The control plane's push channel: an xDS server (ECDS over gRPC, state
//! of the world) that hands the sealed bundle to every Envoy that asks,
//! over mTLS with a client certificate per gateway (or plaintext on
//! loopback, for a pod-local Envoy).
//!
//! The published ECDS file is the one source of what is served: a watcher
//! re-reads it when it changes (`fsutil::FileWatch`, every 50 ms), so a publish by the HTTP API, by the CLI in another process, or
//! by `incident revoke` reaches every Envoy the same way, and a restarted
//! control plane serves the last publish at once.

pub mod registry;
pub mod resource;
mod server;

use self::registry::Registry;
use self::resource::Snapshot;
use super::ecds::Format;
use super::{fsutil, AdminError};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryServiceServer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// How often the published file is checked for a change.
const POLL: Duration = Duration::from_millis(50);
/// Dead peers are found by HTTP/2 pings.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct XdsOptions {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Plain-text Prometheus metrics (gateway states), if set.
    pub metrics_listen: Option<SocketAddr>,
    /// The published ECDS file to serve.
    pub ecds_file: PathBuf,
    /// The store's home (the gateway-state mirror lives there).
    pub home: PathBuf,
}

/// PEM files: the server's certificate and key, and the CA that signed
/// the gateways' client certificates.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// What `spawn` bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub xds: SocketAddr,
    pub metrics: Option<SocketAddr>,
}

/// Binds the listeners (so a bad address fails at once) and serves them on
/// a thread of their own until the process exits.
pub fn spawn(opts: XdsOptions) -> Result<Bound, AdminError> {
    if opts.tls.is_none() && !opts.listen.ip().is_loopback() {
        return Err(AdminError::Usage(format!(
            "refusing plaintext xDS on {}: the bundle goes only to gateways with a client certificate; \
             pass --xds-cert, --xds-key and --xds-client-ca (see `tokenhub-admin serve --help`), or listen on loopback",
            opts.listen
        )));
    }
    let tls = opts.tls.as_ref().map(tls_config).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("xds")
        .enable_all()
        .build()
        .map_err(|e| AdminError::Io(format!("xds runtime: {e}")))?;
    let xds = bind(&runtime, opts.listen)?;
    let metrics = opts.metrics_listen.map(|a| bind(&runtime, a)).transpose()?;
    let bound = Bound { xds: local_addr(&xds)?, metrics: metrics.as_ref().map(local_addr).transpose()? };
    let registry = Arc::new(Registry::new(&opts.home));
    let (tx, rx) = watch::channel(None);
    std::thread::Builder::new()
        .name("xds".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(follow(opts.ecds_file, tx, registry.clone()));
                if let Some(listener) = metrics {
                    tokio::spawn(serve_metrics(listener, registry.clone()));
                }
                let service = ExtensionConfigDiscoveryServiceServer::new(server::Ecds { snapshots: rx, registry })
                    .max_encoding_message_size(usize::MAX);
                let mut builder = Server::builder()
                    .http2_keepalive_interval(Some(KEEPALIVE))
                    .http2_keepalive_timeout(Some(KEEPALIVE))
                    .tcp_keepalive(Some(KEEPALIVE));
                if let Some(tls) = tls {
                    builder = match builder.tls_config(tls) {
                        Ok(b) => b,
                        Err(e) => return log::error!("xds: TLS: {e}"),
                    };
                }
                let incoming = TcpListenerStream::new(xds);
                if let Err(e) = builder.add_service(service).serve_with_incoming(incoming).await {
                    log::error!("xds: server stopped: {e}");
                }
            })
        })
        .map_err(|e| AdminError::Io(format!("xds thread: {e}")))?;
    Ok(bound)
}

fn bind(runtime: &tokio::runtime::Runtime, addr: SocketAddr) -> Result<tokio::net::TcpListener, AdminError> {
    runtime.block_on(tokio::net::TcpListener::bind(addr)).map_err(|e| AdminError::Io(format!("listen on {addr}: {e}")))
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr, AdminError> {
    listener.local_addr().map_err(|e| AdminError::Io(e.to_string()))
}

fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, AdminError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| AdminError::io(p, e));
    let key = fsutil::read_private_file(&files.key).map_err(|e| AdminError::io(&files.key, e))?;
    let identity = Identity::from_pem(read(&files.cert)?, key.as_bytes());
    Ok(ServerTlsConfig::new().identity(identity).client_ca_root(Certificate::from_pem(read(&files.client_ca)?)))
}

/// Follows the published file: every new bundle becomes the served
/// snapshot. A file that cannot be read as a guard resource is logged and
/// the last good snapshot keeps being served.
async fn follow(path: PathBuf, tx: watch::Sender<Option<Arc<Snapshot>>>, registry: Arc<Registry>) {
    let format = Format::of(&path);
    let mut file = fsutil::FileWatch::new(path);
    loop {
        match file
            .poll()
            .map(|read| read.map_err(|e| e.to_string()).and_then(|b| resource::snapshot_of_file(&b, format)))
        {
            Some(Ok(Some(snapshot))) if tx.borrow().as_deref() != Some(&snapshot) => {
                log::info!("xds: serving bundle version {}", snapshot.version);
                registry.update(|s| s.serving_version = Some(snapshot.version));
                tx.send_replace(Some(Arc::new(snapshot)));
            }
            Some(Err(e)) => log::warn!("xds: {} not served: {e}; the last good bundle stays", file.path().display()),
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A minimal HTTP/1 responder: every request gets the metrics text.
async fn serve_metrics(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { continue };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut request)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return;
            }
            let body = registry::render_metrics(&registry.snapshot());
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        });
    }
}

/// The xDS options `serve` was given, or `None` without `--xds-listen`.
pub fn options(
    args: &crate::admin::api::ServeOptions,
    settings: &crate::admin::store::Settings,
    home: &Path,
) -> Result<Option<XdsOptions>, AdminError> {
    let Some(listen) = &args.xds_listen else { return Ok(None) };
    let address = |flag: &str, text: &str| {
        text.parse::<SocketAddr>()
            .map_err(|_| AdminError::Usage(format!("{flag} {text:?}: expected IP:PORT, e.g. 0.0.0.0:18000")))
    };
    let tls = match (&args.xds_cert, &args.xds_key, &args.xds_client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => {
            Some(TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: client_ca.clone() })
        }
        _ => None,
    };
    let ecds_file = settings.ecds_file.clone().ok_or_else(|| {
        AdminError::Usage("nothing to serve: run `tokenhub-admin publish --ecds-file FILE --wasm FILE` once".into())
    })?;
    Ok(Some(XdsOptions {
        listen: address("--xds-listen", listen)?,
        tls,
        metrics_listen: args.metrics_listen.as_deref().map(|m| address("--metrics-listen", m)).transpose()?,
        ecds_file,
        home: home.to_path_buf(),
    }))
}
