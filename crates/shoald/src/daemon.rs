//! The node daemon's state and the steps its roles are made of. [`Daemon`]
//! holds the node's identity, its key material, the mesh and its running
//! [`Role`]; the steps here open a manager's store, start its components,
//! stop the member's tasks and ask the leader to add a manager to the Raft
//! group. Entering and leaving a swarm (`membership`), role changes at run
//! time (`role_change`) and certificate renewal (`renewal`) are built from
//! these steps; `lifecycle` starts the daemon and shuts it down in order.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::node_ca_client::NodeCaClient;
use shoal_api::pb::JoinRaftRequest;
use shoal_manager::dispatcher::caller::Caller;
use shoal_manager::dispatcher::relay::{RelayDispatcher, RelayTarget};
use shoal_manager::{Manager, ManagerConfig, NodeCertificates};
use shoal_mesh::Mesh;
use shoal_store::{Store, StoreConfig};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Mutex};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::config::{DaemonConfig, NetworkModeArg};
use crate::host_network;
use crate::node::{Membership, NodeIdentity};
use crate::role::{ManagerRole, NodeTasks, Role, RoleCell};
use crate::tls::{self, ManagersChannel, NodeTls};

/// How long a promoted node keeps asking to join the Raft group.
const JOIN_RAFT_DEADLINE: Duration = Duration::from_secs(60);

/// Everything a running node holds.
pub struct Daemon {
    pub cfg: DaemonConfig,
    /// Who this node is and what `node.json` says it should run.
    pub(crate) identity: StdMutex<NodeIdentity>,
    /// The API socket, which the local agent and feed client dial too.
    pub(crate) socket: PathBuf,
    pub(crate) mesh: Mesh,
    /// What the node runs now.
    pub(crate) role: RoleCell,
    /// Serialises init, join, leave, promotion, demotion, renewal and start-up.
    pub(crate) membership_lock: Mutex<()>,
    /// This node's key material once it is a member, as every new
    /// connection presents it (swapped by renewals and role changes).
    pub(crate) tls: NodeTls,
    /// A role failed: the daemon must exit.
    pub(crate) fatal: mpsc::UnboundedSender<String>,
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Daemon {
    pub fn new(
        cfg: DaemonConfig,
        identity: NodeIdentity,
        socket: PathBuf,
        mesh: Mesh,
        fatal: mpsc::UnboundedSender<String>,
    ) -> Daemon {
        Daemon {
            cfg,
            identity: StdMutex::new(identity),
            socket,
            mesh,
            role: RoleCell::new(),
            membership_lock: Mutex::new(()),
            tls: NodeTls::default(),
            fatal,
        }
    }

    pub fn manager(&self) -> Option<Manager> {
        self.role.manager()
    }

    pub fn identity(&self) -> NodeIdentity {
        self.identity.lock().expect("identity lock").clone()
    }

    pub fn membership(&self) -> Membership {
        self.identity.lock().expect("identity lock").membership
    }

    pub(crate) fn update_identity(&self, f: impl FnOnce(&mut NodeIdentity)) -> anyhow::Result<()> {
        let mut id = self.identity.lock().expect("identity lock");
        f(&mut id);
        id.save(&self.cfg.data_root)
    }

    pub(crate) fn store_dir(&self) -> PathBuf {
        self.cfg.data_root.join("store")
    }

    /// Opens this manager's Raft store: `raft_id` in the group, reachable
    /// on the node listener, speaking mTLS to its peers.
    pub(crate) async fn open_store(
        &self,
        raft_id: u64,
        certs: &NodeCertificates,
    ) -> anyhow::Result<Store> {
        let mut config = StoreConfig::new(self.store_dir(), raft_id);
        config.advertise_addr = self.manager_addr();
        self.tls.install(certs)?;
        config.peer_channels = Some(tls::raft_peer_channels(&self.tls));
        Store::open(config)
            .await
            .with_context(|| format!("open store in {}", self.store_dir().display()))
    }

    /// Where this node's dispatcher calls go when it cannot answer them
    /// itself (see [`ManagerRole::relay_target`]); a worker's go to its
    /// managers. None when this node leads.
    pub fn leader_dispatcher(&self) -> Result<Option<DispatcherClient<Channel>>, Status> {
        match &*self.role.load() {
            Role::Manager(m) => m.relay_target(|| self.other_managers(), &self.tls),
            _ => Ok(self.role.worker_upstream()),
        }
    }

    /// The managers this node knows, itself left out.
    fn other_managers(&self) -> Vec<String> {
        let own = self.manager_addr();
        self.identity()
            .manager_addrs
            .into_iter()
            .filter(|a| *a != own)
            .collect()
    }

    /// This node's key material (a member always has it).
    pub(crate) fn node_certificates(&self) -> Result<NodeCertificates, Status> {
        self.tls
            .certificates()
            .ok_or_else(|| internal("no node certificate"))
    }

    /// The IP other nodes reach this node on: what `swarm init|join
    /// --advertise-addr` gave, else shoald's `--advertise-addr`.
    pub(crate) fn advertise_addr(&self) -> String {
        let id = self.identity.lock().expect("identity lock");
        if id.advertise_addr.is_empty() {
            self.cfg.advertise_addr.clone()
        } else {
            id.advertise_addr.clone()
        }
    }

    /// `host:port` other nodes dial to reach this manager.
    pub(crate) fn manager_addr(&self) -> String {
        format!("{}:{}", self.advertise_addr(), self.cfg.listen_addr.port())
    }

    /// The `--advertise-addr` of `swarm init|join`, checked; empty keeps
    /// the daemon's.
    pub(crate) fn requested_advertise_addr(&self, value: &str) -> Result<Option<String>, Status> {
        if value.is_empty() {
            return Ok(None);
        }
        host_network::parse_advertise_addr(value, self.cfg.listen_addr.port())
            .map(|ip| Some(ip.to_string()))
            .map_err(Status::invalid_argument)
    }

    /// Whether tasks run in network namespaces on the ingress bridge.
    pub(crate) fn uses_netns(&self) -> bool {
        match self.cfg.network_mode {
            NetworkModeArg::Auto => shoal_net::is_root(),
            NetworkModeArg::Netns => true,
            NetworkModeArg::Loopback => false,
        }
    }

    /// Removes the ingress bridge and VXLAN device (netns mode).
    pub(crate) async fn remove_host_links(&self) {
        if self.uses_netns() {
            host_network::remove_links(&self.cfg.bridge, &self.cfg.vxlan).await;
        }
    }

    /// The manager components over `store` and the mTLS node listener,
    /// under a token of their own (a child of the member's `tasks`) so a
    /// demotion stops them alone; the node runs as a manager from here on.
    /// `upstream` is a promoted worker's channel over the managers.
    pub(crate) async fn start_manager_components(
        self: &Arc<Self>,
        store: Store,
        certs: &NodeCertificates,
        tasks: &NodeTasks,
        upstream: Option<Arc<ManagersChannel>>,
    ) -> anyhow::Result<()> {
        self.tls.install(certs)?;
        let components = tasks.token.child_token();
        let identity = self.identity();
        let manager = Manager::start(
            store,
            ManagerConfig {
                node_id: identity.node_id.clone(),
                hostname: identity.hostname.clone(),
                advertise_addr: self.manager_addr(),
            },
            components.child_token(),
        );
        self.role.switch(Role::Manager(ManagerRole::new(
            tasks.clone(),
            manager.clone(),
            components.clone(),
            upstream,
        )));
        {
            let (manager, fatal) = (manager.clone(), self.fatal.clone());
            tokio::spawn(async move {
                if let Err(e) = manager.wait().await {
                    let _ = fatal.send(format!("manager failed: {e}"));
                }
            });
        }
        tls::serve_node_listener(
            self.cfg.listen_addr,
            &self.tls,
            &manager,
            RelayDispatcher::new(self.clone(), Caller::Remote),
            components,
        )
        .await?;
        Ok(())
    }

    /// Stops the agent (and its tasks), then everything else of the roles.
    pub(crate) async fn stop_tasks(&self, extra: Duration) {
        if let Some(tasks) = self.role.tasks() {
            tasks.stop(self.cfg.stop_grace_period + extra).await;
        }
    }

    /// Asks the Raft leader to add this manager to the group, through any of
    /// `via` (only the leader accepts; the others are tried in turn).
    pub(crate) async fn join_raft(&self, via: &[String], raft_id: u64) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + JOIN_RAFT_DEADLINE;
        let own = self.manager_addr();
        loop {
            // A reply lost to a leader change, or this node leading by now:
            // its own replica tells whether it became a voter for good.
            if let Some(store) = self.role.store() {
                if store.committed_voter_ids().await.contains(&raft_id) {
                    return Ok(());
                }
            }
            let mut last = Status::unavailable("no manager to join through");
            for addr in via.iter().filter(|a| **a != own) {
                let channel = tls::manager_channel(addr, &self.tls)
                    .map_err(|e| Status::internal(format!("{e:#}")))?;
                let req = JoinRaftRequest {
                    raft_id,
                    addr: own.clone(),
                };
                match NodeCaClient::new(channel).join_raft(req).await {
                    Ok(_) => return Ok(()),
                    Err(s) if s.code() == tonic::Code::PermissionDenied => return Err(s),
                    Err(s) => last = s,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl RelayTarget for Daemon {
    fn manager(&self) -> Option<Manager> {
        self.role.manager()
    }

    fn leader(&self) -> Result<Option<DispatcherClient<Channel>>, Status> {
        self.leader_dispatcher()
    }

    fn worker_upstream(&self) -> Option<DispatcherClient<Channel>> {
        self.role.worker_upstream()
    }
}

/// A lazily connecting channel to this node's own API socket: the local
/// agent and feed client use the same gRPC API a remote node does.
pub(crate) fn local_channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(tower::service_fn(
        move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        },
    ))
}
