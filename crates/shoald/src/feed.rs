//! The node's feed client: keeps a `Feed` stream open to a manager's
//! dispatcher and applies snapshots and deltas to the mesh. Resumes from the
//! last revision after a reconnect; while no manager answers, the mesh keeps
//! serving with its last table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::{feed_message, FeedMessage, FeedRequest, ServiceRoute};
use shoal_mesh::{Endpoint, Mesh, PortRoute};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Runs until `shutdown`.
pub async fn run(channel: Channel, mesh: Mesh, node_id: String, shutdown: CancellationToken) {
    let mut client = DispatcherClient::new(channel);
    let mut revision = 0u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        let req = FeedRequest {
            node_id: node_id.clone(),
            from_revision: revision,
        };
        match client.feed(req).await {
            Ok(resp) => {
                backoff = Duration::from_millis(100);
                let mut stream = resp.into_inner();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = stream.message() => m,
                    };
                    match msg {
                        Ok(Some(msg)) => revision = apply(&mesh, msg),
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
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Applies one feed message; returns its revision.
fn apply(mesh: &Mesh, msg: FeedMessage) -> u64 {
    let errors = match msg.body {
        Some(feed_message::Body::Snapshot(s)) => {
            mesh.apply_snapshot(s.services.into_iter().map(to_route).collect())
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

/// Feed route → mesh route.
pub fn to_route(r: ServiceRoute) -> shoal_mesh::ServiceRoute {
    shoal_mesh::ServiceRoute {
        service_id: Arc::from(r.service_id.as_str()),
        service_name: Arc::from(r.service_name.as_str()),
        ports: r
            .ports
            .iter()
            .filter(|p| p.protocol == "tcp")
            .filter_map(|p| {
                Some(PortRoute {
                    published: u16::try_from(p.published_port).ok()?,
                    target: u16::try_from(p.target_port).ok()?,
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
