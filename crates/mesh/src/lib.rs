//! The routing mesh data plane: routing table, listeners, balancer, forwarder, metrics.
//!
//! Every node serves every published port. A [`Mesh`] is fed routing snapshots and
//! deltas (it knows nothing of gRPC or the store), publishes them as an immutable
//! [`RoutingTable`] through `ArcSwap`, keeps one listener per published port, and
//! forwards each accepted TCP connection to the service's task endpoints in
//! round-robin order, skipping draining endpoints and ejecting ones that fail to
//! connect. The data path runs on the mesh's own worker threads (one per core, see
//! `workers`); the [`Mesh`] handle may be used from any thread or runtime.
//!
//! # Layout
//!
//! - `table`: [`RoutingTable`] and its per-service slots: an endpoint change swaps one
//!   service's entry in place; only a change of the port map builds a new table.
//! - `workers`: the data-path threads, one single-threaded runtime per core; a
//!   connection stays on the worker that accepted it.
//! - `listener`: binding published ports (socket2; one SO_REUSEPORT socket per
//!   worker) and the accept loops.
//! - `balancer`: round-robin selection, connect with timeout, passive ejection.
//! - `forward`: bidirectional forwarding with half-close propagation and byte
//!   counting: pooled copy buffers held only while bytes move, splice(2) for bulk.
//! - `pipe`: the pipes splice goes through (the crate's only `unsafe`, with a
//!   test helper reading `TCP_INFO`).
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

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::balancer::Clock;
use crate::listener::Shared;
use crate::metrics::MeshMetrics;
pub use crate::table::{RoutingTable, ServiceEntry};
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
    workers: Workers,
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

/// The running accept loops of one published port, one per worker.
struct Listener {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
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
        }
    }
}

// === impl Mesh ===

impl Mesh {
    /// Creates a mesh with an empty table and registers its metrics in `registry`.
    pub fn new(config: MeshConfig, registry: &prometheus::Registry) -> Result<Self, MeshError> {
        let metrics = MeshMetrics::register(registry)?;
        let connections = TaskTracker::new();
        let workers = Workers::start(config.workers, &connections).map_err(MeshError::Workers)?;
        let shared = Arc::new(Shared {
            config,
            table: ArcSwap::from_pointee(RoutingTable::default()),
            clock: Clock::new(),
            connections,
            abort: CancellationToken::new(),
            held: Default::default(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                metrics,
                workers,
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
        let tasks: Vec<_> = {
            let mut control = self.inner.control();
            control.shut_down = true;
            self.inner.stop_accepting.cancel();
            control
                .listeners
                .drain()
                .flat_map(|(_, l)| l.tasks)
                .collect()
        };
        // Wait for the accept loops so the ports are closed when we return.
        for task in tasks {
            let _ = task.await;
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
        control.listeners.retain(|&port, l| {
            let keep = table.service_for_port(port).is_some();
            if !keep {
                debug!(port, "closing listener");
                l.stop.cancel();
            }
            keep
        });
        let mut errors = Vec::new();
        for port in table.ports() {
            if control.listeners.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(self.shared.config.listen_ip, port);
            match listener::bind_group(addr, self.shared.config.keepalive, self.workers.len()) {
                Ok(sockets) => {
                    debug!(%addr, "listening");
                    let stop = self.stop_accepting.child_token();
                    let tasks = sockets
                        .into_iter()
                        .enumerate()
                        .map(|(worker, l)| {
                            let serve = listener::serve(self.shared.clone(), l, port, stop.clone());
                            self.workers.spawn(worker, serve)
                        })
                        .collect();
                    control.listeners.insert(port, Listener { stop, tasks });
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
