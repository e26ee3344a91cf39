//! What every control-API handler shares: finding a service, node or task by
//! full ID, name, or unique ID prefix, and turning store errors into the
//! status the CLI shows.

use shoal_api::pb::{Node, Service, Task};
use shoal_store::StoreError;
use tonic::Status;

use crate::state::ClusterView;

/// The status of a failed store write, saying what the user can do about it.
pub fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::NotLeader { leader: None } => Status::unavailable(
            "the swarm does not have a leader: the managers have lost quorum; writes are refused until a majority of managers is back (the mesh keeps serving)",
        ),
        // A leader that cannot commit has lost its quorum, or is too loaded
        // to commit in time (the control-plane bench saw the latter).
        StoreError::NotCommitted(within) => Status::unavailable(format!(
            "the write was not committed within {within:?}: the managers have lost quorum or are overloaded; retry, and check `shoal node ls` for managers that are Down (the mesh keeps serving)"
        )),
        StoreError::NotLeader { leader: Some(leader) } => Status::unavailable(format!(
            "this manager is not the Raft leader (leader: {leader}); retry"
        )),
        StoreError::ConditionFailed { key } => Status::aborted(format!(
            "update out of sequence: {key} changed meanwhile; retry"
        )),
        other => Status::unavailable(format!("store: {other}")),
    }
}

/// Finds one object by full ID, name, or unique ID prefix.
pub fn resolve<'a, T>(
    kind: &str,
    query: &str,
    items: impl Iterator<Item = &'a T> + Clone,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<&'a T, Status>
where
    T: 'a,
{
    if query.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{kind}: a {kind} name or ID is required"
        )));
    }
    if let Some(hit) = items.clone().find(|t| id(t) == query) {
        return Ok(hit);
    }
    if let Some(hit) = items.clone().find(|t| name(t) == query) {
        return Ok(hit);
    }
    let prefixed: Vec<&T> = items.filter(|t| id(t).starts_with(query)).collect();
    match prefixed.len() {
        1 => Ok(prefixed[0]),
        0 => Err(Status::not_found(format!("no such {kind}: {query}"))),
        n => Err(Status::invalid_argument(format!(
            "{kind} {query} is ambiguous ({n} matches); use more of the ID"
        ))),
    }
}

/// A service by ID, name or ID prefix.
pub fn find_service(view: &ClusterView, query: &str) -> Result<Service, Status> {
    resolve(
        "service",
        query,
        view.services.values(),
        |s| &s.id,
        |s| s.spec.as_ref().map(|sp| sp.name.as_str()).unwrap_or(""),
    )
    .map(|s| Service::clone(s))
}

/// A node by ID, hostname or ID prefix.
pub fn find_node(view: &ClusterView, query: &str) -> Result<Node, Status> {
    resolve(
        "node",
        query,
        view.nodes.values(),
        |n| &n.id,
        |n| {
            n.description
                .as_ref()
                .map(|d| d.hostname.as_str())
                .unwrap_or("")
        },
    )
    .map(|n| Node::clone(n))
}

/// A task by ID or ID prefix (tasks have no name of their own).
pub fn find_task(view: &ClusterView, query: &str) -> Result<Task, Status> {
    resolve("task", query, view.tasks.values(), |t| &t.id, |_| "").map(|t| Task::clone(t))
}
