//! Withdrawals: a task leaving service is first withdrawn from the routing
//! feed, and marked `withdrawn` only once every Ready node's mesh has
//! applied the feed revision that withdrew it, so its agent may stop it with
//! nothing routed its way any more. Sans-IO: the view and the revisions the
//! nodes applied in, the write out.

use std::collections::HashMap;

use shoal_api::codec;
use shoal_api::pb::{NodeState, Task};
use shoal_api::state::is_terminal;
use shoal_store::{Compare, Op, Txn};

use crate::orchestrator::{is_live, task_state};
use crate::state::{self, ClusterView};

/// What a pass over the view decided.
pub struct Withdrawals {
    /// The writes that mark or confirm withdrawals.
    pub txn: Txn,
    /// The highest feed revision some task waits for the nodes to apply (0:
    /// none waits); the feed publishes at least that far.
    pub waiting_for: u64,
}

/// The withdrawals to mark or confirm in `view`, given the feed revision
/// each node's mesh has applied.
pub fn withdrawals(view: &ClusterView, applied: &HashMap<String, u64>) -> Withdrawals {
    // The slowest Ready node decides; a node that never reported holds back.
    let slowest = view
        .nodes
        .values()
        .filter(|n| {
            n.status
                .as_ref()
                .is_some_and(|s| s.state() == NodeState::Ready)
        })
        .map(|n| applied.get(&n.id).copied().unwrap_or(0))
        .min()
        .unwrap_or(u64::MAX);
    let mut txn = Txn::default();
    let mut waiting_for = 0;
    for task in view.tasks.values() {
        let leaving = !is_live(task) && !is_terminal(task_state(task)) && !task.withdrawn;
        if !leaving {
            continue;
        }
        let mut t = Task::clone(task);
        let version = t.meta.as_ref().map(|m| m.version).unwrap_or(0);
        if t.withdraw_revision == 0 {
            // The last write (the desired-state change or later) is where
            // the feed withdrew it.
            t.withdraw_revision = version;
        } else if slowest >= t.withdraw_revision {
            t.withdrawn = true;
        } else {
            waiting_for = waiting_for.max(t.withdraw_revision);
            continue;
        }
        state::touch_meta(&mut t.meta);
        let key = state::task_key(&t.id);
        txn.compares.push(Compare::Version {
            key: key.clone(),
            version,
        });
        txn.ops.push(Op::Put {
            key,
            value: codec::encode(&t),
        });
    }
    Withdrawals { txn, waiting_for }
}
