//! Simulated agents: lightweight in-process clients of the REAL dispatcher
//! API, so one manager can be measured against hundreds of nodes on one
//! machine. Each agent joins as a real node does (pins the CA from the
//! worker token with `fetch_root_ca`, generates its own key, gets a node
//! certificate from `NodeCA.IssueNodeCertificate`), then keeps a session over
//! its own mTLS connection exactly like `shoal-agent`: heartbeats at the
//! period the manager asks for, feeds every assignment set through the real
//! sans-IO [`TaskSupervisor`], reports each started task through the same
//! states the process runtime reports (accepted, preparing, ready, starting,
//! running) with the ordered [`StatusQueue`], reports `shutdown` when told to
//! stop, and follows the discovery feed, acknowledging every revision with
//! `FeedApplied` as a node's mesh does. Nothing runs: a task is "running"
//! once the dispatcher accepted its RUNNING status.
//!
//! The agents' tokio runtime has its threads moved into a network namespace
//! on the cluster's underlay (setns(2) in `on_thread_start`), so they reach
//! the manager at its node address; the calling thread never touches the
//! network.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sched::CloneFlags;
use shoal_agent::status::StatusQueue;
use shoal_agent::{Action, TaskSupervisor};
use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::node_ca_client::NodeCaClient;
use shoal_api::pb::{
    FeedAppliedRequest, FeedRequest, HeartbeatRequest, IssueNodeCertificateRequest,
    NodeDescription, PortBinding, SessionRequest, Task, TaskState, TaskStatus, TaskStatusUpdate,
    UpdateTaskStatusRequest,
};
use shoal_ca as ca;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_millis(200);
/// How long one UpdateTaskStatus call may take before it is retried (as in `shoal-agent`).
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters shared by every agent of a fleet.
#[derive(Default)]
pub struct FleetStats {
    /// Sessions that have received their first assignment set and are open.
    pub sessions_open: AtomicUsize,
    /// Sessions opened, reopenings included.
    pub session_opens: AtomicUsize,
    /// Tasks the agents were told to start.
    pub starts: AtomicUsize,
    /// Feed messages received (snapshots and deltas).
    pub feed_messages: AtomicUsize,
    /// Failed dispatcher calls (sessions, heartbeats, status, feed).
    pub errors: AtomicUsize,
    pub last_error: Mutex<Option<String>>,
    /// The first task start after [`Fleet::mark`].
    first_start: Mutex<Option<Instant>>,
    /// Status updates the dispatcher accepted.
    pub statuses: AtomicUsize,
    /// Seconds each accepted UpdateTaskStatus call took.
    status_calls: Mutex<Vec<f64>>,
}

impl FleetStats {
    fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(format!("{what}: {e}"));
    }
}

/// A joined node: its identity and key material.
struct Joined {
    node_id: String,
    hostname: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// One simulated agent.
struct Agent {
    joined: Arc<Joined>,
    /// Tasks this agent reported RUNNING and has not reported stopped.
    running: Arc<AtomicI64>,
    stop: CancellationToken,
}

/// Simulated agents on one tokio runtime inside a network namespace.
pub struct Fleet {
    rt: tokio::runtime::Runtime,
    agents: Vec<Agent>,
    /// Indexes of agents that vanished.
    vanished: HashSet<usize>,
    pub stats: Arc<FleetStats>,
    /// The agents' underlay address (SessionRequest.addr).
    ip: String,
}

impl Fleet {
    /// A runtime with `threads` workers, all inside namespace `netns`.
    pub fn new(netns: &str, threads: usize, ip: &str) -> anyhow::Result<Fleet> {
        let path = format!("/run/netns/{netns}");
        let file = Arc::new(std::fs::File::open(&path).with_context(|| format!("open {path}"))?);
        // Check setns works before a runtime thread depends on it.
        let probe = file.clone();
        std::thread::spawn(move || nix::sched::setns(&*probe, CloneFlags::CLONE_NEWNET))
            .join()
            .map_err(|_| anyhow::anyhow!("setns probe panicked"))?
            .with_context(|| format!("setns {path}"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("sim-agent")
            .enable_all()
            .on_thread_start(move || {
                nix::sched::setns(&*file, CloneFlags::CLONE_NEWNET)
                    .expect("setns into the agents' namespace");
            })
            .build()
            .context("build the agents' runtime")?;
        Ok(Fleet {
            rt,
            agents: Vec::new(),
            vanished: HashSet::new(),
            stats: Arc::default(),
            ip: ip.to_string(),
        })
    }

    /// Runs `fut` on the runtime's threads (inside the namespace).
    fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt
            .block_on(self.rt.spawn(fut))
            .expect("agents' task panicked")
    }

    /// Joins `count` more agents with the worker `token`, `parallel` at a time.
    pub fn join(
        &mut self,
        manager: &str,
        token: &str,
        count: usize,
        parallel: usize,
    ) -> anyhow::Result<()> {
        let first = self.agents.len();
        let (manager, token, ip) = (manager.to_string(), token.to_string(), self.ip.clone());
        let joined = self.run(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
            let mut set = tokio::task::JoinSet::new();
            for i in first..first + count {
                let (sem, manager, token, ip) =
                    (sem.clone(), manager.clone(), token.clone(), ip.clone());
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let hostname = format!("sim-{:04}", i + 1);
                    let mut last = None;
                    for _ in 0..5 {
                        match join_one(&manager, &token, &hostname, &ip).await {
                            Ok(j) => return Ok((i, j)),
                            Err(e) => last = Some(e),
                        }
                        tokio::time::sleep(RETRY).await;
                    }
                    Err(last.expect("five attempts failed"))
                });
            }
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                out.push(r.context("join task panicked")??);
            }
            out.sort_by_key(|(i, _)| *i);
            anyhow::Ok(out)
        })?;
        for (_, j) in joined {
            self.agents.push(Agent {
                joined: Arc::new(j),
                running: Arc::default(),
                stop: CancellationToken::new(),
            });
        }
        Ok(())
    }

    /// Starts the sessions (and feed followers) of every joined agent that
    /// has none yet.
    pub fn start_sessions(&mut self, manager: &str, feed: bool) -> anyhow::Result<()> {
        let mut starts = Vec::new();
        for a in &self.agents {
            let tls = ca::client_tls(
                &a.joined.ca_pem,
                Some((&a.joined.cert_pem, &a.joined.key_pem)),
            )?;
            let endpoint = Endpoint::from_shared(format!("https://{manager}"))?
                .tls_config(tls)?
                .connect_timeout(Duration::from_secs(5))
                .tcp_keepalive(Some(Duration::from_secs(30)))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20));
            starts.push((
                endpoint,
                a.joined.clone(),
                a.running.clone(),
                a.stop.clone(),
            ));
        }
        let (stats, ip) = (self.stats.clone(), self.ip.clone());
        self.run(async move {
            for (endpoint, joined, running, stop) in starts {
                let client = DispatcherClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(64 << 20);
                let ctx = Arc::new(AgentCtx {
                    joined,
                    addr: ip.clone(),
                    running,
                    stop,
                    stats: stats.clone(),
                });
                if feed {
                    tokio::spawn(follow_feed(ctx.clone(), client.clone()));
                }
                tokio::spawn(run_agent(ctx, client));
            }
        });
        Ok(())
    }

    /// Tasks RUNNING on agents that have not vanished.
    pub fn running(&self) -> i64 {
        self.agents
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.vanished.contains(i))
            .map(|(_, a)| a.running.load(Ordering::Relaxed))
            .sum()
    }

    /// Takes the durations of the accepted UpdateTaskStatus calls so far.
    pub fn take_status_calls(&self) -> Vec<f64> {
        std::mem::take(
            &mut *self
                .stats
                .status_calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Resets "first task start since".
    pub fn mark(&self) {
        *self
            .stats
            .first_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The first task start since [`Fleet::mark`].
    pub fn first_start(&self) -> Option<Instant> {
        *self
            .stats
            .first_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The last `k` live agents stop dead (no heartbeat, no goodbye);
    /// returns how many running tasks they held.
    pub fn vanish(&mut self, k: usize) -> i64 {
        let mut lost = 0;
        let live: Vec<usize> = (0..self.agents.len())
            .filter(|i| !self.vanished.contains(i))
            .collect();
        for &i in live.iter().rev().take(k) {
            let a = &self.agents[i];
            a.stop.cancel();
            lost += a.running.load(Ordering::Relaxed);
            self.vanished.insert(i);
        }
        lost
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for a in &self.agents {
            a.stop.cancel();
        }
    }
}

/// Join like `shoald`'s `swarm join`, as a worker.
async fn join_one(manager: &str, token: &str, hostname: &str, ip: &str) -> anyhow::Result<Joined> {
    let parsed = ca::parse_token(token)?;
    let ca_pem = ca::fetch_root_ca(manager, &parsed.ca_digest, Duration::from_secs(10)).await?;
    let key = ca::new_node_key()?;
    let channel = Endpoint::from_shared(format!("https://{manager}"))?
        .tls_config(ca::client_tls(&ca_pem, None)?)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connect to {manager}"))?;
    let resp = NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            token: token.to_string(),
            csr_pem: key.csr_pem.clone(),
            hostname: hostname.to_string(),
            advertise_addr: ip.to_string(),
            node_id: String::new(),
        })
        .await?
        .into_inner();
    Ok(Joined {
        node_id: resp.node_id,
        hostname: hostname.to_string(),
        ca_pem: resp.ca_certificate_pem,
        cert_pem: resp.certificate_pem,
        key_pem: key.key_pem,
    })
}

/// What one agent's tasks share.
struct AgentCtx {
    joined: Arc<Joined>,
    addr: String,
    running: Arc<AtomicI64>,
    stop: CancellationToken,
    stats: Arc<FleetStats>,
}

impl AgentCtx {
    /// Sleeps `d`; false when the agent was stopped meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Sessions (reopened after failures) until the agent is stopped.
async fn run_agent(ctx: Arc<AgentCtx>, client: DispatcherClient<Channel>) {
    let (session_tx, session_rx) = watch::channel::<Option<String>>(None);
    let (updates_tx, updates_rx) = mpsc::unbounded_channel();
    tokio::spawn(report_status(
        ctx.clone(),
        client.clone(),
        session_rx,
        updates_rx,
    ));
    let mut supervisor = TaskSupervisor::new();
    while !ctx.stop.is_cancelled() {
        if let Err(e) = session(&ctx, &client, &mut supervisor, &session_tx, &updates_tx).await {
            ctx.stats.error("session", e);
        }
        session_tx.send_replace(None);
        if !ctx.pause(RETRY).await {
            return;
        }
    }
}

async fn session(
    ctx: &AgentCtx,
    client: &DispatcherClient<Channel>,
    supervisor: &mut TaskSupervisor,
    session_tx: &watch::Sender<Option<String>>,
    updates: &mpsc::UnboundedSender<TaskStatusUpdate>,
) -> Result<(), tonic::Status> {
    let mut client = client.clone();
    let req = SessionRequest {
        node_id: ctx.joined.node_id.clone(),
        description: Some(NodeDescription {
            hostname: ctx.joined.hostname.clone(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            nano_cpus: 2_000_000_000,
            memory_bytes: 8 << 30,
        }),
        addr: ctx.addr.clone(),
    };
    let mut stream = tokio::select! {
        _ = ctx.stop.cancelled() => return Ok(()),
        r = client.session(req) => r?.into_inner(),
    };
    ctx.stats.session_opens.fetch_add(1, Ordering::Relaxed);
    let mut open = OpenSession {
        stats: &ctx.stats,
        counted: false,
    };
    let mut period = DEFAULT_HEARTBEAT;
    let mut heartbeat = tokio::time::interval(period);
    heartbeat.reset();
    let mut current: Option<String> = None;
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return Ok(()),
            msg = stream.message() => {
                let Some(msg) = msg? else {
                    return Err(tonic::Status::unavailable("session stream ended"));
                };
                open.count();
                if msg.heartbeat_period_ms > 0 && Duration::from_millis(msg.heartbeat_period_ms) != period {
                    period = Duration::from_millis(msg.heartbeat_period_ms);
                    heartbeat = tokio::time::interval(period);
                    heartbeat.reset();
                }
                if current.as_deref() != Some(msg.session_id.as_str()) {
                    current = Some(msg.session_id.clone());
                    session_tx.send_replace(current.clone());
                }
                for action in supervisor.reconcile(&msg.tasks) {
                    act(ctx, supervisor, action, updates);
                }
            }
            _ = heartbeat.tick() => {
                let Some(id) = current.clone() else { continue };
                let req = HeartbeatRequest { session_id: id, node_id: ctx.joined.node_id.clone() };
                let limit = (period * 2).max(Duration::from_secs(2));
                match tokio::time::timeout(limit, client.heartbeat(req)).await {
                    Ok(r) => { r?; }
                    Err(_) => return Err(tonic::Status::deadline_exceeded("heartbeat timed out")),
                }
            }
        }
    }
}

/// Counts an open session in [`FleetStats::sessions_open`] while alive.
struct OpenSession<'a> {
    stats: &'a FleetStats,
    counted: bool,
}

impl OpenSession<'_> {
    fn count(&mut self) {
        if !self.counted {
            self.stats.sessions_open.fetch_add(1, Ordering::Relaxed);
            self.counted = true;
        }
    }
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.stats.sessions_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Performs one supervisor action: nothing runs, so a start is reported
/// through to RUNNING at once and a stop ends as SHUTDOWN at once.
fn act(
    ctx: &AgentCtx,
    supervisor: &mut TaskSupervisor,
    action: Action,
    updates: &mpsc::UnboundedSender<TaskStatusUpdate>,
) {
    let send = |task_id: &str, status: TaskStatus| {
        let _ = updates.send(TaskStatusUpdate {
            task_id: task_id.to_string(),
            status: Some(status),
        });
    };
    match action {
        Action::Start(task) => {
            ctx.stats.starts.fetch_add(1, Ordering::Relaxed);
            ctx.stats
                .first_start
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(Instant::now);
            for (state, message) in [
                (TaskState::Accepted, "accepted"),
                (TaskState::Preparing, "preparing"),
                (TaskState::Ready, "ready"),
                (TaskState::Starting, "starting"),
            ] {
                send(&task.id, status(state, message));
            }
            send(
                &task.id,
                TaskStatus {
                    ports: port_bindings(&task),
                    ..status(TaskState::Running, "started")
                },
            );
        }
        Action::Stop { task_id } => {
            send(&task_id, status(TaskState::Shutdown, "shutdown"));
            for a in supervisor.runner_finished(&task_id) {
                act(ctx, supervisor, a, updates);
            }
        }
        Action::Report { task_id, status } => send(&task_id, status),
        Action::Forget { .. } => {}
    }
}

fn status(state: TaskState, message: &str) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        message: message.to_string(),
        timestamp_ms: shoal_api::now_ms(),
        ..Default::default()
    }
}

/// `task_ip:target` for each published target port, as the runtime reports.
fn port_bindings(task: &Task) -> Vec<PortBinding> {
    let ip = task.ingress_address.split('/').next().unwrap_or_default();
    task.endpoint
        .iter()
        .flat_map(|e| e.ports.iter())
        .map(|p| PortBinding {
            target_port: p.target_port,
            address: format!("{ip}:{}", p.target_port),
        })
        .collect()
}

/// The agent's status reporter: batches, in order, retried until accepted
/// (as `shoal-agent`'s); counts RUNNING tasks once the dispatcher took them.
async fn report_status(
    ctx: Arc<AgentCtx>,
    mut client: DispatcherClient<Channel>,
    mut session: watch::Receiver<Option<String>>,
    mut updates: mpsc::UnboundedReceiver<TaskStatusUpdate>,
) {
    let mut queue = StatusQueue::default();
    let mut running: HashSet<String> = HashSet::new();
    loop {
        if queue.is_empty() {
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
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
                _ = ctx.stop.cancelled() => return,
                r = session.changed() => if r.is_err() { return },
            }
        };
        let batch = queue.take_batch();
        let req = UpdateTaskStatusRequest {
            session_id,
            node_id: ctx.joined.node_id.clone(),
            updates: batch.clone(),
        };
        let sent = Instant::now();
        let res = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            r = tokio::time::timeout(STATUS_TIMEOUT, client.update_task_status(req)) => r,
        };
        match res {
            Ok(Ok(_)) => {
                ctx.stats
                    .status_calls
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(sent.elapsed().as_secs_f64());
                ctx.stats.statuses.fetch_add(batch.len(), Ordering::Relaxed);
                for u in &batch {
                    let state = u.status.as_ref().map(|s| s.state).unwrap_or_default();
                    if state == TaskState::Running as i32 && running.insert(u.task_id.clone()) {
                        ctx.running.fetch_add(1, Ordering::Relaxed);
                    } else if state > TaskState::Running as i32 && running.remove(&u.task_id) {
                        ctx.running.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(Err(e)) => {
                ctx.stats.error("update task status", e);
                queue.requeue(batch);
                if !ctx.pause(RETRY).await {
                    return;
                }
            }
            Err(_) => {
                ctx.stats.error(
                    "update task status",
                    format!("timed out after {STATUS_TIMEOUT:?}"),
                );
                queue.requeue(batch);
            }
        }
    }
}

/// Follows the discovery feed as a node's mesh does, acknowledging each
/// revision; resumes from the last one after a failure.
async fn follow_feed(ctx: Arc<AgentCtx>, mut client: DispatcherClient<Channel>) {
    let node_id = ctx.joined.node_id.clone();
    let mut revision = 0;
    while !ctx.stop.is_cancelled() {
        let req = FeedRequest {
            node_id: node_id.clone(),
            from_revision: revision,
        };
        let opened = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            r = client.feed(req) => r,
        };
        match opened {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    let msg = tokio::select! {
                        _ = ctx.stop.cancelled() => return,
                        m = stream.message() => m,
                    };
                    match msg {
                        Ok(Some(m)) => {
                            ctx.stats.feed_messages.fetch_add(1, Ordering::Relaxed);
                            revision = m.revision;
                            let ack = FeedAppliedRequest {
                                node_id: node_id.clone(),
                                revision,
                            };
                            if let Err(e) = client.feed_applied(ack).await {
                                ctx.stats.error("feed applied", e);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            ctx.stats.error("feed", e);
                            break;
                        }
                    }
                }
            }
            Err(e) => ctx.stats.error("feed", e),
        }
        if !ctx.pause(RETRY).await {
            return;
        }
    }
}
