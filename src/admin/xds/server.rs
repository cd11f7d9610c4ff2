//! The ECDS service, state of the world: one stream per Envoy; the current
//! snapshot is pushed on subscription and on every change; an ACK records
//! the version the Envoy enforces, a NACK its reason (and that version is
//! not pushed to it again — it keeps its last good bundle until a new one).
//!
//! State of the world rather than delta: there is one resource, so a delta
//! would carry the same bytes with more protocol.

use super::registry::{Nack, Registry};
use super::resource::Snapshot;
use crate::admin::ecds::{FILTER_NAME, TYPED_EXTENSION_CONFIG};
use crate::admin::unix_now;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryService;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub type Snapshots = watch::Receiver<Option<Arc<Snapshot>>>;

pub struct Ecds {
    pub snapshots: Snapshots,
    pub registry: Arc<Registry>,
}

type Outbound = mpsc::Sender<Result<DiscoveryResponse, Status>>;

#[tonic::async_trait]
impl ExtensionConfigDiscoveryService for Ecds {
    type StreamExtensionConfigsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaExtensionConfigsStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_extension_configs(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamExtensionConfigsStream>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let (tx, rx) = mpsc::channel(2);
        let stream = EnvoyStream {
            peer,
            node_id: None,
            subscribed: false,
            nonce: 0,
            sent: None,
            registry: self.registry.clone(),
            out: tx,
        };
        tokio::spawn(stream.run(request.into_inner(), self.snapshots.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_extension_configs(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaExtensionConfigsStream>, Status> {
        Err(Status::unimplemented("tokenhub-admin serves state-of-the-world ECDS: set api_type: GRPC, not DELTA_GRPC"))
    }

    async fn fetch_extension_configs(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("tokenhub-admin serves streaming ECDS only: set api_type: GRPC"))
    }
}

/// One Envoy's stream.
struct EnvoyStream {
    peer: String,
    node_id: Option<String>,
    /// It asked for the guard's resource.
    subscribed: bool,
    nonce: u64,
    /// The last push and its nonce, to match an ACK or NACK.
    sent: Option<(Arc<Snapshot>, String)>,
    registry: Arc<Registry>,
    out: Outbound,
}

impl EnvoyStream {
    async fn run(mut self, mut inbound: Streaming<DiscoveryRequest>, mut snapshots: Snapshots) {
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(request)) => {
                        if let Err(status) = self.on_request(request, &snapshots).await {
                            let _ = self.out.send(Err(status)).await;
                            break;
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
                changed = snapshots.changed(), if self.subscribed => {
                    if changed.is_err() {
                        break;
                    }
                    let current = snapshots.borrow_and_update().clone();
                    self.push(current).await;
                }
            }
        }
        if let Some(node) = &self.node_id {
            log::info!("xds: {node} disconnected");
            self.registry.gateway(node, |g| g.connected = false);
        }
    }

    async fn on_request(&mut self, request: DiscoveryRequest, snapshots: &Snapshots) -> Result<(), Status> {
        if self.node_id.is_none() {
            let node = request.node.as_ref().filter(|n| !n.id.is_empty()).ok_or_else(|| {
                Status::invalid_argument("the first request must carry a node id (bootstrap `node: {id: …}`)")
            })?;
            let (id, cluster, peer) = (node.id.clone(), node.cluster.clone(), self.peer.clone());
            log::info!("xds: {id} connected from {peer}");
            self.registry.gateway(&id, |g| {
                g.cluster = cluster;
                g.peer = peer;
                g.connected = true;
                g.connected_at = unix_now();
            });
            self.node_id = Some(id);
        }
        if request.type_url != TYPED_EXTENSION_CONFIG {
            return Err(Status::invalid_argument(format!(
                "this server serves {TYPED_EXTENSION_CONFIG} (ECDS) only, not {}",
                request.type_url
            )));
        }
        let node = self.node_id.clone().unwrap_or_default();
        if !request.response_nonce.is_empty() {
            self.on_reply(&node, &request);
            return Ok(());
        }
        // A new subscription (or a resubscription after reconnecting).
        self.subscribed = request.resource_names.iter().any(|n| n == FILTER_NAME);
        if !self.subscribed {
            log::warn!("xds: {node} subscribed to {:?}, not {FILTER_NAME}: nothing to send", request.resource_names);
            return Ok(());
        }
        let current = snapshots.borrow().clone();
        self.push(current).await;
        Ok(())
    }

    /// An ACK or NACK of an earlier push; stale nonces are ignored, as the
    /// protocol says.
    fn on_reply(&mut self, node: &str, request: &DiscoveryRequest) {
        let Some((snapshot, nonce)) = &self.sent else { return };
        if *nonce != request.response_nonce {
            return;
        }
        let version = snapshot.version;
        match &request.error_detail {
            Some(error) => {
                log::warn!("xds: {node} refused version {version}: {}", error.message);
                let reason = error.message.clone();
                self.registry.gateway(node, |g| {
                    g.nacks += 1;
                    g.last_nack = Some(Nack { version, reason, at: unix_now() });
                });
            }
            None => self.registry.gateway(node, |g| g.acked_version = Some(version)),
        }
    }

    async fn push(&mut self, snapshot: Option<Arc<Snapshot>>) {
        let Some(snapshot) = snapshot else { return };
        if self.sent.as_ref().is_some_and(|(sent, _)| Arc::ptr_eq(sent, &snapshot)) {
            return;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let response = DiscoveryResponse {
            version_info: snapshot.version.to_string(),
            resources: vec![snapshot.resource.clone()],
            type_url: TYPED_EXTENSION_CONFIG.into(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let version = snapshot.version;
        self.sent = Some((snapshot, nonce));
        if let Some(node) = &self.node_id {
            self.registry.gateway(node, |g| g.sent_version = Some(version));
        }
        let _ = self.out.send(Ok(response)).await;
    }
}
