//! The immutable routing table and its per-service entries.
//!
//! A table is never mutated once published. An update clones the two maps
//! shallowly (they hold `Arc`s) and rebuilds only the entries of the services
//! that changed; unchanged entries are shared with the previous table, and the
//! state that must survive an update (round-robin counter, ejection state,
//! metric handles) is carried over from the previous entry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tracing::warn;

use crate::balancer::Health;
use crate::metrics::{MeshMetrics, PortMetrics, TaskMetrics};
use crate::{Endpoint, MeshError, PortRoute, ServiceRoute};

/// What the mesh routes, as one immutable snapshot: published port → service,
/// service id → service.
#[derive(Default)]
pub struct RoutingTable {
    /// Incremented by every applied snapshot or delta.
    revision: u64,
    services: HashMap<Arc<str>, Arc<ServiceEntry>>,
    ports: HashMap<u16, Arc<ServiceEntry>>,
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
    /// Precomputed so that choosing one allocates nothing.
    pub(crate) candidates: Vec<(Arc<EndpointEntry>, SocketAddr)>,
}

/// A task endpoint with the state the balancer and forwarder need.
pub(crate) struct EndpointEntry {
    pub(crate) endpoint: Endpoint,
    /// Ejection state; carried over (by task id) across updates of the service.
    pub(crate) health: Arc<Health>,
    pub(crate) metrics: Arc<TaskMetrics>,
}

// === impl RoutingTable ===

impl RoutingTable {
    /// The table's revision: 0 for the empty initial table, +1 per update.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The service that owns a published port.
    pub fn service_for_port(&self, port: u16) -> Option<&Arc<ServiceEntry>> {
        self.ports.get(&port)
    }

    /// A service by id.
    pub fn service(&self, id: &str) -> Option<&Arc<ServiceEntry>> {
        self.services.get(id)
    }

    /// All services, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceEntry>> + '_ {
        self.services.values()
    }

    /// All published ports, in no particular order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.keys().copied()
    }

    /// An empty table (snapshot) or a shallow copy of `self` (delta) at the next revision.
    pub(crate) fn next(&self, keep_services: bool) -> Self {
        if keep_services {
            Self {
                revision: self.revision + 1,
                services: self.services.clone(),
                ports: self.ports.clone(),
            }
        } else {
            Self {
                revision: self.revision + 1,
                ..Self::default()
            }
        }
    }

    /// Removes a service and the ports it owns.
    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(old) = self.services.remove(id) {
            for p in &old.ports {
                let port = p.route.published;
                if self.ports.get(&port).is_some_and(|o| Arc::ptr_eq(o, &old)) {
                    self.ports.remove(&port);
                }
            }
        }
    }

    /// Inserts (or replaces) a service. A published port claimed by another
    /// service moves to this one (last writer wins) and is reported.
    pub(crate) fn insert(&mut self, entry: Arc<ServiceEntry>) -> Vec<MeshError> {
        let mut errors = Vec::new();
        self.remove(&entry.id);
        for p in &entry.ports {
            let port = p.route.published;
            if let Some(prev) = self.ports.insert(port, entry.clone()) {
                if prev.id != entry.id {
                    let err = MeshError::PortConflict {
                        port,
                        service: entry.name.to_string(),
                        previous: prev.name.to_string(),
                    };
                    warn!(%err, "published port claimed twice");
                    errors.push(err);
                }
            }
        }
        self.services.insert(entry.id.clone(), entry);
        errors
    }
}

impl std::fmt::Debug for RoutingTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingTable")
            .field("revision", &self.revision)
            .field("services", &self.services.values().collect::<Vec<_>>())
            .finish()
    }
}

// === impl ServiceEntry ===

impl ServiceEntry {
    /// Builds the entry for `route`, reusing `prev` untouched when the route is
    /// unchanged and carrying over its counter, ejection state and metrics otherwise.
    pub(crate) fn build(
        route: ServiceRoute,
        prev: Option<&Arc<ServiceEntry>>,
        metrics: &Arc<MeshMetrics>,
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
                    .filter_map(|e| Some((e.clone(), e.addr_for(route.target)?)))
                    .collect(),
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

    pub(crate) fn port(&self, published: u16) -> Option<&PortEntry> {
        self.ports.iter().find(|p| p.route.published == published)
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
