//! The network between test nodes: a bridge in a namespace of its own, with
//! one veth "cable" per node.
//!
//! The bridge never lives in the root namespace: Docker's iptables rules
//! there drop bridged traffic, and nothing a test does should touch the
//! host's network. Deleting the switch namespace removes the bridge and
//! every switch-side veth end; deleting a node namespace removes that node's
//! cable.
//!
//! ```text
//!  node ns A            switch ns "shoalt-sw-<pid>-<n>"            node ns B
//!  eth0 192.168.100.11 ═ p0 ─┐                      ┌─ p1 ═ eth0 192.168.100.12
//!                            └──────── br0 ─────────┘
//! ```

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::netns::NetNs;

/// The node subnet's prefix length: addresses are `192.168.100.x/24`.
pub const PREFIX_LEN: u8 = 24;

/// The address [`crate::MultiCluster`] gives its k-th node (1-based):
/// `192.168.100.(10+k)`, keeping `.1`–`.10` free for other uses.
pub fn node_ip(k: usize) -> Ipv4Addr {
    assert!(
        (1..=240).contains(&k),
        "node number {k} out of range 1..=240"
    );
    Ipv4Addr::new(192, 168, 100, 10 + k as u8)
}

/// A layer-2 switch (`br0`) in its own network namespace. Deleted, with
/// every port, on drop.
pub struct Underlay {
    /// The switch namespace, holding `br0` and the switch-side veth ends.
    pub ns: NetNs,
    /// Numbers the switch-side veth ends (`p0`, `p1`, ...).
    ports: AtomicUsize,
}

impl Underlay {
    /// Creates the switch namespace `shoalt-sw-<pid>-<n>` with `br0` up.
    pub fn new() -> Underlay {
        let ns = NetNs::new("sw");
        ns.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        ns.ip(&["link", "set", "br0", "up"]);
        Underlay {
            ns,
            ports: AtomicUsize::new(0),
        }
    }

    /// Plugs `node_ns` into the switch: a veth pair whose node end is `eth0`
    /// with `ip/24`, up, and whose switch end is enslaved to `br0`, up.
    ///
    /// The returned [`Port`] cuts and heals this cable. Nothing needs to be
    /// undone by hand: deleting either namespace deletes the pair.
    pub fn attach(&self, node_ns: &NetNs, ip: Ipv4Addr) -> Port {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::SeqCst));
        // Created inside the switch namespace, with the peer moved straight
        // into the node namespace: neither end ever appears in the root one.
        self.ns.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &node_ns.name,
        ]);
        node_ns.ip(&["addr", "add", &format!("{ip}/{PREFIX_LEN}"), "dev", "eth0"]);
        node_ns.ip(&["link", "set", "eth0", "up"]);
        self.ns
            .ip(&["link", "set", "dev", &port, "master", "br0", "up"]);
        Port {
            switch_ns: self.ns.name.clone(),
            name: port,
            ip,
        }
    }
}

impl Default for Underlay {
    fn default() -> Self {
        Underlay::new()
    }
}

/// One node's cable into the switch: the switch-side veth end.
#[derive(Debug, Clone)]
pub struct Port {
    /// The switch namespace the port lives in.
    pub switch_ns: String,
    /// The switch-side veth name (`p<n>`).
    pub name: String,
    /// The node's address on the underlay.
    pub ip: Ipv4Addr,
}

impl Port {
    /// Pulls the cable: the switch-side end goes down, so the node's `eth0`
    /// loses carrier and no frame crosses in either direction.
    ///
    /// The node keeps its address and routes, as a host whose cable is
    /// pulled does: its peers' packets go unanswered (they time out) rather
    /// than failing at once, and the node can still reach its own address.
    pub fn cut(&self) {
        self.set(false);
    }

    /// Plugs the cable back in (switch-side end up, forwarding at once:
    /// the bridge runs no STP).
    pub fn heal(&self) {
        self.set(true);
    }

    fn set(&self, up: bool) {
        crate::netns::run(
            "ip",
            &[
                "-n",
                &self.switch_ns,
                "link",
                "set",
                "dev",
                &self.name,
                if up { "up" } else { "down" },
            ],
        );
    }
}

#[cfg(test)]
mod tests;
