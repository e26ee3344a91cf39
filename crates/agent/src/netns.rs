//! Adapter to `shoal-net`: a task's own network namespace on the ingress bridge.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use shoal_net::{Ipv4Cidr, TaskNetSpec, TaskNetns};

/// The host-side veth name of a task: "sh" + the first 10 chars of its id
/// (at most 12 chars, within the kernel's 15).
pub fn veth_name(task_id: &str) -> String {
    let short: String = task_id.chars().take(10).collect();
    format!("sh{short}")
}

/// A created network namespace, destroyed with [`TaskNetwork::destroy`].
pub(crate) struct TaskNetwork {
    netns: TaskNetns,
    /// The task's address (without prefix).
    pub(crate) ip: Ipv4Addr,
}

// === impl TaskNetwork ===

impl TaskNetwork {
    /// Creates the namespace with a veth on `bridge`, the task's address and
    /// a default route via `gateway`. Errors are text for the task status.
    pub(crate) async fn create(
        task_id: &str,
        ingress_address: &str,
        bridge: &str,
        gateway: Ipv4Addr,
    ) -> Result<Self, String> {
        let address: Ipv4Cidr = ingress_address
            .parse()
            .map_err(|e| format!("invalid ingress address {ingress_address:?}: {e}"))?;
        let spec = TaskNetSpec {
            veth_host: veth_name(task_id),
            bridge: bridge.to_string(),
            address,
            gateway,
        };
        let netns = TaskNetns::create(&spec)
            .await
            .map_err(|e| format!("create network namespace: {e}"))?;
        Ok(Self {
            netns,
            ip: address.addr,
        })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.netns.raw_fd()
    }

    pub(crate) async fn destroy(self) {
        let veth = self.netns.veth_host().to_string();
        if let Err(e) = self.netns.destroy().await {
            tracing::warn!(error = %e, %veth, "destroy task network namespace");
        }
    }
}

/// Moves the calling (forked) process into the namespace; for `pre_exec`.
pub(crate) fn enter(fd: RawFd) -> std::io::Result<()> {
    shoal_net::enter_netns(fd)
}

/// Whether this process may create namespaces.
pub fn is_root() -> bool {
    shoal_net::is_root()
}
