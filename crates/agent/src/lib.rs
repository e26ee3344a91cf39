//! Node agent: dispatcher session, task state machine, process runtime, logs.
//!
//! The agent keeps a session with a manager's dispatcher, receives the full
//! set of tasks assigned to its node on every change, runs them as processes
//! (each in its own network namespace when root), reports their status, and
//! serves their logs to the manager's log broker. It also holds the built-in
//! workloads that shoald's `workload` subcommand runs.
//!
//! # Layout
//! - [`supervisor`]: sans-IO core; assignment sets in, start/stop/report actions out.
//! - [`runtime`]: runs one task as a process and drives its state machine.
//! - [`logs`]: on-disk task logs (writer, reader with tail/since/follow).
//! - [`status`]: the ordered, monotonic status reporter.
//! - `config`: what the agent is told about its node and how tasks connect.
//! - `session`: the dispatcher session with heartbeats and reconnects.
//! - `logbroker`: publishes logs for the manager's log subscriptions.
//! - `netns`: adapter to `shoal-net` for task network namespaces.
//! - [`workload`]: `shoal/echo` and `shoal/timecheck`.
#![deny(unsafe_op_in_unsafe_fn)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::{Task, TaskStatusUpdate};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod config;
mod logbroker;
pub mod logs;
mod netns;
pub mod runtime;
mod session;
pub mod status;
pub mod supervisor;
pub mod workload;

pub use config::{AgentConfig, NetworkMode, NodeDirective, DEFAULT_STOP_GRACE};
pub use netns::{is_root, veth_name};
pub use runtime::TaskRunner;
pub use supervisor::{Action, TaskSupervisor};

/// The agent could not run.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("create data directory {path}: {source}")]
    DataRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The node agent.
pub struct Agent;

/// Upper bound on waiting for the manager to confirm a task has left every
/// node's routing table before it is stopped anyway.
pub const WITHDRAWAL_LIMIT: Duration = Duration::from_secs(10);

/// Stops a task once no node routes new connections to it: a task with
/// published ports waits for the manager's `withdrawn` flag (every Ready
/// node's mesh has applied its withdrawal), bounded by [`WITHDRAWAL_LIMIT`].
fn drain_then_stop(
    task_id: &str,
    stop: CancellationToken,
    mut assignments: watch::Receiver<Option<Vec<Task>>>,
) {
    let must_wait = |set: &Option<Vec<Task>>| {
        set.as_ref()
            .and_then(|tasks| tasks.iter().find(|t| t.id == task_id))
            .is_some_and(|t| {
                !t.withdrawn && t.endpoint.as_ref().is_some_and(|e| !e.ports.is_empty())
            })
    };
    if !must_wait(&assignments.borrow()) {
        stop.cancel();
        return;
    }
    let id = task_id.to_string();
    tokio::spawn(async move {
        let confirmed = async {
            loop {
                let waiting = {
                    let set = assignments.borrow_and_update();
                    set.as_ref()
                        .and_then(|tasks| tasks.iter().find(|t| t.id == id))
                        .is_some_and(|t| !t.withdrawn)
                };
                if !waiting || assignments.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(WITHDRAWAL_LIMIT, confirmed)
            .await
            .is_err()
        {
            tracing::warn!(task = %id, "withdrawal not confirmed by every node within {WITHDRAWAL_LIMIT:?}; stopping anyway");
        }
        stop.cancel();
    });
}

/// A live task runner.
struct RunnerHandle {
    /// Cancelled to stop the task.
    stop: CancellationToken,
    join: JoinHandle<()>,
}

// === impl Agent ===

impl Agent {
    /// Runs until `shutdown` fires: then stops every task (SIGTERM, SIGKILL
    /// after `stop_grace`) and returns without waiting for the dispatcher.
    pub async fn run(
        config: AgentConfig,
        channel: tonic::transport::Channel,
        shutdown: CancellationToken,
    ) -> Result<(), AgentError> {
        Self::run_with_directives(config, channel, shutdown, watch::channel(None).0).await
    }

    /// [`Agent::run`], also publishing what each session message says about
    /// the node's place in the cluster (its role, its Raft membership, the
    /// managers), for the daemon to act on.
    pub async fn run_with_directives(
        config: AgentConfig,
        channel: tonic::transport::Channel,
        shutdown: CancellationToken,
        directives: watch::Sender<Option<NodeDirective>>,
    ) -> Result<(), AgentError> {
        let tasks_dir = config.data_root.join("tasks");
        logs::create_private_dir(&tasks_dir)
            .await
            .map_err(|source| AgentError::DataRoot {
                path: tasks_dir.clone(),
                source,
            })?;
        let config = Arc::new(config);
        let client = DispatcherClient::new(channel);
        let background = CancellationToken::new();
        let _stop_background = background.clone().drop_guard();

        let (session_tx, session_rx) = watch::channel(None);
        let (assign_tx, mut assign_rx) = watch::channel::<Option<Vec<Task>>>(None);
        let (status_tx, status_rx) = mpsc::unbounded_channel::<TaskStatusUpdate>();
        tokio::spawn(session::run_session(
            client.clone(),
            config.clone(),
            session_tx,
            assign_tx,
            directives,
            background.clone(),
        ));
        tokio::spawn(status::run_reporter(
            client.clone(),
            config.node_id.clone(),
            session_rx,
            status_rx,
            background.clone(),
        ));
        tokio::spawn(logbroker::run_log_broker(
            client,
            config.clone(),
            logs::LogStore::new(&config.data_root),
            background.clone(),
        ));

        let runner = TaskRunner::new(config.clone());
        let mut supervisor = TaskSupervisor::new();
        let mut runners: HashMap<String, RunnerHandle> = HashMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        loop {
            let actions = tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = assign_rx.changed() => {
                    if changed.is_err() {
                        // The session loop ended: only shutdown does that.
                        shutdown.cancelled().await;
                        break;
                    }
                    let set = assign_rx.borrow_and_update().clone();
                    match set {
                        Some(tasks) => supervisor.reconcile(&tasks),
                        None => Vec::new(),
                    }
                }
                Some(id) = done_rx.recv() => supervisor.runner_finished(&id),
            };
            for action in actions {
                match action {
                    Action::Start(task) => {
                        let id = task.id.clone();
                        let stop = CancellationToken::new();
                        let runner = runner.clone();
                        let (s, updates, done) = (stop.clone(), status_tx.clone(), done_tx.clone());
                        let join = tokio::spawn(async move {
                            let id = task.id.clone();
                            runner.run(*task, s, updates).await;
                            let _ = done.send(id);
                        });
                        runners.insert(id, RunnerHandle { stop, join });
                    }
                    Action::Stop { task_id } => {
                        if let Some(h) = runners.get(&task_id) {
                            drain_then_stop(&task_id, h.stop.clone(), assign_rx.clone());
                        }
                    }
                    Action::Report { task_id, status } => {
                        let _ = status_tx.send(TaskStatusUpdate {
                            task_id,
                            status: Some(status),
                        });
                    }
                    Action::Forget { task_id } => {
                        runners.remove(&task_id);
                    }
                }
            }
        }

        tracing::info!(tasks = runners.len(), "agent shutting down; stopping tasks");
        let _ = supervisor.stop_all();
        for h in runners.values() {
            h.stop.cancel();
        }
        futures::future::join_all(runners.into_values().map(|h| h.join)).await;
        Ok(())
    }
}
