//! The task reaper: deletes tasks marked REMOVE once stopped, and keeps at
//! most `task_history_limit` tasks per slot (per node for global services),
//! oldest finished ones first. Sans-IO.

use std::collections::BTreeMap;

use shoal_api::pb::TaskState;
use shoal_api::state::is_terminal;

use crate::orchestrator::{is_live, task_state, Changes};
use crate::state::ClusterView;

/// Default `--task-history-limit`.
pub const DEFAULT_HISTORY_LIMIT: u64 = 5;

/// History of one slot (service, slot, node for global): (created, id, removable).
type SlotHistory = BTreeMap<(String, u64, String), Vec<(i64, String, bool)>>;

pub fn reap(view: &mut ClusterView, changes: &mut Changes) {
    let limit = match view.cluster.task_history_limit {
        0 => DEFAULT_HISTORY_LIMIT,
        n => n,
    } as usize;
    let stopped =
        |state: TaskState| is_terminal(state) || (state as i32) < TaskState::Assigned as i32;
    let mut doomed: Vec<String> = view
        .tasks
        .values()
        .filter(|t| t.desired_state >= TaskState::Remove as i32 && stopped(task_state(t)))
        .map(|t| t.id.clone())
        .collect();
    let mut groups: SlotHistory = BTreeMap::new();
    for t in view.tasks.values() {
        let node = if t.slot == 0 {
            t.node_id.clone()
        } else {
            String::new()
        };
        let created = t.meta.as_ref().map(|m| m.created_at_ms).unwrap_or(0);
        let removable = !is_live(t) && stopped(task_state(t));
        groups
            .entry((t.service_id.clone(), t.slot, node))
            .or_default()
            .push((created, t.id.clone(), removable));
    }
    for mut tasks in groups.into_values() {
        if tasks.len() <= limit {
            continue;
        }
        tasks.sort();
        let mut excess = tasks.len() - limit;
        for (_, id, removable) in tasks {
            if excess == 0 {
                break;
            }
            if removable {
                excess -= 1;
                if !doomed.contains(&id) {
                    doomed.push(id);
                }
            }
        }
    }
    for id in doomed {
        if let Some(t) = view.remove_task(&id) {
            changes.dirty.remove(&id);
            let version = t.meta.map(|m| m.version).unwrap_or(0);
            if version != 0 {
                changes.deleted.push((id, version));
            }
        }
    }
}
