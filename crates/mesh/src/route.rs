//! What the mesh is told to route: services, their published ports and
//! their task endpoints. The mesh's input; [`crate::table`] is what it makes
//! of it.

use std::net::SocketAddr;
use std::sync::Arc;

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
