//! Task status reports, written in batches. Every session's `UpdateTaskStatus`
//! call hands its updates to one [`StatusWriter`] and waits for their commit;
//! the writer puts whatever arrived while its previous write was in flight
//! into one Raft write (group commit). A task start is five reports (accepted
//! … running), so one fsynced write per report capped a manager at a few
//! hundred reports a second (`bench/README.md`).
//!
//! [`merge`] is the sans-IO core: the tasks a batch of reports changes.

use std::collections::BTreeMap;

use shoal_api::pb::{Task, TaskStatusUpdate};
use shoal_store::{StoreError, Txn};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::cache::ViewCache;
use crate::state::{self, ClusterView};
use crate::ManagerError;

/// At most this many updates go into one write.
const MAX_BATCH_UPDATES: usize = 1000;

/// One `UpdateTaskStatus` call waiting for its updates to commit.
pub(crate) struct StatusReport {
    pub node_id: String,
    pub updates: Vec<TaskStatusUpdate>,
    /// The outcome of the write that carried them (an error message).
    pub done: oneshot::Sender<Result<(), String>>,
}

/// Hands reports to the writer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct StatusWriter {
    tx: mpsc::Sender<StatusReport>,
}

impl StatusWriter {
    pub(crate) fn new() -> (StatusWriter, mpsc::Receiver<StatusReport>) {
        let (tx, rx) = mpsc::channel(4096);
        (StatusWriter { tx }, rx)
    }

    /// Queues `updates` from `node_id` and waits until they are written.
    pub(crate) async fn write(
        &self,
        node_id: &str,
        updates: Vec<TaskStatusUpdate>,
    ) -> Result<(), String> {
        let (done, written) = oneshot::channel();
        let report = StatusReport {
            node_id: node_id.to_string(),
            updates,
            done,
        };
        self.tx
            .send(report)
            .await
            .map_err(|_| "the manager is shutting down".to_string())?;
        written
            .await
            .map_err(|_| "the manager is shutting down".to_string())?
    }
}

/// The tasks `reports` change in `view`, each with its new status. A task
/// never moves backwards (a report below its current state, or repeating it
/// exactly, changes nothing), and only the node a task is assigned to may
/// report for it. Later reports of a task build on earlier ones.
pub(crate) fn merge<'a>(
    view: &ClusterView,
    reports: impl IntoIterator<Item = (&'a str, &'a TaskStatusUpdate)>,
) -> BTreeMap<String, Task> {
    let mut changed: BTreeMap<String, Task> = BTreeMap::new();
    for (node_id, update) in reports {
        let Some(new) = update.status.as_ref() else {
            continue;
        };
        let Some(stored) = view.tasks.get(&update.task_id) else {
            continue;
        };
        if stored.node_id != node_id {
            tracing::warn!(task = %update.task_id, node = %node_id, "status from a node the task is not assigned to");
            continue;
        }
        let task = changed
            .entry(stored.id.clone())
            .or_insert_with(|| Task::clone(stored));
        let current = task.status.clone().unwrap_or_default();
        if new.state < current.state || *new == current {
            continue;
        }
        task.status = Some(new.clone());
    }
    changed.retain(|id, t| view.tasks.get(id).is_some_and(|s| s.status != t.status));
    changed
}

/// Writes batches of reports until `shutdown`.
pub(crate) async fn run_writer(
    cache: ViewCache,
    mut reports: mpsc::Receiver<StatusReport>,
    shutdown: CancellationToken,
) -> Result<(), ManagerError> {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = reports.recv() => match r {
                Some(r) => r,
                None => return Ok(()),
            },
        };
        let mut batch = vec![first];
        let mut updates = batch[0].updates.len();
        while updates < MAX_BATCH_UPDATES {
            match reports.try_recv() {
                Ok(r) => {
                    updates += r.updates.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let outcome = write_batch(&cache, &batch)
            .await
            .map_err(|e| format!("store: {e}"));
        for report in batch {
            let _ = report.done.send(outcome.clone());
        }
    }
}

async fn write_batch(cache: &ViewCache, batch: &[StatusReport]) -> Result<(), StoreError> {
    cache
        .write_from_view(|view| {
            let reports = batch
                .iter()
                .flat_map(|r| r.updates.iter().map(|u| (r.node_id.as_str(), u)));
            let mut txn = Txn::default();
            for (id, mut task) in merge(view, reports) {
                state::guarded_put(&mut txn, state::task_key(&id), &mut task);
            }
            txn
        })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests;
