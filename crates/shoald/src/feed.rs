//! The node's feed client: keeps a `Feed` stream open to a manager's
//! dispatcher and applies snapshots and deltas to the mesh. Resumes from the
//! last revision after a reconnect; while no manager answers, the mesh keeps
//! serving with its last table.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::{
    feed_message, FeedAppliedRequest, FeedMessage, FeedRequest, OverlayPeers, ServiceRoute,
};
use shoal_mesh::{Endpoint, Mesh, PortRoute, Protocol, ProxyProtocol, PublishMode};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The node's side of the ingress overlay: which VXLAN device to program.
#[derive(Clone, Debug)]
pub struct Overlay {
    pub vxlan: String,
    pub bridge: String,
    pub node_id: String,
}

impl Overlay {
    /// Remote overlay addresses → their node's underlay address.
    pub fn peers(&self, peers: &OverlayPeers) -> BTreeMap<Ipv4Addr, Ipv4Addr> {
        let ip = |s: &str| s.split('/').next().and_then(|a| a.parse::<Ipv4Addr>().ok());
        let underlay: HashMap<&str, Ipv4Addr> = peers
            .nodes
            .iter()
            .filter(|n| n.node_id != self.node_id)
            .filter_map(|n| Some((n.node_id.as_str(), ip(&n.underlay_addr)?)))
            .collect();
        let nodes = peers
            .nodes
            .iter()
            .filter_map(|n| Some((ip(&n.ingress_address)?, *underlay.get(n.node_id.as_str())?)));
        let tasks = peers
            .task_nodes
            .iter()
            .filter_map(|(task_ip, node)| Some((ip(task_ip)?, *underlay.get(node.as_str())?)));
        nodes.chain(tasks).collect()
    }

    async fn apply(&self, peers: &OverlayPeers) {
        let map = self.peers(peers);
        if let Err(err) = shoal_net::reconcile_overlay(&self.vxlan, &self.bridge, &map).await {
            tracing::warn!(%err, "could not program the ingress overlay");
        }
    }
}

/// Runs until `shutdown`.
pub async fn run(
    channel: Channel,
    mesh: Mesh,
    node_id: String,
    overlay: Option<Overlay>,
    shutdown: CancellationToken,
) {
    // A snapshot of many services' endpoints may pass tonic's 4 MiB default.
    let mut client =
        DispatcherClient::new(channel).max_decoding_message_size(shoal_api::MAX_MESSAGE_BYTES);
    let mut revision = 0u64;
    let mut waits = reconnect_backoff();
    loop {
        let req = FeedRequest {
            node_id: node_id.clone(),
            from_revision: revision,
        };
        match client.feed(req).await {
            Ok(resp) => {
                waits = reconnect_backoff();
                let mut stream = resp.into_inner();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = stream.message() => m,
                    };
                    match msg {
                        Ok(Some(msg)) => {
                            if let Some(o) = &overlay {
                                let peers = match &msg.body {
                                    Some(feed_message::Body::Snapshot(s)) => s.overlay.as_ref(),
                                    Some(feed_message::Body::Delta(d)) => d.overlay.as_ref(),
                                    None => None,
                                };
                                if let Some(peers) = peers {
                                    o.apply(peers).await;
                                }
                            }
                            revision = apply(&mesh, msg);
                            // Tell the managers this mesh routes by `revision`
                            // now: withdrawn tasks wait for every node's word.
                            let ack = FeedAppliedRequest {
                                node_id: node_id.clone(),
                                revision,
                            };
                            if let Err(status) = client.feed_applied(ack).await {
                                tracing::debug!(%status, "could not report the applied feed revision");
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(%status, "feed stream ended");
                            break;
                        }
                    }
                }
            }
            Err(status) => tracing::debug!(%status, "feed unavailable"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(waits.next().unwrap_or(RECONNECT_MAX_WAIT)) => {}
        }
    }
}

/// The longest wait between two attempts to open the feed.
const RECONNECT_MAX_WAIT: Duration = Duration::from_secs(2);

/// The waits between attempts to open the feed, made afresh once a stream
/// opened: exponential from 100 ms, each with random jitter up to its own
/// length (so the nodes of a cluster do not all reconnect at once when a
/// manager goes), never more than [`RECONNECT_MAX_WAIT`], without end.
fn reconnect_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(RECONNECT_MAX_WAIT / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Applies one feed message; returns its revision.
fn apply(mesh: &Mesh, msg: FeedMessage) -> u64 {
    let errors = match msg.body {
        Some(feed_message::Body::Snapshot(s)) => {
            mesh.apply_snapshot(s.services.into_iter().map(to_route).collect())
        }
        // An empty delta only moves the revision on (the withdrawal confirmer
        // waits for it): the routing table stays as it is.
        Some(feed_message::Body::Delta(d))
            if d.upserts.is_empty() && d.removed_service_ids.is_empty() =>
        {
            Vec::new()
        }
        Some(feed_message::Body::Delta(d)) => mesh.apply_delta(
            d.upserts.into_iter().map(to_route).collect(),
            &d.removed_service_ids,
        ),
        None => Vec::new(),
    };
    for err in errors {
        tracing::warn!(error = %err, "mesh could not serve a published port");
    }
    msg.revision
}

/// A feed port's PROXY protocol version ("" or anything unknown: none; the
/// manager stores only "", "v1" and "v2").
fn proxy_protocol(version: &str) -> Option<ProxyProtocol> {
    match version {
        "v1" => Some(ProxyProtocol::V1),
        "v2" => Some(ProxyProtocol::V2),
        _ => None,
    }
}

/// Feed route → mesh route.
pub fn to_route(r: ServiceRoute) -> shoal_mesh::ServiceRoute {
    shoal_mesh::ServiceRoute {
        service_id: Arc::from(r.service_id.as_str()),
        service_name: Arc::from(r.service_name.as_str()),
        ports: r
            .ports
            .iter()
            .filter_map(|p| {
                let protocol = match p.protocol.as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    _ => return None,
                };
                Some(PortRoute {
                    protocol,
                    mode: publish_mode(&p.publish_mode),
                    proxy_protocol: proxy_protocol(&p.proxy_protocol),
                    ..PortRoute::tcp(
                        u16::try_from(p.published_port).ok()?,
                        u16::try_from(p.target_port).ok()?,
                    )
                })
            })
            .collect(),
        endpoints: r
            .endpoints
            .into_iter()
            .map(|e| Endpoint {
                task_id: Arc::from(e.task_id.as_str()),
                task_name: Arc::from(e.task_name.as_str()),
                slot: e.slot,
                node: Arc::from(e.node_name.as_str()),
                ports: e
                    .ports
                    .iter()
                    .filter_map(|p| {
                        let addr: SocketAddr = p.address.parse().ok()?;
                        Some((u16::try_from(p.target_port).ok()?, addr))
                    })
                    .collect(),
                draining: e.draining,
            })
            .collect(),
    }
}

/// A feed port's publish mode: `host`, or `ingress` (also when unset).
fn publish_mode(mode: &str) -> PublishMode {
    if mode == "host" {
        PublishMode::Host
    } else {
        PublishMode::Ingress
    }
}

#[cfg(test)]
mod tests;
