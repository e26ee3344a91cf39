//! Lifecycle and role wiring. Start-up: identity, mesh, admin HTTP and the
//! node socket; then, if this node is in a cluster, its roles: a manager runs
//! the store, the manager components and the mTLS listener; every member runs
//! the agent and the feed client (and, in netns mode, the ingress bridge and
//! VXLAN overlay). `swarm init`, `swarm join` and `swarm leave` start and stop
//! roles at run time. Shutdown runs in order: the mesh stops accepting and
//! drains (bounded), the agent stops tasks, then the manager, API and store.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use prometheus::Registry;
use shoal_agent::{Agent, AgentConfig, NetworkMode};
use shoal_api::pb::control_server::{Control, ControlServer};
use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::dispatcher_server::DispatcherServer;
use shoal_api::pb::node_ca_client::NodeCaClient;
use shoal_api::pb::{
    CreateServiceRequest, IssueNodeCertificateRequest, NodeRole, PortConfig, ServiceSpec,
    SwarmInitRequest,
};
use shoal_ca as ca;
use shoal_manager::{InitSettings, LocalNode, Manager, ManagerConfig, NodeCertificates};
use shoal_mesh::{Mesh, MeshConfig};
use shoal_store::{Store, StoreConfig};
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::Status;

use crate::config::{DaemonConfig, NetworkModeArg};
use crate::control::{NodeControl, NodeDispatcher};
use crate::feed::Overlay;
use crate::host_network::{self, AddressPools};
use crate::node::{self, Membership, NodeIdentity};
use crate::tls::{ManagersChannel, NodeTls};

mod renewal;
mod role;

const ALREADY_IN_SWARM: &str =
    "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.";

/// The running roles of a cluster member.
struct Roles {
    /// Stops the manager components, the node listener and the feed client.
    token: CancellationToken,
    /// Stops the agent, which stops its tasks (after the mesh drained).
    agent_token: CancellationToken,
    agent: JoinHandle<()>,
}

/// Everything a running node holds.
pub struct Daemon {
    pub cfg: DaemonConfig,
    identity: StdMutex<NodeIdentity>,
    socket: PathBuf,
    mesh: Mesh,
    manager: StdMutex<Option<Manager>>,
    store: StdMutex<Option<Store>>,
    /// Serialises init, join, leave and start-up.
    membership_lock: Mutex<()>,
    roles: Mutex<Option<Roles>>,
    /// This node's key material once it is a member, as every new
    /// connection presents it (swapped by renewals and role changes).
    tls: NodeTls,
    /// A channel to the current Raft leader (followers proxy dispatcher calls).
    leader_channel: StdMutex<Option<(String, Channel)>>,
    /// Stops the manager components and the node listener alone (`node demote`).
    manager_token: StdMutex<Option<CancellationToken>>,
    /// A worker's channel over the managers (also relays the local socket's
    /// dispatcher calls once a manager was demoted).
    upstream: StdMutex<Option<Arc<ManagersChannel>>>,
    /// A role failed: the daemon must exit.
    fatal: mpsc::UnboundedSender<String>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Daemon {
    pub fn manager(&self) -> Option<Manager> {
        self.manager.lock().expect("manager lock").clone()
    }

    pub fn identity(&self) -> NodeIdentity {
        self.identity.lock().expect("identity lock").clone()
    }

    pub fn membership(&self) -> Membership {
        self.identity.lock().expect("identity lock").membership
    }

    fn update_identity(&self, f: impl FnOnce(&mut NodeIdentity)) -> anyhow::Result<()> {
        let mut id = self.identity.lock().expect("identity lock");
        f(&mut id);
        id.save(&self.cfg.data_root)
    }

    fn store_dir(&self) -> PathBuf {
        self.cfg.data_root.join("store")
    }

    /// Opens this manager's Raft store: `raft_id` in the group, reachable
    /// on the node listener, speaking mTLS to its peers.
    async fn open_store(&self, raft_id: u64, certs: &NodeCertificates) -> anyhow::Result<Store> {
        if let Some(s) = self.store.lock().expect("store lock").clone() {
            return Ok(s);
        }
        let mut config = StoreConfig::new(self.store_dir(), raft_id);
        config.advertise_addr = self.manager_addr();
        self.tls.install(certs)?;
        config.peer_channels = Some(crate::tls::raft_peer_channels(&self.tls));
        let store = Store::open(config)
            .await
            .with_context(|| format!("open store in {}", self.store_dir().display()))?;
        *self.store.lock().expect("store lock") = Some(store.clone());
        Ok(store)
    }

    /// Where this node's dispatcher calls go when it cannot answer them
    /// itself: the Raft leader when this manager is a follower, the other
    /// managers when this node is a worker (a demoted manager's local agent)
    /// or a manager outside the Raft group (one whose demotion is under way,
    /// or whose promotion has not joined it yet: no leader talks to it, so
    /// without this its agent would miss heartbeats and be called Down);
    /// None when this node leads.
    pub fn leader_dispatcher(&self) -> Result<Option<DispatcherClient<Channel>>, Status> {
        let Some(manager) = self.manager() else {
            return Ok(self.worker_upstream());
        };
        let store = manager.store();
        if store.is_leader() {
            return Ok(None);
        }
        if !store.member_ids().contains(&store.node_id()) {
            return self.outside_raft_upstream().map(Some);
        }
        let (_, addr) = manager.store().leader().ok_or_else(|| {
            Status::unavailable("the swarm has no leader: the managers have lost quorum")
        })?;
        if addr.is_empty() {
            // A leader no longer in the membership: it removed itself
            // (`node demote`) and steps down; the others elect a new one.
            return Err(Status::unavailable(
                "the leader is leaving the Raft group; a new one is being elected",
            ));
        }
        let mut cached = self.leader_channel.lock().expect("leader channel lock");
        if let Some((a, ch)) = cached.as_ref() {
            if *a == addr {
                return Ok(Some(DispatcherClient::new(ch.clone())));
            }
        }
        let ch = crate::tls::manager_channel(&addr, &self.tls)
            .map_err(|e| internal(format!("{e:#}")))?;
        *cached = Some((addr, ch.clone()));
        Ok(Some(DispatcherClient::new(ch)))
    }

    /// This node's key material (a member always has it).
    fn node_certificates(&self) -> Result<NodeCertificates, Status> {
        self.tls
            .certificates()
            .ok_or_else(|| internal("no node certificate"))
    }

    /// The channel over the other managers for a manager outside the Raft
    /// group ([`Daemon::leader_dispatcher`]); a demotion replaces it with
    /// the worker's channel once the node holds a worker certificate.
    fn outside_raft_upstream(&self) -> Result<DispatcherClient<Channel>, Status> {
        let mut upstream = self.upstream.lock().expect("upstream lock");
        if let Some(u) = upstream.as_ref() {
            return Ok(DispatcherClient::new(u.channel()));
        }
        let own = self.manager_addr();
        let others: Vec<String> = self
            .identity()
            .manager_addrs
            .into_iter()
            .filter(|a| *a != own)
            .collect();
        let channel = Arc::new(ManagersChannel::new(&others, &self.tls).map_err(|e| {
            Status::unavailable(format!(
                "this manager is outside the Raft group and knows no other manager: {e:#}"
            ))
        })?);
        *upstream = Some(channel.clone());
        Ok(DispatcherClient::new(channel.channel()))
    }

    /// A worker's dispatcher client over its managers.
    pub fn worker_upstream(&self) -> Option<DispatcherClient<Channel>> {
        if self.membership() != Membership::Worker {
            return None;
        }
        let upstream = self.upstream.lock().expect("upstream lock");
        upstream
            .as_ref()
            .map(|u| DispatcherClient::new(u.channel()))
    }

    /// The IP other nodes reach this node on: what `swarm init|join
    /// --advertise-addr` gave, else shoald's `--advertise-addr`.
    fn advertise_addr(&self) -> String {
        let id = self.identity.lock().expect("identity lock");
        if id.advertise_addr.is_empty() {
            self.cfg.advertise_addr.clone()
        } else {
            id.advertise_addr.clone()
        }
    }

    /// `host:port` other nodes dial to reach this manager.
    fn manager_addr(&self) -> String {
        format!("{}:{}", self.advertise_addr(), self.cfg.listen_addr.port())
    }

    /// The `--advertise-addr` of `swarm init|join`, checked; empty keeps
    /// the daemon's.
    fn requested_advertise_addr(&self, value: &str) -> Result<Option<String>, Status> {
        if value.is_empty() {
            return Ok(None);
        }
        host_network::parse_advertise_addr(value, self.cfg.listen_addr.port())
            .map(|ip| Some(ip.to_string()))
            .map_err(Status::invalid_argument)
    }

    /// Whether tasks run in network namespaces on the ingress bridge.
    fn uses_netns(&self) -> bool {
        match self.cfg.network_mode {
            NetworkModeArg::Auto => shoal_net::is_root(),
            NetworkModeArg::Netns => true,
            NetworkModeArg::Loopback => false,
        }
    }

    /// Removes the ingress bridge and VXLAN device (netns mode).
    async fn remove_host_links(&self) {
        if self.uses_netns() {
            host_network::remove_links(&self.cfg.bridge, &self.cfg.vxlan).await;
        }
    }

    /// `swarm init`: a one-member Raft group, the cluster CA, this node.
    pub async fn init_swarm(self: &Arc<Self>, req: &SwarmInitRequest) -> Result<String, Status> {
        let _guard = self.membership_lock.lock().await;
        if self.membership() != Membership::None {
            return Err(Status::already_exists(ALREADY_IN_SWARM));
        }
        shoal_manager::swarm::validate_init(
            req.task_history_limit,
            req.dispatcher_heartbeat_ms,
            req.node_cert_expiry_ms,
        )
        .map_err(Status::invalid_argument)?;
        let advertise = self.requested_advertise_addr(&req.advertise_addr)?;
        let pools = AddressPools::parse(&req.default_addr_pool, req.default_addr_pool_mask_length)
            .map_err(Status::invalid_argument)?;
        let taken = host_network::host_networks(&[&self.cfg.bridge, &self.cfg.vxlan])
            .await
            .map_err(|e| internal(format!("{e:#}")))?;
        let ingress = host_network::choose_ingress_subnet(&pools, &taken)
            .map_err(Status::failed_precondition)?;
        if let Some(ip) = advertise {
            self.update_identity(|id| id.advertise_addr = ip)
                .map_err(|e| internal(format!("{e:#}")))?;
        }
        let result = self.init_swarm_with(req, &pools, ingress).await;
        if result.is_err() {
            // Leave nothing of a failed init behind, the advertise address included.
            let _ = self.update_identity(|id| id.advertise_addr.clear());
        }
        result
    }

    async fn init_swarm_with(
        self: &Arc<Self>,
        req: &SwarmInitRequest,
        pools: &AddressPools,
        ingress: shoal_net::Ipv4Cidr,
    ) -> Result<String, Status> {
        let identity = self.identity();
        let advertise = self.advertise_addr();
        let (cluster_ca, certs) = shoal_manager::new_cluster_ca(&identity.node_id, &advertise)
            .map_err(|e| internal(format!("create the cluster CA: {e}")))?;
        let store = self
            .open_store(1, &certs)
            .await
            .map_err(|e| internal(format!("{e:#}")))?;
        store
            .initialize()
            .await
            .map_err(|e| internal(format!("initialise raft: {e}")))?;
        store
            .wait_for_leader(Duration::from_secs(10))
            .await
            .map_err(|e| Status::unavailable(format!("raft did not elect a leader: {e}")))?;
        let local = LocalNode {
            id: identity.node_id.clone(),
            hostname: identity.hostname.clone(),
            addr: advertise.clone(),
            manager_addr: self.manager_addr(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            raft_id: store.node_id(),
        };
        let settings = InitSettings {
            task_history_limit: req.task_history_limit,
            heartbeat: Duration::from_millis(req.dispatcher_heartbeat_ms),
            ingress_subnet: ingress.to_string(),
            default_addr_pool: pools.to_strings(),
            subnet_size: u32::from(pools.subnet_size),
            node_cert_expiry: Duration::from_millis(req.node_cert_expiry_ms),
        };
        let init = shoal_manager::init_cluster(&store, &local, &settings, &cluster_ca, certs)
            .await
            .map_err(|e| internal(format!("write cluster state: {e}")))?;
        node::save_certificates(&self.cfg.data_root, &init.certificates)
            .map_err(|e| internal(format!("{e:#}")))?;
        self.update_identity(|id| {
            id.membership = Membership::Manager;
            id.raft_id = 1;
            id.manager_addrs = init.cluster.manager_addrs.clone();
            id.ingress_address = init.ingress_address.clone();
            id.ingress_vni = init.cluster.ingress_vni;
            id.data_path_port = init.cluster.data_path_port;
        })
        .map_err(|e| internal(format!("{e:#}")))?;
        tracing::info!(cluster = %init.cluster.id, node = %local.id, %advertise, ingress = %init.cluster.ingress_subnet, "swarm initialised");
        self.start_manager(store, &init.certificates)
            .await
            .map_err(|e| internal(format!("{e:#}")))?;
        Ok(init.cluster.id)
    }

    /// `swarm join`: fetch and pin the CA, get a certificate for our own
    /// key with the token, then run as a worker.
    pub async fn join_swarm(
        self: &Arc<Self>,
        token: &str,
        remote: &str,
        advertise: &str,
    ) -> Result<NodeRole, Status> {
        let _guard = self.membership_lock.lock().await;
        if self.membership() != Membership::None {
            return Err(Status::already_exists(ALREADY_IN_SWARM));
        }
        let parsed = ca::parse_token(token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let remote = if remote.contains(':') {
            remote.to_string()
        } else {
            format!("{remote}:2377")
        };
        let ca_pem = ca::fetch_root_ca(&remote, &parsed.ca_digest, Duration::from_secs(10))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let key = ca::new_node_key().map_err(internal)?;
        let tls = ca::client_tls(&ca_pem, None).map_err(internal)?;
        let channel = Endpoint::from_shared(format!("https://{remote}"))
            .map_err(|e| Status::invalid_argument(format!("manager address {remote:?}: {e}")))?
            .tls_config(tls)
            .map_err(internal)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach manager at {remote}: {e}")))?;
        let identity = self.identity();
        let advertise_ip = self
            .requested_advertise_addr(advertise)?
            .unwrap_or_else(|| self.advertise_addr());
        // Managers are dialled on their node listener; workers only need the IP,
        // and the manager takes the host part.
        let advertise = format!("{advertise_ip}:{}", self.cfg.listen_addr.port());
        let resp = NodeCaClient::new(channel)
            .issue_node_certificate(IssueNodeCertificateRequest {
                token: token.to_string(),
                csr_pem: key.csr_pem.clone(),
                hostname: identity.hostname.clone(),
                advertise_addr: advertise,
                node_id: identity.node_id.clone(),
            })
            .await?
            .into_inner();
        if self.uses_netns() {
            if let Ok(subnet) = resp.ingress_address.parse::<shoal_net::Ipv4Cidr>() {
                let taken = host_network::host_networks(&[&self.cfg.bridge, &self.cfg.vxlan])
                    .await
                    .map_err(|e| internal(format!("{e:#}")))?;
                if let Some(conflict) = host_network::ingress_conflict(subnet.network(), &taken) {
                    return Err(Status::failed_precondition(conflict));
                }
            }
        }
        let certs = NodeCertificates {
            ca_pem: resp.ca_certificate_pem.clone(),
            cert_pem: resp.certificate_pem.clone(),
            key_pem: key.key_pem,
        };
        node::save_certificates(&self.cfg.data_root, &certs)
            .map_err(|e| internal(format!("{e:#}")))?;
        let managers = if resp.manager_addrs.is_empty() {
            vec![remote.clone()]
        } else {
            resp.manager_addrs.clone()
        };
        let role = resp.role();
        self.update_identity(|id| {
            id.advertise_addr = advertise_ip.clone();
            id.node_id = resp.node_id.clone();
            id.membership = if role == NodeRole::Manager {
                Membership::Manager
            } else {
                Membership::Worker
            };
            id.raft_id = resp.raft_id;
            id.manager_addrs = managers;
            id.ingress_address = resp.ingress_address.clone();
            id.ingress_vni = resp.ingress_vni;
            id.data_path_port = resp.data_path_port;
        })
        .map_err(|e| internal(format!("{e:#}")))?;
        if role == NodeRole::Manager {
            // Serve Raft first, then ask the leader to add us to the group.
            let store = self
                .open_store(resp.raft_id, &certs)
                .await
                .map_err(|e| internal(format!("{e:#}")))?;
            self.start_manager(store, &certs)
                .await
                .map_err(|e| internal(format!("{e:#}")))?;
            let mut via = vec![remote.clone()];
            via.extend(resp.manager_addrs.iter().filter(|a| **a != remote).cloned());
            self.join_raft(&via, resp.raft_id).await?;
            tracing::info!(manager = %remote, node = %resp.node_id, raft_id = resp.raft_id, "joined the swarm as a manager");
        } else {
            tracing::info!(manager = %remote, node = %resp.node_id, "joined the swarm as a worker");
            self.start_worker(&certs)
                .await
                .map_err(|e| internal(format!("{e:#}")))?;
        }
        Ok(role)
    }

    /// `swarm leave`: stop the roles (tasks stop) and forget the cluster.
    pub async fn leave_swarm(&self, force: bool) -> Result<(), Status> {
        let _guard = self.membership_lock.lock().await;
        match self.membership() {
            Membership::None => return Err(Status::failed_precondition("This node is not part of a swarm")),
            Membership::Manager if !force => {
                return Err(Status::failed_precondition(
                    "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.",
                ))
            }
            _ => {}
        }
        self.stop_roles(Duration::from_secs(2)).await;
        *self.manager.lock().expect("manager lock") = None;
        let store = self.store.lock().expect("store lock").take();
        if let Some(store) = store {
            let _ = tokio::time::timeout(Duration::from_secs(5), store.shutdown()).await;
        }
        self.mesh.apply_snapshot(Vec::new());
        self.remove_host_links().await;
        self.tls.clear();
        *self.upstream.lock().expect("upstream lock") = None;
        node::remove_membership(&self.cfg.data_root).map_err(|e| internal(format!("{e:#}")))?;
        self.update_identity(|id| {
            id.membership = Membership::None;
            id.manager_addrs.clear();
            id.ingress_address.clear();
            id.advertise_addr.clear();
        })
        .map_err(|e| internal(format!("{e:#}")))?;
        tracing::info!("left the swarm");
        Ok(())
    }

    /// Manager roles over an initialised store, then the node roles.
    async fn start_manager(
        self: &Arc<Self>,
        store: Store,
        certs: &NodeCertificates,
    ) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        self.start_manager_components(store, certs, &token).await?;
        self.start_node_roles(local_channel(&self.socket), token)
            .await
    }

    /// The manager components and the mTLS node listener, under a token of
    /// their own (a child of `parent`) so a demotion stops them alone.
    async fn start_manager_components(
        self: &Arc<Self>,
        store: Store,
        certs: &NodeCertificates,
        parent: &CancellationToken,
    ) -> anyhow::Result<()> {
        self.tls.install(certs)?;
        let token = parent.child_token();
        let identity = self.identity();
        let manager = Manager::start(
            store,
            ManagerConfig {
                node_id: identity.node_id.clone(),
                hostname: identity.hostname.clone(),
                advertise_addr: self.manager_addr(),
            },
            token.child_token(),
        );
        *self.manager.lock().expect("manager lock") = Some(manager.clone());
        {
            let fatal = self.fatal.clone();
            tokio::spawn(async move {
                if let Err(e) = manager.wait().await {
                    let _ = fatal.send(format!("manager failed: {e}"));
                }
            });
        }
        crate::tls::serve_manager_listener(
            self.clone(),
            self.cfg.listen_addr,
            &self.tls,
            token.clone(),
        )
        .await?;
        *self.manager_token.lock().expect("manager token lock") = Some(token);
        Ok(())
    }

    /// Worker roles: agent and feed over mTLS to a manager.
    async fn start_worker(self: &Arc<Self>, certs: &NodeCertificates) -> anyhow::Result<()> {
        self.tls.install(certs)?;
        let identity = self.identity();
        let upstream = Arc::new(ManagersChannel::new(&identity.manager_addrs, &self.tls)?);
        *self.upstream.lock().expect("upstream lock") = Some(upstream.clone());
        self.start_node_roles(upstream.channel(), CancellationToken::new())
            .await
    }

    /// Agent, feed client and (netns mode) bridge and overlay.
    async fn start_node_roles(
        self: &Arc<Self>,
        channel: Channel,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let identity = self.identity();
        let (network, overlay) = self.network_mode(&identity).await?;
        let agent_cfg = AgentConfig {
            node_id: identity.node_id.clone(),
            hostname: identity.hostname.clone(),
            addr: self.advertise_addr(),
            data_root: self.cfg.data_root.clone(),
            workload_exe: std::env::current_exe().context("locate the shoald binary")?,
            network,
            stop_grace: self.cfg.stop_grace_period,
        };
        let agent_token = CancellationToken::new();
        let (directives_tx, directives) = tokio::sync::watch::channel(None);
        let agent = {
            let (token, channel, fatal) =
                (agent_token.clone(), channel.clone(), self.fatal.clone());
            tokio::spawn(async move {
                if let Err(e) =
                    Agent::run_with_directives(agent_cfg, channel, token, directives_tx).await
                {
                    let _ = fatal.send(format!("agent failed: {e}"));
                }
            })
        };
        tokio::spawn(role::follow_directives(
            self.clone(),
            directives,
            token.clone(),
        ));
        tokio::spawn(renewal::renew_certificates(self.clone(), token.clone()));
        tokio::spawn(crate::feed::run(
            channel,
            self.mesh.clone(),
            identity.node_id.clone(),
            overlay,
            token.clone(),
        ));
        *self.roles.lock().await = Some(Roles {
            token,
            agent_token,
            agent,
        });
        Ok(())
    }

    /// Stops the agent (and its tasks), then everything else of the roles.
    async fn stop_roles(&self, extra: Duration) {
        let Some(roles) = self.roles.lock().await.take() else {
            return;
        };
        roles.agent_token.cancel();
        let bound = self.cfg.stop_grace_period + extra;
        if tokio::time::timeout(bound, roles.agent).await.is_err() {
            tracing::warn!("agent did not stop its tasks within {bound:?}");
        }
        roles.token.cancel();
    }

    /// Netns mode: the bridge carries this node's ingress address and, when
    /// the node has a routable underlay address, a VXLAN port for the overlay.
    async fn network_mode(
        &self,
        identity: &NodeIdentity,
    ) -> anyhow::Result<(NetworkMode, Option<Overlay>)> {
        if !self.uses_netns() {
            tracing::info!("tasks run as plain processes on loopback ports");
            return Ok((NetworkMode::Loopback, None));
        }
        let cidr: shoal_net::Ipv4Cidr = identity
            .ingress_address
            .parse()
            .with_context(|| format!("node ingress address {:?}", identity.ingress_address))?;
        shoal_net::ensure_bridge(&self.cfg.bridge, cidr)
            .await
            .with_context(|| format!("set up ingress bridge {}", self.cfg.bridge))?;
        tracing::info!(bridge = %self.cfg.bridge, %cidr, "tasks run in network namespaces on the ingress bridge");
        let advertise = self.advertise_addr();
        let local: Ipv4Addr = advertise
            .parse()
            .with_context(|| format!("--advertise-addr {advertise:?} must be an IPv4 address"))?;
        let overlay = if local.is_loopback() {
            None
        } else {
            let spec = shoal_net::OverlaySpec {
                vxlan: self.cfg.vxlan.clone(),
                vni: if identity.ingress_vni == 0 {
                    shoal_manager::INGRESS_VNI
                } else {
                    identity.ingress_vni
                },
                local,
                port: if identity.data_path_port == 0 {
                    4789
                } else {
                    identity.data_path_port as u16
                },
                bridge: self.cfg.bridge.clone(),
            };
            shoal_net::ensure_vxlan(&spec)
                .await
                .with_context(|| format!("set up VXLAN {}", spec.vxlan))?;
            tracing::info!(vxlan = %spec.vxlan, vni = spec.vni, %local, "ingress overlay ready");
            Some(Overlay {
                vxlan: spec.vxlan,
                bridge: self.cfg.bridge.clone(),
                node_id: identity.node_id.clone(),
            })
        };
        Ok((
            NetworkMode::Netns {
                bridge: self.cfg.bridge.clone(),
                gateway: cidr.addr,
            },
            overlay,
        ))
    }

    /// Creates the demo service unless a service named `web` exists.
    async fn create_demo(&self) -> anyhow::Result<()> {
        let manager = self
            .manager()
            .context("--demo needs a manager (use --init)")?;
        let spec = ServiceSpec {
            name: "web".into(),
            image: "shoal/echo".into(),
            replicas: 3,
            ports: vec![PortConfig {
                target_port: 80,
                published_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        };
        match manager
            .control()
            .create_service(tonic::Request::new(CreateServiceRequest {
                spec: Some(spec),
            }))
            .await
        {
            Ok(_) => tracing::info!("demo service web created: curl http://127.0.0.1:8080"),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                tracing::info!("demo service web already exists")
            }
            Err(s) => anyhow::bail!("create demo service: {}", s.message()),
        }
        Ok(())
    }

    /// Brings back the roles this node had before a restart.
    async fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        let _guard = self.membership_lock.lock().await;
        match self.membership() {
            Membership::None => Ok(()),
            Membership::Manager => {
                let certs = node::load_certificates(&self.cfg.data_root)?;
                let store = self
                    .open_store(self.identity().raft_id.max(1), &certs)
                    .await?;
                anyhow::ensure!(
                    store.is_initialized().await.context("read raft state")?,
                    "node.json says manager but the store is empty"
                );
                // A lone manager elects itself; in a group the others may be
                // down, so start anyway and let Raft sort leadership out.
                if store
                    .wait_for_leader(Duration::from_secs(10))
                    .await
                    .is_err()
                {
                    tracing::warn!("no Raft leader yet (quorum lost?); serving the local replica");
                }
                self.start_manager(store, &certs).await?;
                tracing::info!("rejoined the cluster as a manager");
                Ok(())
            }
            Membership::Worker => {
                let certs = node::load_certificates(&self.cfg.data_root)?;
                self.start_worker(&certs).await?;
                tracing::info!("rejoined the cluster as a worker");
                Ok(())
            }
        }
    }
}

/// A lazily connecting channel to this node's own API socket: the local
/// agent and feed client use the same gRPC API a remote node does.
fn local_channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(tower::service_fn(
        move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        },
    ))
}

pub async fn run(cfg: DaemonConfig) -> anyhow::Result<()> {
    ca::install_crypto_provider();
    crate::data_root::prepare(&cfg.data_root)?;
    let identity = NodeIdentity::load_or_create(&cfg.data_root, cfg.hostname.as_deref())?;
    let registry = Registry::new();
    let mesh = Mesh::new(
        MeshConfig {
            listen_ip: cfg.mesh_listen_ip,
            data_path: cfg.mesh_data_path,
            ..MeshConfig::default()
        },
        &registry,
    )
    .context("start the mesh")?;
    tracing::info!(data_path = %mesh.data_path(), "mesh workers started");
    let socket = cfg.socket_path()?;
    let access = crate::api_socket::SocketAccess::from_flag(cfg.group.as_deref())?;
    let listener = crate::api_socket::bind(&socket, &access).await?;
    let stop = CancellationToken::new();
    let admin = crate::admin::bind(cfg.metrics_addr, registry, mesh.clone(), stop.clone()).await?;
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
    let daemon = Arc::new(Daemon {
        cfg: cfg.clone(),
        identity: StdMutex::new(identity),
        socket: socket.clone(),
        mesh: mesh.clone(),
        manager: StdMutex::new(None),
        store: StdMutex::new(None),
        membership_lock: Mutex::new(()),
        roles: Mutex::new(None),
        tls: NodeTls::default(),
        leader_channel: StdMutex::new(None),
        manager_token: StdMutex::new(None),
        upstream: StdMutex::new(None),
        fatal: fatal_tx,
    });
    let server = Server::builder()
        .add_service(ControlServer::new(NodeControl(daemon.clone())))
        .add_service(DispatcherServer::new(NodeDispatcher {
            daemon: daemon.clone(),
            remote: false,
        }))
        .serve_with_incoming_shutdown(
            crate::api_socket::incoming(listener),
            stop.clone().cancelled_owned(),
        );
    let server = tokio::spawn(server);
    tracing::info!(node = %daemon.identity().node_id, socket = %socket.display(), metrics = %cfg.metrics_addr, "shoald started");

    daemon.resume().await?;
    if cfg.init && daemon.membership() == Membership::None {
        daemon
            .init_swarm(&SwarmInitRequest::default())
            .await
            .map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
    }
    if cfg.demo {
        daemon.create_demo().await?;
    }

    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let failure = tokio::select! {
        _ = sigterm.recv() => None,
        _ = sigint.recv() => None,
        f = fatal_rx.recv() => f,
    };
    match &failure {
        None => tracing::info!("shutting down: draining connections"),
        Some(f) => tracing::error!("shutting down: {f}"),
    }
    mesh.shutdown(cfg.shutdown_grace).await;
    daemon.stop_roles(Duration::from_secs(5)).await;
    // The bridge (and its route) and VXLAN device are made again at start.
    daemon.remove_host_links().await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), admin).await;
    let store = daemon.store.lock().expect("store lock").take();
    if let Some(store) = store {
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), store.shutdown()).await {
            tracing::warn!("store shutdown timed out: {e}");
        }
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    match failure {
        None => Ok(()),
        Some(f) => anyhow::bail!(f),
    }
}
