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
//! # Layout
//! - `cidr`: [`Ipv4Cidr`], an IPv4 address with its prefix length.
//! - `error`: [`NetError`], every failure with the link, namespace or address it concerned.
//! - `link`: bridges and links in the current namespace ([`ensure_bridge`], [`delete_link`]).
//! - `netns`: namespaces by fd ([`new_netns`], [`enter_netns`], [`run_in_netns`]).
//! - `task`: [`TaskNetns`], a task's namespace plus its veth pair.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod cidr;
mod error;
mod link;
mod netns;
mod task;

#[cfg(test)]
mod tests;

pub use cidr::{CidrParseError, Ipv4Cidr};
pub use error::NetError;
pub use link::{delete_link, ensure_bridge, link_state, LinkState};
pub use netns::{enter_netns, new_netns, run_in_netns};
pub use task::{TaskNetSpec, TaskNetns};

/// Whether the process runs with an effective uid of 0 (needed for every netlink change here).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
