//! Node-to-node transport: the manager's mTLS listener (`--listen-addr`,
//! 2377) and the channels other nodes dial it with. Dispatcher calls over TLS
//! must carry a node certificate from the cluster CA naming the node they
//! speak for; the join endpoint (`NodeCA`) is the only call allowed without one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_api::pb::dispatcher_server::DispatcherServer;
use shoal_api::pb::node_ca_server::NodeCaServer;
use shoal_manager::{ca, NodeCertificates};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};

use crate::control::NodeDispatcher;
use crate::daemon::Daemon;

/// Binds `addr` now (a taken port fails `swarm init` clearly) and serves the
/// node-to-node API with mTLS until `shutdown`.
pub async fn serve_manager_listener(
    daemon: Arc<Daemon>,
    addr: SocketAddr,
    certs: &NodeCertificates,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let manager = daemon
        .manager()
        .context("the node-to-node listener needs a manager")?;
    let tls = ca::server_tls(&certs.ca_pem, &certs.cert_pem, &certs.key_pem)
        .context("TLS config for --listen-addr")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind --listen-addr {addr}"))?;
    // Only managers speak Raft.
    let raft =
        manager
            .store()
            .raft_service_authorized(Arc::new(|req| match ca::peer_identity(req)? {
                (_, ca::CertRole::Manager) => Ok(()),
                (node, _) => Err(tonic::Status::permission_denied(format!(
                    "node {node} is not a manager and cannot take part in Raft"
                ))),
            }));
    let server = Server::builder()
        .tls_config(tls)
        .context("TLS config for --listen-addr")?
        .add_service(raft)
        .add_service(NodeCaServer::new(manager.node_ca()))
        .add_service(DispatcherServer::new(NodeDispatcher {
            daemon,
            remote: true,
        }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned());
    tracing::info!(%addr, "serving nodes (mTLS)");
    Ok(tokio::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(%err, "node listener failed");
        }
    }))
}

fn manager_endpoint(addr: &str, certs: &NodeCertificates) -> anyhow::Result<Endpoint> {
    let tls = ca::client_tls(&certs.ca_pem, Some((&certs.cert_pem, &certs.key_pem)))
        .context("client TLS config")?;
    Ok(Endpoint::from_shared(format!("https://{addr}"))
        .with_context(|| format!("manager address {addr:?}"))?
        .tls_config(tls)
        .context("client TLS config")?
        .connect_timeout(Duration::from_secs(2))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3)))
}

/// An mTLS channel to one manager, connecting lazily (and reconnecting).
pub fn manager_channel(addr: &str, certs: &NodeCertificates) -> anyhow::Result<Channel> {
    Ok(manager_endpoint(addr, certs)?.connect_lazy())
}

/// An mTLS channel spread over every known manager: a manager that is gone
/// drops out, so the agent and the feed keep a path while any manager lives.
pub fn managers_channel(addrs: &[String], certs: &NodeCertificates) -> anyhow::Result<Channel> {
    anyhow::ensure!(!addrs.is_empty(), "no manager address known; join again");
    let endpoints = addrs
        .iter()
        .map(|a| manager_endpoint(a, certs))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Channel::balance_list(endpoints.into_iter()))
}
