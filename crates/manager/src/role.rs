//! The role manager: the leader-side half of `node demote` (and of a
//! promotion abandoned half-way). `node demote` only writes the desired role
//! into the node's spec; this loop removes a demoted manager from the Raft
//! group, then drops its manager status and address, and the node itself
//! (seeing `raft_member: false` in its session) stops its manager components
//! and takes a worker certificate. As in swarmkit's role manager, the leader
//! may remove itself: openraft commits the change, then the leader steps down
//! and the remaining managers elect a new one, which finishes the job.
//!
//! [`plan`] is the sans-IO core (nodes + Raft members in, actions out);
//! [`run`] is the thin loop around it.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_api::pb::{Cluster, Node, NodeRole};
use shoal_store::{Store, StoreError, Txn};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cache::ViewCache;
use crate::state;
use crate::ManagerError;

/// What the leader does next about a node's Raft membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleAction {
    /// A demoted manager is still in the Raft group: remove it.
    RemoveMember { node_id: String, raft_id: u64 },
    /// A demoted manager has left the group: drop its manager status and its
    /// address from the cluster's manager list.
    ClearManagerStatus { node_id: String },
}

/// The actions that bring Raft membership in line with the nodes' roles.
pub fn plan<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    members: &BTreeSet<u64>,
) -> Vec<RoleAction> {
    let mut actions = Vec::new();
    for node in nodes {
        let demoted = node
            .spec
            .as_ref()
            .is_some_and(|s| s.role() == NodeRole::Worker);
        let Some(ms) = node.manager_status.as_ref().filter(|_| demoted) else {
            continue;
        };
        if ms.raft_id != 0 && members.contains(&ms.raft_id) {
            actions.push(RoleAction::RemoveMember {
                node_id: node.id.clone(),
                raft_id: ms.raft_id,
            });
        } else {
            actions.push(RoleAction::ClearManagerStatus {
                node_id: node.id.clone(),
            });
        }
    }
    actions
}

/// Runs until `shutdown`; acts only while this node leads.
pub async fn run(
    store: Store,
    cache: ViewCache,
    mut changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
) -> Result<(), ManagerError> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = changes.changed() => if r.is_err() { return Ok(()) },
            _ = tick.tick() => {}
        }
        if !store.is_leader() {
            continue;
        }
        let mut actions = plan(
            cache.current().nodes.values().map(|n| &**n),
            &store.member_ids(),
        );
        // Removing this leader last lets the others go first.
        let own = store.node_id();
        actions.sort_by_key(
            |a| matches!(a, RoleAction::RemoveMember { raft_id, .. } if *raft_id == own),
        );
        for action in actions {
            if let Err(err) = apply(&store, &action).await {
                tracing::warn!(%err, ?action, "role change not applied yet; will retry");
                break;
            }
        }
    }
}

async fn apply(store: &Store, action: &RoleAction) -> Result<(), StoreError> {
    match action {
        RoleAction::RemoveMember { node_id, raft_id } => {
            tracing::info!(node = %node_id, raft_id, "removing a demoted manager from the Raft group");
            store.remove_member(*raft_id).await
        }
        RoleAction::ClearManagerStatus { node_id } => clear_manager_status(store, node_id).await,
    }
}

async fn clear_manager_status(store: &Store, node_id: &str) -> Result<(), StoreError> {
    let key = state::node_key(node_id);
    let Some(mut node) = state::get::<Node>(store, &key) else {
        return Ok(());
    };
    let Some(ms) = node.manager_status.take() else {
        return Ok(());
    };
    let mut txn = Txn::default();
    state::guarded_put(&mut txn, key, &mut node);
    if let Some(mut cluster) = state::get::<Cluster>(store, state::CLUSTER_KEY) {
        if cluster.manager_addrs.contains(&ms.addr) {
            cluster.manager_addrs.retain(|a| *a != ms.addr);
            state::guarded_put(&mut txn, state::CLUSTER_KEY.into(), &mut cluster);
        }
    }
    store.write(txn).await?;
    tracing::info!(node = %node_id, "demoted manager left the Raft group; it is a worker now");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use shoal_api::pb::{ManagerStatus, NodeSpec};

    fn node(id: &str, role: NodeRole, raft_id: Option<u64>) -> Node {
        Node {
            id: id.into(),
            spec: Some(NodeSpec {
                role: role as i32,
                ..Default::default()
            }),
            manager_status: raft_id.map(|raft_id| ManagerStatus {
                raft_id,
                addr: format!("{id}:2377"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn nodes(list: Vec<Node>) -> BTreeMap<String, Node> {
        list.into_iter().map(|n| (n.id.clone(), n)).collect()
    }

    #[test]
    fn managers_and_workers_in_place_need_nothing() {
        let n = nodes(vec![
            node("a", NodeRole::Manager, Some(1)),
            node("b", NodeRole::Manager, Some(2)),
            node("c", NodeRole::Worker, None),
        ]);
        assert!(plan(n.values(), &BTreeSet::from([1, 2])).is_empty());
    }

    #[test]
    fn a_demoted_member_is_removed_then_its_status_cleared() {
        let n = nodes(vec![
            node("a", NodeRole::Manager, Some(1)),
            node("b", NodeRole::Worker, Some(2)),
        ]);
        assert_eq!(
            plan(n.values(), &BTreeSet::from([1, 2])),
            vec![RoleAction::RemoveMember {
                node_id: "b".into(),
                raft_id: 2
            }]
        );
        assert_eq!(
            plan(n.values(), &BTreeSet::from([1])),
            vec![RoleAction::ClearManagerStatus {
                node_id: "b".into()
            }]
        );
    }

    #[test]
    fn a_promoted_node_not_yet_in_the_group_is_left_to_join() {
        let n = nodes(vec![
            node("a", NodeRole::Manager, Some(1)),
            node("b", NodeRole::Manager, Some(2)),
        ]);
        assert!(plan(n.values(), &BTreeSet::from([1])).is_empty());
    }
}
