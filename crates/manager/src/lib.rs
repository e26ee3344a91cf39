//! The Shoal manager: the control API, the reconcilers that turn services
//! into running tasks, and the dispatcher every node's agent and mesh talk to.
//!
//! The manager owns no state of its own: everything lives in the replicated
//! store ([`shoal_store`]); components read it, and write back through Raft.
//! The leader-only components (reconcile loop, heartbeat checker, feed
//! builder) run as one supervised set: if one fails, [`Manager::wait`]
//! returns its error and the daemon shuts down instead of limping on.
//!
//! # Layout
//! - [`state`]: key layout and [`state::ClusterView`].
//! - [`cache`]: [`cache::ViewCache`], the view every component shares, kept
//!   current from the store's change history.
//! - [`spec`]: service spec validation and bounds.
//! - [`quarantine`]: stored objects out of bounds, left alone and logged once.
//! - [`swarm`]: `swarm update` of the cluster-wide settings.
//! - [`ca`]: the cluster CA ([`shoal_ca`]), re-exported.
//! - [`controlapi`]: the `Control` gRPC service (what the CLI calls).
//! - [`join`]: the `NodeCA` service (join with a token) and token checks.
//! - [`orchestrator`], [`allocator`], [`scheduler`], [`reaper`]: sans-IO cores.
//! - [`placement`]: constraints, preferences, caps and reservations.
//! - [`reconciler`]: the async loop that runs them.
//! - [`role`]: the role manager (a demoted manager leaves the Raft group).
//! - [`dispatcher`]: sessions, heartbeats, assignments, task status, the
//!   discovery feed and the log broker.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod cache;
pub mod controlapi;
pub mod dispatcher;
pub mod join;
pub mod orchestrator;
pub mod placement;
pub mod quarantine;
pub mod reaper;
pub mod reconciler;
pub mod role;
pub mod scheduler;
pub mod spec;
pub mod state;
pub mod swarm;
#[cfg(test)]
pub(crate) mod test_support;

use std::sync::Arc;
use std::time::Duration;

use shoal_api::codec;
use shoal_api::pb::{
    Cluster, ManagerStatus, Meta, Node, NodeAvailability, NodeDescription, NodeRole, NodeSpec,
    NodeState, NodeStatus,
};
use shoal_ca as ca;
use shoal_store::{Compare, Op, Store, StoreError, Txn};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::state::ClusterView;

pub use controlapi::ControlApi;
pub use dispatcher::DispatcherApi;
pub use join::NodeCaApi;

/// Errors of the manager's background components.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{component} stopped unexpectedly: {reason}")]
    ComponentFailed {
        component: &'static str,
        reason: String,
    },
    #[error("cluster CA: {0}")]
    Ca(#[from] ca::CaError),
}

/// Who this manager is.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub node_id: String,
    pub hostname: String,
    /// `host:port` other nodes dial to reach this manager (join commands show it).
    pub advertise_addr: String,
}

/// The local node as `swarm init` registers it.
#[derive(Clone, Debug)]
pub struct LocalNode {
    pub id: String,
    pub hostname: String,
    /// Underlay address (IP) other nodes reach this node on.
    pub addr: String,
    /// `host:port` of this manager's node-to-node listener.
    pub manager_addr: String,
    pub engine_version: String,
    pub raft_id: u64,
}

/// Key material of a node: its certificate, its key, and the cluster CA.
#[derive(Clone, Debug)]
pub struct NodeCertificates {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// What `swarm init` produced.
#[derive(Clone, Debug)]
pub struct Initialized {
    pub cluster: Cluster,
    pub certificates: NodeCertificates,
    /// The first node's bridge address on the ingress network (CIDR).
    pub ingress_address: String,
}

/// What `swarm init` sets; a zero or empty field takes its default.
#[derive(Clone, Debug, Default)]
pub struct InitSettings {
    /// Tasks kept per slot, the current one included (default 5).
    pub task_history_limit: u64,
    /// `--dispatcher-heartbeat` (default 5s).
    pub heartbeat: Duration,
    /// The ingress network's subnet (CIDR; default
    /// [`allocator::DEFAULT_INGRESS_SUBNET`]), chosen by the caller clear of
    /// its host's networks.
    pub ingress_subnet: String,
    /// `--default-addr-pool` (default [`allocator::DEFAULT_ADDR_POOL`]).
    pub default_addr_pool: Vec<String>,
    /// `--default-addr-pool-mask-length` (default
    /// [`allocator::DEFAULT_SUBNET_SIZE`]).
    pub subnet_size: u32,
    /// `--cert-expiry`: validity of node certificates (default 90 days).
    pub node_cert_expiry: Duration,
}

/// VXLAN id of the ingress overlay.
pub const INGRESS_VNI: u32 = 4096;
/// Default UDP port of the overlay (`--data-path-port`).
pub const DEFAULT_DATA_PATH_PORT: u32 = 4789;

/// Default `--dispatcher-heartbeat`.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// A new cluster CA and the first manager's certificate, made before the
/// store opens so that Raft speaks mTLS from the start.
pub fn new_cluster_ca(
    node_id: &str,
    addr: &str,
) -> Result<(ca::ClusterCa, NodeCertificates), ManagerError> {
    let ca = ca::ClusterCa::generate()?;
    let key = ca::new_node_key()?;
    let cert_pem = ca.sign_node(
        &key.csr_pem,
        node_id,
        ca::CertRole::Manager,
        &[addr.to_string()],
    )?;
    let certs = NodeCertificates {
        ca_pem: ca.cert_pem().to_string(),
        cert_pem,
        key_pem: key.key_pem,
    };
    Ok((ca, certs))
}

/// Writes the cluster object (with the CA from [`new_cluster_ca`] and new
/// join-token secrets) and the first node (a manager) into a freshly
/// initialised store.
pub async fn init_cluster(
    store: &Store,
    node: &LocalNode,
    settings: &InitSettings,
    ca: &ca::ClusterCa,
    certificates: NodeCertificates,
) -> Result<Initialized, ManagerError> {
    let now = shoal_api::now_ms();
    let meta = Some(Meta {
        version: 0,
        created_at_ms: now,
        updated_at_ms: now,
    });
    let cluster = Cluster {
        id: shoal_api::id::new_id(),
        meta,
        // Within the bounds of `swarm update` (see swarm::validate_init).
        task_history_limit: if settings.task_history_limit == 0 {
            reaper::DEFAULT_HISTORY_LIMIT
        } else {
            settings
                .task_history_limit
                .min(swarm::MAX_TASK_HISTORY_LIMIT)
        },
        dispatcher_heartbeat_ms: if settings.heartbeat.is_zero() {
            DEFAULT_HEARTBEAT
        } else {
            settings.heartbeat
        }
        .as_millis()
        .clamp(
            u128::from(swarm::MIN_HEARTBEAT_MS),
            u128::from(swarm::MAX_HEARTBEAT_MS),
        ) as u64,
        ingress_subnet: if settings.ingress_subnet.is_empty() {
            allocator::DEFAULT_INGRESS_SUBNET.into()
        } else {
            settings.ingress_subnet.clone()
        },
        default_addr_pool: if settings.default_addr_pool.is_empty() {
            vec![allocator::DEFAULT_ADDR_POOL.into()]
        } else {
            settings.default_addr_pool.clone()
        },
        subnet_size: if settings.subnet_size == 0 {
            allocator::DEFAULT_SUBNET_SIZE
        } else {
            settings.subnet_size
        },
        root_ca_pem: ca.cert_pem().to_string(),
        root_ca_key_pem: ca.key_pem().to_string(),
        worker_token_secret: ca::new_token_secret(),
        manager_token_secret: ca::new_token_secret(),
        manager_addrs: vec![node.manager_addr.clone()],
        ingress_vni: INGRESS_VNI,
        data_path_port: DEFAULT_DATA_PATH_PORT,
        node_cert_expiry_ms: if settings.node_cert_expiry.is_zero() {
            ca::NODE_VALIDITY
        } else {
            settings.node_cert_expiry
        }
        .as_millis() as u64,
        previous_root_ca_pem: String::new(),
        root_ca_cross_signed_pem: String::new(),
    };
    let ingress_address = allocator::allocate_node_address(&ClusterView {
        cluster: Arc::new(cluster.clone()),
        ..Default::default()
    })
    .unwrap_or_default();
    let record = Node {
        id: node.id.clone(),
        meta,
        spec: Some(NodeSpec {
            role: NodeRole::Manager as i32,
            availability: NodeAvailability::Active as i32,
            labels: Default::default(),
        }),
        description: Some(NodeDescription {
            hostname: node.hostname.clone(),
            engine_version: node.engine_version.clone(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            // The agent reports the real capacity when its session opens.
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            addr: node.addr.clone(),
            ingress_address: ingress_address.clone(),
            ..Default::default()
        }),
        manager_status: Some(ManagerStatus {
            leader: true,
            reachability: "reachable".into(),
            addr: node.manager_addr.clone(),
            raft_id: node.raft_id,
        }),
    };
    let txn = Txn {
        compares: vec![Compare::Version {
            key: state::CLUSTER_KEY.into(),
            version: 0,
        }],
        ops: vec![
            Op::Put {
                key: state::CLUSTER_KEY.into(),
                value: codec::encode(&cluster),
            },
            Op::Put {
                key: state::node_key(&node.id),
                value: codec::encode(&record),
            },
        ],
    };
    store.write(txn).await?;
    Ok(Initialized {
        cluster,
        certificates,
        ingress_address,
    })
}

/// A running manager. Cheap to clone.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// The decoded state the components share.
    cache: cache::ViewCache,
    config: ManagerConfig,
    dispatcher: DispatcherApi,
    /// Supervised background components; the first to end decides [`Manager::wait`].
    tasks: tokio::sync::Mutex<JoinSet<(&'static str, Result<(), ManagerError>)>>,
    shutdown: CancellationToken,
}

impl Manager {
    /// Starts the manager's components over an initialised store.
    pub fn start(store: Store, config: ManagerConfig, shutdown: CancellationToken) -> Manager {
        let (changes_tx, changes_rx) = watch::channel(store.revision());
        let heartbeat = state::get::<Cluster>(&store, state::CLUSTER_KEY)
            .map(|c| Duration::from_millis(c.dispatcher_heartbeat_ms))
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_HEARTBEAT);
        let cache = cache::ViewCache::new(store.clone());
        let dispatcher = DispatcherApi::new(
            store.clone(),
            cache.clone(),
            changes_rx.clone(),
            heartbeat,
            shutdown.clone(),
        );
        let mut tasks = JoinSet::new();
        {
            let (store, shutdown) = (store.clone(), shutdown.clone());
            tasks.spawn(async move {
                (
                    "store watch",
                    watch_store(store, changes_tx, shutdown).await,
                )
            });
        }
        {
            let (store, cache, rx, shutdown) = (
                store.clone(),
                cache.clone(),
                changes_rx.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                (
                    "reconciler",
                    reconciler::run(store, cache, rx, shutdown).await,
                )
            });
        }
        {
            let d = dispatcher.clone();
            tasks.spawn(async move { ("heartbeat checker", d.run_heartbeat_checker().await) });
        }
        {
            let d = dispatcher.clone();
            tasks.spawn(async move { ("feed", d.run_feed().await) });
        }
        {
            let d = dispatcher.clone();
            tasks.spawn(async move { ("status writer", d.run_status_writer().await) });
        }
        {
            let d = dispatcher.clone();
            tasks.spawn(async move { ("assignments", d.run_assignments().await) });
        }
        {
            let d = dispatcher.clone();
            tasks
                .spawn(async move { ("withdrawal confirmer", d.run_withdrawal_confirmer().await) });
        }
        {
            let (store, cache, rx, shutdown) = (
                store.clone(),
                cache.clone(),
                changes_rx.clone(),
                shutdown.clone(),
            );
            tasks.spawn(
                async move { ("role manager", role::run(store, cache, rx, shutdown).await) },
            );
        }
        Manager {
            inner: Arc::new(Inner {
                store,
                cache,
                config,
                dispatcher,
                tasks: tokio::sync::Mutex::new(tasks),
                shutdown,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The `Control` service implementation.
    pub fn control(&self) -> ControlApi {
        ControlApi::new(
            self.inner.store.clone(),
            self.inner.cache.clone(),
            self.inner.config.clone(),
            self.inner.dispatcher.clone(),
        )
    }

    /// The `NodeCA` service implementation (joining with a token).
    pub fn node_ca(&self) -> NodeCaApi {
        NodeCaApi::new(self.inner.store.clone(), self.inner.cache.clone())
    }

    /// The `Dispatcher` service implementation.
    pub fn dispatcher(&self) -> DispatcherApi {
        self.inner.dispatcher.clone()
    }

    /// Waits for the components to end. Returns the first failure; when one
    /// component fails the others are cancelled.
    pub async fn wait(&self) -> Result<(), ManagerError> {
        let mut tasks = self.inner.tasks.lock().await;
        let mut first_err = None;
        while let Some(res) = tasks.join_next().await {
            let failure = match res {
                Ok((_, Ok(()))) if self.inner.shutdown.is_cancelled() => None,
                Ok((name, Ok(()))) => Some(ManagerError::ComponentFailed {
                    component: name,
                    reason: "returned before shutdown".into(),
                }),
                Ok((_, Err(e))) => Some(e),
                Err(join) => Some(ManagerError::ComponentFailed {
                    component: "manager task",
                    reason: join.to_string(),
                }),
            };
            if let Some(e) = failure {
                tracing::error!(error = %e, "manager component failed; shutting the manager down");
                self.inner.shutdown.cancel();
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Turns store watch events into a "revision changed" signal for every
/// component; re-subscribes if the watch lags.
async fn watch_store(
    store: Store,
    tx: watch::Sender<u64>,
    shutdown: CancellationToken,
) -> Result<(), ManagerError> {
    loop {
        let rev = store.revision();
        tx.send_replace(rev);
        let mut w = store.watch("", rev)?;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                ev = w.next() => match ev {
                    Some(Ok(ev)) => { tx.send_replace(ev.revision); }
                    Some(Err(err)) => { tracing::debug!(%err, "store watch restarting"); break; }
                    None => break,
                }
            }
        }
    }
}
