//! The routing table and its per-service entries.
//!
//! The table maps published ports and service ids to per-service *slots*; a
//! slot holds the service's current [`ServiceEntry`] behind an `ArcSwap`. The
//! common update, endpoints of a known service changing (a task starting,
//! draining or leaving), builds that one service's entry and swaps it into
//! its slot: its cost depends on the service, not on the size of the table.
//! Only a change of the port map (a service added or removed, its published
//! ports changed, a snapshot) builds a new table, which copies the two maps
//! shallowly (they hold `Arc`s) and shares every unchanged slot. Ports are
//! keyed by number and protocol: one service may publish 53/tcp and 53/udp.
//! Entries are immutable; the state that must survive an update (round-robin counter,
//! ejection state, metric handles) is carried over from the previous entry.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::warn;

use crate::error::MeshError;
use crate::health::Health;
use crate::host_mode;
use crate::metrics::{MeshMetrics, PortMetrics, TaskMetrics, UdpTaskMetrics};
use crate::route::{Endpoint, PortRoute, Protocol, ServiceRoute};

/// What the mesh routes: published port and protocol → service, service id →
/// service.
/// The maps are immutable once published; each service's entry is read
/// through its slot, so it is always the service's current one.
#[derive(Default)]
pub struct RoutingTable {
    /// Counts applied snapshots and deltas; shared by every table of one mesh.
    revision: Arc<AtomicU64>,
    services: HashMap<Arc<str>, Arc<ServiceSlot>>,
    /// The ports this node listens on, by (number, protocol): every ingress
    /// port, and the host-mode ports of services with a task on this node.
    ports: HashMap<(u16, Protocol), Arc<ServiceSlot>>,
    /// This node's name, for host-mode ports (see [`crate::host_mode`]).
    node_name: Option<Arc<str>>,
}

/// A service's place in the table; the entry is replaced in place when only
/// its endpoints change.
pub(crate) struct ServiceSlot {
    entry: ArcSwap<ServiceEntry>,
}

/// One service as the data plane sees it.
pub struct ServiceEntry {
    id: Arc<str>,
    name: Arc<str>,
    pub(crate) ports: Vec<PortEntry>,
    pub(crate) endpoints: Vec<Arc<EndpointEntry>>,
    /// The service's single round-robin counter, shared by all its ports and
    /// carried over when the service is upserted again.
    pub(crate) next: Arc<AtomicUsize>,
}

/// A published port of a service, with its metric handles.
pub(crate) struct PortEntry {
    pub(crate) route: PortRoute,
    pub(crate) metrics: Arc<PortMetrics>,
    /// The endpoints a new connection may go to, in table order: those not
    /// draining that expose the target port, with the address to connect to.
    /// Precomputed so that choosing one allocates nothing. A host-mode
    /// port's are those on this node.
    pub(crate) candidates: Vec<(Arc<EndpointEntry>, SocketAddr)>,
    /// Whether this node listens on the port (a host-mode port only while a
    /// task of the service runs here).
    pub(crate) listening: bool,
}

/// A task endpoint with the state the balancer and forwarder need.
pub(crate) struct EndpointEntry {
    pub(crate) endpoint: Endpoint,
    /// Ejection state; carried over (by task id) across updates of the service.
    pub(crate) health: Arc<Health>,
    pub(crate) metrics: Arc<TaskMetrics>,
    /// The UDP series, for services that publish a UDP port.
    pub(crate) udp_metrics: Option<Arc<UdpTaskMetrics>>,
}

// === impl RoutingTable ===

impl RoutingTable {
    /// An empty table for the node named `node_name` (see
    /// [`crate::MeshConfig::node_name`]).
    pub(crate) fn for_node(node_name: Option<Arc<str>>) -> Self {
        Self {
            node_name,
            ..Self::default()
        }
    }

    /// How many snapshots and deltas the mesh has applied (0: none yet).
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Relaxed)
    }

    /// The service that owns a published TCP port, as it is now.
    pub fn service_for_port(&self, port: u16) -> Option<Arc<ServiceEntry>> {
        self.service_for(port, Protocol::Tcp)
    }

    /// The service that owns a published port of `protocol`, as it is now.
    pub fn service_for(&self, port: u16, protocol: Protocol) -> Option<Arc<ServiceEntry>> {
        self.ports
            .get(&(port, protocol))
            .map(|slot| slot.entry.load_full())
    }

    /// A service by id, as it is now.
    pub fn service(&self, id: &str) -> Option<Arc<ServiceEntry>> {
        self.services.get(id).map(|slot| slot.entry.load_full())
    }

    /// All services, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = Arc<ServiceEntry>> + '_ {
        self.services.values().map(|slot| slot.entry.load_full())
    }

    /// All published ports with their protocol, in no particular order.
    pub fn ports(&self) -> impl Iterator<Item = (u16, Protocol)> + '_ {
        self.ports.keys().copied()
    }

    /// Counts one applied update.
    pub(crate) fn advance_revision(&self) {
        self.revision.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the entries of services already in this table, in place,
    /// except those in `skip`. Returns the routes it could not apply so
    /// (unknown or skipped services, or published ports that differ: those
    /// need a new table).
    pub(crate) fn update_in_place(
        &self,
        routes: Vec<ServiceRoute>,
        skip: &HashSet<&str>,
        metrics: &Arc<MeshMetrics>,
    ) -> Vec<ServiceRoute> {
        let mut rest = Vec::new();
        for route in routes {
            let slot = self
                .services
                .get(&route.service_id)
                .filter(|_| !skip.contains(&*route.service_id));
            let Some(slot) = slot else {
                rest.push(route);
                continue;
            };
            let prev = slot.entry.load_full();
            if !prev.ports().eq(route.ports.iter())
                || !prev.listens_as(&route, self.node_name.as_deref())
            {
                rest.push(route);
                continue;
            }
            let node = self.node_name.as_deref();
            slot.entry
                .store(ServiceEntry::build(route, Some(&prev), metrics, node));
        }
        rest
    }

    /// A shallow copy of `self` (sharing its slots and revision counter) to
    /// build the next table in.
    pub(crate) fn next(&self) -> Self {
        Self {
            revision: self.revision.clone(),
            services: self.services.clone(),
            ports: self.ports.clone(),
            node_name: self.node_name.clone(),
        }
    }

    /// Ids of the services in this table that `routes` does not name.
    pub(crate) fn ids_not_in(&self, routes: &[ServiceRoute]) -> Vec<String> {
        let named: HashSet<&str> = routes.iter().map(|r| &*r.service_id).collect();
        self.services
            .keys()
            .filter(|id| !named.contains(&***id))
            .map(|id| id.to_string())
            .collect()
    }

    /// Removes a service and the ports it owns.
    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(old) = self.services.remove(id) {
            for p in &old.entry.load().ports {
                let port = (p.route.published, p.route.protocol);
                if self.ports.get(&port).is_some_and(|o| Arc::ptr_eq(o, &old)) {
                    self.ports.remove(&port);
                }
            }
        }
    }

    /// Inserts (or replaces) a service in a slot of its own. A published port
    /// claimed by another service moves to this one (last writer wins) and is
    /// reported.
    pub(crate) fn insert(&mut self, entry: Arc<ServiceEntry>) -> Vec<MeshError> {
        let mut errors = Vec::new();
        self.remove(&entry.id);
        let slot = Arc::new(ServiceSlot {
            entry: ArcSwap::new(entry.clone()),
        });
        for p in entry.ports.iter().filter(|p| p.listening) {
            let (port, protocol) = (p.route.published, p.route.protocol);
            if let Some(prev) = self.ports.insert((port, protocol), slot.clone()) {
                let prev = prev.entry.load();
                if prev.id != entry.id {
                    let err = MeshError::PortConflict {
                        port,
                        service: entry.name.to_string(),
                        previous: prev.name.to_string(),
                    };
                    warn!(%err, "published port claimed twice");
                    errors.push(err);
                    // The previous owner keeps its other ports.
                }
            }
        }
        self.services.insert(entry.id.clone(), slot);
        errors
    }
}

impl std::fmt::Debug for RoutingTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingTable")
            .field("revision", &self.revision())
            .field("services", &self.services().collect::<Vec<_>>())
            .finish()
    }
}

// === impl ServiceEntry ===

impl ServiceEntry {
    /// Builds the entry for `route` on the node named `node`, reusing `prev`
    /// untouched when the route is unchanged and carrying over its counter,
    /// ejection state and metrics otherwise.
    pub(crate) fn build(
        route: ServiceRoute,
        prev: Option<&Arc<ServiceEntry>>,
        metrics: &Arc<MeshMetrics>,
        node: Option<&str>,
    ) -> Arc<Self> {
        if let Some(prev) = prev.filter(|p| p.matches(&route)) {
            return prev.clone();
        }
        let ServiceRoute {
            service_id,
            service_name,
            ports,
            endpoints,
        } = route;
        let udp = ports.iter().any(|p| p.protocol == Protocol::Udp);
        let endpoints: Vec<_> = endpoints
            .into_iter()
            .map(|endpoint| {
                let health = prev
                    .and_then(|p| {
                        p.endpoints
                            .iter()
                            .find(|e| e.endpoint.task_id == endpoint.task_id)
                    })
                    .map(|e| e.health.clone())
                    .unwrap_or_default();
                let udp_metrics = udp.then(|| {
                    metrics.udp_task(
                        &service_name,
                        &endpoint.task_id,
                        endpoint.slot,
                        &endpoint.node,
                    )
                });
                let metrics = metrics.task(
                    &service_name,
                    &endpoint.task_id,
                    endpoint.slot,
                    &endpoint.node,
                );
                Arc::new(EndpointEntry {
                    endpoint,
                    health,
                    metrics,
                    udp_metrics,
                })
            })
            .collect();
        let ports = ports
            .into_iter()
            .map(|route| PortEntry {
                metrics: metrics.port(&service_name, route.published),
                candidates: endpoints
                    .iter()
                    .filter(|e| !e.endpoint.draining)
                    .filter(|e| host_mode::may_serve(&route, &e.endpoint, node))
                    .filter_map(|e| Some((e.clone(), e.addr_for(route.target)?)))
                    .collect(),
                listening: host_mode::listens(&route, endpoints.iter().map(|e| &e.endpoint), node),
                route,
            })
            .collect();
        Arc::new(Self {
            id: service_id,
            name: service_name,
            ports,
            endpoints,
            next: prev.map(|p| p.next.clone()).unwrap_or_default(),
        })
    }

    fn matches(&self, route: &ServiceRoute) -> bool {
        self.id == route.service_id
            && self.name == route.service_name
            && self.ports.len() == route.ports.len()
            && self
                .ports
                .iter()
                .zip(&route.ports)
                .all(|(a, b)| a.route == *b)
            && self.endpoints.len() == route.endpoints.len()
            && self
                .endpoints
                .iter()
                .zip(&route.endpoints)
                .all(|(a, b)| a.endpoint == *b)
    }

    /// Whether `route` (with this entry's ports) listens on the same ports
    /// as this entry: a host-mode port opens or closes with the service's
    /// tasks on this node, and that needs a new port map.
    fn listens_as(&self, route: &ServiceRoute, node: Option<&str>) -> bool {
        self.ports
            .iter()
            .all(|p| p.listening == host_mode::listens(&p.route, route.endpoints.iter(), node))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The published ports of the service.
    pub fn ports(&self) -> impl Iterator<Item = &PortRoute> + '_ {
        self.ports.iter().map(|p| &p.route)
    }

    /// The service's endpoints, draining ones included.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> + '_ {
        self.endpoints.iter().map(|e| &e.endpoint)
    }

    /// A published TCP port of the service.
    pub(crate) fn port(&self, published: u16) -> Option<&PortEntry> {
        self.port_of(published, Protocol::Tcp)
    }

    /// A published port of the service, by number and protocol.
    pub(crate) fn port_of(&self, published: u16, protocol: Protocol) -> Option<&PortEntry> {
        self.ports
            .iter()
            .find(|p| p.route.published == published && p.route.protocol == protocol)
    }
}

impl std::fmt::Debug for ServiceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceEntry")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("ports", &self.ports().collect::<Vec<_>>())
            .field("endpoints", &self.endpoints().collect::<Vec<_>>())
            .finish()
    }
}

// === impl EndpointEntry ===

impl EndpointEntry {
    /// Where to connect for a target port, if the task exposes it.
    pub(crate) fn addr_for(&self, target: u16) -> Option<SocketAddr> {
        self.endpoint
            .ports
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, a)| *a)
    }
}
