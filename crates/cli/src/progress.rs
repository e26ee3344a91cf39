//! The convergence display after `create` and `scale`, as Docker draws it:
//! `overall progress: N out of M tasks`, a bar per slot (per node for global
//! services), then a 5-second stability check before `verify: Service X converged`.
//!
//! [`evaluate`] is a pure function of one poll (service, tasks, nodes); [`wait`]
//! polls every 200 ms and draws.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shoal_api::pb::{self, NodeAvailability, NodeState, TaskState};

use crate::client::{Control, DaemonExt};

#[cfg(test)]
mod tests;

/// How long the tasks must stay running before the service counts as converged.
pub const MONITOR: Duration = Duration::from_secs(5);
/// How long to wait for convergence before giving up.
pub const BOUND: Duration = Duration::from_secs(120);
/// Poll interval (Docker's).
const POLL: Duration = Duration::from_millis(200);
/// Width of the progress bar in `=` characters.
const BAR: u64 = 50;

/// Where the progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Redrawn in place on a terminal.
    Terminal,
    /// Only the final state, once converged (stdout is a pipe or file).
    Plain,
    /// Nothing (`-q`): wait silently.
    Quiet,
}

/// One poll's view of the rollout.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Tasks (slots or nodes) running the current spec.
    pub running: u64,
    /// Tasks wanted; `None` while a global service has no tasks yet.
    pub desired: Option<u64>,
    /// `overall progress: ...` followed by one line per slot or node.
    pub lines: Vec<String>,
    /// The newest error of a task running the current spec, if any.
    pub last_error: Option<String>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Every wanted task is running the current spec.
    pub fn converged(&self) -> bool {
        self.desired.is_some_and(|d| self.running == d)
    }
}

/// Docker's 1..=9 scale for the bar (`numberedStates`).
fn numbered(state: TaskState) -> u64 {
    match state {
        TaskState::New => 1,
        TaskState::Pending => 3,
        TaskState::Assigned => 4,
        TaskState::Accepted => 5,
        TaskState::Preparing => 6,
        TaskState::Ready => 7,
        TaskState::Starting => 8,
        TaskState::Running => 9,
        _ => 0,
    }
}

fn state_of(t: &pb::Task) -> TaskState {
    t.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::New)
}

fn desired_of(t: &pb::Task) -> TaskState {
    TaskState::try_from(t.desired_state).unwrap_or(TaskState::Running)
}

fn err_of(t: &pb::Task) -> &str {
    t.status.as_ref().map_or("", |s| s.err.as_str())
}

fn created_of(t: &pb::Task) -> i64 {
    t.meta.as_ref().map_or(0, |m| m.created_at_ms)
}

/// Docker's `truncError`: one line, at most 75 characters.
fn trunc_error(err: &str) -> String {
    crate::format::ellipsis(&err.replace('\n', " "), 75)
}

/// The bar line for one slot or node: `1/3: running   [=====>    ]`.
pub fn task_line(id: &str, task: Option<&pb::Task>) -> String {
    let Some(task) = task else {
        return format!("{id}: ");
    };
    let err = err_of(task);
    if !err.is_empty() {
        return format!("{id}: {}", trunc_error(err));
    }
    let state = state_of(task);
    let name = shoal_api::state::task_state_name(state);
    let n = numbered(state);
    if n == 0 {
        return format!("{id}: {name}");
    }
    let filled = ((n * 100 / 9) / 2).min(BAR) as usize;
    format!(
        "{id}: {name:<9} [{}>{}]",
        "=".repeat(filled),
        " ".repeat(BAR as usize - filled)
    )
}

/// Picks which of two candidate tasks for a slot (or node) to show: one
/// wanted running beats one being stopped, then the further state, then the newer.
fn better<'t>(a: &'t pb::Task, b: &'t pb::Task) -> &'t pb::Task {
    let key = |t: &pb::Task| {
        (
            desired_of(t) as i32 <= TaskState::Running as i32,
            numbered(state_of(t)),
            created_of(t),
        )
    };
    if key(b) > key(a) {
        b
    } else {
        a
    }
}

/// Evaluates one poll.
pub fn evaluate(service: &pb::Service, tasks: &[pb::Task], nodes: &[pb::Node]) -> Snapshot {
    let spec = service.spec.clone().unwrap_or_default();
    let down: std::collections::HashSet<&str> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .is_some_and(|s| s.state == NodeState::Down as i32)
                || n.spec
                    .as_ref()
                    .is_some_and(|s| s.availability == NodeAvailability::Drain as i32)
        })
        .map(|n| n.id.as_str())
        .collect();
    // Only tasks of the current spec count (Docker's `_up-to-date` filter).
    let current: Vec<&pb::Task> = tasks
        .iter()
        .filter(|t| service.spec_version == 0 || t.spec_version == service.spec_version)
        .filter(|t| t.node_id.is_empty() || !down.contains(t.node_id.as_str()))
        .collect();
    let last_error = current
        .iter()
        .filter(|t| !err_of(t).is_empty())
        .max_by_key(|t| t.status.as_ref().map_or(0, |s| s.timestamp_ms))
        .map(|t| err_of(t).to_string());
    let is_running = |t: &pb::Task| {
        desired_of(t) == TaskState::Running
            && state_of(t) == TaskState::Running
            && err_of(t).is_empty()
    };

    let mut snap = Snapshot {
        last_error,
        ..Default::default()
    };
    if spec.mode == pb::ServiceMode::Global as i32 {
        let mut by_node: BTreeMap<&str, &pb::Task> = BTreeMap::new();
        for t in current
            .iter()
            .filter(|t| desired_of(t) as i32 <= TaskState::Running as i32)
        {
            if t.node_id.is_empty() {
                continue;
            }
            by_node
                .entry(t.node_id.as_str())
                .and_modify(|cur| *cur = better(cur, t))
                .or_insert(t);
        }
        if by_node.is_empty() {
            snap.lines
                .push("overall progress: waiting for new tasks".into());
            return snap;
        }
        snap.running = by_node.values().filter(|t| is_running(t)).count() as u64;
        snap.desired = Some(by_node.len() as u64);
        snap.lines.push(overall(snap.running, by_node.len() as u64));
        for (node, t) in &by_node {
            snap.lines
                .push(task_line(shoal_api::id::short(node), Some(t)));
        }
    } else {
        let replicas = spec.replicas;
        let mut by_slot: HashMap<u64, &pb::Task> = HashMap::new();
        for t in current.iter().filter(|t| t.slot >= 1 && t.slot <= replicas) {
            by_slot
                .entry(t.slot)
                .and_modify(|cur| *cur = better(cur, t))
                .or_insert(t);
        }
        snap.running = by_slot.values().filter(|t| is_running(t)).count() as u64;
        snap.desired = Some(replicas);
        snap.lines.push(overall(snap.running, replicas));
        for slot in 1..=replicas {
            let id = format!("{slot}/{replicas}");
            snap.lines.push(task_line(&id, by_slot.get(&slot).copied()));
        }
    }
    snap
}

fn overall(running: u64, desired: u64) -> String {
    format!("overall progress: {running} out of {desired} tasks")
}

/// Polls until the service converges and stays converged for [`MONITOR`],
/// drawing as `display` says; fails after [`BOUND`].
pub async fn wait(
    c: &mut Control,
    service_id: &str,
    name: &str,
    display: Display,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut screen = Screen::default();
    let mut stable_since: Option<Instant> = None;
    let mut failure_seen = false;
    loop {
        let service = c
            .get_service(pb::GetServiceRequest {
                service: service_id.to_string(),
            })
            .await
            .daemon()?
            .service
            .context("the daemon returned no service")?;
        let tasks = c
            .list_tasks(pb::ListTasksRequest {
                services: vec![service.id.clone()],
                nodes: Vec::new(),
                desired_states: Vec::new(),
            })
            .await
            .daemon()?
            .tasks;
        let nodes = c.list_nodes(pb::ListNodesRequest {}).await.daemon()?.nodes;
        let snap = evaluate(&service, &tasks, &nodes);

        let mut lines = snap.lines.clone();
        if snap.converged() {
            let since = *stable_since.get_or_insert_with(Instant::now);
            let elapsed = since.elapsed();
            if elapsed >= MONITOR {
                lines.push(format!("verify: Service {name} converged"));
                match display {
                    Display::Terminal => screen.draw(&lines)?,
                    Display::Plain => {
                        let mut out = std::io::stdout().lock();
                        for l in &lines {
                            writeln!(out, "{l}")?;
                        }
                    }
                    Display::Quiet => {}
                }
                return Ok(());
            }
            let left = (MONITOR - elapsed).as_secs_f64().ceil() as u64;
            lines.push(format!(
                "verify: Waiting {left} seconds to verify that tasks are stable..."
            ));
        } else {
            if stable_since.take().is_some() {
                failure_seen = true;
            }
            if failure_seen {
                lines.push("verify: Detected task failure".into());
            }
        }
        if display == Display::Terminal {
            screen.draw(&lines)?;
        }
        if started.elapsed() >= BOUND {
            let bound = humantime::format_duration(BOUND);
            match snap.last_error {
                Some(e) => bail!("service {name} did not converge within {bound}: {e}"),
                None => bail!(
                    "service {name} did not converge within {bound}: {}",
                    snap.lines[0]
                ),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Lines drawn on a terminal, redrawn in place.
#[derive(Debug, Default)]
struct Screen {
    /// How many lines the previous draw left above the cursor.
    drawn: usize,
}

// === impl Screen ===

impl Screen {
    fn draw(&mut self, lines: &[String]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            write!(out, "\x1b[{}A", self.drawn)?;
        }
        for l in lines {
            writeln!(out, "\x1b[2K{l}")?;
        }
        if self.drawn > lines.len() {
            let extra = self.drawn - lines.len();
            for _ in 0..extra {
                writeln!(out, "\x1b[2K")?;
            }
            write!(out, "\x1b[{extra}A")?;
        }
        self.drawn = lines.len();
        out.flush()
    }
}
