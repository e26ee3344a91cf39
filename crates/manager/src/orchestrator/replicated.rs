//! Replicated services: exactly one live task per slot 1..=replicas.

use std::collections::BTreeMap;

use shoal_api::pb::{ServiceMode, Task, TaskState};
use shoal_api::state::is_terminal;

use super::global;
use super::restart;
use super::tasks::{add_task, is_live, new_task, set_desired, task_state, Changes};
use super::update;
use crate::placement;
use crate::state::ClusterView;

/// What a pass does to one service, decided before any of it is done.
enum Action {
    /// Set a task's desired state.
    Desired(String, TaskState),
    /// A new task in a slot, startable from the given time.
    Create(u64, i64),
}

pub fn reconcile(view: &mut ClusterView, changes: &mut Changes, now: i64) {
    let services: Vec<_> = view
        .services
        .values()
        .filter(|s| {
            s.spec
                .as_ref()
                .is_some_and(|sp| sp.mode() == ServiceMode::Replicated)
        })
        .filter(|s| crate::quarantine::runnable(s))
        .cloned()
        .collect();
    for service in services {
        let replicas = service.spec.as_ref().map(|s| s.replicas).unwrap_or(0);
        // Decide on shared borrows of the view (no task is copied), then act.
        let mut actions: Vec<Action> = Vec::new();
        {
            let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
            for t in view.tasks_of(&service.id) {
                slots.entry(t.slot).or_default().push(t);
            }
            // Scale down: live tasks beyond the replica count go away for good.
            for tasks in slots.range(replicas + 1..).map(|(_, tasks)| tasks) {
                for t in tasks.iter().filter(|t| is_live(t)) {
                    actions.push(Action::Desired(t.id.clone(), TaskState::Remove));
                }
            }
            for slot in 1..=replicas {
                let history: &[&Task] = slots.get(&slot).map_or(&[], Vec::as_slice);
                let mut live: Vec<&Task> = history.iter().copied().filter(|t| is_live(t)).collect();
                live.sort_by_key(|t| std::cmp::Reverse(t.meta.as_ref().map(|m| m.created_at_ms)));
                match live.first() {
                    None => actions.push(Action::Create(slot, now)),
                    Some(current) if is_terminal(task_state(current)) => {
                        if restart::should_restart(current, history, now) {
                            actions.push(Action::Desired(current.id.clone(), TaskState::Shutdown));
                            let not_before = restart::restart_not_before(current, now);
                            actions.push(Action::Create(slot, not_before));
                        }
                    }
                    // Its node went Down, was drained or removed, or no longer
                    // satisfies the task's constraints (the constraint enforcer):
                    // replace it elsewhere now; the old task is told to stop.
                    Some(current)
                        if !current.node_id.is_empty()
                            && (global::node_unavailable(view, &current.node_id)
                                || !view
                                    .nodes
                                    .get(&current.node_id)
                                    .is_some_and(|n| placement::task_allowed_on(n, current))) =>
                    {
                        actions.push(Action::Desired(current.id.clone(), TaskState::Shutdown));
                        actions.push(Action::Create(slot, now));
                    }
                    Some(_) => {}
                }
            }
        }
        for action in actions {
            match action {
                Action::Desired(id, state) => set_desired(view, changes, &id, state),
                Action::Create(slot, not_before) => {
                    let task = new_task(&service, slot, "", not_before, now);
                    add_task(view, changes, task);
                }
            }
        }
        // Start-first pairs resolve, then the rolling update moves on.
        update::settle_slots(view, changes, &service);
        update::reconcile(view, changes, &service.id, now);
    }
}
