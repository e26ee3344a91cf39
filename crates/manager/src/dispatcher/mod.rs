//! The dispatcher: the manager side of every node. Agents open a session and
//! receive their assigned tasks, heartbeat, and report task status; meshes
//! subscribe to the discovery feed; agents serve log subscriptions.
//!
//! # Layout
//! - this module: sessions, heartbeats, assignments, task status.
//! - [`feed`]: the revisioned routing feed (snapshot + deltas).
//! - [`logbroker`]: log subscriptions out to agents, log lines back.
//! - `status`: task status reports, written in batches.

pub mod feed;
pub mod heartbeat;
pub mod logbroker;
mod status;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use shoal_api::codec;
use shoal_api::pb::dispatcher_server::Dispatcher;
use shoal_api::pb::*;
use shoal_store::{Compare, Op, Store, StoreError, Txn};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::cache::ViewCache;
use crate::state::{self, ClusterView};
use crate::ManagerError;
pub use feed::Feed;
pub use logbroker::LogBroker;

/// One connected node.
struct Session {
    id: String,
    last_heartbeat: Instant,
    /// The Raft term this manager led in when the session opened; a
    /// session is only valid in that term.
    term: u64,
}

/// Implements `shoal.v1.Dispatcher`. Cheap to clone.
#[derive(Clone)]
pub struct DispatcherApi {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// The decoded cluster state (shared with the other components).
    cache: ViewCache,
    /// Store revision signal: every component re-reads on change.
    changes: watch::Receiver<u64>,
    /// The heartbeat period, following the cluster object (`swarm update`).
    heartbeat: Mutex<heartbeat::HeartbeatPeriod>,
    /// node id → live session.
    sessions: Mutex<HashMap<String, Session>>,
    /// node id → feed revision its mesh has applied (reported by the node).
    feed_applied: Mutex<HashMap<String, u64>>,
    assignments: Mutex<AssignmentIndex>,
    /// Where `UpdateTaskStatus` calls queue their updates.
    status: status::StatusWriter,
    /// The writer's end, until [`DispatcherApi::run_status_writer`] takes it.
    status_reports: Mutex<Option<mpsc::Receiver<status::StatusReport>>>,
    feed: Feed,
    logs: LogBroker,
    shutdown: CancellationToken,
    started: Instant,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `node`'s feed until `node rm` removes it: once `removed(node)` holds, the
/// next message is the refusal every call of a removed node gets, and the
/// stream ends (a stream opened before the removal carries nothing after it).
fn until_removed<S>(
    feed: S,
    removed: impl Fn(&str) -> bool + Send + 'static,
    node: String,
) -> impl Stream<Item = Result<FeedMessage, Status>> + Send
where
    S: Stream<Item = Result<FeedMessage, Status>> + Send,
{
    use futures::StreamExt;
    feed.scan(false, move |ended, msg| {
        let next = if *ended {
            None
        } else if removed(&node) {
            *ended = true;
            Some(Err(crate::join::removed_status(&node)))
        } else {
            Some(msg)
        };
        futures::future::ready(next)
    })
}

impl DispatcherApi {
    pub fn new(
        store: Store,
        cache: ViewCache,
        changes: watch::Receiver<u64>,
        heartbeat: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let feed = Feed::new(cache.clone(), changes.clone(), shutdown.clone());
        // A manager promoted (or joined) a moment ago has not replicated the
        // cluster object yet: its first sight of the setting is no change.
        let period = if state::get::<Cluster>(&store, state::CLUSTER_KEY).is_some() {
            heartbeat::HeartbeatPeriod::new(heartbeat, Instant::now())
        } else {
            heartbeat::HeartbeatPeriod::provisional(heartbeat, Instant::now())
        };
        let (status, status_reports) = status::StatusWriter::new();
        Self {
            inner: Arc::new(Inner {
                store,
                cache,
                changes,
                status,
                status_reports: Mutex::new(Some(status_reports)),
                heartbeat: Mutex::new(period),
                sessions: Mutex::new(HashMap::new()),
                feed_applied: Mutex::new(HashMap::new()),
                assignments: Mutex::new(AssignmentIndex::default()),
                feed,
                logs: LogBroker::default(),
                shutdown,
                started: Instant::now(),
            }),
        }
    }

    /// The heartbeat period nodes are told, as the cluster object now sets it.
    fn heartbeat_period(&self) -> Duration {
        let configured =
            Duration::from_millis(self.inner.cache.current().cluster.dispatcher_heartbeat_ms);
        let mut hb = self.inner.heartbeat.lock().expect("heartbeat lock");
        hb.observe(configured, Instant::now());
        hb.current()
    }

    /// How long a node may go without a heartbeat before it is Down.
    fn heartbeat_limit(&self) -> Duration {
        self.heartbeat_period();
        let hb = self.inner.heartbeat.lock().expect("heartbeat lock");
        hb.limit(Instant::now())
    }

    pub fn log_broker(&self) -> &LogBroker {
        &self.inner.logs
    }

    pub fn routing_feed(&self) -> &Feed {
        &self.inner.feed
    }

    /// Nodes with a live session.
    pub fn connected_nodes(&self) -> Vec<String> {
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .keys()
            .cloned()
            .collect()
    }

    pub async fn run_feed(&self) -> Result<(), ManagerError> {
        self.inner.feed.run().await
    }

    /// Keeps the assignment index at the current revision, waking the
    /// sessions whose message changed.
    pub async fn run_assignments(&self) -> Result<(), ManagerError> {
        let mut changes = self.inner.changes.clone();
        loop {
            {
                let (revision, view) = self.inner.cache.current_with_revision();
                self.inner
                    .assignments
                    .lock()
                    .expect("assignments lock")
                    .update(revision, &view);
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return Ok(()),
                r = changes.changed() => if r.is_err() { return Ok(()) },
            }
        }
    }

    /// Writes the task status reports of every session, in batches.
    pub async fn run_status_writer(&self) -> Result<(), ManagerError> {
        let reports = self
            .inner
            .status_reports
            .lock()
            .expect("status lock")
            .take()
            .ok_or_else(|| ManagerError::ComponentFailed {
                component: "status writer",
                reason: "started twice".into(),
            })?;
        status::run_writer(
            self.inner.cache.clone(),
            reports,
            self.inner.shutdown.clone(),
        )
        .await
    }

    /// Marks nodes Down when they miss three heartbeats (or never connect
    /// after a manager start).
    pub async fn run_heartbeat_checker(&self) -> Result<(), ManagerError> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // Nodes get a full period to find a new leader before they count as Down.
        let mut leader_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            if !self.inner.store.is_leader() {
                leader_since = None;
                continue;
            }
            if leader_since.is_none() {
                // Sessions opened in an earlier term (a restarted manager
                // that briefly believed it led) are not sessions with this
                // leader: their nodes get the new-leader grace like any other.
                let term = self.inner.store.current_term();
                self.inner
                    .sessions
                    .lock()
                    .expect("sessions lock")
                    .retain(|_, s| s.term == term);
            }
            let since = *leader_since.get_or_insert_with(Instant::now);
            let limit = self.heartbeat_limit();
            let expired: Vec<String> = {
                let mut sessions = self.inner.sessions.lock().expect("sessions lock");
                let gone: Vec<String> = sessions
                    .iter()
                    .filter(|(_, s)| s.last_heartbeat.elapsed() > limit)
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in &gone {
                    sessions.remove(n);
                }
                gone
            };
            let mut down = expired;
            // Agents of a dead leader notice it by a missed heartbeat answer
            // (2 periods, 2 s at least), then reconnect with backoff through
            // any manager: a new leader waits that long before it calls them Down.
            let grace = (limit * 2).max(NEW_LEADER_GRACE);
            if since.elapsed() > grace && self.inner.started.elapsed() > grace {
                let connected = self.connected_nodes();
                let view = self.inner.cache.current();
                down.extend(
                    view.nodes
                        .values()
                        .filter(|n| {
                            n.status
                                .as_ref()
                                .is_some_and(|s| s.state() == NodeState::Ready)
                        })
                        .filter(|n| !connected.contains(&n.id))
                        .map(|n| n.id.clone()),
                );
            }
            for node in &down {
                tracing::warn!(%node, "node missed its heartbeats: marking it down");
                self.inner.logs.node_down(node);
            }
            if let Err(err) = self.mark_down(&down).await {
                tracing::debug!(%err, "marking nodes down will be retried");
            }
        }
    }

    /// Marks withdrawn tasks once every Ready node's mesh has applied the
    /// feed revision that withdrew them, so their agents may stop them with
    /// nothing routed their way any more. Leader only.
    pub async fn run_withdrawal_confirmer(&self) -> Result<(), ManagerError> {
        let mut changes = self.inner.changes.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
                r = changes.changed() => if r.is_err() { return Ok(()) },
            }
            if !self.inner.store.is_leader() {
                continue;
            }
            if let Err(err) = self.confirm_withdrawals().await {
                tracing::debug!(%err, "withdrawal confirmation will be retried");
            }
        }
    }

    async fn confirm_withdrawals(&self) -> Result<(), StoreError> {
        self.inner
            .cache
            .write_from_view(|view| self.withdrawals(view))
            .await
            .map(|_| ())
    }

    /// The writes that mark or confirm withdrawals in `view`.
    fn withdrawals(&self, view: &ClusterView) -> Txn {
        let applied = self.inner.feed_applied.lock().expect("feed lock").clone();
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
            let leaving = !crate::orchestrator::is_live(task)
                && !shoal_api::state::is_terminal(crate::orchestrator::task_state(task))
                && !task.withdrawn;
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
        if waiting_for > 0 {
            self.inner.feed.publish_at_least(waiting_for);
        }
        txn
    }

    /// Marks `nodes` Down in one write (50 agents that vanish at once are
    /// one Raft write, not 50), retrying on conflict from a fresh view.
    async fn mark_down(&self, nodes: &[String]) -> Result<(), StoreError> {
        self.inner
            .cache
            .write_from_view(|view| {
                let mut txn = Txn::default();
                for id in nodes {
                    let Some(mut node) = view.nodes.get(id).map(|n| Node::clone(n)) else {
                        continue;
                    };
                    let s = node.status.get_or_insert_with(Default::default);
                    if s.state() == NodeState::Down {
                        continue;
                    }
                    s.state = NodeState::Down as i32;
                    s.message = "heartbeat failure".into();
                    state::guarded_put(&mut txn, state::node_key(id), &mut node);
                }
                txn
            })
            .await
            .map(|_| ())
    }

    /// Read-modify-write of a node with retries on conflict.
    async fn update_node(&self, id: &str, f: impl Fn(&mut Node)) -> Result<(), StoreError> {
        self.inner
            .cache
            .write_from_view(|view| {
                let mut txn = Txn::default();
                if let Some(mut node) = view.nodes.get(id).map(|n| Node::clone(n)) {
                    let before = node.clone();
                    f(&mut node);
                    if node != before {
                        state::guarded_put(&mut txn, state::node_key(id), &mut node);
                    }
                }
                txn
            })
            .await
            .map(|_| ())
    }

    /// Creates or refreshes the node record of a connecting agent.
    async fn register_node(&self, req: &SessionRequest) -> Result<(), StoreError> {
        let key = state::node_key(&req.node_id);
        if state::get::<Node>(&self.inner.store, &key).is_none() {
            let now = shoal_api::now_ms();
            let node = Node {
                id: req.node_id.clone(),
                meta: Some(Meta {
                    version: 0,
                    created_at_ms: now,
                    updated_at_ms: now,
                }),
                spec: Some(NodeSpec::default()),
                description: req.description.clone(),
                status: Some(NodeStatus {
                    state: NodeState::Ready as i32,
                    addr: req.addr.clone(),
                    ..Default::default()
                }),
                manager_status: None,
            };
            let txn = Txn::new()
                .when_absent(key.clone())
                .put(key, codec::encode(&node));
            match self.inner.store.write(txn).await {
                Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (desc, addr) = (req.description.clone(), req.addr.clone());
        self.update_node(&req.node_id, move |n| {
            if desc.is_some() {
                n.description = desc.clone();
            }
            let s = n.status.get_or_insert_with(Default::default);
            s.state = NodeState::Ready as i32;
            s.message.clear();
            if !addr.is_empty() {
                s.addr = addr.clone();
            }
        })
        .await
    }

    fn check_session(&self, node_id: &str, session_id: &str) -> Result<(), Status> {
        if crate::join::is_removed(&self.inner.store, node_id) {
            self.inner
                .sessions
                .lock()
                .expect("sessions lock")
                .remove(node_id);
            return Err(crate::join::removed_status(node_id));
        }
        // Sessions live on the leader: one that lost leadership (or a
        // restarted manager that led before) sends its agents to the new one.
        if !self.inner.store.is_leader() {
            self.inner
                .sessions
                .lock()
                .expect("sessions lock")
                .remove(node_id);
            return Err(Status::unavailable(
                "this manager does not lead the swarm any more; open a new session",
            ));
        }
        let term = self.inner.store.current_term();
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        match sessions.get_mut(node_id) {
            Some(s) if s.id == session_id && s.term == term => {
                s.last_heartbeat = Instant::now();
                Ok(())
            }
            _ => Err(Status::not_found("session expired; open a new session")),
        }
    }
}

/// Every node's assigned tasks (ids, sorted), rebuilt once per store revision
/// by [`DispatcherApi::run_assignments`], and a fingerprint per node of what
/// its session message carries: only the sessions whose fingerprint changed
/// are woken. (Each session used to decode every task of the store on every
/// change; then to rebuild its message on every change: with 500 nodes, most
/// of a busy manager's CPU.) It keeps ids, not the view: a view held past its
/// revision would make the cache copy the whole view on its next change.
#[derive(Default)]
struct AssignmentIndex {
    by_node: HashMap<String, Vec<String>>,
    /// node → hash of its tasks' ids and versions, its node object's version
    /// and the cluster object's version.
    fingerprints: HashMap<String, u64>,
    /// node → the channel its session waits on.
    wake: HashMap<String, watch::Sender<u64>>,
}

impl AssignmentIndex {
    /// Brings the index to `view` and wakes the sessions whose message changed.
    fn update(&mut self, revision: u64, view: &ClusterView) {
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
    fn subscribe(&mut self, node: &str) -> watch::Receiver<u64> {
        self.wake
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// `node`'s assigned tasks as of the last update, as `view` has them.
    fn tasks_of(&self, view: &ClusterView, node_id: &str) -> Vec<Task> {
        self.by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| view.tasks.get(id))
            .filter(|t| crate::quarantine::task_fits(t))
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
    tasks.retain(|t| !shoal_api::state::is_terminal(crate::orchestrator::task_state(t)));
    let mut used = 0;
    tasks.sort_by_key(|t| t.meta.as_ref().map_or(0, |m| m.created_at_ms));
    tasks.retain(|t| {
        used += shoal_api::codec::encoded_len(t) + 8;
        used <= budget
    });
    let _logged = crate::quarantine::warn_once(
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
fn session_message(
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

/// The least time a new leader gives nodes to open a session with it.
const NEW_LEADER_GRACE: Duration = Duration::from_secs(5);

fn unavailable(e: StoreError) -> Status {
    Status::unavailable(format!("store: {e}"))
}

#[tonic::async_trait]
impl Dispatcher for DispatcherApi {
    type SessionStream = BoxStream<SessionMessage>;

    async fn session(
        &self,
        req: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let req = req.into_inner();
        if req.node_id.is_empty() {
            return Err(Status::invalid_argument("node_id: required"));
        }
        if crate::join::is_removed(&self.inner.store, &req.node_id) {
            return Err(crate::join::removed_status(&req.node_id));
        }
        if !self.inner.store.is_leader() {
            return Err(Status::unavailable(
                "this manager does not lead the swarm; open the session with the leader",
            ));
        }
        self.register_node(&req).await.map_err(unavailable)?;
        let session_id = shoal_api::id::new_id();
        self.inner.sessions.lock().expect("sessions lock").insert(
            req.node_id.clone(),
            Session {
                id: session_id.clone(),
                last_heartbeat: Instant::now(),
                term: self.inner.store.current_term(),
            },
        );
        tracing::info!(node = %req.node_id, "agent session opened");
        self.inner.logs.node_up(&req.node_id);
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        let mut wake = self
            .inner
            .assignments
            .lock()
            .expect("assignments lock")
            .subscribe(&req.node_id);
        tokio::spawn(async move {
            let mut last: Option<SessionMessage> = None;
            loop {
                // `node rm --force` of a connected node ends its session.
                if crate::join::is_removed(&this.inner.store, &req.node_id) {
                    let _ = tx
                        .send(Err(crate::join::removed_status(&req.node_id)))
                        .await;
                    return;
                }
                let heartbeat = this.heartbeat_period();
                // The view is dropped before any await (see AssignmentIndex).
                let msg = {
                    let view = this.inner.cache.current();
                    let tasks = this
                        .inner
                        .assignments
                        .lock()
                        .expect("assignments lock")
                        .tasks_of(&view, &req.node_id);
                    let tasks = fit_assignments(tasks, &req.node_id, ASSIGNMENTS_BUDGET_BYTES);
                    session_message(&view, tasks, &req.node_id, &session_id, heartbeat)
                };
                if last.as_ref() != Some(&msg) {
                    if tx.send(Ok(msg.clone())).await.is_err() {
                        return;
                    }
                    last = Some(msg);
                }
                tokio::select! {
                    _ = this.inner.shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    r = wake.changed() => if r.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = req.into_inner();
        self.check_session(&req.node_id, &req.session_id)?;
        Ok(Response::new(HeartbeatResponse {
            period_ms: self.heartbeat_period().as_millis() as u64,
        }))
    }

    async fn update_task_status(
        &self,
        req: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        let req = req.into_inner();
        self.check_session(&req.node_id, &req.session_id)?;
        self.inner
            .status
            .write(&req.node_id, req.updates)
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(UpdateTaskStatusResponse {}))
    }

    type FeedStream = BoxStream<FeedMessage>;

    async fn feed(&self, req: Request<FeedRequest>) -> Result<Response<Self::FeedStream>, Status> {
        let req = req.into_inner();
        let store = self.inner.store.clone();
        if crate::join::is_removed(&store, &req.node_id) {
            return Err(crate::join::removed_status(&req.node_id));
        }
        let feed = self.inner.feed.subscribe(req.from_revision);
        Ok(Response::new(Box::pin(until_removed(
            feed,
            move |node| crate::join::is_removed(&store, node),
            req.node_id,
        ))))
    }

    async fn feed_applied(
        &self,
        req: Request<FeedAppliedRequest>,
    ) -> Result<Response<FeedAppliedResponse>, Status> {
        let req = req.into_inner();
        let mut applied = self.inner.feed_applied.lock().expect("feed lock");
        let entry = applied.entry(req.node_id).or_default();
        *entry = (*entry).max(req.revision);
        Ok(Response::new(FeedAppliedResponse {}))
    }

    type ServiceLogsStream = BoxStream<LogMessage>;

    /// Answered by the node (it holds the control API); see shoald.
    async fn service_logs(
        &self,
        _: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        Err(Status::unimplemented(
            "relayed logs are answered by the leader's node",
        ))
    }

    type ListenSubscriptionsStream = BoxStream<LogSubscription>;

    async fn listen_subscriptions(
        &self,
        req: Request<ListenSubscriptionsRequest>,
    ) -> Result<Response<Self::ListenSubscriptionsStream>, Status> {
        let node = req.into_inner().node_id;
        Ok(Response::new(Box::pin(self.inner.logs.listen(node))))
    }

    async fn publish_logs(
        &self,
        req: Request<Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        let mut stream = req.into_inner();
        while let Some(msg) = stream.message().await? {
            self.inner.logs.publish(msg).await;
        }
        Ok(Response::new(PublishLogsResponse {}))
    }
}

#[cfg(test)]
mod tests;
