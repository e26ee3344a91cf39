//! The log broker: `service logs` subscribes here; the subscription goes out
//! to every agent over its `ListenSubscriptions` stream, and the agents that
//! hold logs of the listed tasks publish them back.
//!
//! The broker knows which nodes hold logs of the subscription (the nodes of
//! its tasks) and which nodes are listening (and not Down: a hung or cut-off
//! node keeps its stream open). A node holding logs that is not listening,
//! stops listening during the stream, or (without `--follow`)
//! does not finish within [`COMPLETE_WITHIN`], is reported on the stream as
//! unavailable (`LogMessage.unavailable_nodes`), as swarmkit's "incomplete log
//! stream" warning; the other nodes' lines still arrive, and a followed
//! stream goes on. A non-follow stream ends when every reachable node holding
//! logs has said it is done.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use shoal_api::pb::{LogMessage, LogSubscription, PublishLogsMessage, Task};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// How long a non-follow request waits for nodes to finish.
pub const COMPLETE_WITHIN: Duration = Duration::from_secs(10);
/// How often a subscription checks that the nodes it waits for still listen.
const LISTENER_CHECK: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests;

/// Which nodes a subscription still waits for and which could not be
/// reached. Sans-IO.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answers {
    /// Nodes holding logs that have not said they are done.
    waiting: BTreeSet<String>,
    /// Nodes holding logs that could not be reached.
    unreachable: BTreeSet<String>,
    /// Of those, the ones already reported on the stream.
    reported: BTreeSet<String>,
}

impl Answers {
    /// `holding`: the nodes of the subscription's tasks; those not
    /// `listening` are unreachable from the start.
    pub fn new(
        holding: impl IntoIterator<Item = String>,
        listening: impl Fn(&str) -> bool,
    ) -> Answers {
        let mut a = Answers::default();
        for node in holding.into_iter().filter(|n| !n.is_empty()) {
            if listening(&node) {
                a.waiting.insert(node);
            } else {
                a.unreachable.insert(node);
            }
        }
        a
    }

    /// `node` has sent everything (or, following, stopped).
    pub fn closed(&mut self, node: &str) {
        self.waiting.remove(node);
    }

    /// Nodes waited for that no longer listen are unreachable.
    pub fn check_listeners(&mut self, listening: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self
            .waiting
            .iter()
            .filter(|n| !listening(n))
            .cloned()
            .collect();
        for n in gone {
            self.waiting.remove(&n);
            self.unreachable.insert(n);
        }
    }

    /// The time for answers is up: every node still waited for is unreachable.
    pub fn timed_out(&mut self) {
        self.unreachable.append(&mut self.waiting);
    }

    /// Every node holding logs answered or is unreachable.
    pub fn done(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Unreachable nodes not reported yet (and now counted as reported).
    pub fn take_unreported(&mut self) -> Vec<String> {
        let new: Vec<String> = self
            .unreachable
            .difference(&self.reported)
            .cloned()
            .collect();
        self.reported.extend(new.iter().cloned());
        new
    }
}

struct Pending {
    tx: mpsc::Sender<PublishLogsMessage>,
}

/// Routes subscriptions to agents and their log lines back. Cheap to clone.
#[derive(Clone)]
pub struct LogBroker {
    out: broadcast::Sender<LogSubscription>,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    /// node id → its open `ListenSubscriptions` streams.
    listeners: Arc<Mutex<HashMap<String, usize>>>,
    /// Nodes the dispatcher found Down (missed heartbeats), until their
    /// next session: their streams may look open, but nothing comes.
    down: Arc<Mutex<BTreeSet<String>>>,
}

impl Default for LogBroker {
    fn default() -> Self {
        let (out, _) = broadcast::channel(256);
        Self {
            out,
            pending: Default::default(),
            listeners: Default::default(),
            down: Default::default(),
        }
    }
}

/// Counts one listening stream of a node while alive.
struct Listening {
    node: String,
    listeners: Arc<Mutex<HashMap<String, usize>>>,
}

impl Listening {
    fn new(node: String, listeners: Arc<Mutex<HashMap<String, usize>>>) -> Listening {
        *listeners
            .lock()
            .expect("log listeners lock")
            .entry(node.clone())
            .or_default() += 1;
        Listening { node, listeners }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut l = self.listeners.lock().expect("log listeners lock");
        if let Some(n) = l.get_mut(&self.node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                l.remove(&self.node);
            }
        }
    }
}

impl LogBroker {
    /// Whether `node` has a subscriptions stream open and is not Down.
    pub fn is_listening(&self, node: &str) -> bool {
        !self.down.lock().expect("log down lock").contains(node)
            && self
                .listeners
                .lock()
                .expect("log listeners lock")
                .contains_key(node)
    }

    /// The dispatcher marked `node` Down: it counts as unreachable.
    pub fn node_down(&self, node: &str) {
        self.down
            .lock()
            .expect("log down lock")
            .insert(node.to_string());
    }

    /// `node` opened a session again.
    pub fn node_up(&self, node: &str) {
        self.down.lock().expect("log down lock").remove(node);
    }

    /// The subscriptions stream an agent listens on.
    pub fn listen(
        &self,
        node_id: String,
    ) -> impl Stream<Item = Result<LogSubscription, Status>> + Send + 'static {
        let mut rx = self.out.subscribe();
        let listening = Listening::new(node_id.clone(), self.listeners.clone());
        let (tx, out) = mpsc::channel(16);
        tokio::spawn(async move {
            let _listening = listening;
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

    /// Starts a subscription for `tasks` (and, following, tasks of
    /// `service_ids` that start later) and returns the merged stream.
    pub fn subscribe(
        &self,
        tasks: &[Task],
        service_ids: Vec<String>,
        follow: bool,
        tail: i64,
        since_ns: i64,
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
            since_ns,
            close: false,
            service_ids,
        };
        let mut answers = Answers::new(tasks.iter().map(|t| t.node_id.clone()), |n| {
            self.is_listening(n)
        });
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        // Every listening agent answers each subscription with one close.
        let _ = self.out.send(sub);
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(COMPLETE_WITHIN);
            tokio::pin!(deadline);
            let mut check = tokio::time::interval(LISTENER_CHECK);
            let mut client_gone = false;
            loop {
                // Following, a node is reported as soon as it is lost.
                if follow {
                    let lost = answers.take_unreported();
                    if !lost.is_empty() && tx.send(Ok(unavailable(lost))).await.is_err() {
                        client_gone = true;
                        break;
                    }
                } else if answers.done() {
                    break;
                }
                tokio::select! {
                    _ = tx.closed() => { client_gone = true; break }
                    _ = &mut deadline, if !follow => answers.timed_out(),
                    _ = check.tick() => answers.check_listeners(|n| this.is_listening(n)),
                    m = in_rx.recv() => {
                        let Some(m) = m else { break };
                        for line in m.messages {
                            if tx.send(Ok(line)).await.is_err() { client_gone = true; break; }
                        }
                        if client_gone { break; }
                        if m.close {
                            answers.closed(&m.node_id);
                        }
                    }
                }
            }
            let lost = answers.take_unreported();
            if !client_gone && !lost.is_empty() {
                tracing::warn!(subscription = %id, nodes = ?lost, "incomplete log stream: nodes could not be reached");
                let _ = tx.send(Ok(unavailable(lost))).await;
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

/// The stream message that reports unreachable nodes.
fn unavailable(nodes: Vec<String>) -> LogMessage {
    LogMessage {
        unavailable_nodes: nodes,
        ..Default::default()
    }
}
