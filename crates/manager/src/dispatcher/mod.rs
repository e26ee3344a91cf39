//! The dispatcher: the manager side of every node. Agents open a session and
//! receive their assigned tasks, heartbeat, and report task status; meshes
//! subscribe to the discovery feed; agents serve log subscriptions.
//!
//! # Layout
//! - this module: [`DispatcherApi`], the RPCs and the leader loops
//!   (heartbeat checker, assignments, withdrawal confirmer).
//! - `sessions`: the session table (soft state, the leader's own).
//! - `nodes`: node objects registered when a session opens, Down after
//!   missed heartbeats.
//! - `assignments`: what each session carries; wakes only changed sessions.
//! - `withdrawals`: tasks marked withdrawn once every mesh applied it.
//! - [`heartbeat`]: the heartbeat period and the Down limit.
//! - [`feed`]: the revisioned routing feed (snapshot + deltas).
//! - [`logbroker`]: log subscriptions out to agents, log lines back.
//! - `status`: task status reports, written in batches.
//! - [`relay`]: a follower relays its nodes' dispatcher calls to the leader.
//! - [`caller`]: who may call for which node (local agent or mTLS peer).

mod assignments;
pub mod caller;
pub mod feed;
pub mod heartbeat;
pub mod logbroker;
mod nodes;
pub mod relay;
mod sessions;
mod status;
mod withdrawals;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use shoal_api::pb::dispatcher_server::Dispatcher;
use shoal_api::pb::*;
use shoal_store::{Store, StoreError};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::cache::ViewCache;
use crate::state;
use crate::ManagerError;
pub use assignments::{fit_assignments, ASSIGNMENTS_BUDGET_BYTES};
use assignments::{session_message, AssignmentIndex};
pub use feed::Feed;
pub use logbroker::LogBroker;
use sessions::Sessions;

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
    /// node id → live session (soft state: the leader's own).
    sessions: Sessions,
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
                sessions: Sessions::default(),
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
        self.inner.sessions.connected()
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
                self.inner
                    .sessions
                    .keep_term(self.inner.store.current_term());
            }
            let since = *leader_since.get_or_insert_with(Instant::now);
            let limit = self.heartbeat_limit();
            let mut down = self.inner.sessions.expire(limit);
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
            if let Err(err) = nodes::mark_down(&self.inner.cache, &down).await {
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
            .write_from_view(|view| {
                let applied = self.inner.feed_applied.lock().expect("feed lock").clone();
                let pass = withdrawals::withdrawals(view, &applied);
                if pass.waiting_for > 0 {
                    self.inner.feed.publish_at_least(pass.waiting_for);
                }
                pass.txn
            })
            .await
            .map(|_| ())
    }

    /// A heartbeat or status report: valid only from a node not removed,
    /// on its current session with this leader.
    fn check_session(&self, node_id: &str, session_id: &str) -> Result<(), Status> {
        if crate::join::is_removed(&self.inner.store, node_id) {
            self.inner.sessions.close(node_id);
            return Err(crate::join::removed_status(node_id));
        }
        // Sessions live on the leader: one that lost leadership (or a
        // restarted manager that led before) sends its agents to the new one.
        if !self.inner.store.is_leader() {
            self.inner.sessions.close(node_id);
            return Err(Status::unavailable(
                "this manager does not lead the swarm any more; open a new session",
            ));
        }
        self.inner
            .sessions
            .heartbeat(node_id, session_id, self.inner.store.current_term())
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
        nodes::register_node(&self.inner.store, &self.inner.cache, &req)
            .await
            .map_err(unavailable)?;
        let session_id = self
            .inner
            .sessions
            .open(&req.node_id, self.inner.store.current_term());
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
