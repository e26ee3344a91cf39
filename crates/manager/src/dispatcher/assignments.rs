//! What each node's session carries: its assigned tasks (kept under the
//! message budget), its role, and the managers it may fail over to; and the
//! index that wakes only the sessions whose message changed.

use std::collections::HashMap;
use std::time::Duration;

use shoal_api::pb::{SessionMessage, Task, TaskState};
use tokio::sync::watch;

use crate::orchestrator::task_state;
use crate::quarantine;
use crate::state::ClusterView;

/// Every node's assigned tasks (ids, sorted), rebuilt once per store revision
/// by the dispatcher's assignment loop, and a fingerprint per node of what
/// its session message carries: only the sessions whose fingerprint changed
/// are woken (a session rebuilding its message on every change is, with 500
/// nodes, most of a busy manager's CPU). It keeps ids, not the view: a view
/// held past its revision makes the cache copy the view's maps on its next
/// change.
#[derive(Default)]
pub struct AssignmentIndex {
    by_node: HashMap<String, Vec<String>>,
    /// node → hash of its tasks' ids and versions, its node object's version
    /// and the cluster object's version.
    fingerprints: HashMap<String, u64>,
    /// node → the channel its session waits on.
    wake: HashMap<String, watch::Sender<u64>>,
}

impl AssignmentIndex {
    /// Brings the index to `view` and wakes the sessions whose message changed.
    pub fn update(&mut self, revision: u64, view: &ClusterView) {
        use std::hash::{Hash, Hasher};
        let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
        // In id order: the tasks map is sorted.
        for t in view.tasks.values() {
            let assigned = t
                .status
                .as_ref()
                .is_some_and(|s| s.state >= TaskState::Assigned as i32);
            if assigned && !t.node_id.is_empty() {
                by_node
                    .entry(t.node_id.clone())
                    .or_default()
                    .push(t.id.clone());
            }
        }
        let cluster_version = view.cluster.meta.as_ref().map_or(0, |m| m.version);
        let nodes: std::collections::BTreeSet<&String> = by_node
            .keys()
            .chain(view.nodes.keys())
            .chain(self.wake.keys())
            .collect();
        let mut fingerprints = HashMap::with_capacity(nodes.len());
        for node in nodes {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            cluster_version.hash(&mut h);
            view.nodes
                .get(node)
                .and_then(|n| n.meta.as_ref())
                .map_or(0, |m| m.version)
                .hash(&mut h);
            for id in by_node.get(node).into_iter().flatten() {
                id.hash(&mut h);
                view.tasks[id]
                    .meta
                    .as_ref()
                    .map_or(0, |m| m.version)
                    .hash(&mut h);
            }
            let fp = h.finish();
            if self.fingerprints.get(node) != Some(&fp) {
                if let Some(wake) = self.wake.get(node) {
                    wake.send_replace(revision);
                }
            }
            fingerprints.insert(node.clone(), fp);
        }
        self.by_node = by_node;
        self.fingerprints = fingerprints;
    }

    /// What wakes `node`'s session.
    pub fn subscribe(&mut self, node: &str) -> watch::Receiver<u64> {
        self.wake
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// `node`'s assigned tasks as of the last update, as `view` has them.
    pub fn tasks_of(&self, view: &ClusterView, node_id: &str) -> Vec<Task> {
        self.by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| view.tasks.get(id))
            .filter(|t| quarantine::task_fits(t))
            .map(|t| Task::clone(t))
            .collect()
    }
}

/// What a session message may carry in tasks: a margin under the transport
/// limit for the rest of the message.
pub const ASSIGNMENTS_BUDGET_BYTES: usize = shoal_api::MAX_MESSAGE_BYTES - 1024 * 1024;

/// Keeps a node's assignment set under `budget` bytes, so one message never
/// breaks the session: past it, finished tasks (history the agent only
/// reports) go first, then the newest tasks are left for a later message,
/// logged once per node and count.
pub fn fit_assignments(mut tasks: Vec<Task>, node_id: &str, budget: usize) -> Vec<Task> {
    let size = |tasks: &[Task]| -> usize {
        tasks
            .iter()
            .map(|t| shoal_api::codec::encoded_len(t) + 8)
            .sum()
    };
    if size(&tasks) <= budget {
        return tasks;
    }
    let total = tasks.len();
    tasks.retain(|t| !shoal_api::state::is_terminal(task_state(t)));
    let mut used = 0;
    tasks.sort_by_key(|t| t.meta.as_ref().map_or(0, |m| m.created_at_ms));
    tasks.retain(|t| {
        used += shoal_api::codec::encoded_len(t) + 8;
        used <= budget
    });
    let _logged = quarantine::warn_once(
        "node",
        node_id,
        &format!(
            "its assignments exceed {budget} bytes; {} of {total} tasks sent (finished ones left out first)",
            tasks.len()
        ),
    );
    tasks
}

/// What a node's session carries now: its assignments, its role, and the
/// managers it may fail over to.
pub fn session_message(
    view: &ClusterView,
    tasks: Vec<Task>,
    node_id: &str,
    session_id: &str,
    heartbeat: Duration,
) -> SessionMessage {
    let node = view.nodes.get(node_id);
    SessionMessage {
        session_id: session_id.to_string(),
        heartbeat_period_ms: heartbeat.as_millis() as u64,
        tasks,
        managers: view.cluster.manager_addrs.clone(),
        ingress_address: node
            .as_ref()
            .and_then(|n| n.status.as_ref())
            .map(|s| s.ingress_address.clone())
            .unwrap_or_default(),
        role: node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .map(|s| s.role)
            .unwrap_or_default(),
        raft_member: node.is_some_and(|n| n.manager_status.is_some()),
    }
}
