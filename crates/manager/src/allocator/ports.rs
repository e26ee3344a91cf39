//! Published ports: which ports a service may publish and which it gets when
//! it names none. Ingress ports are served on every node, so a port is free
//! only if it is free cluster-wide: no other service publishes it with the
//! same protocol (a UDP and a TCP port of one number do not clash), and no
//! live task holds it as a host port on any node (host-mode publishing, or a
//! loopback-mode task's port). Both come from the store's view; the answering
//! manager's own host is probed last, for programs outside the cluster.
//! A host-mode port is bound only on the nodes running a task of its
//! service, so a task still holding it on some node does not refuse it (the
//! scheduler keeps the new tasks off that node), nor does this host; but it
//! is never a port another service publishes, in ingress mode least of all.
//! The control API calls this when a service is created or changed
//! (conflicts are refused there).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use shoal_api::pb::{PortConfig, ServiceEndpoint, ServiceSpec};
use shoal_api::state::is_terminal;

use crate::orchestrator::task_state;
use crate::spec::{DYNAMIC_PORT_END, DYNAMIC_PORT_START};
use crate::state::ClusterView;

/// Why a service cannot have the ports it asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("ports: published port {port}{} is already used by service {service}; pick another published port", suffix(.protocol))]
    UsedByService {
        port: u32,
        protocol: String,
        service: String,
    },
    #[error("ports: port {port} is already in use on node {node} by task {task} of service {service}; pick another published port")]
    UsedOnNode {
        port: u32,
        node: String,
        task: String,
        service: String,
    },
    #[error("ports: port {port} is already in use on this host by another program; pick another published port")]
    UsedOnThisHost { port: u32 },
    #[error("ports: no free port left in {DYNAMIC_PORT_START}-{DYNAMIC_PORT_END}")]
    Exhausted,
    #[error("ports: published port {port}/{protocol} is an ingress port of service {service}, served on every node, so it cannot be a host-mode port; pick another published port")]
    HostPortIsIngress {
        port: u32,
        protocol: String,
        service: String,
    },
    #[error("ports: published port {port}/{protocol} is a host-mode port of service {service}, and an ingress port is served on every node; pick another published port")]
    IngressPortIsHost {
        port: u32,
        protocol: String,
        service: String,
    },
}

/// A live task holding a port on its node's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortHolder {
    /// The node's hostname (its id when it has none).
    pub node: String,
    pub task: String,
    pub service_id: String,
    pub service: String,
}

/// How a port of `protocol` is written after its number: nothing for TCP.
fn suffix(protocol: &str) -> String {
    match protocol {
        "" | "tcp" => String::new(),
        other => format!("/{other}"),
    }
}

/// The protocol of a published port, `tcp` when none is given.
fn protocol_of(p: &PortConfig) -> &str {
    match p.protocol.as_str() {
        "" => "tcp",
        other => other,
    }
}

/// Fills in published ports of `ports` that are 0 with the lowest port of
/// the dynamic range that `available` accepts and no other port here uses.
pub fn allocate_ports(
    ports: &mut [PortConfig],
    available: impl Fn(u32) -> bool,
) -> Result<(), PortError> {
    let mut used: BTreeSet<u32> = ports.iter().map(|p| p.published_port).collect();
    for p in ports.iter_mut() {
        if p.published_port == 0 {
            let free = (DYNAMIC_PORT_START..=DYNAMIC_PORT_END)
                .find(|c| !used.contains(c) && available(*c));
            match free {
                Some(port) => p.published_port = port,
                None => return Err(PortError::Exhausted),
            }
        }
        used.insert(p.published_port);
    }
    Ok(())
}

/// Published ports already owned by other services: (port, protocol) →
/// service name.
pub fn taken_ports(view: &ClusterView, except: &str) -> BTreeMap<(u32, String), String> {
    view.services
        .values()
        .filter(|s| s.id != except)
        .flat_map(|s| {
            let name = s
                .spec
                .as_ref()
                .map(|sp| sp.name.clone())
                .unwrap_or_default();
            s.endpoint
                .iter()
                .flat_map(|e| e.ports.iter())
                .map(move |p| ((p.published_port, protocol_of(p).to_owned()), name.clone()))
        })
        .collect()
}

/// Host ports held by live tasks on every node of the cluster: ports the
/// task publishes in host mode, and the loopback ports a loopback-mode task
/// listens on (`127.0.0.1:N` on its node). Port → the first holder.
pub fn host_ports_in_use(view: &ClusterView) -> BTreeMap<u32, HostPortHolder> {
    let mut held = BTreeMap::new();
    for t in view
        .tasks
        .values()
        .filter(|t| !t.node_id.is_empty() && !is_terminal(task_state(t)))
    {
        let host_mode = t
            .endpoint
            .iter()
            .flat_map(|e| e.ports.iter())
            .filter(|p| p.publish_mode == "host" && p.published_port != 0)
            .map(|p| p.published_port);
        let loopback = t
            .status
            .iter()
            .flat_map(|s| s.ports.iter())
            .filter_map(|b| b.address.parse::<SocketAddr>().ok())
            .filter(|a| a.ip().is_loopback())
            .map(|a| u32::from(a.port()));
        for port in host_mode.chain(loopback) {
            held.entry(port).or_insert_with(|| HostPortHolder {
                node: view
                    .nodes
                    .get(&t.node_id)
                    .and_then(|n| n.description.as_ref())
                    .map(|d| d.hostname.clone())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| t.node_id.clone()),
                task: t.id.clone(),
                service_id: t.service_id.clone(),
                service: t.service_name.clone(),
            });
        }
    }
    held
}

/// Fills the endpoint of a service spec: keeps ports it already had,
/// rejects ports owned by other services or held on some node (the store's
/// view, checked first), then ports `local_in_use` says are bound on this
/// host; allocates the rest.
pub fn allocate_endpoint(
    view: &ClusterView,
    service_id: &str,
    spec: &ServiceSpec,
    current: Option<&ServiceEndpoint>,
    local_in_use: impl Fn(u32, &str) -> bool,
) -> Result<ServiceEndpoint, PortError> {
    let taken = taken_ports(view, service_id);
    let mut on_nodes = host_ports_in_use(view);
    on_nodes.retain(|_, holder| holder.service_id != service_id);
    let mine: BTreeSet<u32> = current
        .iter()
        .flat_map(|e| e.ports.iter().map(|p| p.published_port))
        .collect();
    check_publish_modes(view, service_id, &spec.ports)?;
    let mut ports = spec.ports.clone();
    for p in &ports {
        let port = p.published_port;
        if port == 0 {
            continue;
        }
        let protocol = protocol_of(p);
        if let Some(owner) = taken.get(&(port, protocol.to_owned())) {
            return Err(PortError::UsedByService {
                port,
                protocol: protocol.to_owned(),
                service: owner.clone(),
            });
        }
        if is_host_mode(p) {
            // A host-mode port is bound only where a task runs: the
            // scheduler keeps the service's tasks off the nodes holding it.
            continue;
        }
        if let Some(holder) = on_nodes.get(&port).filter(|_| !mine.contains(&port)) {
            return Err(PortError::UsedOnNode {
                port,
                node: holder.node.clone(),
                task: holder.task.clone(),
                service: holder.service.clone(),
            });
        }
        if !mine.contains(&port) && local_in_use(port, protocol) {
            return Err(PortError::UsedOnThisHost { port });
        }
    }
    // Ports with no number keep the one they had, if the target matches.
    for p in ports.iter_mut().filter(|p| p.published_port == 0) {
        if let Some(old) = current
            .iter()
            .flat_map(|e| e.ports.iter())
            .find(|o| o.target_port == p.target_port && o.protocol == p.protocol)
        {
            p.published_port = old.published_port;
        }
    }
    // A port chosen for a service is free for every protocol.
    allocate_ports(&mut ports, |port| {
        !taken.keys().any(|(taken, _)| *taken == port)
            && !on_nodes.contains_key(&port)
            && (mine.contains(&port) || !(local_in_use(port, "tcp") || local_in_use(port, "udp")))
    })?;
    Ok(ServiceEndpoint { ports })
}

/// Refuses a host-mode port that another service publishes in ingress
/// mode, and an ingress port that another service publishes in host mode
/// (same number and protocol): an ingress port is bound on every node, so it
/// would take the host-mode port on whichever node its tasks run.
pub fn check_publish_modes(
    view: &ClusterView,
    service_id: &str,
    ports: &[PortConfig],
) -> Result<(), PortError> {
    let others = view.services.values().filter(|s| s.id != service_id);
    for other in others {
        let other_ports = other.endpoint.iter().flat_map(|e| e.ports.iter());
        for theirs in other_ports {
            let clash = ports.iter().find(|p| {
                p.published_port != 0
                    && p.published_port == theirs.published_port
                    && protocol_of(p) == protocol_of(theirs)
                    && is_host_mode(p) != is_host_mode(theirs)
            });
            let Some(mine) = clash else { continue };
            let (port, protocol, service) = (
                mine.published_port,
                protocol_of(mine).to_string(),
                other
                    .spec
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_else(|| other.id.clone()),
            );
            return Err(if is_host_mode(mine) {
                PortError::HostPortIsIngress {
                    port,
                    protocol,
                    service,
                }
            } else {
                PortError::IngressPortIsHost {
                    port,
                    protocol,
                    service,
                }
            });
        }
    }
    Ok(())
}

/// Whether a port is published in host mode (only on the nodes running a
/// task of its service).
pub fn is_host_mode(p: &PortConfig) -> bool {
    p.publish_mode == "host"
}

/// Whether something on this host already holds the port for `protocol`
/// (`udp`, else TCP): the probe the control API gives [`allocate_endpoint`].
pub fn local_port_in_use(port: u32, protocol: &str) -> bool {
    let addr = ("0.0.0.0", port as u16);
    match protocol {
        "udp" => std::net::UdpSocket::bind(addr).is_err(),
        _ => std::net::TcpListener::bind(addr).is_err(),
    }
}

#[cfg(test)]
mod tests;
