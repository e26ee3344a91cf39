//! Jobs: services whose tasks run once to completion (`--mode
//! replicated-job`, `--mode global-job`), after swarmkit's jobs orchestrator.
//!
//! A job task is created with desired state COMPLETE and the service's
//! current [`JobStatus`] iteration. A task that completes is never replaced;
//! one that fails is replaced in its slot (or on its node) as the restart
//! policy says (a condition of `any` acts as `on-failure`). A replicated job
//! keeps at most `max_concurrent` tasks unfinished and creates new ones in
//! free slots 1..=replicas until `replicas` tasks have completed; a global
//! job runs one task on every eligible node. Every accepted change of a
//! job's spec (`service update`, `--force`, `scale`) starts a new iteration:
//! the tasks of earlier iterations are stopped and kept as history, and the
//! job runs again. Sans-IO like the other orchestrators.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_api::pb::{JobStatus, Service, ServiceMode, ServiceSpec, Task, TaskState};
use shoal_api::state::is_terminal;

use super::global;
use super::restart;
use super::tasks::{add_task, is_live, new_task, set_desired, task_state, Changes};
use crate::placement;
use crate::spec::is_job;
use crate::state::ClusterView;

/// Starts the first (create) or next (update) iteration of a job; clears
/// the job status of anything else.
pub fn start_iteration(service: &mut Service, now: i64) {
    if !service.spec.as_ref().is_some_and(is_job) {
        service.job_status = None;
        return;
    }
    service.job_status = Some(match service.job_status.take() {
        None => JobStatus {
            iteration: 0,
            last_execution_ms: now,
        },
        Some(js) => JobStatus {
            iteration: js.iteration + 1,
            last_execution_ms: now,
        },
    });
}

/// After an accepted change of a service's spec (update, scale, `--force`,
/// rollback): a job runs again in a new iteration and has no rolling update
/// (its tasks are replaced wholesale); anything else is left alone.
pub fn spec_changed(service: &mut Service, now: i64) {
    if service.spec.as_ref().is_some_and(is_job) {
        service.update_status = None;
        start_iteration(service, now);
    }
}

/// The iteration the job is on.
pub fn iteration(service: &Service) -> u64 {
    service.job_status.as_ref().map_or(0, |j| j.iteration)
}

/// Tasks a replicated job runs at once: `max_concurrent`, or `replicas` when unset.
pub fn max_concurrent(spec: &ServiceSpec) -> u64 {
    match spec.max_concurrent {
        0 => spec.replicas,
        n => n,
    }
}

/// `service ls` counts of a job, as swarmkit's ListServiceStatuses has them:
/// (running, desired, completed) over the tasks of the current iteration;
/// desired is `max_concurrent` for a replicated job and the tasks not yet
/// complete for a global job.
pub fn counts(view: &ClusterView, service: &Service) -> (u64, u64, u64) {
    let spec = service.spec.clone().unwrap_or_default();
    let iteration = iteration(service);
    let current: Vec<&Arc<Task>> = view
        .tasks_of(&service.id)
        .filter(|t| t.job_iteration == iteration)
        .collect();
    let completed = current
        .iter()
        .filter(|t| task_state(t) == TaskState::Complete)
        .count() as u64;
    let running = current
        .iter()
        .filter(|t| is_live(t) && task_state(t) == TaskState::Running)
        .count() as u64;
    let desired = if spec.mode() == ServiceMode::ReplicatedJob {
        max_concurrent(&spec)
    } else {
        current
            .iter()
            .filter(|t| {
                t.desired_state == TaskState::Complete as i32
                    && task_state(t) != TaskState::Complete
            })
            .count() as u64
    };
    (running, desired, completed)
}

/// A task of the job's current iteration, wanted complete.
fn new_job_task(service: &Service, slot: u64, node_id: &str, not_before: i64, now: i64) -> Task {
    let mut task = new_task(service, slot, node_id, not_before, now);
    task.desired_state = TaskState::Complete as i32;
    task.job_iteration = iteration(service);
    task
}

fn created(t: &Task) -> i64 {
    t.meta.as_ref().map_or(0, |m| m.created_at_ms)
}

/// Runs both job orchestrators over the view.
pub fn reconcile(view: &mut ClusterView, changes: &mut Changes, now: i64) {
    let jobs: Vec<Arc<Service>> = view
        .services
        .values()
        .filter(|s| s.spec.as_ref().is_some_and(is_job))
        .filter(|s| crate::quarantine::runnable(s))
        .cloned()
        .collect();
    for service in jobs {
        retire_earlier_iterations(view, changes, &service);
        match service.spec.as_ref().map(|s| s.mode()) {
            Some(ServiceMode::ReplicatedJob) => reconcile_replicated(view, changes, &service, now),
            _ => reconcile_global(view, changes, &service, now),
        }
    }
}

/// Tasks of other iterations stop (finished ones become plain history).
fn retire_earlier_iterations(view: &mut ClusterView, changes: &mut Changes, service: &Service) {
    let iteration = iteration(service);
    let old: Vec<String> = view
        .tasks_of(&service.id)
        .filter(|t| t.job_iteration != iteration && is_live(t))
        .map(|t| t.id.clone())
        .collect();
    for id in old {
        set_desired(view, changes, &id, TaskState::Shutdown);
    }
}

/// What to do with the newest live task of a slot or node.
enum Current {
    /// No live task: one is needed.
    Missing,
    /// Completed: the slot or node is done.
    Complete,
    /// Not finished (or failed and not restarted).
    Unfinished,
}

/// Applies the restart policy to a finished task and replaces a task whose
/// node is gone; returns what the slot or node holds afterwards.
fn supervise(
    view: &mut ClusterView,
    changes: &mut Changes,
    service: &Service,
    history: &[Arc<Task>],
    now: i64,
) -> Current {
    let Some(current) = history
        .iter()
        .filter(|t| is_live(t))
        .max_by_key(|t| created(t))
        .cloned()
    else {
        return Current::Missing;
    };
    let state = task_state(&current);
    if state == TaskState::Complete {
        return Current::Complete;
    }
    let global = service.spec.as_ref().map(|s| s.mode()) == Some(ServiceMode::GlobalJob);
    if is_terminal(state) {
        let refs: Vec<&Task> = history.iter().map(|t| &**t).collect();
        if restart::should_restart(&current, &refs, now) {
            set_desired(view, changes, &current.id, TaskState::Shutdown);
            let not_before = restart::restart_not_before(&current, now);
            // A global job's task runs again on its node; a replicated
            // job's anywhere the scheduler picks.
            let node = if global { current.node_id.as_str() } else { "" };
            let task = new_job_task(service, current.slot, node, not_before, now);
            add_task(view, changes, task);
        }
        return Current::Unfinished;
    }
    // A replicated job's task whose node went away (Down, drained, removed,
    // no longer matching) runs again elsewhere; a global job's is stopped by
    // the caller.
    let lost = !current.node_id.is_empty()
        && (global::node_unavailable(view, &current.node_id)
            || !view
                .nodes
                .get(&current.node_id)
                .is_some_and(|n| placement::task_allowed_on(n, &current)));
    if lost && !global {
        set_desired(view, changes, &current.id, TaskState::Shutdown);
        add_task(
            view,
            changes,
            new_job_task(service, current.slot, "", now, now),
        );
    }
    Current::Unfinished
}

/// `replicas` completions, at most `max_concurrent` unfinished tasks at once,
/// one slot per completion.
fn reconcile_replicated(
    view: &mut ClusterView,
    changes: &mut Changes,
    service: &Service,
    now: i64,
) {
    let spec = service.spec.clone().unwrap_or_default();
    let iteration = iteration(service);
    let total = spec.replicas;
    let mut slots: BTreeMap<u64, Vec<Arc<Task>>> = BTreeMap::new();
    for t in view
        .tasks_of(&service.id)
        .filter(|t| t.job_iteration == iteration)
    {
        slots.entry(t.slot).or_default().push(t.clone());
    }
    // Slots beyond the completions wanted (cannot happen within an
    // iteration, but a hand-edited store should not leave tasks running).
    for t in slots
        .range(total + 1..)
        .flat_map(|(_, h)| h)
        .filter(|t| is_live(t))
    {
        set_desired(view, changes, &t.id, TaskState::Shutdown);
    }
    let (mut unfinished, mut completed) = (0u64, 0u64);
    let mut occupied = BTreeSet::new();
    for (slot, history) in slots.range(1..=total) {
        match supervise(view, changes, service, history, now) {
            Current::Missing => {}
            Current::Complete => {
                completed += 1;
                occupied.insert(*slot);
            }
            Current::Unfinished => {
                unfinished += 1;
                occupied.insert(*slot);
            }
        }
    }
    let room = max_concurrent(&spec).saturating_sub(unfinished);
    let left = total.saturating_sub(completed + unfinished);
    let free = (1..=total).filter(|s| !occupied.contains(s));
    for slot in free.take(room.min(left) as usize) {
        add_task(view, changes, new_job_task(service, slot, "", now, now));
    }
}

/// One run to completion on every eligible node.
fn reconcile_global(view: &mut ClusterView, changes: &mut Changes, service: &Service, now: i64) {
    let spec = service.spec.clone().unwrap_or_default();
    let iteration = iteration(service);
    let eligible: Vec<String> = global::eligible_nodes(view)
        .into_iter()
        .filter(|n| {
            view.nodes
                .get(n)
                .is_some_and(|node| placement::spec_matches(node, &spec))
        })
        .collect();
    let tasks: Vec<Arc<Task>> = view
        .tasks_of(&service.id)
        .filter(|t| t.job_iteration == iteration)
        .cloned()
        .collect();
    for node in &eligible {
        let history: Vec<Arc<Task>> = tasks
            .iter()
            .filter(|t| &t.node_id == node)
            .cloned()
            .collect();
        if let Current::Missing = supervise(view, changes, service, &history, now) {
            add_task(view, changes, new_job_task(service, 0, node, now, now));
        }
    }
    // Tasks on nodes that left the eligible set stop (or, failed, are no
    // longer wanted); completed ones stay as they are.
    for t in tasks.iter().filter(|t| {
        is_live(t) && task_state(t) != TaskState::Complete && !eligible.contains(&t.node_id)
    }) {
        set_desired(view, changes, &t.id, TaskState::Shutdown);
    }
}

#[cfg(test)]
mod tests;
