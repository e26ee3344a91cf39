//! Host networking for tasks over rtnetlink: the node's ingress bridge and one network namespace per task.
//!
//! Every task gets its own network namespace with a veth pair: the host end is attached to a
//! bridge, the peer is `eth0` inside the namespace with the task's address and a default route
//! via the bridge's gateway address, so every replica can listen on the same target port and
//! the mesh connects to `task_ip:target_port`. All operations act in the network namespace of
//! the calling thread (shoald may itself run inside a test namespace); nothing shells out to
//! `ip`.
//!
//! Task namespaces are held **by file descriptor**, never bind-mounted under `/run/netns`: a
//! namespace is created on a short-lived thread that calls `unshare(CLONE_NEWNET)` and opens
//! `/proc/thread-self/ns/net`. The kernel keeps the namespace alive while that descriptor (or
//! any process inside it) lives, and destroying a namespace deletes the veth pair with it. So a
//! crashed agent leaks neither namespaces nor links, and there is no mount state to reconcile
//! after a restart.
//!
//! Across nodes the ingress subnet is one L2 overlay (Docker's overlay model): each node's
//! bridge carries the node's own unique address in the subnet (tasks use it as their
//! gateway), and a VXLAN device is a port of that bridge. Every overlay interface has the
//! deterministic MAC [`mac_for_ip`] (`02:42` + its IPv4 bytes), so the cluster's discovery
//! feed (overlay IP to owning node's underlay address) is enough to write **static** entries:
//! neighbours on the VXLAN device (answered by its ARP proxy) and on the bridge, and FDB
//! entries to the remote VTEP. No flooding, no learning, no multicast: an IP is reachable
//! across nodes exactly while [`reconcile_overlay`] has it.
//!
//! # Layout
//! - `cidr`: [`Ipv4Cidr`], an IPv4 address with its prefix length.
//! - `error`: [`NetError`], every failure with the link, namespace or address it concerned.
//! - `host`: the networks the host itself uses ([`host_subnets`]).
//! - `link`: bridges and links in the current namespace ([`ensure_bridge`], [`delete_link`],
//!   [`set_link_mac`]).
//! - `mac`: the deterministic overlay MAC of an IPv4 address ([`mac_for_ip`]).
//! - `netns`: namespaces by fd ([`new_netns`], [`enter_netns`], [`run_in_netns`]).
//! - `overlay`: the cross-node VXLAN port and its static entries ([`ensure_vxlan`],
//!   [`reconcile_overlay`]).
//! - `pool`: a free subnet from address pools ([`free_subnet`]).
//! - `resolv`: the name servers of a `resolv.conf` ([`nameservers`]).
//! - `task`: [`TaskNetns`], a task's namespace plus its veth pair.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod cidr;
mod error;
mod host;
mod link;
mod mac;
mod netns;
mod overlay;
mod pool;
mod resolv;
mod task;

#[cfg(test)]
mod tests;

pub use cidr::{CidrParseError, Ipv4Cidr};
pub use error::NetError;
pub use host::host_subnets;
pub use link::{delete_link, ensure_bridge, link_state, set_link_mac, LinkState};
pub use mac::mac_for_ip;
pub use netns::{enter_netns, new_netns, run_in_netns};
pub use overlay::{
    ensure_vxlan, overlay_entries, reconcile_overlay, OverlayEntries, OverlaySpec,
    DEFAULT_VXLAN_PORT,
};
pub use pool::{free_subnet, overlaps};
pub use resolv::nameservers;
pub use task::{TaskNetSpec, TaskNetns};

/// Whether the process runs with an effective uid of 0 (needed for every netlink change here).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
