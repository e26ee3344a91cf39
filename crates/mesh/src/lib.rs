//! The routing mesh data plane: routing table, listeners, balancer, forwarder, metrics.
//!
//! Every node serves every ingress port (a host-mode port only while a task of
//! its service runs on the node, to that task). A [`Mesh`] is fed routing
//! snapshots and deltas (it knows nothing of gRPC or the store), publishes them
//! as an immutable [`RoutingTable`] through `ArcSwap`, keeps one listener per
//! published port, and forwards each accepted TCP connection, and each UDP
//! client flow, to the service's task endpoints in round-robin order, skipping
//! draining endpoints and ejecting ones that fail to connect. Ports listen
//! dual-stack (IPv6 and IPv4 clients alike; tasks are reached over IPv4); a
//! TCP port that asks for it sends its task a PROXY protocol header naming the
//! client before the client's bytes. The data path runs on the mesh's own
//! worker threads, one per core, each driving an io_uring (`uring`, the
//! default where the kernel allows it) or a tokio runtime (`workers`, epoll),
//! as [`DataPath`] says; UDP runs on its own threads; the [`Mesh`] handle may
//! be used from any thread or runtime.
//!
//! # Layout
//!
//! - `config`, `route`, `error`: what the mesh is given ([`MeshConfig`], the
//!   [`ServiceRoute`]s to serve) and what it reports ([`MeshError`]).
//! - `table`: [`RoutingTable`] and its per-service slots: an endpoint change swaps one
//!   service's entry in place; only a change of the port map builds a new table.
//! - `shared`: the runtime state every accept loop and connection of both data
//!   paths reads (config, table, clock, connection tracker, accept errors).
//! - `uring`: the io_uring data path: one ring per core, accepts, connects,
//!   receives (into provided buffers) and sends driven by completions.
//! - `workers`: the epoll data path's threads, one single-threaded tokio runtime
//!   per core. On either path a connection stays on the worker that accepted it.
//! - `listener`: the epoll path's accept loops.
//! - `socket`: binding published ports (socket2; one SO_REUSEPORT socket per
//!   worker) and the options of client and backend sockets.
//! - `accept_errors`: what both paths do when an accept fails (out of
//!   descriptors, typically): back off, warn once per episode, count it in
//!   `shoal_mesh_accept_errors_total`.
//! - `host_mode`: which endpoints a host-mode port may send to (this node's)
//!   and whether this node listens on it.
//! - `balancer`: round-robin order (`Plan`), connect with timeout; shared by
//!   both paths. `health`: the passive ejection it applies, on `clock`.
//! - `forward`: the epoll path's bidirectional forwarding with half-close
//!   propagation and byte counting: pooled copy buffers held only while bytes
//!   move, splice(2) for bulk.
//! - `proxy_header`: the PROXY protocol header (v1, v2) a port may send its
//!   tasks first, built on the stack.
//! - `pipe`: the pipes splice goes through. It and `uring` are the only
//!   modules with `unsafe`, besides `accept_errors`' `getrlimit` for a log line
//!   (the tests read `TCP_INFO` and set `RLIMIT_NOFILE` too).
//! - `udp`: UDP ingress: a SO_REUSEPORT group of sockets per published UDP
//!   port, each with a sans-IO flow table (`udp::flows`) pinning client flows
//!   to tasks, the replies relayed back from the published port. It runs on
//!   the epoll workers, or on threads of its own beside io_uring ones.
//! - `metrics`: the Prometheus families and the per-task / per-port handles.
//!
//! Modules below the crate root never import from it: the root only wires
//! them together behind the [`Mesh`] handle.

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod accept_errors;
mod balancer;
mod clock;
mod config;
mod error;
mod forward;
mod health;
mod host_mode;
mod listener;
mod metrics;
#[allow(unsafe_code)]
mod pipe;
mod proxy_header;
mod route;
mod shared;
mod socket;
mod table;
mod udp;
mod workers;

#[allow(unsafe_code)]
mod uring;

/// The client's address (PROXY protocol), IPv6 and idle connections, on
/// each data path.
#[cfg(test)]
mod client_address_tests;
/// Connection hygiene (every connection freed, descriptor exhaustion), on
/// each data path in the same way.
#[cfg(test)]
mod hygiene_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod udp_tests;
#[cfg(test)]
#[path = "client_address_tests.rs"]
#[allow(clippy::duplicate_mod)]
mod uring_client_address_tests;
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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::accept_errors::AcceptErrors;
use crate::clock::Clock;
pub use crate::config::{DataPath, MeshConfig, UnknownDataPath};
pub use crate::error::MeshError;
use crate::metrics::MeshMetrics;
pub use crate::route::{Endpoint, PortRoute, Protocol, ProxyProtocol, PublishMode, ServiceRoute};
use crate::shared::Shared;
pub use crate::table::{RoutingTable, ServiceEntry};
use crate::uring::{Command, UringWorkers};
use crate::workers::Workers;

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
    listeners: HashMap<(u16, Protocol), Listener>,
    /// The threads UDP ports are served on beside io_uring workers (which
    /// serve TCP only); started with the first UDP port.
    udp_threads: Option<Workers>,
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

// === impl Mesh ===

impl Mesh {
    /// Creates a mesh with an empty table and registers its metrics in `registry`.
    pub fn new(config: MeshConfig, registry: &prometheus::Registry) -> Result<Self, MeshError> {
        let metrics = MeshMetrics::register(registry)?;
        let (count, data_path) = (config.workers, config.data_path);
        let clock = Clock::new();
        let table = RoutingTable::for_node(config.node_name.clone());
        let shared = Arc::new(Shared {
            config,
            table: ArcSwap::from_pointee(table),
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
                    udp_threads: None,
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

    /// The published TCP ports that currently have a listener.
    pub fn listening_ports(&self) -> Vec<u16> {
        self.inner.listening(Protocol::Tcp)
    }

    /// The published UDP ports that currently have sockets.
    pub fn listening_udp_ports(&self) -> Vec<u16> {
        self.inner.listening(Protocol::Udp)
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
                .flat_map(|((port, protocol), l)| self.inner.close_listener(port, protocol, l))
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

    /// The published ports of `protocol` that have a listener, in order.
    fn listening(&self, protocol: Protocol) -> Vec<u16> {
        let mut ports: Vec<_> = (self.control().listeners.keys())
            .filter(|(_, p)| *p == protocol)
            .map(|&(port, _)| port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// Stops accepting on a published port; returns what completes once its
    /// sockets are closed.
    fn close_listener(&self, port: u16, protocol: Protocol, listener: Listener) -> Vec<Closed> {
        debug!(port, ?protocol, "closing listener");
        listener.stop.cancel();
        if let (Engine::Uring(workers), Protocol::Tcp) = (&self.engine, protocol) {
            workers.broadcast(|| Command::Unlisten { port });
        }
        listener.closed
    }

    /// Starts serving the sockets of a published UDP port, one per worker.
    fn open_udp_listener(
        &self,
        control: &mut Control,
        port: u16,
        sockets: Vec<std::net::UdpSocket>,
    ) -> std::io::Result<Listener> {
        let workers = match &self.engine {
            Engine::Epoll(workers) => workers,
            Engine::Uring(_) => {
                if control.udp_threads.is_none() {
                    control.udp_threads = Some(Workers::start(
                        self.shared.config.workers,
                        &self.shared.connections,
                    )?);
                }
                control
                    .udp_threads
                    .as_ref()
                    .expect("the UDP threads were started above")
            }
        };
        let stop = self.stop_accepting.child_token();
        let count = sockets.len();
        let closed = sockets
            .into_iter()
            .enumerate()
            .map(|(worker, socket)| {
                let serve = udp::serve(self.shared.clone(), socket, port, count, stop.clone());
                Closed::Task(workers.spawn(worker % workers.len(), serve))
            })
            .collect();
        Ok(Listener { stop, closed })
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
        let node = self.shared.config.node_name.as_deref();
        let entries: Vec<_> = upserts
            .into_iter()
            .map(|route| {
                let prev = old.service(&route.service_id);
                ServiceEntry::build(route, prev.as_ref(), &self.metrics, node)
            })
            .collect();
        // Every upserted service leaves first, so a port that moves from one
        // to another in this update (a host-mode port whose local task now
        // belongs to another service) is no conflict, in whatever order.
        for id in removed
            .iter()
            .map(String::as_str)
            .chain(entries.iter().map(|e| e.id()))
        {
            next.remove(id);
        }
        for entry in entries {
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
        let gone: Vec<(u16, Protocol)> = control
            .listeners
            .keys()
            .copied()
            .filter(|&(port, protocol)| table.service_for(port, protocol).is_none())
            .collect();
        for key @ (port, protocol) in gone {
            if let Some(l) = control.listeners.remove(&key) {
                // Closing happens on the workers; nothing waits for it here.
                drop(self.close_listener(port, protocol, l));
            }
        }
        let mut errors = Vec::new();
        for key @ (port, protocol) in table.ports() {
            if control.listeners.contains_key(&key) {
                continue;
            }
            let addr = SocketAddr::new(self.shared.config.listen_ip, port);
            let count = self.worker_count();
            let opened = match protocol {
                Protocol::Tcp => socket::bind_group(addr, self.shared.config.keepalive, count)
                    .map(|sockets| self.open_listener(port, sockets)),
                Protocol::Udp => udp::bind_group(addr, count)
                    .and_then(|sockets| self.open_udp_listener(control, port, sockets)),
            };
            match opened {
                Ok(listener) => {
                    debug!(%addr, ?protocol, "listening");
                    control.listeners.insert(key, listener);
                }
                Err(source) => {
                    let service = table
                        .service_for(port, protocol)
                        .map(|s| s.name().to_owned())
                        .unwrap_or_default();
                    let err = MeshError::Bind {
                        addr,
                        port,
                        protocol,
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
