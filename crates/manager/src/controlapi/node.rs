//! `node inspect|ls|update|promote|demote|rm`: the node objects, their live
//! manager status (leader and reachability from Raft), and the
//! preconditions of role changes and removals.

use std::collections::BTreeSet;

use shoal_api::codec;
use shoal_api::pb::{
    GetNodeRequest, ListNodesResponse, Node, NodeResponse, NodeRole, NodeState, RemoveNodeRequest,
    RemoveNodeResponse, Task, TaskState, UpdateNodeRequest,
};
use shoal_api::state::is_terminal;
use shoal_store::{Compare, Op, Store, StoreError, Txn};
use tonic::Status;

use super::resolve::{find_node, store_status};
use crate::cache::ViewCache;
use crate::orchestrator::task_state;
use crate::state::{self, ClusterView};
use crate::{join, spec};

/// How often `node rm` starts again from a fresh view after a store conflict.
const REMOVE_ATTEMPTS: usize = 6;

/// `node inspect`.
pub async fn get(
    store: &Store,
    cache: &ViewCache,
    req: GetNodeRequest,
) -> Result<NodeResponse, Status> {
    let node = find_node(&cache.current(), &req.node)?;
    let voters = store.committed_voter_ids().await;
    Ok(NodeResponse {
        node: Some(with_leader(store, node, &voters)),
    })
}

/// `node ls`.
pub async fn list(store: &Store, cache: &ViewCache) -> ListNodesResponse {
    let nodes: Vec<Node> = cache
        .current()
        .nodes
        .values()
        .map(|n| Node::clone(n))
        .collect();
    let voters = store.committed_voter_ids().await;
    let nodes = nodes
        .into_iter()
        .map(|n| with_leader(store, n, &voters))
        .collect();
    ListNodesResponse { nodes }
}

/// `node update`, `node promote`, `node demote`: writes the node's spec;
/// the scheduler, the role manager and the node itself carry it out.
pub async fn update(
    store: &Store,
    cache: &ViewCache,
    req: UpdateNodeRequest,
) -> Result<NodeResponse, Status> {
    let view = cache.current();
    let mut node = find_node(&view, &req.node)?;
    let version = node.meta.as_ref().map(|m| m.version).unwrap_or(0);
    if req.version != 0 && req.version != version {
        return Err(Status::aborted(format!(
            "update out of sequence: node {} changed since version {}; retry",
            req.node, req.version
        )));
    }
    let new = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
    spec::bounds::labels("labels", new.labels.iter()).map_err(Status::invalid_argument)?;
    let old = node.spec.clone().unwrap_or_default();
    if new.role != old.role {
        check_role_change(&view, &node, &req.node, new.role())?;
    }
    drop(view);
    let voters = store.committed_voter_ids().await;
    if new == old {
        return Ok(NodeResponse {
            node: Some(with_leader(store, node, &voters)),
        });
    }
    node.spec = Some(new);
    state::touch_meta(&mut node.meta);
    let key = state::node_key(&node.id);
    let txn = Txn {
        compares: vec![Compare::Version {
            key: key.clone(),
            version,
        }],
        ops: vec![Op::Put {
            key,
            value: codec::encode(&node),
        }],
    };
    let rev = store.write(txn).await.map_err(store_status)?;
    node.meta.get_or_insert_with(Default::default).version = rev;
    Ok(NodeResponse {
        node: Some(with_leader(store, node, &voters)),
    })
}

/// `node rm [--force]`.
pub async fn remove(
    store: &Store,
    cache: &ViewCache,
    req: RemoveNodeRequest,
) -> Result<RemoveNodeResponse, Status> {
    // The reconciler rewrites the node's tasks meanwhile (it is Down):
    // retry on a fresh view rather than fail the user's command.
    let mut attempt = 1;
    loop {
        match remove_once(store, cache, &req).await {
            Err(StoreError::ConditionFailed { .. }) if attempt < REMOVE_ATTEMPTS => attempt += 1,
            Err(e) => return Err(store_status(e)),
            Ok(r) => return r,
        }
    }
}

/// One try at `node rm`: a store conflict comes back as the outer error.
async fn remove_once(
    store: &Store,
    cache: &ViewCache,
    req: &RemoveNodeRequest,
) -> Result<Result<RemoveNodeResponse, Status>, StoreError> {
    let (node_id, txn) = match removal(&cache.current(), req) {
        Ok(planned) => planned,
        Err(status) => return Ok(Err(status)),
    };
    store.write(txn).await?;
    tracing::info!(node = %node_id, force = req.force, "node removed");
    Ok(Ok(RemoveNodeResponse { id: node_id }))
}

/// The write that removes the node `req` names, or why it may not go.
fn removal(view: &ClusterView, req: &RemoveNodeRequest) -> Result<(String, Txn), Status> {
    let node = find_node(view, &req.node)?;
    if node
        .spec
        .as_ref()
        .is_some_and(|s| s.role() == NodeRole::Manager)
    {
        return Err(Status::failed_precondition(format!(
            "node {} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
            req.node
        )));
    }
    let ready = node
        .status
        .as_ref()
        .is_some_and(|s| s.state() == NodeState::Ready);
    if ready && !req.force {
        return Err(Status::failed_precondition(format!(
            "node {} is not down and can't be removed: stop it first, or use --force",
            req.node
        )));
    }
    let version = node.meta.as_ref().map(|m| m.version).unwrap_or(0);
    let mut txn = Txn::default();
    txn.compares.push(Compare::Version {
        key: state::node_key(&node.id),
        version,
    });
    txn.ops.push(Op::Delete {
        key: state::node_key(&node.id),
    });
    // Its identity is refused from now on; it rejoins as a new node.
    txn.ops.push(Op::Put {
        key: join::removed_node_key(&node.id),
        value: shoal_api::now_ms().to_string().into_bytes(),
    });
    // Its tasks will never report again: they end as orphaned, which frees
    // their addresses; the orchestrator replaces them elsewhere.
    for t in view
        .tasks
        .values()
        .filter(|t| t.node_id == node.id && !is_terminal(task_state(t)))
    {
        let mut t = Task::clone(t);
        let tv = t.meta.as_ref().map(|m| m.version).unwrap_or(0);
        let status = t.status.get_or_insert_with(Default::default);
        status.state = TaskState::Orphaned as i32;
        status.timestamp_ms = shoal_api::now_ms();
        status.message = "node removed from the swarm".into();
        t.desired_state = t.desired_state.max(TaskState::Shutdown as i32);
        state::touch_meta(&mut t.meta);
        txn.compares.push(Compare::Version {
            key: state::task_key(&t.id),
            version: tv,
        });
        txn.ops.push(Op::Put {
            key: state::task_key(&t.id),
            value: codec::encode(&t),
        });
    }
    Ok((node.id, txn))
}

/// Fills the live manager status: Leader from Raft, reachability from
/// the node's state; `voters` are [`Store::committed_voter_ids`].
fn with_leader(store: &Store, mut node: Node, voters: &BTreeSet<u64>) -> Node {
    let leader = store.leader().map(|(id, _)| id);
    let down = node
        .status
        .as_ref()
        .is_some_and(|s| s.state() == NodeState::Down);
    if let Some(ms) = node.manager_status.as_mut() {
        ms.leader = Some(ms.raft_id) == leader;
        ms.reachability = if down {
            "unavailable"
        } else if !voters.contains(&ms.raft_id) {
            // Promoted, still joining the Raft group (not committed yet).
            "unknown"
        } else {
            "reachable"
        }
        .into();
    }
    node
}

/// `node promote` / `node demote` preconditions (the change itself is the
/// spec's role; the node and the role manager carry it out).
fn check_role_change(
    view: &ClusterView,
    node: &Node,
    name: &str,
    role: NodeRole,
) -> Result<(), Status> {
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .is_some_and(|s| s.state() == NodeState::Ready)
    };
    if role == NodeRole::Manager {
        if !ready(node) {
            return Err(Status::failed_precondition(format!(
                "node {name} is not Ready and can't be promoted: bring it back first"
            )));
        }
        return Ok(());
    }
    let managers: Vec<&Node> = view
        .nodes
        .values()
        .map(|n| &**n)
        .filter(|n| {
            n.spec
                .as_ref()
                .is_some_and(|s| s.role() == NodeRole::Manager)
        })
        .collect();
    if managers.len() <= 1 {
        return Err(Status::failed_precondition(
            "attempting to demote the last manager of the swarm: promote another node first",
        ));
    }
    // The group left behind must still have a quorum of reachable members.
    let remaining = managers.iter().filter(|n| n.id != node.id).count();
    // Reachable as `node ls` shows it: not Down.
    let reachable = managers
        .iter()
        .filter(|n| {
            n.id != node.id
                && n.status
                    .as_ref()
                    .is_none_or(|s| s.state() != NodeState::Down)
        })
        .count();
    if reachable < remaining / 2 + 1 {
        return Err(Status::failed_precondition(format!(
            "can't demote {name}: removing it may result in loss of quorum ({reachable} of the {remaining} remaining managers are reachable)"
        )));
    }
    Ok(())
}
