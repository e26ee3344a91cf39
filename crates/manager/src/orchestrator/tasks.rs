//! What every orchestrator shares: predicates on a task's state, the edits
//! they make to the view (a new task, a desired state), and [`Changes`], the
//! record of a pass the reconcile loop writes back.

use std::collections::BTreeSet;
use std::sync::Arc;

use shoal_api::pb::{Meta, Service, Task, TaskState, TaskStatus};

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
