//! The routing mesh data plane: routing table, listeners, balancer, forwarder, metrics.
//!
//! Every node serves every published port. A [`Mesh`] is fed routing snapshots and
//! deltas (it knows nothing of gRPC or the store), publishes them as an immutable
//! [`RoutingTable`] through `ArcSwap`, keeps one listener per published port, and
//! forwards each accepted TCP connection to the service's task endpoints in
//! round-robin order, skipping draining endpoints and ejecting ones that fail to
//! connect. The data path runs on the mesh's own worker threads, one per core,
//! each driving an io_uring (`uring`, the default where the kernel allows it) or a
//! tokio runtime (`workers`, epoll), as [`DataPath`] says; the [`Mesh`] handle may
//! be used from any thread or runtime.
//!
//! # Layout
//!
//! - `table`: [`RoutingTable`] and its per-service slots: an endpoint change swaps one
//!   service's entry in place; only a change of the port map builds a new table.
//! - `uring`: the io_uring data path: one ring per core, accepts, connects,
//!   receives (into provided buffers) and sends driven by completions.
//! - `workers`: the epoll data path's threads, one single-threaded tokio runtime
//!   per core. On either path a connection stays on the worker that accepted it.
//! - `listener`: binding published ports (socket2; one SO_REUSEPORT socket per
//!   worker), the epoll path's accept loops, and what both paths do when an
//!   accept fails (out of descriptors, typically): back off, warn once per
//!   episode, count it in `shoal_mesh_accept_errors_total`.
//! - `balancer`: round-robin order (`Plan`), connect with timeout, passive
//!   ejection; shared by both paths.
//! - `forward`: the epoll path's bidirectional forwarding with half-close
//!   propagation and byte counting: pooled copy buffers held only while bytes
//!   move, splice(2) for bulk.
//! - `pipe`: the pipes splice goes through. It and `uring` are the only
//!   modules with `unsafe`, besides `listener`'s `getrlimit` for a log line
//!   (the tests read `TCP_INFO` and set `RLIMIT_NOFILE` too).
//! - `metrics`: the Prometheus families and the per-task / per-port handles.

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod balancer;
mod forward;
mod listener;
mod metrics;
#[allow(unsafe_code)]
mod pipe;
mod table;
mod workers;

#[allow(unsafe_code)]
mod uring;

/// Connection hygiene (every connection freed, descriptor exhaustion), on
/// each data path in the same way.
#[cfg(test)]
mod hygiene_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
#[path = "hygiene_tests.rs"]
#[allow(clippy::duplicate_mod)]
mod uring_hygiene_tests;
/// The same tests, run on the io_uring data path: the file picks its data
/// path from its module's name.
#[cfg(test)]
#[path = "tests.rs"]
#[allow(clippy::duplicate_mod)]
mod uring_tests;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::balancer::Clock;
use crate::listener::{AcceptErrors, Shared};
use crate::metrics::MeshMetrics;
pub use crate::table::{RoutingTable, ServiceEntry};
use crate::uring::{Command, UringWorkers};
use crate::workers::Workers;

/// Settings of the data plane.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Address every published port is bound on.
    pub listen_ip: IpAddr,
    /// How long a backend connect may take before the next endpoint is tried.
    pub connect_timeout: Duration,
    /// How long an endpoint is skipped after its first connect failure;
    /// doubles with each further consecutive failure.
    pub eject_base: Duration,
    /// The longest an endpoint is skipped after consecutive connect failures.
    pub eject_max: Duration,
    /// TCP keepalive idle time on both legs, so idle flows survive stateful
    /// middleboxes and dead peers are noticed.
    pub keepalive: Duration,
    /// Data-path threads; every published port gets one listening socket per
    /// thread. Defaults to the number of cores.
    pub workers: NonZeroUsize,
    /// How the worker threads do their I/O.
    pub data_path: DataPath,
}

/// How the mesh's worker threads do their I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataPath {
    /// io_uring where this kernel allows it, epoll otherwise.
    #[default]
    Auto,
    /// A tokio runtime per worker (epoll readiness, a syscall per read and
    /// write).
    Epoll,
    /// An io_uring per worker (`uring`): operations complete in batches, one
    /// `io_uring_enter` per batch. Needs Linux 5.19 or later with io_uring
    /// allowed (`kernel.io_uring_disabled` 0, and a seccomp profile that
    /// permits it: Docker's default one does not).
    Uring,
}

/// The error of parsing a [`DataPath`] name.
#[derive(Debug, thiserror::Error)]
#[error("unknown data path {0:?}: use auto, epoll or io_uring")]
pub struct UnknownDataPath(String);

impl FromStr for DataPath {
    type Err = UnknownDataPath;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "epoll" => Ok(Self::Epoll),
            "io_uring" | "uring" => Ok(Self::Uring),
            other => Err(UnknownDataPath(other.to_owned())),
        }
    }
}

impl std::fmt::Display for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Epoll => "epoll",
            Self::Uring => "io_uring",
        })
    }
}

/// A published port and the task port it forwards to. TCP only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRoute {
    pub published: u16,
    pub target: u16,
}

/// One task of a service, as a connect target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub task_id: Arc<str>,
    /// Display name, e.g. `web.1.<id>`.
    pub task_name: Arc<str>,
    pub slot: u64,
    /// Name of the node running the task (a metric label).
    pub node: Arc<str>,
    /// Target port → where to connect for it.
    pub ports: Vec<(u16, SocketAddr)>,
    /// A draining endpoint takes no new connections; open ones continue.
    pub draining: bool,
}

/// Everything the mesh needs to route one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRoute {
    pub service_id: Arc<str>,
    pub service_name: Arc<str>,
    pub ports: Vec<PortRoute>,
    pub endpoints: Vec<Endpoint>,
}

/// Errors of the mesh. Those returned by `apply_*` are per port and non-fatal.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A published port could not be bound; it is retried on the next update.
    #[error("bind {addr} for service {service}: {source}")]
    Bind {
        addr: SocketAddr,
        port: u16,
        service: String,
        source: std::io::Error,
    },
    /// Two services claimed the same published port; the later one owns it.
    #[error(
        "published port {port} of service {service} was already claimed by service {previous}"
    )]
    PortConflict {
        port: u16,
        service: String,
        previous: String,
    },
    #[error("register mesh metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("start the mesh worker threads: {0}")]
    Workers(std::io::Error),
}

/// The routing mesh of one node. Cheap to clone; all clones share state.
/// Dropping the last clone stops accepting (open connections continue).
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

struct Inner {
    /// State read by accept loops and connections.
    shared: Arc<Shared>,
    metrics: Arc<MeshMetrics>,
    /// The data-path threads accept loops and connections run on.
    engine: Engine,
    /// Serialises updates; owns the listener set.
    control: Mutex<Control>,
    /// Parent of every listener's token: cancelled at shutdown (or drop).
    stop_accepting: CancellationToken,
}

struct Control {
    listeners: HashMap<u16, Listener>,
    /// A routed port failed to bind: every update retries it.
    unbound: bool,
    /// Set by shutdown: no listener is opened afterwards.
    shut_down: bool,
}

/// The data-path threads, by [`DataPath`].
enum Engine {
    Epoll(Workers),
    Uring(UringWorkers),
}

// === impl Engine ===

impl Engine {
    /// Starts the data path `data_path` names; `Auto` falls back to epoll
    /// when io_uring cannot be set up.
    fn start(
        data_path: DataPath,
        uring: impl FnOnce() -> std::io::Result<UringWorkers>,
        epoll: impl FnOnce() -> std::io::Result<Workers>,
    ) -> std::io::Result<Self> {
        match data_path {
            DataPath::Epoll => epoll().map(Self::Epoll),
            DataPath::Uring => uring().map(Self::Uring),
            DataPath::Auto => uring().map(Self::Uring).or_else(|e| {
                warn!(error = %e, "io_uring is not available; the mesh uses epoll");
                epoll().map(Self::Epoll)
            }),
        }
    }
}

/// The listening sockets of one published port, one per worker.
struct Listener {
    /// Stops the accept loops (epoll).
    stop: CancellationToken,
    /// Each completes once its worker has closed its socket.
    closed: Vec<Closed>,
}

enum Closed {
    /// An accept loop on an epoll worker.
    Task(JoinHandle<()>),
    /// A listening socket on an io_uring worker.
    Socket(tokio::sync::oneshot::Receiver<()>),
}

impl Closed {
    async fn wait(self) {
        match self {
            Self::Task(task) => drop(task.await),
            Self::Socket(closed) => drop(closed.await),
        }
    }
}

// === impl MeshConfig ===

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            connect_timeout: Duration::from_secs(1),
            eject_base: Duration::from_secs(1),
            eject_max: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            workers: workers::default_count(),
            data_path: DataPath::default(),
        }
    }
}

// === impl Mesh ===

impl Mesh {
    /// Creates a mesh with an empty table and registers its metrics in `registry`.
    pub fn new(config: MeshConfig, registry: &prometheus::Registry) -> Result<Self, MeshError> {
        let metrics = MeshMetrics::register(registry)?;
        let (count, data_path) = (config.workers, config.data_path);
        let clock = Clock::new();
        let shared = Arc::new(Shared {
            config,
            table: ArcSwap::from_pointee(RoutingTable::default()),
            clock,
            accept_errors: AcceptErrors::new(&metrics.accept_errors, clock),
            connections: TaskTracker::new(),
            abort: CancellationToken::new(),
            held: Default::default(),
        });
        let engine = Engine::start(
            data_path,
            || UringWorkers::start(count, &shared),
            || Workers::start(count, &shared.connections),
        )
        .map_err(MeshError::Workers)?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                metrics,
                engine,
                control: Mutex::new(Control {
                    listeners: HashMap::new(),
                    unbound: false,
                    shut_down: false,
                }),
                stop_accepting: CancellationToken::new(),
            }),
        })
    }

    /// Replaces all routing state (a feed snapshot) and opens/closes listeners
    /// to match. Returns per-port errors; every other port is still served.
    pub fn apply_snapshot(&self, routes: Vec<ServiceRoute>) -> Vec<MeshError> {
        self.inner.apply(false, routes, &[])
    }

    /// Upserts whole service routes and removes services by id (a feed delta).
    /// Removals are applied first. Returns per-port errors, as `apply_snapshot`.
    pub fn apply_delta(
        &self,
        upserts: Vec<ServiceRoute>,
        removed_service_ids: &[String],
    ) -> Vec<MeshError> {
        self.inner.apply(true, upserts, removed_service_ids)
    }

    /// The data path the workers run: [`DataPath::Epoll`] or
    /// [`DataPath::Uring`], never `Auto`.
    pub fn data_path(&self) -> DataPath {
        match self.inner.engine {
            Engine::Epoll(_) => DataPath::Epoll,
            Engine::Uring(_) => DataPath::Uring,
        }
    }

    /// The current routing table.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.inner.shared.table.load_full()
    }

    /// Where the next connection to the published port goes first: the pick
    /// a new connection makes (a routing lookup, then round-robin over the
    /// endpoints not draining, ejected ones last; it advances the service's
    /// counter), without connecting. None if nothing routes the port.
    pub fn pick(&self, published: u16) -> Option<SocketAddr> {
        let shared = &self.inner.shared;
        let service = shared.table.load().service_for_port(published)?;
        let port = service.port(published)?;
        let first = balancer::order(&service, port, shared.clock.now())
            .next()
            .map(|&(_, addr)| addr);
        first
    }

    /// The published ports that currently have a listener.
    pub fn listening_ports(&self) -> Vec<u16> {
        let mut ports: Vec<_> = self.inner.control().listeners.keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    /// Stops accepting on every port, waits up to `grace` for active
    /// connections to finish, then closes the rest. Idempotent; no listener is
    /// opened by later updates.
    pub async fn shutdown(&self, grace: Duration) {
        let closed: Vec<_> = {
            let mut control = self.inner.control();
            control.shut_down = true;
            self.inner.stop_accepting.cancel();
            let listeners: Vec<_> = control.listeners.drain().collect();
            listeners
                .into_iter()
                .flat_map(|(port, l)| self.inner.close_listener(port, l))
                .collect()
        };
        // Wait for the listening sockets to close, so the ports are closed
        // when we return.
        for c in closed {
            c.wait().await;
        }
        let connections = &self.inner.shared.connections;
        connections.close();
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            debug!(
                open = connections.len(),
                "shutdown grace over; closing open connections"
            );
            self.inner.shared.abort.cancel();
            if let Engine::Uring(workers) = &self.inner.engine {
                workers.broadcast(|| Command::Abort);
            }
            connections.wait().await;
        }
    }
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("config", &self.inner.shared.config)
            .field("table", &self.table())
            .finish()
    }
}

// === impl Inner ===

impl Inner {
    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many worker threads there are.
    fn worker_count(&self) -> usize {
        match &self.engine {
            Engine::Epoll(w) => w.len(),
            Engine::Uring(w) => w.len(),
        }
    }

    /// Stops accepting on a published port; returns what completes once its
    /// sockets are closed.
    fn close_listener(&self, port: u16, listener: Listener) -> Vec<Closed> {
        debug!(port, "closing listener");
        listener.stop.cancel();
        if let Engine::Uring(workers) = &self.engine {
            workers.broadcast(|| Command::Unlisten { port });
        }
        listener.closed
    }

    /// Starts accepting on the sockets of a published port, one per worker.
    fn open_listener(&self, port: u16, sockets: Vec<std::net::TcpListener>) -> Listener {
        let stop = self.stop_accepting.child_token();
        let closed = sockets
            .into_iter()
            .enumerate()
            .map(|(worker, socket)| match &self.engine {
                Engine::Epoll(workers) => {
                    let serve = listener::serve(self.shared.clone(), socket, port, stop.clone());
                    Closed::Task(workers.spawn(worker, serve))
                }
                Engine::Uring(workers) => {
                    let (closed, done) = tokio::sync::oneshot::channel();
                    workers.send(
                        worker,
                        Command::Listen {
                            port,
                            socket,
                            closed,
                        },
                    );
                    Closed::Socket(done)
                }
            })
            .collect();
        Listener { stop, closed }
    }

    /// Applies a snapshot (every service, the others removed) or a delta:
    /// endpoint changes of known services go into their slots in place; only
    /// what changes the port map builds and publishes a new table, after which
    /// listeners are reconciled.
    fn apply(
        &self,
        is_delta: bool,
        upserts: Vec<ServiceRoute>,
        removed: &[String],
    ) -> Vec<MeshError> {
        let mut control = self.control();
        let old = self.shared.table.load_full();
        let removed = if is_delta {
            removed.to_vec()
        } else {
            old.ids_not_in(&upserts)
        };
        // A service removed and upserted in one delta is replaced, not updated.
        let skip: std::collections::HashSet<&str> = removed.iter().map(String::as_str).collect();
        let upserts = old.update_in_place(upserts, &skip, &self.metrics);
        old.advance_revision();
        if removed.is_empty() && upserts.is_empty() {
            // The port map is unchanged; only ports that failed to bind
            // before are tried again.
            if control.unbound && !control.shut_down {
                return self.reconcile_listeners(&mut control, &old);
            }
            return Vec::new();
        }
        let mut next = old.next();
        let mut errors = Vec::new();
        for id in &removed {
            next.remove(id);
        }
        for route in upserts {
            let prev = old.service(&route.service_id);
            let entry = ServiceEntry::build(route, prev.as_ref(), &self.metrics);
            errors.extend(next.insert(entry));
        }
        let next = Arc::new(next);
        self.shared.table.store(next.clone());
        drop(old);
        if !control.shut_down {
            errors.extend(self.reconcile_listeners(&mut control, &next));
        }
        errors
    }

    /// Closes listeners of ports no longer routed and binds new ones. A port
    /// that failed to bind is not recorded, so the next update retries it.
    fn reconcile_listeners(&self, control: &mut Control, table: &RoutingTable) -> Vec<MeshError> {
        let gone: Vec<u16> = control
            .listeners
            .keys()
            .copied()
            .filter(|&port| table.service_for_port(port).is_none())
            .collect();
        for port in gone {
            if let Some(l) = control.listeners.remove(&port) {
                // Closing happens on the workers; nothing waits for it here.
                drop(self.close_listener(port, l));
            }
        }
        let mut errors = Vec::new();
        for port in table.ports() {
            if control.listeners.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(self.shared.config.listen_ip, port);
            match listener::bind_group(addr, self.shared.config.keepalive, self.worker_count()) {
                Ok(sockets) => {
                    debug!(%addr, "listening");
                    let listener = self.open_listener(port, sockets);
                    control.listeners.insert(port, listener);
                }
                Err(source) => {
                    let service = table
                        .service_for_port(port)
                        .map(|s| s.name().to_owned())
                        .unwrap_or_default();
                    let err = MeshError::Bind {
                        addr,
                        port,
                        service,
                        source,
                    };
                    warn!(%err, "cannot serve published port");
                    errors.push(err);
                }
            }
        }
        control.unbound = !errors.is_empty();
        errors
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_accepting.cancel();
    }
}
