//! The scheduler: PENDING tasks to nodes. Sans-IO.
//!
//! Filters, in order: the node is Ready and Active, it satisfies the task's
//! constraints, no task on it publishes one of the task's host-mode ports
//! (`host_ports`), it runs fewer than `max_replicas_per_node` tasks of the
//! service, and its reservations plus this task's fit its capacity (an
//! unknown capacity, 0, does not limit). Among the nodes left, spread
//! preferences come first (the label value holding the fewest tasks of the
//! service; nodes without the label are a group of their own), then the node
//! running the fewest tasks of the service, then the fewest tasks overall
//! (Swarm's spread). A task no node accepts stays PENDING with the reasons.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use shoal_api::pb::{Node, Placement, ServiceSpec, Task, TaskState};
use shoal_api::state::is_terminal;

use crate::orchestrator::global::eligible_nodes;
use crate::orchestrator::{is_live, task_state, Changes};
use crate::placement;
use crate::state::ClusterView;

mod host_ports;

use host_ports::HostPorts;

/// What the tasks already placed use, updated as this pass assigns more.
/// (Looked up once per candidate node per pending task: keyed so that a
/// lookup by `&str` allocates nothing.)
#[derive(Default)]
struct Load {
    /// node -> service -> live tasks.
    per_service: HashMap<String, HashMap<String, usize>>,
    /// node -> live tasks.
    per_node: HashMap<String, usize>,
    /// node -> reserved (nano cpus, memory bytes).
    reserved: HashMap<String, (i64, i64)>,
    /// The host-mode ports bound on each node, also by tasks that are
    /// stopping (they hold their port until they have stopped).
    host_ports: HostPorts,
}

impl Load {
    fn add(&mut self, node: &str, task: &Task) {
        *self
            .per_service
            .entry(node.to_string())
            .or_default()
            .entry(task.service_id.clone())
            .or_default() += 1;
        *self.per_node.entry(node.to_string()).or_default() += 1;
        let (cpu, mem) = task
            .spec
            .as_ref()
            .map(placement::reservation)
            .unwrap_or((0, 0));
        let r = self.reserved.entry(node.to_string()).or_default();
        r.0 += cpu;
        r.1 += mem;
    }

    fn of_service(&self, node: &str, service: &str) -> usize {
        self.per_service
            .get(node)
            .and_then(|s| s.get(service))
            .copied()
            .unwrap_or(0)
    }
}

/// Why nodes were filtered out, for the PENDING task's error text.
#[derive(Default)]
struct Reasons {
    unavailable: usize,
    constraints: usize,
    host_ports: usize,
    max_replicas: usize,
    resources: usize,
}

fn nodes(n: usize) -> String {
    format!("{n} node{}", if n == 1 { "" } else { "s" })
}

impl Reasons {
    /// Swarm's text: `no suitable node (scheduling constraints not satisfied
    /// on 2 nodes; insufficient resources on 1 node)`.
    fn text(&self) -> String {
        let mut parts = Vec::new();
        if self.unavailable > 0 {
            parts.push(format!(
                "{} not available for new tasks",
                nodes(self.unavailable)
            ));
        }
        if self.constraints > 0 {
            parts.push(format!(
                "scheduling constraints not satisfied on {}",
                nodes(self.constraints)
            ));
        }
        if self.host_ports > 0 {
            parts.push(format!(
                "host-mode port already in use on {}",
                nodes(self.host_ports)
            ));
        }
        if self.max_replicas > 0 {
            parts.push("max replicas per node limit exceed".to_string());
        }
        if self.resources > 0 {
            parts.push(format!(
                "insufficient resources on {}",
                nodes(self.resources)
            ));
        }
        if parts.is_empty() {
            "no suitable node".to_string()
        } else {
            format!("no suitable node ({})", parts.join("; "))
        }
    }
}

pub fn schedule(view: &mut ClusterView, changes: &mut Changes, now: i64) {
    let eligible: BTreeSet<String> = eligible_nodes(view).into_iter().collect();
    // Only tasks past PENDING hold a place on their node; a pre-assigned
    // PENDING task (global) is counted when it is assigned below.
    let mut load = Load::default();
    for t in view.tasks.values() {
        let state = task_state(t);
        if t.node_id.is_empty() || is_terminal(state) {
            continue;
        }
        if (state as i32) < TaskState::Assigned as i32 {
            continue;
        }
        load.host_ports.add(&t.node_id, t);
        if is_live(t) {
            load.add(&t.node_id, t);
        }
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
        let (choice, reasons) = {
            let task = &view.tasks[&id];
            pick(view, &eligible, &load, task)
        };
        // A task that stays pending for the same reasons is left as it is
        // (and shared with the cached view, not copied).
        let err = choice.is_none().then(|| reasons.text());
        let unchanged = err.as_ref().is_some_and(|err| {
            view.tasks[&id]
                .status
                .as_ref()
                .map_or("", |s| s.err.as_str())
                == err
        });
        if unchanged {
            continue;
        }
        let task = view
            .tasks
            .get_mut(&id)
            .map(Arc::make_mut)
            .expect("listed above");
        match choice {
            Some(node) => {
                load.add(&node, task);
                load.host_ports.add(&node, task);
                let status = task.status.get_or_insert_with(Default::default);
                task.node_id = node;
                status.state = TaskState::Assigned as i32;
                status.timestamp_ms = now;
                status.message = "scheduler assigned task to node".into();
                status.err.clear();
                changes.dirty.insert(id);
            }
            None => {
                let status = task.status.get_or_insert_with(Default::default);
                status.err = err.unwrap_or_default();
                changes.dirty.insert(id);
            }
        }
    }
}

/// The node for `task`, or why there is none.
fn pick(
    view: &ClusterView,
    eligible: &BTreeSet<String>,
    load: &Load,
    task: &Task,
) -> (Option<String>, Reasons) {
    let no_spec = ServiceSpec::default();
    let spec = task.spec.as_ref().unwrap_or(&no_spec);
    let no_placement = Placement::default();
    let placement = spec.placement.as_ref().unwrap_or(&no_placement);
    let constraints = placement::parse_constraints(&placement.constraints);
    let want = placement::reservation(spec);
    let mut reasons = Reasons::default();
    let candidates: Vec<&Node> = if task.node_id.is_empty() {
        view.nodes.values().map(|n| &**n).collect()
    } else {
        match view.nodes.get(&task.node_id) {
            Some(n) => vec![&**n],
            None => {
                reasons.unavailable = 1;
                return (None, reasons);
            }
        }
    };
    let fit: Vec<&Node> = candidates
        .into_iter()
        .filter(|n| {
            if !eligible.contains(&n.id) {
                reasons.unavailable += 1;
                false
            } else if !constraints
                .as_ref()
                .is_ok_and(|cs| placement::node_matches(n, cs))
            {
                reasons.constraints += 1;
                false
            } else if !load.host_ports.free_on(&n.id, task) {
                reasons.host_ports += 1;
                false
            } else if placement.max_replicas_per_node > 0
                && load.of_service(&n.id, &task.service_id) as u64
                    >= placement.max_replicas_per_node
            {
                reasons.max_replicas += 1;
                false
            } else if !placement::fits(n, load.reserved.get(&n.id).copied().unwrap_or((0, 0)), want)
            {
                reasons.resources += 1;
                false
            } else {
                true
            }
        })
        .collect();
    if !task.node_id.is_empty() {
        return (fit.first().map(|n| n.id.clone()), reasons);
    }
    let spread = placement::spread_labels(spec);
    // Tasks of the service in `n`'s group at spread level `depth`: the nodes
    // sharing `n`'s values (or lack of them) for the first `depth + 1` labels.
    let group_count = |n: &Node, depth: usize| -> usize {
        view.nodes
            .values()
            .filter(|m| spread[..=depth].iter().all(|k| label(m, k) == label(n, k)))
            .map(|m| load.of_service(&m.id, &task.service_id))
            .sum()
    };
    let choice = fit
        .iter()
        .min_by_key(|n| {
            let n: &Node = n;
            let groups: Vec<usize> = (0..spread.len()).map(|d| group_count(n, d)).collect();
            (
                groups,
                load.of_service(&n.id, &task.service_id),
                load.per_node.get(&n.id).copied().unwrap_or(0),
                n.id.as_str(),
            )
        })
        .map(|n| n.id.clone());
    (choice, reasons)
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a String> {
    node.spec.as_ref().and_then(|s| s.labels.get(key))
}

#[cfg(test)]
mod tests;
