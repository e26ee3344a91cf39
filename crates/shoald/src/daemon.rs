//! Role wiring and lifecycle. Start-up: identity, mesh, admin HTTP, the node
//! socket, then — if this node is in a cluster — store, manager, agent and
//! feed client. Shutdown runs in order: the mesh stops accepting and drains
//! (bounded), the agent stops tasks, then the manager, API and store stop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use prometheus::Registry;
use shoal_agent::{Agent, AgentConfig, NetworkMode};
use shoal_api::pb::control_server::{Control, ControlServer};
use shoal_api::pb::dispatcher_server::DispatcherServer;
use shoal_api::pb::{Cluster, CreateServiceRequest, PortConfig, ServiceSpec};
use shoal_manager::{LocalNode, Manager, ManagerConfig};
use shoal_mesh::{Mesh, MeshConfig};
use shoal_store::{Store, StoreConfig};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::Status;

use crate::config::{DaemonConfig, NetworkModeArg};
use crate::control::{NodeControl, NodeDispatcher};
use crate::node::NodeIdentity;

/// Everything a running node holds.
pub struct Daemon {
    pub cfg: DaemonConfig,
    pub identity: NodeIdentity,
    socket: PathBuf,
    mesh: Mesh,
    /// Set once, when the node becomes (or restarts as) a manager.
    manager: OnceLock<Manager>,
    store: OnceLock<Store>,
    /// Serialises `swarm init` against itself and start-up.
    init_lock: Mutex<()>,
    /// Cancelled last: API server, manager, feed client, admin HTTP.
    stop: CancellationToken,
    /// Cancelled after the mesh drained: the agent stops its tasks.
    stop_agent: CancellationToken,
    agent: Mutex<Option<JoinHandle<()>>>,
    /// A manager component failed: the daemon must exit.
    fatal: mpsc::UnboundedSender<String>,
}

impl Daemon {
    pub fn manager(&self) -> Option<Manager> {
        self.manager.get().cloned()
    }

    fn store_dir(&self) -> PathBuf {
        self.cfg.data_root.join("store")
    }

    async fn open_store(&self) -> Result<Store, Status> {
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let store = Store::open(StoreConfig::new(self.store_dir(), 1))
            .await
            .map_err(|e| {
                Status::internal(format!("open store in {}: {e}", self.store_dir().display()))
            })?;
        let _ = self.store.set(store.clone());
        Ok(store)
    }

    /// `swarm init`: a one-member Raft group, the cluster object and this node.
    pub async fn init_swarm(
        self: &Arc<Self>,
        advertise: &str,
        history: u64,
    ) -> Result<String, Status> {
        let _guard = self.init_lock.lock().await;
        if self.manager.get().is_some() {
            return Err(Status::already_exists(
                "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.",
            ));
        }
        let store = self.open_store().await?;
        store
            .initialize()
            .await
            .map_err(|e| Status::internal(format!("initialise raft: {e}")))?;
        store
            .wait_for_leader(Duration::from_secs(10))
            .await
            .map_err(|e| Status::unavailable(format!("raft did not elect a leader: {e}")))?;
        let addr = if advertise.is_empty() {
            self.cfg.advertise_addr.clone()
        } else {
            advertise.to_string()
        };
        let local = LocalNode {
            id: self.identity.node_id.clone(),
            hostname: self.identity.hostname.clone(),
            addr,
            engine_version: env!("CARGO_PKG_VERSION").into(),
            raft_id: store.node_id(),
        };
        let cluster = shoal_manager::init_cluster(&store, &local, history)
            .await
            .map_err(|e| Status::internal(format!("write cluster state: {e}")))?;
        tracing::info!(cluster = %cluster.id, node = %local.id, "swarm initialised");
        self.start_roles(store)
            .await
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        Ok(cluster.id)
    }

    /// Starts manager, agent and feed client over an initialised store.
    async fn start_roles(self: &Arc<Self>, store: Store) -> anyhow::Result<()> {
        let manager = Manager::start(
            store.clone(),
            ManagerConfig {
                node_id: self.identity.node_id.clone(),
                hostname: self.identity.hostname.clone(),
            },
            self.stop.child_token(),
        );
        let _ = self.manager.set(manager.clone());
        {
            let fatal = self.fatal.clone();
            tokio::spawn(async move {
                if let Err(e) = manager.wait().await {
                    let _ = fatal.send(format!("manager failed: {e}"));
                }
            });
        }
        let channel = local_channel(&self.socket);
        let network = self.network_mode(&store).await?;
        let agent_cfg = AgentConfig {
            node_id: self.identity.node_id.clone(),
            hostname: self.identity.hostname.clone(),
            addr: self.cfg.advertise_addr.clone(),
            data_root: self.cfg.data_root.clone(),
            workload_exe: std::env::current_exe().context("locate the shoald binary")?,
            network,
            stop_grace: self.cfg.stop_grace_period,
        };
        let token = self.stop_agent.clone();
        let agent_channel = channel.clone();
        let fatal = self.fatal.clone();
        *self.agent.lock().await = Some(tokio::spawn(async move {
            if let Err(e) = Agent::run(agent_cfg, agent_channel, token).await {
                let _ = fatal.send(format!("agent failed: {e}"));
            }
        }));
        tokio::spawn(crate::feed::run(
            channel,
            self.mesh.clone(),
            self.identity.node_id.clone(),
            self.stop.clone(),
        ));
        Ok(())
    }

    async fn network_mode(&self, store: &Store) -> anyhow::Result<NetworkMode> {
        let netns = match self.cfg.network_mode {
            NetworkModeArg::Auto => shoal_net::is_root(),
            NetworkModeArg::Netns => true,
            NetworkModeArg::Loopback => false,
        };
        if !netns {
            tracing::info!("tasks run as plain processes on loopback ports (not root)");
            return Ok(NetworkMode::Loopback);
        }
        let cluster: Cluster = shoal_manager::state::get(store, shoal_manager::state::CLUSTER_KEY)
            .context("cluster object missing from the store")?;
        let (gateway, prefix) = shoal_manager::allocator::gateway(&cluster.ingress_subnet)
            .with_context(|| format!("bad ingress subnet {:?}", cluster.ingress_subnet))?;
        let cidr = shoal_net::Ipv4Cidr::new(gateway, prefix).context("bad ingress gateway")?;
        shoal_net::ensure_bridge(&self.cfg.bridge, cidr)
            .await
            .with_context(|| format!("set up ingress bridge {}", self.cfg.bridge))?;
        tracing::info!(bridge = %self.cfg.bridge, %cidr, "tasks run in network namespaces on the ingress bridge");
        Ok(NetworkMode::Netns {
            bridge: self.cfg.bridge.clone(),
            gateway,
        })
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
}

/// A lazily connecting channel to this node's own API socket: the local
/// agent and feed client use the same gRPC API a remote node will.
fn local_channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(tower::service_fn(
        move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        },
    ))
}

/// Binds the API socket, refusing to steal it from a live daemon.
async fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "another shoald is already serving {}; stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("bind API socket {}", path.display()))
}

pub async fn run(cfg: DaemonConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_root)
        .with_context(|| format!("create --data-root {}", cfg.data_root.display()))?;
    let identity = NodeIdentity::load_or_create(&cfg.data_root, cfg.hostname.as_deref())?;
    let registry = Registry::new();
    let mesh = Mesh::new(
        MeshConfig {
            listen_ip: cfg.mesh_listen_ip,
            ..MeshConfig::default()
        },
        &registry,
    )
    .context("start the mesh")?;
    let socket = cfg.socket_path()?;
    let listener = bind_socket(&socket).await?;
    let stop = CancellationToken::new();
    let admin = crate::admin::bind(cfg.metrics_addr, registry, mesh.clone(), stop.clone()).await?;
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
    let daemon = Arc::new(Daemon {
        cfg: cfg.clone(),
        identity,
        socket: socket.clone(),
        mesh: mesh.clone(),
        manager: OnceLock::new(),
        store: OnceLock::new(),
        init_lock: Mutex::new(()),
        stop: stop.clone(),
        stop_agent: CancellationToken::new(),
        agent: Mutex::new(None),
        fatal: fatal_tx,
    });
    let server = Server::builder()
        .add_service(ControlServer::new(NodeControl(daemon.clone())))
        .add_service(DispatcherServer::new(NodeDispatcher(daemon.clone())))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
    let server = tokio::spawn(server);
    tracing::info!(node = %daemon.identity.node_id, socket = %socket.display(), metrics = %cfg.metrics_addr, "shoald started");

    // Rejoin the cluster this node was in before a restart.
    if daemon.store_dir().exists() {
        let _guard = daemon.init_lock.lock().await;
        let store = daemon
            .open_store()
            .await
            .map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
        if store.is_initialized().await.context("read raft state")? {
            store
                .wait_for_leader(Duration::from_secs(10))
                .await
                .context("wait for a raft leader")?;
            daemon.start_roles(store).await?;
            tracing::info!("rejoined the cluster from {}", daemon.store_dir().display());
        }
    }
    if cfg.init && daemon.manager().is_none() {
        daemon
            .init_swarm("", 0)
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
    daemon.stop_agent.cancel();
    if let Some(agent) = daemon.agent.lock().await.take() {
        let bound = cfg.stop_grace_period + Duration::from_secs(5);
        if tokio::time::timeout(bound, agent).await.is_err() {
            tracing::warn!("agent did not stop its tasks within {bound:?}");
        }
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), admin).await;
    if let Some(store) = daemon.store.get() {
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
