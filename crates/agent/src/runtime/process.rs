//! The process runtime: runs one task as a process and drives its state
//! machine from ACCEPTED to a terminal state.
//!
//! `exec` launches and stops the process; `health` decides when it is
//! running (its ports accept connections) and healthy (`--health-cmd`).

mod exec;
mod health;
#[cfg(test)]
mod tests;

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_api::pb::{PortBinding, Runtime, Task, TaskState, TaskStatus, TaskStatusUpdate};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cgroup::{Cgroups, Layout, Limits, TaskCgroup};
use crate::config::{AgentConfig, NetworkMode};
use crate::logs::{LogStore, LogStream, LogWriter, TaskLogMeta};
use crate::netns::TaskNetwork;
pub use exec::{exit_outcome, parse_signal, workdir_error, ExitOutcome, ProcessPlan, StopPolicy};
use exec::{signal_group, spawn, terminate};
use health::{wait_listening, HealthProbe, READINESS_LIMIT};

/// How long a finished task's output may take to drain into its log.
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// Runs tasks as processes on this node. Cheap to clone.
#[derive(Clone)]
pub struct TaskRunner {
    config: Arc<AgentConfig>,
    logs: LogStore,
    /// Where tasks with `--limit-*` get their cgroup (detected once).
    cgroups: Cgroups,
}

/// The distinct target ports of the task's endpoint, in order.
pub fn target_ports(task: &Task) -> Vec<u32> {
    let mut out = Vec::new();
    for p in task.endpoint.iter().flat_map(|e| &e.ports) {
        if p.target_port != 0 && !out.contains(&p.target_port) {
            out.push(p.target_port);
        }
    }
    out
}

/// The bindings of target ports some TCP port is published to: readiness
/// is a TCP connect, which a UDP-only target port never accepts.
pub fn tcp_bindings(task: &Task, bindings: &[PortBinding]) -> Vec<PortBinding> {
    let tcp = |target: u32| {
        task.endpoint
            .iter()
            .flat_map(|e| &e.ports)
            .any(|p| p.target_port == target && (p.protocol.is_empty() || p.protocol == "tcp"))
    };
    bindings
        .iter()
        .filter(|b| tcp(b.target_port))
        .cloned()
        .collect()
}

/// The environment of a task: its spec's entries, then SHOAL_* variables,
/// then (loopback mode) `PORT` and `SHOAL_PORT_<target>`.
pub fn build_env(
    task: &Task,
    node_id: &str,
    hostname: &str,
    loopback_ports: Option<&[(u32, u16)]>,
) -> Vec<(String, String)> {
    let spec = task.spec.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter_map(|e| match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
            _ => None,
        })
        .collect();
    let (_, tag) = shoal_api::split_image(&spec.image);
    let shoal = [
        ("SHOAL_TASK_ID", task.id.clone()),
        ("SHOAL_TASK_NAME", shoal_api::task_name(task)),
        ("SHOAL_TASK_SLOT", task.slot.to_string()),
        ("SHOAL_SERVICE_NAME", task.service_name.clone()),
        ("SHOAL_NODE_ID", node_id.to_string()),
        ("SHOAL_NODE_HOSTNAME", hostname.to_string()),
        ("SHOAL_IMAGE", spec.image.clone()),
        ("SHOAL_IMAGE_TAG", tag.to_string()),
    ];
    env.extend(shoal.into_iter().map(|(k, v)| (k.to_string(), v)));
    if let Some(ports) = loopback_ports {
        if let Some((_, first)) = ports.first() {
            env.push(("PORT".into(), first.to_string()));
        }
        for (target, port) in ports {
            env.push((format!("SHOAL_PORT_{target}"), port.to_string()));
        }
    }
    env
}

/// A free TCP port on 127.0.0.1 (bound then released).
fn free_loopback_port() -> io::Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

// === impl TaskRunner ===

impl TaskRunner {
    /// A runner for this node. It looks at the machine's cgroups once
    /// (logging whether `--limit-*` can be enforced) and removes the task
    /// groups a previous run of this node left behind.
    pub fn new(config: Arc<AgentConfig>) -> Self {
        let logs = LogStore::new(&config.data_root);
        let cgroups = Cgroups::detect(&config.data_root.join("cgroup"));
        match cgroups.layout() {
            Layout::Unavailable { reason } => {
                tracing::warn!(
                    "--limit-cpu and --limit-memory are not enforced on this node: {reason}"
                )
            }
            layout => {
                tracing::info!(
                    ?layout,
                    "--limit-cpu and --limit-memory are enforced with cgroups"
                )
            }
        }
        let stale = cgroups.remove_stale(|id| logs.has_task(id));
        if stale > 0 {
            tracing::info!(
                groups = stale,
                "removed task cgroups left by a previous run"
            );
        }
        Self {
            config,
            logs,
            cgroups,
        }
    }

    /// What to execute, given the task's address in netns mode (None in
    /// loopback mode, where ports are allocated here).
    pub fn plan(&self, task: &Task, task_ip: Option<Ipv4Addr>) -> Result<ProcessPlan, String> {
        let spec = task.spec.clone().unwrap_or_default();
        let targets = target_ports(task);
        let (ports, loopback) = match task_ip {
            Some(ip) => (
                targets
                    .iter()
                    .map(|&t| PortBinding {
                        target_port: t,
                        address: format!("{ip}:{t}"),
                    })
                    .collect::<Vec<_>>(),
                None,
            ),
            None => {
                let mut pairs = Vec::new();
                for &t in &targets {
                    let p = free_loopback_port()
                        .map_err(|e| format!("task: allocate loopback port: {e}"))?;
                    pairs.push((t, p));
                }
                let bindings = pairs
                    .iter()
                    .map(|&(t, p)| PortBinding {
                        target_port: t,
                        address: format!("127.0.0.1:{p}"),
                    })
                    .collect();
                (bindings, Some(pairs))
            }
        };
        let env = build_env(
            task,
            &self.config.node_id,
            &self.config.hostname,
            loopback.as_deref(),
        );
        let (program, args) = match spec.runtime() {
            Runtime::Builtin => {
                let Some((name, _)) = shoal_api::builtin_image(&spec.image) else {
                    return Err(format!("task: unknown built-in image {:?}", spec.image));
                };
                let mut args = vec!["workload".to_string(), name.to_string()];
                args.extend(spec.command.iter().cloned());
                (self.config.workload_exe.clone(), args)
            }
            Runtime::Process => {
                let Some((first, rest)) = spec.command.split_first() else {
                    return Err("task: empty command".into());
                };
                (PathBuf::from(first), rest.to_vec())
            }
        };
        Ok(ProcessPlan {
            program,
            args,
            env,
            workdir: (!spec.workdir.is_empty()).then(|| PathBuf::from(&spec.workdir)),
            ports,
        })
    }

    /// Drives one task to a terminal state, sending every status on
    /// `updates`. `stop` asks for a shutdown at any point.
    pub async fn run(
        &self,
        task: Task,
        stop: CancellationToken,
        updates: mpsc::UnboundedSender<TaskStatusUpdate>,
    ) {
        let report = |status: TaskStatus| {
            let _ = updates.send(TaskStatusUpdate {
                task_id: task.id.clone(),
                status: Some(TaskStatus {
                    timestamp_ms: shoal_api::now_ms(),
                    ..status
                }),
            });
        };
        let simple = |state: TaskState, message: &str| TaskStatus {
            state: state as i32,
            message: message.to_string(),
            ..Default::default()
        };
        let failed = |err: String| TaskStatus {
            state: TaskState::Failed as i32,
            message: "failed".into(),
            err,
            ..Default::default()
        };

        report(simple(TaskState::Accepted, "accepted"));
        report(simple(TaskState::Preparing, "preparing"));
        let network = match &self.config.network {
            NetworkMode::Netns { bridge, gateway } => {
                match TaskNetwork::create(&task.id, &task.ingress_address, bridge, *gateway).await {
                    Ok(n) => Some(n),
                    Err(e) => {
                        report(failed(format!("task: {e}")));
                        return;
                    }
                }
            }
            NetworkMode::Loopback => None,
        };
        let group = match self.cgroups.create(&task.id, Limits::of(&task)) {
            Ok(g) => g,
            Err(e) => {
                if let Some(n) = network {
                    n.destroy().await;
                }
                report(failed(format!("task: {e}")));
                return;
            }
        };
        let outcome = self
            .prepared(&task, network.as_ref(), group.as_ref(), &stop, &report)
            .await;
        if let Some(g) = group {
            if g.oom_killed() {
                tracing::warn!(task = %task.id, "the task's memory limit was reached: the OOM killer killed it");
            }
            let _ = tokio::task::spawn_blocking(move || g.remove()).await;
        }
        if let Some(n) = network {
            n.destroy().await;
        }
        report(match outcome {
            Finished::Stopped { exit_code, pid } => TaskStatus {
                state: TaskState::Shutdown as i32,
                message: "shutdown".into(),
                exit_code,
                pid,
                ..Default::default()
            },
            Finished::Exited { outcome, pid } => TaskStatus {
                state: outcome.state as i32,
                message: if outcome.state == TaskState::Complete {
                    "finished".into()
                } else {
                    "failed".into()
                },
                err: outcome.err,
                exit_code: outcome.exit_code,
                pid,
                ..Default::default()
            },
            Finished::Failed(err) => failed(err),
        });
    }

    /// From READY to the end of the process (the network, if any, exists).
    async fn prepared(
        &self,
        task: &Task,
        network: Option<&TaskNetwork>,
        group: Option<&TaskCgroup>,
        stop: &CancellationToken,
        report: &impl Fn(TaskStatus),
    ) -> Finished {
        let plan = match self.plan(task, network.map(|n| n.ip)) {
            Ok(p) => p,
            Err(e) => return Finished::Failed(e),
        };
        let meta = TaskLogMeta {
            task_id: task.id.clone(),
            service_id: task.service_id.clone(),
            service_name: task.service_name.clone(),
            slot: task.slot,
            node_id: self.config.node_id.clone(),
        };
        if let Err(e) = self.logs.write_meta(&meta).await {
            return Finished::Failed(format!("task: create log directory: {e}"));
        }
        let writer = match LogWriter::open(&self.logs.log_path(&task.id)).await {
            Ok(w) => w,
            Err(e) => return Finished::Failed(format!("task: open log: {e}")),
        };
        report(TaskStatus {
            state: TaskState::Ready as i32,
            message: "ready".into(),
            ..Default::default()
        });
        let wait_ms = task.not_before_ms - shoal_api::now_ms();
        if wait_ms > 0 {
            tokio::select! {
                _ = stop.cancelled() => return Finished::Stopped { exit_code: 0, pid: 0 },
                _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
            }
        }
        if stop.is_cancelled() {
            return Finished::Stopped {
                exit_code: 0,
                pid: 0,
            };
        }
        report(TaskStatus {
            state: TaskState::Starting as i32,
            message: "starting".into(),
            ..Default::default()
        });
        if let Some(err) = plan.workdir.as_deref().and_then(workdir_error) {
            return Finished::Failed(err);
        }
        let cgroup_fds = group.map(TaskCgroup::join_fds).unwrap_or_default();
        let mut child = match spawn(&plan, network.map(|n| n.raw_fd()), &cgroup_fds) {
            Ok(c) => c,
            Err(e) => {
                return Finished::Failed(format!("task: start {}: {e}", plan.program.display()))
            }
        };
        let pid = child.id().unwrap_or(0);
        if let Some(out) = child.stdout.take() {
            writer.attach(LogStream::Stdout, out);
        }
        if let Some(err) = child.stderr.take() {
            writer.attach(LogStream::Stderr, err);
        }
        // Traffic must not reach a task before it listens: with published
        // TCP target ports, RUNNING (and so routing) waits until every such
        // port accepts connections, bounded by READINESS_LIMIT. (A UDP
        // socket cannot be probed without the task's protocol.)
        let tcp_ports = tcp_bindings(task, &plan.ports);
        let early = tokio::select! {
            status = child.wait() => Some(match status {
                Ok(status) => Finished::Exited { outcome: exit_outcome(status), pid },
                Err(e) => Finished::Failed(format!("task: wait: {e}")),
            }),
            _ = stop.cancelled() => {
                let status = terminate(&mut child, pid, StopPolicy::for_task(task, self.config.stop_grace)).await;
                Some(Finished::Stopped {
                    exit_code: status.map(|s| exit_outcome(s).exit_code).unwrap_or(0),
                    pid,
                })
            }
            ready = wait_listening(&tcp_ports) => {
                if !ready {
                    tracing::warn!(task = %task.id, "task does not accept connections on its target ports after {READINESS_LIMIT:?}; marking it running anyway");
                }
                None
            }
        };
        if let Some(finished) = early {
            signal_group(pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(LOG_DRAIN, writer.finish()).await;
            return finished;
        }
        let probe = HealthProbe::for_task(task);
        let running = |health: &str| TaskStatus {
            state: TaskState::Running as i32,
            message: "started".into(),
            pid,
            ports: plan.ports.clone(),
            health: health.to_string(),
            ..Default::default()
        };
        report(running(if probe.is_some() { "starting" } else { "" }));
        let netns_fd = network.map(|n| n.raw_fd());
        let health = async {
            match &probe {
                Some(p) => p.watch(&plan, netns_fd, |h| report(running(h))).await,
                None => std::future::pending().await,
            }
        };
        let finished = tokio::select! {
            _ = health => {
                // Unhealthy: out of routing already (the feed withdraws it),
                // now stopped; it ends FAILED and is replaced.
                let status = terminate(&mut child, pid, StopPolicy::for_task(task, self.config.stop_grace)).await;
                Finished::Exited {
                    outcome: ExitOutcome {
                        state: TaskState::Failed,
                        exit_code: status.map(|s| exit_outcome(s).exit_code).unwrap_or(0),
                        err: "task: unhealthy container".into(),
                    },
                    pid,
                }
            }
            status = child.wait() => match status {
                Ok(status) => Finished::Exited { outcome: exit_outcome(status), pid },
                Err(e) => Finished::Failed(format!("task: wait: {e}")),
            },
            _ = stop.cancelled() => {
                let status = terminate(&mut child, pid, StopPolicy::for_task(task, self.config.stop_grace)).await;
                Finished::Stopped {
                    exit_code: status.map(|s| exit_outcome(s).exit_code).unwrap_or(0),
                    pid,
                }
            }
        };
        // Whatever the task left behind in its process group goes with it.
        signal_group(pid, Signal::SIGKILL);
        let _ = tokio::time::timeout(LOG_DRAIN, writer.finish()).await;
        finished
    }
}

/// How a task's run ended.
enum Finished {
    /// Stopped on request (SHUTDOWN).
    Stopped { exit_code: i32, pid: u32 },
    /// The process exited by itself.
    Exited { outcome: ExitOutcome, pid: u32 },
    /// Could not be started; the error text.
    Failed(String),
}
