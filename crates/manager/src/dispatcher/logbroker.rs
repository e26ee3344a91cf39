//! The log broker: `service logs` subscribes here; the subscription goes out
//! to every agent over its `ListenSubscriptions` stream, and the agents that
//! hold logs of the listed tasks publish them back. A non-follow stream ends
//! when every node holding tasks has said it is done (or after a bound, with
//! a warning line for nodes that never answered).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use shoal_api::pb::{LogMessage, LogSubscription, PublishLogsMessage, Task};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// How long a non-follow request waits for nodes to finish.
const COMPLETE_WITHIN: Duration = Duration::from_secs(10);

struct Pending {
    tx: mpsc::Sender<PublishLogsMessage>,
}

/// Routes subscriptions to agents and their log lines back. Cheap to clone.
#[derive(Clone)]
pub struct LogBroker {
    out: broadcast::Sender<LogSubscription>,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
}

impl Default for LogBroker {
    fn default() -> Self {
        let (out, _) = broadcast::channel(256);
        Self {
            out,
            pending: Default::default(),
        }
    }
}

impl LogBroker {
    /// The subscriptions stream an agent listens on.
    pub fn listen(
        &self,
        node_id: String,
    ) -> impl Stream<Item = Result<LogSubscription, Status>> + Send + 'static {
        let mut rx = self.out.subscribe();
        let (tx, out) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    m = rx.recv() => match m {
                        Ok(sub) => if tx.send(Ok(sub)).await.is_err() { return },
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(node = %node_id, missed = n, "log subscriptions lagged");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        ReceiverStream::new(out)
    }

    /// Lines an agent publishes for a subscription.
    pub async fn publish(&self, msg: PublishLogsMessage) {
        let tx = self
            .pending
            .lock()
            .expect("log broker lock")
            .get(&msg.subscription_id)
            .map(|p| p.tx.clone());
        if let Some(tx) = tx {
            let _ = tx.send(msg).await;
        }
    }

    /// Starts a subscription for `tasks` and returns the merged stream.
    pub fn subscribe(
        &self,
        tasks: &[Task],
        follow: bool,
        tail: i64,
        since_ms: i64,
    ) -> impl Stream<Item = Result<LogMessage, Status>> + Send + 'static {
        let id = shoal_api::id::new_id();
        let (in_tx, mut in_rx) = mpsc::channel(256);
        self.pending
            .lock()
            .expect("log broker lock")
            .insert(id.clone(), Pending { tx: in_tx });
        let sub = LogSubscription {
            id: id.clone(),
            task_ids: tasks.iter().map(|t| t.id.clone()).collect(),
            follow,
            tail,
            since_ms,
            close: false,
        };
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        // Every listening agent answers each subscription with one close.
        let listeners = self.out.send(sub).unwrap_or(0);
        tokio::spawn(async move {
            let mut waiting = listeners;
            let deadline = tokio::time::sleep(COMPLETE_WITHIN);
            tokio::pin!(deadline);
            loop {
                if !follow && waiting == 0 {
                    break;
                }
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = &mut deadline, if !follow => {
                        tracing::warn!(subscription = %id, nodes = waiting, "incomplete log stream: nodes did not answer");
                        break;
                    }
                    m = in_rx.recv() => {
                        let Some(m) = m else { break };
                        for line in m.messages {
                            if tx.send(Ok(line)).await.is_err() { break; }
                        }
                        if m.close {
                            waiting = waiting.saturating_sub(1);
                        }
                    }
                }
            }
            this.pending.lock().expect("log broker lock").remove(&id);
            let _ = this.out.send(LogSubscription {
                id,
                close: true,
                ..Default::default()
            });
        });
        ReceiverStream::new(rx)
    }
}
