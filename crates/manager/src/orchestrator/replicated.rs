//! Replicated services: exactly one live task per slot 1..=replicas.

use std::collections::BTreeMap;

use shoal_api::pb::{ServiceMode, Task, TaskState};
use shoal_api::state::is_terminal;

use super::{
    add_task, global, is_live, new_task, restart, set_desired, task_state, update, Changes,
};
use crate::placement;
use crate::state::ClusterView;

pub fn reconcile(view: &mut ClusterView, changes: &mut Changes, now: i64) {
    let services: Vec<_> = view
        .services
        .values()
        .filter(|s| {
            s.spec
                .as_ref()
                .is_some_and(|sp| sp.mode() == ServiceMode::Replicated)
        })
        .cloned()
        .collect();
    for service in services {
        let replicas = service.spec.as_ref().map(|s| s.replicas).unwrap_or(0);
        let mut slots: BTreeMap<u64, Vec<Task>> = BTreeMap::new();
        for t in view.tasks_of(&service.id) {
            slots.entry(t.slot).or_default().push(t.clone());
        }
        // Scale down: live tasks beyond the replica count go away for good.
        for (slot, tasks) in slots.range(replicas + 1..) {
            let _ = slot;
            for t in tasks.iter().filter(|t| is_live(t)) {
                set_desired(view, changes, &t.id, TaskState::Remove);
            }
        }
        for slot in 1..=replicas {
            let history = slots.get(&slot).cloned().unwrap_or_default();
            let mut live: Vec<&Task> = history.iter().filter(|t| is_live(t)).collect();
            live.sort_by_key(|t| std::cmp::Reverse(t.meta.as_ref().map(|m| m.created_at_ms)));
            match live.first() {
                None => {
                    let task = new_task(&service, slot, "", now, now);
                    add_task(view, changes, task);
                }
                Some(current) if is_terminal(task_state(current)) => {
                    let refs: Vec<&Task> = history.iter().collect();
                    if restart::should_restart(current, &refs, now) {
                        set_desired(view, changes, &current.id, TaskState::Shutdown);
                        let not_before = restart::restart_not_before(current, now);
                        let task = new_task(&service, slot, "", not_before, now);
                        add_task(view, changes, task);
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
                    set_desired(view, changes, &current.id, TaskState::Shutdown);
                    let task = new_task(&service, slot, "", now, now);
                    add_task(view, changes, task);
                }
                Some(_) => {}
            }
        }
        // Start-first pairs resolve, then the rolling update moves on.
        update::settle_slots(view, changes, &service);
        update::reconcile(view, changes, &service.id, now);
    }
}
