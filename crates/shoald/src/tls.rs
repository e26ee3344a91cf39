//! Node-to-node transport: the manager's mTLS listener (`--listen-addr`,
//! 2377) and the channels other nodes dial it with. Dispatcher calls over TLS
//! must carry a node certificate from the cluster CA naming the node they
//! speak for; the join endpoint (`NodeCA`) is the only call allowed without one.
//! A removed node's certificate is refused on every call.
//!
//! The node's certificate changes at run time (renewal, role changes): the
//! listener and the channels read the current one ([`NodeTls`]) for each new
//! connection, and connections already open keep theirs.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwapOption;
use hyper_util::rt::TokioIo;
use shoal_api::pb::dispatcher_server::{Dispatcher, DispatcherServer};
use shoal_api::pb::node_ca_server::NodeCaServer;
use shoal_manager::dispatcher::caller;
use shoal_manager::{join, Manager, NodeCertificates};
use shoal_store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint, Server};

/// How long a peer may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// This node's certificate and the rustls configs made from it, shared by
/// the listener and every channel; [`NodeTls::install`] swaps them at once.
#[derive(Clone, Default)]
pub struct NodeTls {
    current: Arc<ArcSwapOption<TlsConfigs>>,
}

struct TlsConfigs {
    certs: NodeCertificates,
    /// For connections the node listener accepts.
    server: Arc<rustls::ServerConfig>,
    /// For connections this node opens to managers.
    client: Arc<rustls::ClientConfig>,
}

// === impl NodeTls ===

impl NodeTls {
    /// Serves `certs` to every connection made from now on.
    pub fn install(&self, certs: &NodeCertificates) -> anyhow::Result<()> {
        let server = shoal_ca::rustls_server_config(&certs.ca_pem, &certs.cert_pem, &certs.key_pem)
            .context("TLS config of the node listener")?;
        let client = shoal_ca::rustls_client_config(&certs.ca_pem, &certs.cert_pem, &certs.key_pem)
            .context("TLS config of connections to managers")?;
        self.current.store(Some(Arc::new(TlsConfigs {
            certs: certs.clone(),
            server: Arc::new(server),
            client: Arc::new(client),
        })));
        Ok(())
    }

    /// Forgets the certificate (`swarm leave`).
    pub fn clear(&self) {
        self.current.store(None);
    }

    /// The certificate now served (None outside a swarm).
    pub fn certificates(&self) -> Option<NodeCertificates> {
        self.current.load().as_ref().map(|c| c.certs.clone())
    }

    fn server_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.current.load().as_ref().map(|c| c.server.clone())
    }

    fn client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.current.load().as_ref().map(|c| c.client.clone())
    }
}

/// Accepts TCP connections on `listener` and completes each TLS handshake
/// (in a task of its own, bounded by [`HANDSHAKE_TIMEOUT`]) with the node's
/// current certificate, until `shutdown`.
async fn accept_tls(
    listener: TcpListener,
    tls: NodeTls,
    streams: mpsc::Sender<std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(err) => {
                tracing::warn!(%err, "node listener: accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(config) = tls.server_config() else {
            continue;
        };
        let (streams, shutdown) = (streams.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let handshake = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => r,
            };
            match stream {
                Ok(Ok(stream)) => {
                    let _ = streams.send(Ok(stream)).await;
                }
                Ok(Err(err)) => tracing::debug!(%peer, %err, "node listener: TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "node listener: TLS handshake timed out"),
            }
        });
    }
}

/// Refuses every call whose certificate names a node `node rm` removed.
fn refuse_removed(
    store: Store,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        if let Some(certs) = req.peer_certs() {
            if let Some(leaf) = certs.first() {
                if let Ok((node, _)) = shoal_ca::cert_identity(leaf.as_ref()) {
                    if join::is_removed(&store, &node) {
                        return Err(join::removed_status(&node));
                    }
                }
            }
        }
        Ok(req)
    }
}

/// Binds `addr` now (a taken port fails `swarm init` clearly) and serves the
/// node-to-node API with mTLS until `shutdown`: `manager`'s Raft and
/// `NodeCA` services, and `dispatcher`.
pub async fn serve_node_listener<D: Dispatcher>(
    addr: SocketAddr,
    tls: &NodeTls,
    manager: &Manager,
    dispatcher: D,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    anyhow::ensure!(
        tls.server_config().is_some(),
        "the node-to-node listener needs a node certificate"
    );
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind --listen-addr {addr}"))?;
    let (streams, incoming) = mpsc::channel(64);
    tokio::spawn(accept_tls(listener, tls.clone(), streams, shutdown.clone()));
    let raft = manager
        .store()
        .raft_service_authorized(Arc::new(caller::require_raft_manager));
    let server = Server::builder()
        .layer(tonic::service::InterceptorLayer::new(refuse_removed(
            manager.store().clone(),
        )))
        .add_service(raft)
        .add_service(NodeCaServer::new(manager.node_ca()))
        .add_service(DispatcherServer::new(dispatcher))
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown.cancelled_owned());
    tracing::info!(%addr, "serving nodes (mTLS)");
    Ok(tokio::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(%err, "node listener failed");
        }
    }))
}

/// An endpoint with tonic's own TLS for `certs` (fixed for its life: the
/// balancer's endpoints are made again when the certificate changes).
fn manager_endpoint(addr: &str, certs: &NodeCertificates) -> anyhow::Result<Endpoint> {
    let tls = shoal_ca::client_tls(&certs.ca_pem, Some((&certs.cert_pem, &certs.key_pem)))
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

/// An mTLS channel to one manager, connecting lazily (and reconnecting),
/// each connection with the node's certificate of the moment.
pub fn manager_channel(addr: &str, tls: &NodeTls) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("manager address {addr:?}"))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3));
    let (addr, tls) = (addr.to_owned(), tls.clone());
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let (addr, tls) = (addr.clone(), tls.clone());
            async move {
                tokio::time::timeout(Duration::from_secs(5), connect_tls(&addr, &tls))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("connect to manager {addr}: timed out"),
                        )
                    })?
            }
        })),
    )
}

/// TCP, then TLS as this node, to the manager at `addr`.
async fn connect_tls(
    addr: &str,
    tls: &NodeTls,
) -> std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let config = tls.client_config().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "this node has no certificate (not in a swarm)",
        )
    })?;
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(shoal_ca::TLS_SERVER_NAME)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(TokioIo::new(stream))
}

/// Raft peer channels that dial as this node (see [`manager_channel`]).
pub fn raft_peer_channels(tls: &NodeTls) -> shoal_store::PeerChannels {
    let tls = tls.clone();
    Arc::new(move |addr: &str| {
        let addr = addr.strip_prefix("https://").unwrap_or(addr);
        manager_channel(addr, &tls).map_err(|e| format!("{e:#}"))
    })
}

/// An mTLS channel spread over every known manager, whose set follows the
/// cluster: managers added later (a join or `node promote`) are dialled too,
/// demoted ones dropped. A prober takes managers that do not accept
/// connections out of the balance (tonic's balancer would otherwise keep
/// picking a dead manager whose connection had once been up, failing every
/// other call), and puts them back when they answer again.
pub struct ManagersChannel {
    channel: Channel,
    state: Arc<std::sync::Mutex<Balance>>,
    _prober: tokio_util::sync::DropGuard,
}

struct Balance {
    changes: tokio::sync::mpsc::Sender<Change<String, Endpoint>>,
    /// The node's certificate, followed by the prober.
    tls: NodeTls,
    /// The certificate the inserted endpoints present.
    certs: NodeCertificates,
    /// Every manager the cluster names.
    known: BTreeSet<String>,
    /// Those the balancer may pick now.
    inserted: BTreeSet<String>,
}

/// How often the prober checks that managers accept connections.
const PROBE_EVERY: Duration = Duration::from_secs(1);

impl Balance {
    /// Makes the balancer's set `wanted` (every known manager when none is
    /// reachable: better to try than to have nothing).
    fn apply(&mut self, reachable: &BTreeSet<String>) -> anyhow::Result<()> {
        let wanted: BTreeSet<String> = if reachable.is_empty() {
            self.known.clone()
        } else {
            reachable.intersection(&self.known).cloned().collect()
        };
        for gone in self.inserted.difference(&wanted) {
            let _ = self.changes.try_send(Change::Remove(gone.clone()));
        }
        for new in wanted.difference(&self.inserted) {
            let endpoint = manager_endpoint(new, &self.certs)?;
            self.changes
                .try_send(Change::Insert(new.clone(), endpoint))
                .map_err(|e| anyhow::anyhow!("update manager list: {e}"))?;
        }
        self.inserted = wanted;
        Ok(())
    }

    /// After a renewal, new connections present the new certificate: the
    /// endpoints are made again (connections already open keep serving the
    /// calls they carry).
    fn follow_certificate(&mut self) -> anyhow::Result<()> {
        let Some(current) = self.tls.certificates() else {
            return Ok(());
        };
        if current.cert_pem == self.certs.cert_pem && current.ca_pem == self.certs.ca_pem {
            return Ok(());
        }
        self.certs = current;
        for addr in &self.inserted {
            let endpoint = manager_endpoint(addr, &self.certs)?;
            self.changes
                .try_send(Change::Insert(addr.clone(), endpoint))
                .map_err(|e| anyhow::anyhow!("update manager list: {e}"))?;
        }
        Ok(())
    }
}

impl ManagersChannel {
    pub fn new(addrs: &[String], tls: &NodeTls) -> anyhow::Result<Self> {
        anyhow::ensure!(!addrs.is_empty(), "no manager address known; join again");
        let certs = tls
            .certificates()
            .context("no node certificate to dial the managers with")?;
        let (channel, changes) = Channel::balance_channel(64);
        let state = Arc::new(std::sync::Mutex::new(Balance {
            changes,
            tls: tls.clone(),
            certs,
            known: BTreeSet::new(),
            inserted: BTreeSet::new(),
        }));
        let stop = CancellationToken::new();
        tokio::spawn(probe_managers(state.clone(), stop.clone()));
        let this = Self {
            channel,
            state,
            _prober: stop.drop_guard(),
        };
        this.set_managers(addrs)?;
        Ok(this)
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Dials exactly `addrs` from now on (an empty list changes nothing: a
    /// node keeps its last managers rather than none).
    pub fn set_managers(&self, addrs: &[String]) -> anyhow::Result<()> {
        if addrs.is_empty() {
            return Ok(());
        }
        let wanted: BTreeSet<String> = addrs.iter().cloned().collect();
        let mut state = self.state.lock().expect("managers lock");
        if state.known == wanted {
            return Ok(());
        }
        tracing::info!(managers = ?wanted, "manager list updated");
        // New managers count as reachable until probed.
        let reachable: BTreeSet<String> = state
            .inserted
            .iter()
            .chain(wanted.difference(&state.known))
            .cloned()
            .collect();
        state.known = wanted;
        state.apply(&reachable)
    }
}

/// Every [`PROBE_EVERY`], a TCP connect to each known manager decides which
/// ones the balancer may pick.
async fn probe_managers(state: Arc<std::sync::Mutex<Balance>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let known = state.lock().expect("managers lock").known.clone();
        let probes = known.iter().map(|addr| async move {
            let ok = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr.as_str()),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            (addr.clone(), ok)
        });
        let reachable: BTreeSet<String> = futures::future::join_all(probes)
            .await
            .into_iter()
            .filter_map(|(a, ok)| ok.then_some(a))
            .collect();
        let mut state = state.lock().expect("managers lock");
        if state.inserted != reachable {
            if let Err(err) = state.apply(&reachable) {
                tracing::warn!("{err:#}");
            }
        }
        if let Err(err) = state.follow_certificate() {
            tracing::warn!("{err:#}");
        }
    }
}
