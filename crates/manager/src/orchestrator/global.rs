//! Global services: one live task on every node that is Ready and Active
//! and satisfies the service's placement constraints. A node that stops
//! matching (its labels or role changed) loses its task. A new spec version
//! is rolled out node by node by the update supervisor ([`update`]), with
//! the service's update policy.

use std::sync::Arc;

use shoal_api::pb::{NodeAvailability, NodeState, ServiceMode, Task, TaskState};
use shoal_api::state::is_terminal;

use super::restart;
use super::tasks::{add_task, is_live, new_task, set_desired, task_state, Changes};
use super::update;
use crate::placement;
use crate::state::ClusterView;

/// Whether tasks on `node_id` must move elsewhere: the node is gone, Down,
/// or drained.
pub fn node_unavailable(view: &ClusterView, node_id: &str) -> bool {
    match view.nodes.get(node_id) {
        None => true,
        Some(n) => {
            n.status
                .as_ref()
                .is_some_and(|s| s.state() == NodeState::Down)
                || n.spec
                    .as_ref()
                    .is_some_and(|s| s.availability() == NodeAvailability::Drain)
        }
    }
}

/// Nodes that may receive new tasks.
pub fn eligible_nodes(view: &ClusterView) -> Vec<String> {
    view.nodes
        .values()
        .filter(|n| {
            n.status
                .as_ref()
                .is_some_and(|s| s.state() == NodeState::Ready)
        })
        .filter(|n| {
            n.spec
                .as_ref()
                .is_none_or(|s| s.availability() == NodeAvailability::Active)
        })
        .map(|n| n.id.clone())
        .collect()
}

pub fn reconcile(view: &mut ClusterView, changes: &mut Changes, now: i64) {
    let services: Vec<_> = view
        .services
        .values()
        .filter(|s| {
            s.spec
                .as_ref()
                .is_some_and(|sp| sp.mode() == ServiceMode::Global)
        })
        .filter(|s| crate::quarantine::runnable(s))
        .cloned()
        .collect();
    let eligible = eligible_nodes(view);
    for service in services {
        let spec = service.spec.clone().unwrap_or_default();
        let eligible: Vec<String> = eligible
            .iter()
            .filter(|n| {
                view.nodes
                    .get(*n)
                    .is_some_and(|node| placement::spec_matches(node, &spec))
            })
            .cloned()
            .collect();
        let tasks: Vec<Arc<Task>> = view.tasks_of(&service.id).cloned().collect();
        for node in &eligible {
            let history: Vec<&Task> = tasks
                .iter()
                .filter(|t| &t.node_id == node)
                .map(|t| &**t)
                .collect();
            let current = history
                .iter()
                .filter(|t| is_live(t))
                .max_by_key(|t| t.meta.as_ref().map(|m| m.created_at_ms));
            match current {
                None => add_task(view, changes, new_task(&service, 0, node, now, now)),
                Some(t) if is_terminal(task_state(t)) => {
                    if restart::should_restart(t, &history, now) {
                        set_desired(view, changes, &t.id, TaskState::Shutdown);
                        let not_before = restart::restart_not_before(t, now);
                        add_task(view, changes, new_task(&service, 0, node, not_before, now));
                    }
                }
                Some(_) => {}
            }
        }
        // Nodes that left the eligible set (drained, down, removed, no longer
        // matching the constraints) lose their task.
        for t in tasks
            .iter()
            .filter(|t| is_live(t) && !eligible.contains(&t.node_id))
        {
            set_desired(view, changes, &t.id, TaskState::Shutdown);
        }
        // Start-first pairs resolve, then the rolling update moves on, node
        // by node.
        update::settle_slots(view, changes, &service);
        update::reconcile(view, changes, &service.id, now);
    }
}
