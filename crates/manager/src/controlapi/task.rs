//! `inspect TASK`, `service ps` and `node ps`: tasks read from the view,
//! filtered by service, node and desired state.

use std::collections::BTreeSet;

use shoal_api::codec;
use shoal_api::pb::{
    GetTaskRequest, ListTasksRequest, ListTasksResponse, Task, TaskResponse, TaskState,
};
use shoal_api::state::{is_terminal, parse_task_state};
use tonic::Status;

use super::resolve::{find_node, find_service, find_task};
use crate::cache::ViewCache;
use crate::orchestrator::task_state;
use crate::quarantine;

/// One task by ID or ID prefix.
pub fn get(cache: &ViewCache, req: GetTaskRequest) -> Result<TaskResponse, Status> {
    let task = find_task(&cache.current(), &req.task)?;
    Ok(TaskResponse { task: Some(task) })
}

/// The tasks of the given services and nodes (all when none are given), in
/// the given desired states, within the list budget.
pub fn list(cache: &ViewCache, req: ListTasksRequest) -> Result<ListTasksResponse, Status> {
    let view = cache.current();
    let mut services = BTreeSet::new();
    for q in &req.services {
        services.insert(find_service(&view, q)?.id);
    }
    let mut nodes = BTreeSet::new();
    for q in &req.nodes {
        nodes.insert(find_node(&view, q)?.id);
    }
    let mut desired = BTreeSet::new();
    for s in &req.desired_states {
        let state = parse_task_state(s).ok_or_else(|| {
            Status::invalid_argument(format!(
                "desired-state: invalid value {s:?}; use running, shutdown or accepted"
            ))
        })?;
        desired.insert(state as i32);
    }
    let mut tasks: Vec<Task> = view
        .tasks
        .values()
        .filter(|t| services.is_empty() || services.contains(&t.service_id))
        .filter(|t| nodes.is_empty() || nodes.contains(&t.node_id))
        .filter(|t| desired.is_empty() || desired.contains(&t.desired_state)
            // Docker's "accepted" filter means "not yet running or done".
            || (desired.contains(&(TaskState::Accepted as i32)) && t.desired_state <= TaskState::Running as i32 && !is_terminal(task_state(t))))
        .filter(|t| quarantine::task_fits(t))
        .map(|t| Task::clone(t))
        .collect();
    quarantine::fit_list(
        "tasks",
        &mut tasks,
        quarantine::LIST_BUDGET_BYTES,
        |t| codec::encoded_len(t) + 8,
        |t| t.spec.iter_mut().for_each(quarantine::slim_spec),
    );
    Ok(ListTasksResponse { tasks })
}
