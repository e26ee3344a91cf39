//! Swarm's `HostPortFilter`: a node already running a task that publishes a
//! host-mode port (number and protocol) takes no other task publishing it,
//! because both would bind the same port on that node's host.

use std::collections::HashMap;

use shoal_api::pb::Task;

/// The host-mode ports bound on each node by its placed tasks.
#[derive(Default)]
pub(super) struct HostPorts {
    /// node -> (published port, protocol) of its tasks' host-mode ports.
    used: HashMap<String, Vec<(u32, String)>>,
}

impl HostPorts {
    /// Records the host-mode ports of `task`, placed on `node`.
    pub(super) fn add(&mut self, node: &str, task: &Task) {
        let mut ports = of(task).peekable();
        if ports.peek().is_none() {
            return;
        }
        let used = self.used.entry(node.to_string()).or_default();
        used.extend(ports.map(|(port, protocol)| (port, protocol.to_string())));
    }

    /// Whether `task`'s host-mode ports are all free on `node`.
    pub(super) fn free_on(&self, node: &str, task: &Task) -> bool {
        let Some(used) = self.used.get(node) else {
            return true;
        };
        of(task).all(|(port, protocol)| !used.iter().any(|(p, pr)| *p == port && pr == protocol))
    }
}

/// The host-mode ports a task publishes: (published port, protocol).
fn of(task: &Task) -> impl Iterator<Item = (u32, &str)> {
    task.endpoint
        .iter()
        .flat_map(|e| e.ports.iter())
        .filter(|p| p.publish_mode == "host" && p.published_port != 0)
        .map(|p| {
            let protocol = if p.protocol.is_empty() {
                "tcp"
            } else {
                p.protocol.as_str()
            };
            (p.published_port, protocol)
        })
}
