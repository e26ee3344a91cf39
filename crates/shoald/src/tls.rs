//! Node-to-node transport: the manager's mTLS listener (`--listen-addr`,
//! 2377) and the channels other nodes dial it with. Dispatcher calls over TLS
//! must carry a node certificate from the cluster CA naming the node they
//! speak for; the join endpoint (`NodeCA`) is the only call allowed without one.

use std::collections::BTreeSet;
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
use tonic::transport::channel::Change;
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
}

impl ManagersChannel {
    pub fn new(addrs: &[String], certs: &NodeCertificates) -> anyhow::Result<Self> {
        anyhow::ensure!(!addrs.is_empty(), "no manager address known; join again");
        let (channel, changes) = Channel::balance_channel(64);
        let state = Arc::new(std::sync::Mutex::new(Balance {
            changes,
            certs: certs.clone(),
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
    }
}
