//! The status reporter: queues task status updates and sends them to the
//! dispatcher in batches, in order, retrying until they are accepted.

use std::collections::{HashMap, VecDeque};

use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::{TaskStatusUpdate, UpdateTaskStatusRequest};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::session::Backoff;

/// How long one UpdateTaskStatus call may take before it is retried.
const RPC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pending updates, filtered so a task's reported state only ever increases
/// (a RUNNING task may report again when its health changes).
#[derive(Debug, Default)]
pub struct StatusQueue {
    /// Highest state queued per task, and the health reported with it.
    last: HashMap<String, (i32, String)>,
    pending: VecDeque<TaskStatusUpdate>,
}

// === impl StatusQueue ===

impl StatusQueue {
    /// Queues an update; returns false (and drops it) if its state is not
    /// above the last one queued for the task. Fills in a missing timestamp.
    pub fn push(&mut self, mut update: TaskStatusUpdate) -> bool {
        let Some(status) = update.status.as_mut() else {
            return false;
        };
        if let Some((last, health)) = self.last.get(&update.task_id) {
            // A running task's health may change without its state changing.
            let health_news = status.state == *last && status.health != *health;
            if status.state < *last || (status.state == *last && !health_news) {
                return false;
            }
        }
        if status.timestamp_ms == 0 {
            status.timestamp_ms = shoal_api::now_ms();
        }
        self.last.insert(
            update.task_id.clone(),
            (status.state, status.health.clone()),
        );
        self.pending.push_back(update);
        true
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes every pending update (in queue order) for one request.
    pub fn take_batch(&mut self) -> Vec<TaskStatusUpdate> {
        self.pending.drain(..).collect()
    }

    /// Puts a batch that could not be sent back in front, order kept.
    pub fn requeue(&mut self, batch: Vec<TaskStatusUpdate>) {
        for u in batch.into_iter().rev() {
            self.pending.push_front(u);
        }
    }
}

/// Sends queued updates under the current session until `shutdown`.
pub(crate) async fn run_reporter(
    mut client: DispatcherClient<Channel>,
    node_id: String,
    mut session: watch::Receiver<Option<String>>,
    mut updates: mpsc::UnboundedReceiver<TaskStatusUpdate>,
    shutdown: CancellationToken,
) {
    let mut queue = StatusQueue::default();
    let mut backoff = Backoff::new();
    loop {
        if queue.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                u = updates.recv() => match u {
                    Some(u) => { queue.push(u); }
                    None => return,
                },
            }
        }
        while let Ok(u) = updates.try_recv() {
            queue.push(u);
        }
        if queue.is_empty() {
            continue;
        }
        let session_id = loop {
            if let Some(id) = session.borrow_and_update().clone() {
                break id;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = session.changed() => if r.is_err() { return },
            }
        };
        let batch = queue.take_batch();
        let req = UpdateTaskStatusRequest {
            session_id,
            node_id: node_id.clone(),
            updates: batch.clone(),
        };
        let res = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(RPC_TIMEOUT, client.update_task_status(req)) => match r {
                Ok(r) => r,
                Err(_) => Err(tonic::Status::deadline_exceeded("update task status timed out")),
            },
        };
        match res {
            Ok(_) => backoff.reset(),
            Err(status) if is_permanent(&status) => {
                // Retrying a rejected batch would block every later update.
                tracing::warn!(error = %status, "dispatcher rejected task status updates; dropped");
                backoff.reset();
            }
            Err(status) => {
                tracing::debug!(error = %status, "update task status failed; retrying");
                queue.requeue(batch);
                let wait = backoff.next_delay();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                    // A new session may make the retry succeed at once.
                    _ = session.changed() => {}
                }
            }
        }
    }
}

/// Errors that a retry cannot fix. A stale session (NotFound,
/// FailedPrecondition) is retried: the next session makes it succeed.
fn is_permanent(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument | tonic::Code::Unimplemented
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{TaskState, TaskStatus};

    fn up(id: &str, state: TaskState) -> TaskStatusUpdate {
        TaskStatusUpdate {
            task_id: id.into(),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn states_only_move_forward_and_order_is_kept() {
        let mut q = StatusQueue::default();
        assert!(q.push(up("a", TaskState::Accepted)));
        assert!(q.push(up("a", TaskState::Preparing)));
        assert!(!q.push(up("a", TaskState::Accepted)));
        assert!(!q.push(up("a", TaskState::Preparing)));
        assert!(q.push(up("b", TaskState::Accepted)));
        let batch = q.take_batch();
        assert_eq!(batch.len(), 3);
        assert!(batch
            .iter()
            .all(|u| u.status.as_ref().unwrap().timestamp_ms > 0));
        q.push(up("a", TaskState::Running));
        q.requeue(batch);
        let states: Vec<_> = q
            .take_batch()
            .iter()
            .map(|u| (u.task_id.clone(), u.status.as_ref().unwrap().state()))
            .collect();
        assert_eq!(
            states,
            [
                ("a".to_string(), TaskState::Accepted),
                ("a".to_string(), TaskState::Preparing),
                ("b".to_string(), TaskState::Accepted),
                ("a".to_string(), TaskState::Running),
            ]
        );
    }
}
