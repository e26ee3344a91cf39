//! Host-mode ports ([`PublishMode::Host`]): a node serves one only while a
//! task of its service runs on the node, and sends its connections only to
//! the tasks on the node, so they take no hop to another node. The mesh
//! knows its node by the name endpoints carry
//! ([`MeshConfig::node_name`](crate::MeshConfig::node_name)).

use crate::route::{Endpoint, PortRoute, PublishMode};

/// Whether a connection to `port` may go to `endpoint`: any endpoint for an
/// ingress port, one on this node for a host-mode port.
pub(crate) fn may_serve(port: &PortRoute, endpoint: &Endpoint, node: Option<&str>) -> bool {
    match port.mode {
        PublishMode::Ingress => true,
        PublishMode::Host => node.is_some_and(|node| *endpoint.node == *node),
    }
}

/// Whether this node listens on `port`: always for an ingress port; for a
/// host-mode port while a task of the service on this node exposes its
/// target port (a draining one too: it runs until it is withdrawn).
pub(crate) fn listens<'a>(
    port: &PortRoute,
    mut endpoints: impl Iterator<Item = &'a Endpoint>,
    node: Option<&str>,
) -> bool {
    port.mode == PublishMode::Ingress
        || endpoints.any(|e| {
            may_serve(port, e, node) && e.ports.iter().any(|(target, _)| *target == port.target)
        })
}

#[cfg(test)]
mod tests;
