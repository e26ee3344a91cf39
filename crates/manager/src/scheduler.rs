//! The scheduler: PENDING tasks to nodes. Filters nodes that are Ready and
//! Active, then picks the one running the fewest tasks of the service,
//! breaking ties by fewest tasks overall (Swarm's spread). Sans-IO.

use std::collections::BTreeMap;

use shoal_api::pb::TaskState;
use shoal_api::state::is_terminal;

use crate::orchestrator::global::eligible_nodes;
use crate::orchestrator::{is_live, task_state, Changes};
use crate::state::ClusterView;

pub fn schedule(view: &mut ClusterView, changes: &mut Changes, now: i64) {
    let eligible = eligible_nodes(view);
    let total_nodes = view.nodes.len();
    // (node, service) -> live tasks, node -> live tasks
    let mut per_service: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for t in view.tasks.values() {
        if t.node_id.is_empty() || !is_live(t) || is_terminal(task_state(t)) {
            continue;
        }
        *per_service
            .entry((t.node_id.clone(), t.service_id.clone()))
            .or_default() += 1;
        *per_node.entry(t.node_id.clone()).or_default() += 1;
    }
    let mut pending: Vec<(i64, String)> = view
        .tasks
        .values()
        .filter(|t| is_live(t) && task_state(t) == TaskState::Pending)
        .map(|t| {
            (
                t.meta.as_ref().map(|m| m.created_at_ms).unwrap_or(0),
                t.id.clone(),
            )
        })
        .collect();
    pending.sort();
    for (_, id) in pending {
        let task = view.tasks.get_mut(&id).expect("listed above");
        let choice = if !task.node_id.is_empty() {
            eligible
                .contains(&task.node_id)
                .then(|| task.node_id.clone())
        } else {
            eligible
                .iter()
                .min_by_key(|n| {
                    (
                        per_service
                            .get(&((*n).clone(), task.service_id.clone()))
                            .copied()
                            .unwrap_or(0),
                        per_node.get(*n).copied().unwrap_or(0),
                        (*n).clone(),
                    )
                })
                .cloned()
        };
        let status = task.status.get_or_insert_with(Default::default);
        match choice {
            Some(node) => {
                *per_service
                    .entry((node.clone(), task.service_id.clone()))
                    .or_default() += 1;
                *per_node.entry(node.clone()).or_default() += 1;
                task.node_id = node;
                status.state = TaskState::Assigned as i32;
                status.timestamp_ms = now;
                status.message = "scheduler assigned task to node".into();
                status.err.clear();
                changes.dirty.insert(id);
            }
            None => {
                let unavailable = total_nodes - eligible.len();
                let err = format!(
                    "no suitable node ({unavailable} node{} not available for new tasks)",
                    if unavailable == 1 { "" } else { "s" }
                );
                if status.err != err {
                    status.err = err;
                    changes.dirty.insert(id);
                }
            }
        }
    }
}
