//! Orchestration cores: from services and nodes to the tasks that should
//! exist. Sans-IO: they read a [`ClusterView`], change it in place and record
//! what changed in [`Changes`]; the reconcile loop turns that into one store
//! transaction. Their tests need no clock and no sockets.
//!
//! # Layout
//! - [`replicated`]: slots 1..=replicas, scale up and down.
//! - [`global`]: one task per eligible node.
//! - [`jobs`]: replicated and global jobs, run once to completion.
//! - [`restart`]: the restart policy (condition, delay, attempts, window).
//! - [`removed`]: tasks of services that no longer exist.
//! - [`update`]: rolling updates and rollbacks (the update supervisor).
//! - [`tasks`]: what they share: task predicates, task edits, and
//!   [`Changes`], the record of a pass.

pub mod global;
pub mod jobs;
pub mod removed;
pub mod replicated;
pub mod restart;
pub mod tasks;
pub mod update;

pub use tasks::{
    add_task, has_health_check, is_live, new_task, routable, set_desired, task_state, Changes,
};

use shoal_api::pb::{Service, ServiceMode, TaskState};

use crate::state::ClusterView;

/// Runs every orchestrator over the view.
pub fn reconcile(view: &mut ClusterView, changes: &mut Changes, now: i64) {
    removed::reconcile(view, changes);
    replicated::reconcile(view, changes, now);
    global::reconcile(view, changes, now);
    jobs::reconcile(view, changes, now);
}

/// `service ls` counts: (running, desired, completed). Replicated: running
/// tasks of the service and its replicas; global: its tasks on eligible
/// nodes; jobs: see [`jobs::counts`].
pub fn service_counts(view: &ClusterView, service: &Service) -> (u64, u64, u64) {
    let spec = service.spec.clone().unwrap_or_default();
    let running = || {
        view.tasks_of(&service.id)
            .filter(|t| is_live(t) && task_state(t) == TaskState::Running)
            .count() as u64
    };
    match spec.mode() {
        ServiceMode::Replicated => (running(), spec.replicas, 0),
        ServiceMode::Global => {
            let eligible = global::eligible_nodes(view);
            let desired = view
                .tasks_of(&service.id)
                .filter(|t| is_live(t) && eligible.contains(&t.node_id))
                .count() as u64;
            (running(), desired, 0)
        }
        ServiceMode::ReplicatedJob | ServiceMode::GlobalJob => jobs::counts(view, service),
    }
}

#[cfg(test)]
pub(crate) mod tests;
