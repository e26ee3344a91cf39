//! Entering and leaving a swarm: `swarm init` (a one-member Raft group, the
//! cluster CA, this node), `swarm join` (fetch and pin the CA, a certificate
//! for the node's own key, then run as a worker or manager), `swarm leave`,
//! a node that learns `node rm` removed it, and the roles a restart brings
//! back. Each starts the member's tasks: the agent, the feed client (and, in
//! netns mode, the ingress bridge and VXLAN overlay), certificate renewal
//! and the follower of role changes.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_agent::{Agent, AgentConfig, NetworkMode};
use shoal_api::pb::node_ca_client::NodeCaClient;
use shoal_api::pb::{IssueNodeCertificateRequest, NodeRole, SwarmInitRequest};
use shoal_manager::{InitSettings, Initialized, LocalNode, NodeCertificates};
use shoal_store::Store;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::daemon::{internal, local_channel, Daemon};
use crate::feed::Overlay;
use crate::host_network::{self, AddressPools};
use crate::node::{self, Membership, NodeIdentity};
use crate::role::{NodeTasks, Role, WorkerRole};
use crate::tls::ManagersChannel;
use crate::{renewal, role_change};

const ALREADY_IN_SWARM: &str =
    "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.";

impl Daemon {
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
        let written = self
            .write_initial_state(&store, req, pools, ingress, &cluster_ca, certs)
            .await;
        let init = match written {
            Ok(init) => init,
            Err(status) => {
                // No role holds the store yet: stop its Raft node here.
                let _ = tokio::time::timeout(Duration::from_secs(5), store.shutdown()).await;
                return Err(status);
            }
        };
        self.start_manager(store, &init.certificates)
            .await
            .map_err(|e| internal(format!("{e:#}")))?;
        Ok(init.cluster.id)
    }

    /// The first Raft entries of a new swarm (the cluster, this node), then
    /// this node's key material and membership on disk.
    async fn write_initial_state(
        &self,
        store: &Store,
        req: &SwarmInitRequest,
        pools: &AddressPools,
        ingress: shoal_net::Ipv4Cidr,
        cluster_ca: &shoal_ca::ClusterCa,
        certs: NodeCertificates,
    ) -> Result<Initialized, Status> {
        let identity = self.identity();
        let advertise = self.advertise_addr();
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
        let init = shoal_manager::init_cluster(store, &local, &settings, cluster_ca, certs)
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
        Ok(init)
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
        let parsed =
            shoal_ca::parse_token(token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let remote = if remote.contains(':') {
            remote.to_string()
        } else {
            format!("{remote}:2377")
        };
        let ca_pem = shoal_ca::fetch_root_ca(&remote, &parsed.ca_digest, Duration::from_secs(10))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let key = shoal_ca::new_node_key().map_err(internal)?;
        let tls = shoal_ca::client_tls(&ca_pem, None).map_err(internal)?;
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
        self.stop_tasks(Duration::from_secs(2)).await;
        if let Role::Manager(m) = &*self.role.switch(Role::None) {
            let store = m.manager.store().clone();
            let _ = tokio::time::timeout(Duration::from_secs(5), store.shutdown()).await;
        }
        self.mesh.apply_snapshot(Vec::new());
        self.remove_host_links().await;
        self.tls.clear();
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

    /// Manager roles over an initialised store, then the member's tasks on
    /// the local socket.
    async fn start_manager(
        self: &Arc<Self>,
        store: Store,
        certs: &NodeCertificates,
    ) -> anyhow::Result<()> {
        let tasks = NodeTasks::new();
        self.start_manager_components(store, certs, &tasks, None)
            .await?;
        self.start_tasks(local_channel(&self.socket), &tasks).await
    }

    /// The worker role: the member's tasks over mTLS to the managers.
    async fn start_worker(self: &Arc<Self>, certs: &NodeCertificates) -> anyhow::Result<()> {
        self.tls.install(certs)?;
        let identity = self.identity();
        let upstream = Arc::new(ManagersChannel::new(&identity.manager_addrs, &self.tls)?);
        let tasks = NodeTasks::new();
        self.role.switch(Role::Worker(WorkerRole {
            tasks: tasks.clone(),
            upstream: upstream.clone(),
        }));
        self.start_tasks(upstream.channel(), &tasks).await
    }

    /// Agent, feed client, renewal, role follower and (netns mode) bridge
    /// and overlay, under `tasks`.
    async fn start_tasks(
        self: &Arc<Self>,
        channel: Channel,
        tasks: &NodeTasks,
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
        let (directives_tx, directives) = tokio::sync::watch::channel(None);
        {
            let (stop, done) = (tasks.agent_stop.clone(), tasks.agent_done.clone());
            let (channel, fatal) = (channel.clone(), self.fatal.clone());
            tokio::spawn(async move {
                let _done = done.drop_guard();
                if let Err(e) =
                    Agent::run_with_directives(agent_cfg, channel, stop, directives_tx).await
                {
                    let _ = fatal.send(format!("agent failed: {e}"));
                }
            });
        }
        tokio::spawn(role_change::follow_directives(
            self.clone(),
            directives,
            tasks.token.clone(),
        ));
        {
            let (daemon, token) = (self.clone(), tasks.token.clone());
            tokio::spawn(async move {
                if let Some(refusal) = renewal::renew_certificates(daemon.clone(), token).await {
                    daemon.removed_from_swarm(&refusal).await;
                }
            });
        }
        tokio::spawn(crate::feed::run(
            channel,
            self.mesh.clone(),
            identity.node_id.clone(),
            overlay,
            tasks.token.clone(),
        ));
        Ok(())
    }

    /// The managers refused this node's certificate: `node rm` removed it.
    /// It stops its tasks and forgets the swarm (it may join again, as a new
    /// node, with a token).
    async fn removed_from_swarm(self: &Arc<Self>, refusal: &Status) {
        tracing::error!(
            "this node was removed from the swarm ({}): leaving the swarm; join it again with `shoal swarm join --token ...`",
            refusal.message()
        );
        match self.leave_swarm(true).await {
            Ok(()) => tracing::info!("this node is not in a swarm any more"),
            Err(s) => {
                tracing::warn!(error = %s.message(), "leaving the swarm after removal failed")
            }
        }
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
    /// Brings back the roles this node had before a restart.
    pub(crate) async fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
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
