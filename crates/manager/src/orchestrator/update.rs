//! The update supervisor: rolls a service's slots onto its current spec
//! version, `parallelism` slots at a time, waiting `delay` between batches,
//! in `stop-first` or `start-first` order, counting failures of new tasks and
//! pausing, continuing or rolling back when they exceed `max_failure_ratio`.
//! Sans-IO: it reads the view, changes tasks and the service's
//! `UpdateStatus` in place, and records what changed.
//!
//! A slot is a replicated service's slot number or, as in swarmkit, a
//! global service's node: the same supervisor rolls both, a global service
//! node by node (its new task on the same node as the old one).
//!
//! Its state is derived from the tasks themselves (which slots run the
//! current version, which are starting), so a new leader picks an update up
//! where the old one left it. A new spec simply raises the version: tasks of
//! the intermediate version count as outdated, which cancels the old update.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_api::pb::{
    FailureAction, Service, ServiceMode, Task, TaskState, UpdateOrder, UpdateState, UpdateStatus,
};
use shoal_api::state::is_terminal;

use super::tasks::{add_task, is_live, new_task, routable, set_desired, task_state, Changes};
use crate::spec;
use crate::state::ClusterView;

fn rolling_back(service: &Service) -> bool {
    matches!(
        service.update_status.as_ref().map(|s| s.state()),
        Some(UpdateState::RollbackStarted | UpdateState::RollbackPaused)
    )
}

fn in_progress(service: &Service) -> bool {
    matches!(
        service.update_status.as_ref().map(|s| s.state()),
        Some(UpdateState::Updating | UpdateState::RollbackStarted)
    )
}

fn paused(service: &Service) -> bool {
    matches!(
        service.update_status.as_ref().map(|s| s.state()),
        Some(UpdateState::Paused | UpdateState::RollbackPaused)
    )
}

/// A replicated service's slot, or the node of a global service's task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SlotKey {
    Slot(u64),
    Node(String),
}

fn slot_key(t: &Task) -> SlotKey {
    if t.slot == 0 {
        SlotKey::Node(t.node_id.clone())
    } else {
        SlotKey::Slot(t.slot)
    }
}

fn created(t: &Task) -> i64 {
    t.meta.as_ref().map(|m| m.created_at_ms).unwrap_or(0)
}

/// When the task last changed state (for RUNNING: when it started running).
fn state_since(t: &Task) -> i64 {
    t.status.as_ref().map(|s| s.timestamp_ms).unwrap_or(0)
}

fn set_status(view: &mut ClusterView, changes: &mut Changes, id: &str, status: UpdateStatus) {
    if let Some(s) = view.services.get_mut(id).map(Arc::make_mut) {
        if s.update_status.as_ref() != Some(&status) {
            s.update_status = Some(status);
            changes.services.insert(id.to_string());
        }
    }
}

/// Finishes start-first swaps: once a slot's newest task runs, older live
/// tasks in that slot stop. Never more than one live task per slot after that.
pub fn settle_slots(view: &mut ClusterView, changes: &mut Changes, service: &Service) {
    let mut slots: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
    for t in view.tasks_of(&service.id).filter(|t| is_live(t)) {
        slots.entry(slot_key(t)).or_default().push(t);
    }
    let mut retire = Vec::new();
    for tasks in slots.values_mut().filter(|t| t.len() > 1) {
        tasks.sort_by_key(|t| std::cmp::Reverse(created(t)));
        let newest = tasks[0];
        let newest_settled = routable(newest) || is_terminal(task_state(newest));
        if newest_settled {
            retire.extend(tasks[1..].iter().map(|t| t.id.clone()));
        }
    }
    for id in retire {
        set_desired(view, changes, &id, TaskState::Shutdown);
    }
}

/// One supervisor step for a replicated or global service.
pub fn reconcile(view: &mut ClusterView, changes: &mut Changes, service_id: &str, now: i64) {
    let Some(service) = view.services.get(service_id).cloned() else {
        return;
    };
    let spec = service.spec.clone().unwrap_or_default();
    let global = match spec.mode() {
        ServiceMode::Replicated => false,
        ServiceMode::Global => true,
        ServiceMode::ReplicatedJob | ServiceMode::GlobalJob => return,
    };
    let version = service.spec_version;
    let back = rolling_back(&service);
    let cfg = if back {
        spec.rollback_config
    } else {
        spec.update_config
    }
    .unwrap_or_else(spec::default_update_config);

    // Newest live task per slot within the replica count (global: per node
    // the orchestrator keeps a task on).
    let in_scope = |t: &Task| {
        if global {
            t.slot == 0 && !t.node_id.is_empty()
        } else {
            t.slot >= 1 && t.slot <= spec.replicas
        }
    };
    let mut newest: BTreeMap<SlotKey, Arc<Task>> = BTreeMap::new();
    for t in view
        .tasks_of(service_id)
        .filter(|t| is_live(t) && in_scope(t))
    {
        let key = slot_key(t);
        let keep = newest.get(&key).is_none_or(|cur| created(t) > created(cur));
        if keep {
            newest.insert(key, t.clone());
        }
    }
    let slots = if global {
        newest.len() as u64
    } else {
        spec.replicas
    };
    let outdated: Vec<SlotKey> = newest
        .iter()
        .filter(|(_, t)| t.spec_version < version && !is_terminal(task_state(t)))
        .map(|(k, _)| k.clone())
        .collect();
    // Slots on the new version that are not running yet (or, start-first,
    // still have their old task): the current batch.
    let in_flight = newest
        .values()
        .filter(|t| t.spec_version == version && !routable(t) && !is_terminal(task_state(t)))
        .count();
    let status = service.update_status.clone().unwrap_or_default();
    let started = status.started_at_ms;

    // Only a real update (a new spec version, from `service update`,
    // `service rollback` or an automatic rollback) has a status: tasks that
    // start after `service create`, a `scale` or a restart are not an update.
    if outdated.is_empty() && !in_progress(&service) {
        return;
    }
    if outdated.is_empty() && in_flight == 0 {
        // Done once the last new task has been stable for the monitor period.
        let last_running = newest
            .values()
            .filter(|t| routable(t))
            .map(|t| state_since(t))
            .max()
            .unwrap_or(now);
        if now >= last_running + cfg.monitor_ms as i64 {
            let (state, message) = if back {
                (UpdateState::RollbackCompleted, "rollback completed")
            } else {
                (UpdateState::Completed, "update completed")
            };
            set_status(
                view,
                changes,
                service_id,
                UpdateStatus {
                    state: state as i32,
                    started_at_ms: started,
                    completed_at_ms: now,
                    message: message.into(),
                },
            );
        }
        return;
    }
    if paused(&service) {
        return;
    }
    if !in_progress(&service) {
        set_status(
            view,
            changes,
            service_id,
            UpdateStatus {
                state: UpdateState::Updating as i32,
                started_at_ms: now,
                completed_at_ms: 0,
                message: "update in progress".into(),
            },
        );
    }
    let started = if in_progress(&service) { started } else { now };

    // Failures: new-version tasks that ended badly since the update began.
    let failed: Vec<&Arc<Task>> = view
        .tasks_of(service_id)
        .filter(|t| t.spec_version == version)
        .filter(|t| matches!(task_state(t), TaskState::Failed | TaskState::Rejected))
        .filter(|t| state_since(t) >= started)
        .collect();
    if let Some(first) = failed.first() {
        let ratio = failed.len() as f32 / slots.max(1) as f32;
        if ratio > cfg.max_failure_ratio {
            let task = first.id.clone();
            match cfg.failure_action() {
                FailureAction::Continue => {}
                FailureAction::Rollback if !back && service.previous_spec.is_some() => {
                    let svc = view
                        .services
                        .get_mut(service_id)
                        .map(Arc::make_mut)
                        .expect("present");
                    let current = svc.spec.take();
                    svc.spec = svc.previous_spec.take();
                    svc.previous_spec = current;
                    svc.spec_version += 1;
                    svc.update_status = Some(UpdateStatus {
                        state: UpdateState::RollbackStarted as i32,
                        started_at_ms: now,
                        completed_at_ms: 0,
                        message: format!(
                            "update rolled back due to failure or early termination of task {task}"
                        ),
                    });
                    changes.services.insert(service_id.to_string());
                    return;
                }
                _ => {
                    let (state, what) = if back {
                        (UpdateState::RollbackPaused, "rollback")
                    } else {
                        (UpdateState::Paused, "update")
                    };
                    set_status(
                        view,
                        changes,
                        service_id,
                        UpdateStatus {
                            state: state as i32,
                            started_at_ms: started,
                            completed_at_ms: 0,
                            message: format!(
                                "{what} paused due to failure or early termination of task {task}"
                            ),
                        },
                    );
                    return;
                }
            }
        }
    }

    // One batch at a time: wait for the current one, then for the delay.
    if in_flight > 0 {
        return;
    }
    let batch_done_at = newest
        .values()
        .filter(|t| t.spec_version == version && routable(t))
        .map(|t| state_since(t))
        .filter(|ts| *ts >= started)
        .max();
    if let Some(done) = batch_done_at {
        if now < done + cfg.delay_ms as i64 {
            return;
        }
    }
    let parallelism = if cfg.parallelism == 0 {
        usize::MAX
    } else {
        cfg.parallelism as usize
    };
    let service = view.services.get(service_id).cloned().expect("present");
    for key in outdated.into_iter().take(parallelism) {
        let old = newest[&key].id.clone();
        if cfg.order() == UpdateOrder::StopFirst {
            set_desired(view, changes, &old, TaskState::Shutdown);
        }
        let task = match &key {
            SlotKey::Slot(slot) => new_task(&service, *slot, "", now, now),
            SlotKey::Node(node) => new_task(&service, 0, node, now, now),
        };
        add_task(view, changes, task);
    }
}

#[cfg(test)]
mod tests;
