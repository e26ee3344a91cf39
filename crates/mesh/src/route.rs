//! What the mesh is told to route: services, their published ports and
//! their task endpoints. The mesh's input; [`crate::table`] is what it makes
//! of it.

use std::net::SocketAddr;
use std::sync::Arc;

/// A published port and the task port it forwards to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRoute {
    pub published: u16,
    pub target: u16,
    pub protocol: Protocol,
    /// The PROXY protocol header sent to the task first, if any.
    pub proxy_protocol: Option<ProxyProtocol>,
    pub mode: PublishMode,
}

impl PortRoute {
    /// A TCP port published through the mesh, with no PROXY header.
    pub fn tcp(published: u16, target: u16) -> Self {
        Self {
            published,
            target,
            protocol: Protocol::Tcp,
            proxy_protocol: None,
            mode: PublishMode::Ingress,
        }
    }
}

/// The transport a published port carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// How a port of this protocol is written after its number: nothing
    /// for TCP (the default), `/udp` for UDP.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Tcp => "",
            Self::Udp => "/udp",
        }
    }
}

/// The PROXY protocol version (haproxy's spec) a port sends to its tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// Where a published port is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PublishMode {
    /// On every node, to any task of the service (the routing mesh).
    #[default]
    Ingress,
    /// Only on nodes running a task of the service, to that node's tasks.
    Host,
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
