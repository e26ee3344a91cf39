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

pub mod global;
pub mod jobs;
pub mod removed;
pub mod replicated;
pub mod restart;
pub mod update;

use std::collections::BTreeSet;
use std::sync::Arc;

use shoal_api::pb::{Meta, Service, ServiceMode, Task, TaskState, TaskStatus};

use crate::state::ClusterView;

/// What a reconcile pass changed, for the loop to write back.
#[derive(Debug, Default)]
pub struct Changes {
    /// Tasks created or modified (written with a compare on `meta.version`,
    /// 0 for new ones).
    pub dirty: BTreeSet<String>,
    /// Tasks to delete, with the version read.
    pub deleted: Vec<(String, u64)>,
    /// Services whose update status or spec (automatic rollback) changed.
    pub services: BTreeSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty() && self.deleted.is_empty() && self.services.is_empty()
    }
}

/// A task that should be running: its desired state is at most RUNNING
/// (COMPLETE for a job's task: run until it completes).
pub fn is_live(task: &Task) -> bool {
    task.desired_state <= TaskState::Complete as i32
}

/// Whether the task has a health check (`--health-cmd`, not `--no-healthcheck`).
pub fn has_health_check(task: &Task) -> bool {
    task.spec
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.test.first())
        .is_some_and(|t| t == "CMD" || t == "CMD-SHELL")
}

/// Running and, if it has a health check, healthy: only such a task takes
/// traffic, and only such a new task lets a rolling update move on.
pub fn routable(task: &Task) -> bool {
    task_state(task) == TaskState::Running
        && (!has_health_check(task) || task.status.as_ref().is_some_and(|s| s.health == "healthy"))
}

pub fn task_state(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .map(|s| s.state())
        .unwrap_or(TaskState::New)
}

/// Sets a task's desired state, recording the change only if it is one.
pub fn set_desired(view: &mut ClusterView, changes: &mut Changes, id: &str, desired: TaskState) {
    if let Some(task) = view.tasks.get_mut(id).map(Arc::make_mut) {
        if task.desired_state != desired as i32 {
            task.desired_state = desired as i32;
            changes.dirty.insert(id.to_string());
        }
    }
}

/// A new task for `slot` (replicated) or `node_id` (global).
pub fn new_task(service: &Service, slot: u64, node_id: &str, not_before_ms: i64, now: i64) -> Task {
    let spec = service.spec.clone().unwrap_or_default();
    Task {
        id: shoal_api::id::new_id(),
        meta: Some(Meta {
            version: 0,
            created_at_ms: now,
            updated_at_ms: now,
        }),
        service_id: service.id.clone(),
        service_name: spec.name.clone(),
        slot,
        node_id: node_id.to_string(),
        spec: Some(spec),
        spec_version: service.spec_version,
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::New as i32,
            timestamp_ms: now,
            message: "created".into(),
            ..Default::default()
        }),
        ingress_address: String::new(),
        not_before_ms,
        endpoint: service.endpoint.clone(),
        withdrawn: false,
        withdraw_revision: 0,
        job_iteration: 0,
    }
}

/// Inserts a new task into the view and records it.
pub fn add_task(view: &mut ClusterView, changes: &mut Changes, task: Task) {
    changes.dirty.insert(task.id.clone());
    view.insert_task(task);
}

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
