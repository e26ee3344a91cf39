//! The allocator: published ports for services and ingress addresses for
//! tasks and nodes. Port allocation ([`ports`]) runs inside the control API
//! (conflicts are refused at create and update); address allocation is a
//! sans-IO pass of the reconcile loop that moves tasks from NEW to PENDING.
//!
//! # Layout
//! - this module: ingress subnets and addresses.
//! - [`ports`]: published ports, checked cluster-wide against the store.

pub mod ports;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use shoal_api::pb::TaskState;
use shoal_api::state::is_terminal;

use crate::orchestrator::{is_live, task_state, Changes};
use crate::state::ClusterView;

/// Docker's default address pool (`swarm init --default-addr-pool`).
pub const DEFAULT_ADDR_POOL: &str = "10.0.0.0/8";
/// Docker's default `--default-addr-pool-mask-length`: networks get a /24.
pub const DEFAULT_SUBNET_SIZE: u32 = 24;
/// The ingress network's prefix length. Larger than Docker's /24 because
/// every task here takes an ingress address, so a /24 would cap a cluster
/// at 250 tasks; a pool smaller than this gives itself whole.
pub const INGRESS_PREFIX: u8 = 16;
/// Ingress subnet of a cluster created without a host check (the first
/// [`INGRESS_PREFIX`] of [`DEFAULT_ADDR_POOL`]).
pub const DEFAULT_INGRESS_SUBNET: &str = "10.0.0.0/16";

/// Parses `a.b.c.d/len` into (network, prefix).
pub fn parse_subnet(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 30 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
    Some((Ipv4Addr::from(u32::from(addr) & mask), len))
}

/// The bridge's own address: the first host of the subnet.
pub fn gateway(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (net, len) = parse_subnet(cidr)?;
    Some((Ipv4Addr::from(u32::from(net) + 1), len))
}

/// Node bridge addresses are taken from the top of the subnet down, task
/// addresses from the bottom up, so the two never meet in practice; both
/// passes skip every address already in use.
pub fn allocate_node_address(view: &ClusterView) -> Option<String> {
    let (net, len) = parse_subnet(&view.cluster.ingress_subnet)?;
    let in_use = addresses_in_use(view);
    let first = u32::from(net) + 2;
    let last = u32::from(net) + (1u32 << (32 - len)) - 2;
    (first..=last)
        .rev()
        .find(|a| !in_use.contains(a))
        .map(|a| format!("{}/{}", Ipv4Addr::from(a), len))
}

/// Addresses held by live tasks and by nodes.
fn addresses_in_use(view: &ClusterView) -> BTreeSet<u32> {
    let tasks = view
        .tasks
        .values()
        .filter(|t| !is_terminal(task_state(t)))
        .map(|t| t.ingress_address.as_str());
    let nodes = view
        .nodes
        .values()
        .filter_map(|n| n.status.as_ref())
        .map(|s| s.ingress_address.as_str());
    tasks
        .chain(nodes)
        .filter_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .collect()
}

/// Gives every NEW task an ingress address and moves it to PENDING.
pub fn allocate_tasks(view: &mut ClusterView, changes: &mut Changes, now: i64) {
    let Some((net, len)) = parse_subnet(&view.cluster.ingress_subnet) else {
        return;
    };
    let mut in_use: BTreeSet<u32> = view
        .tasks
        .values()
        .filter(|t| !is_terminal(task_state(t)))
        .filter_map(|t| {
            t.ingress_address
                .split('/')
                .next()?
                .parse::<Ipv4Addr>()
                .ok()
        })
        .map(u32::from)
        .collect();
    let first = u32::from(net) + 2; // .0 network, .1 gateway
    let last = u32::from(net) + (1u32 << (32 - len)) - 2;
    let pending: Vec<String> = view
        .tasks
        .values()
        .filter(|t| is_live(t) && task_state(t) == TaskState::New)
        .map(|t| t.id.clone())
        .collect();
    let mut next = first;
    for id in pending {
        while next <= last && in_use.contains(&next) {
            next += 1;
        }
        if next > last {
            // Reported once; the task is not copied again while it waits.
            let err = format!("no free address left in {}", view.cluster.ingress_subnet);
            let task = &view.tasks[&id];
            if task.status.as_ref().map_or("", |s| s.err.as_str()) != err {
                let task = view
                    .tasks
                    .get_mut(&id)
                    .map(Arc::make_mut)
                    .expect("listed above");
                task.status.get_or_insert_with(Default::default).err = err;
                changes.dirty.insert(id);
            }
            continue;
        }
        let task = view
            .tasks
            .get_mut(&id)
            .map(Arc::make_mut)
            .expect("listed above");
        let status = task.status.get_or_insert_with(Default::default);
        in_use.insert(next);
        task.ingress_address = format!("{}/{}", Ipv4Addr::from(next), len);
        status.state = TaskState::Pending as i32;
        status.timestamp_ms = now;
        status.message = "pending task scheduling".into();
        status.err.clear();
        changes.dirty.insert(id);
    }
}

#[cfg(test)]
mod subnet_properties;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_come_from_the_top() {
        let mut view = ClusterView::default();
        Arc::make_mut(&mut view.cluster).ingress_subnet = "10.255.0.0/16".into();
        assert_eq!(
            allocate_node_address(&view).as_deref(),
            Some("10.255.255.254/16")
        );
        let node = shoal_api::pb::Node {
            status: Some(shoal_api::pb::NodeStatus {
                ingress_address: "10.255.255.254/16".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        view.nodes.insert("n1".into(), Arc::new(node));
        assert_eq!(
            allocate_node_address(&view).as_deref(),
            Some("10.255.255.253/16")
        );
    }

    #[test]
    fn subnets() {
        assert_eq!(
            parse_subnet("10.255.3.4/16"),
            Some(("10.255.0.0".parse().unwrap(), 16))
        );
        assert_eq!(
            gateway("10.255.0.0/16"),
            Some(("10.255.0.1".parse().unwrap(), 16))
        );
        assert_eq!(parse_subnet("nope"), None);
    }
}
