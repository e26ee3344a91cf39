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
    let server = Server::builder()
        .tls_config(tls)
        .context("TLS config for --listen-addr")?
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

/// An mTLS channel to a manager, connecting lazily (and reconnecting).
pub fn manager_channel(addr: &str, certs: &NodeCertificates) -> anyhow::Result<Channel> {
    let tls = ca::client_tls(&certs.ca_pem, Some((&certs.cert_pem, &certs.key_pem)))
        .context("client TLS config")?;
    Ok(Endpoint::from_shared(format!("https://{addr}"))
        .with_context(|| format!("manager address {addr:?}"))?
        .tls_config(tls)
        .context("client TLS config")?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_lazy())
}
