//! The convergence display after `create`, `scale`, `update` and `rollback`,
//! as Docker draws it: `overall progress: N out of M tasks` (`rolling back
//! update: ...` during a rollback), a bar per slot (per node for global
//! services), then a stability check for the service's update monitoring
//! period (5s by default) before `verify: Service X converged`. Jobs show
//! Docker's job display instead: `job progress: N out of M complete`, the
//! `active tasks` line for a replicated job, a bar per slot or node, and
//! `job complete` once every task of the current iteration completed.
//!
//! [`evaluate`] is a pure function of one poll (service, tasks, nodes),
//! [`Tracker`] follows the service's update status across polls; [`wait`]
//! polls every 200 ms and draws.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shoal_api::pb::{self, NodeAvailability, NodeState, TaskState, UpdateState};

use crate::client::{Control, DaemonExt};

#[cfg(test)]
mod tests;

/// How long the tasks must stay running before the service counts as
/// converged, when the spec has no update monitoring period.
pub const MONITOR: Duration = Duration::from_secs(5);
/// How long to wait for convergence before giving up (for updates and
/// rollbacks: how long without any progress).
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

// === impl Display ===

impl Display {
    /// Quiet with `-q`, else redrawn on a terminal, else plain.
    pub fn pick(quiet: bool) -> Display {
        if quiet {
            Display::Quiet
        } else if std::io::stdout().is_terminal() {
            Display::Terminal
        } else {
            Display::Plain
        }
    }

    /// Prints `lines` once (the final state, or the state at a failure).
    fn show(self, screen: &mut Screen, lines: &[String]) -> std::io::Result<()> {
        match self {
            Display::Terminal => screen.draw(lines),
            Display::Plain => {
                let mut out = std::io::stdout().lock();
                for l in lines {
                    writeln!(out, "{l}")?;
                }
                Ok(())
            }
            Display::Quiet => Ok(()),
        }
    }
}

/// What the wait follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `create` and `scale`: tasks only; the update status is not consulted.
    Deploy,
    /// `service update`: also waits for the rolling update to finish, fails
    /// when it pauses or is rolled back.
    Update,
    /// `service rollback` / `update --rollback`: waits for the rollback.
    Rollback,
}

/// Follows a service's `update_status` across polls.
#[derive(Debug)]
pub struct Tracker {
    kind: Kind,
    /// When the update was requested (Unix ms): a rollback that started
    /// before it belongs to an earlier update.
    since_ms: i64,
    /// The service is being (or was) rolled back.
    rolling_back: bool,
    /// `rollback: <message>`, shown above the overall progress.
    rollback_line: Option<String>,
    /// The message of the rollback an update ran into.
    rolled_back: Option<String>,
}

// === impl Tracker ===

impl Tracker {
    /// A tracker for a request sent at `since_ms`.
    pub fn new(kind: Kind, since_ms: i64) -> Tracker {
        Tracker {
            kind,
            since_ms,
            rolling_back: kind == Kind::Rollback,
            rollback_line: None,
            rolled_back: None,
        }
    }

    /// Whether the overall line reads `rolling back update: ...`.
    pub fn rolling_back(&self) -> bool {
        self.rolling_back
    }

    /// The `rollback: ...` line, once a rollback was seen.
    pub fn rollback_line(&self) -> Option<&str> {
        self.rollback_line.as_deref()
    }

    /// Takes one poll's status. `Ok(true)` when the update (if any) is no
    /// longer in progress, so converged tasks mean done; an error when it paused.
    pub fn observe(&mut self, status: Option<&pb::UpdateStatus>) -> anyhow::Result<bool> {
        if self.kind == Kind::Deploy {
            return Ok(true);
        }
        let Some(status) = status else {
            return Ok(true);
        };
        let msg = status.message.as_str();
        match UpdateState::try_from(status.state).unwrap_or(UpdateState::Unknown) {
            UpdateState::Updating => Ok(false),
            UpdateState::Paused => bail!("service update paused: {msg}"),
            UpdateState::RollbackPaused => bail!("service rollback paused: {msg}"),
            UpdateState::RollbackStarted => {
                self.saw_rollback(msg);
                Ok(false)
            }
            UpdateState::RollbackCompleted => {
                let ours = self.kind == Kind::Rollback
                    || self.rollback_line.is_some()
                    || status.started_at_ms >= self.since_ms - 1_000;
                if ours {
                    // A requested rollback is explained by why it started.
                    let msg = if self.kind == Kind::Rollback { "" } else { msg };
                    self.saw_rollback(msg);
                }
                Ok(true)
            }
            UpdateState::Completed | UpdateState::Unknown => Ok(true),
        }
    }

    fn saw_rollback(&mut self, msg: &str) {
        self.rolling_back = true;
        if self.rollback_line.is_none() {
            let msg = match msg {
                "" if self.kind == Kind::Rollback => "manually requested rollback",
                "" => "update rolled back",
                m => m,
            };
            self.rollback_line = Some(format!("rollback: {msg}"));
            if self.kind == Kind::Update {
                self.rolled_back = Some(msg.to_string());
            }
        }
    }

    /// The outcome once the tasks converged: an update that was rolled back failed.
    pub fn finish(&self) -> anyhow::Result<()> {
        match &self.rolled_back {
            Some(msg) => bail!("service update rolled back: {msg}"),
            None => Ok(()),
        }
    }
}

/// How long converged tasks must stay running: the spec's update (or, while
/// rolling back, rollback) monitoring period, [`MONITOR`] when unset.
pub fn monitor_period(spec: Option<&pb::ServiceSpec>, rolling_back: bool) -> Duration {
    let config = spec.and_then(|s| {
        if rolling_back {
            s.rollback_config.as_ref()
        } else {
            s.update_config.as_ref()
        }
    });
    match config.map_or(0, |c| c.monitor_ms) {
        0 => MONITOR,
        ms => Duration::from_millis(ms),
    }
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

/// Docker's progress bar: `[====>    ]`, 50 characters wide at `current == total`.
fn bar(current: u64, total: u64) -> String {
    let filled = (current * 100)
        .checked_div(total)
        .map_or(BAR, |pct| (pct / 2).min(BAR)) as usize;
    format!(
        "[{}>{}]",
        "=".repeat(filled),
        " ".repeat(BAR as usize - filled)
    )
}

/// A job task's line: like [`task_line`], on Docker's scale of 10 where
/// `complete` fills the bar.
pub fn job_task_line(id: &str, task: Option<&pb::Task>) -> String {
    let Some(task) = task else {
        return format!("{id}: ");
    };
    let err = err_of(task);
    if !err.is_empty() {
        return format!("{id}: {}", trunc_error(err));
    }
    let state = state_of(task);
    let name = shoal_api::state::task_state_name(state);
    let n = match state {
        TaskState::Complete => 10,
        s => numbered(s),
    };
    format!("{id}: {name:<9} {}", bar(n, 10))
}

/// Docker's order for picking one task of a slot or node in a job: the one
/// furthest behind (a retry running beats the failure it replaces).
fn job_rank(t: &pb::Task) -> u64 {
    match state_of(t) {
        TaskState::Complete => 10,
        TaskState::Shutdown => 11,
        TaskState::Failed => 12,
        TaskState::Rejected => 13,
        s if numbered(s) == 0 => 14,
        s => numbered(s),
    }
}

/// One poll of a job (replicated-job or global-job): only tasks of the
/// current iteration count; converged once they all completed.
pub fn evaluate_job(service: &pb::Service, tasks: &[pb::Task]) -> Snapshot {
    let spec = service.spec.clone().unwrap_or_default();
    let iteration = service.job_status.as_ref().map_or(0, |j| j.iteration);
    let current: Vec<&pb::Task> = tasks
        .iter()
        .filter(|t| t.job_iteration == iteration)
        .collect();
    let last_error = current
        .iter()
        .filter(|t| !err_of(t).is_empty())
        .max_by_key(|t| t.status.as_ref().map_or(0, |s| s.timestamp_ms))
        .map(|t| err_of(t).to_string());
    let mut snap = Snapshot {
        last_error,
        ..Default::default()
    };
    let mut by_key: BTreeMap<(u64, &str), &pb::Task> = BTreeMap::new();
    let global = spec.mode == pb::ServiceMode::GlobalJob as i32;
    for t in &current {
        if global && t.node_id.is_empty() {
            continue;
        }
        let key = if global {
            (0, t.node_id.as_str())
        } else {
            (t.slot, "")
        };
        by_key
            .entry(key)
            .and_modify(|cur| {
                if job_rank(t) < job_rank(cur) {
                    *cur = t;
                }
            })
            .or_insert(t);
    }
    let complete = by_key
        .values()
        .filter(|t| state_of(t) == TaskState::Complete)
        .count() as u64;
    if global {
        if by_key.is_empty() {
            snap.lines.push("job progress: waiting for tasks".into());
            return snap;
        }
        let total = by_key.len() as u64;
        snap.lines.push(job_overall(complete, total));
        for ((_, node), t) in &by_key {
            snap.lines
                .push(job_task_line(shoal_api::id::short(node), Some(t)));
        }
        snap.running = complete;
        snap.desired = Some(total);
        return snap;
    }
    let total = spec.replicas;
    let concurrent = match spec.max_concurrent {
        0 => total,
        n => n,
    };
    let active = by_key.values().filter(|t| job_rank(t) < 10).count() as u64;
    snap.lines.push(job_overall(complete, total));
    let room = total.saturating_sub(complete).min(concurrent);
    let w = concurrent.to_string().len();
    snap.lines.push(format!(
        "active tasks: {active:>w$} out of {room:>w$} tasks"
    ));
    if total <= 20 {
        for slot in 1..=total {
            let id = format!("{slot}/{total}");
            snap.lines
                .push(job_task_line(&id, by_key.get(&(slot, "")).copied()));
        }
    }
    snap.running = complete;
    snap.desired = Some(total);
    snap
}

/// `job progress:  3 out of 6 complete [=====>    ]`.
fn job_overall(complete: u64, total: u64) -> String {
    let w = total.to_string().len();
    format!(
        "job progress: {complete:>w$} out of {total} complete {}",
        bar(complete, total)
    )
}

/// Evaluates one poll; during a rollback the overall line reads
/// `overall progress: rolling back update: N out of M tasks`.
pub fn evaluate(
    service: &pb::Service,
    tasks: &[pb::Task],
    nodes: &[pb::Node],
    rolling_back: bool,
) -> Snapshot {
    let spec = service.spec.clone().unwrap_or_default();
    if crate::opts::is_job(spec.mode) {
        return evaluate_job(service, tasks);
    }
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
        snap.lines
            .push(overall(snap.running, by_node.len() as u64, rolling_back));
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
        snap.lines
            .push(overall(snap.running, replicas, rolling_back));
        for slot in 1..=replicas {
            let id = format!("{slot}/{replicas}");
            snap.lines.push(task_line(&id, by_slot.get(&slot).copied()));
        }
    }
    snap
}

fn overall(running: u64, desired: u64, rolling_back: bool) -> String {
    if rolling_back {
        format!("overall progress: rolling back update: {running} out of {desired} tasks")
    } else {
        format!("overall progress: {running} out of {desired} tasks")
    }
}

/// Polls until the service converges and stays converged for its monitoring
/// period, drawing as `display` says. Fails after [`BOUND`] (for updates and
/// rollbacks, [`BOUND`] without progress), when the update pauses, or when an
/// update was rolled back.
pub async fn wait(
    c: &mut Control,
    service_id: &str,
    name: &str,
    kind: Kind,
    display: Display,
) -> anyhow::Result<()> {
    let mut started = Instant::now();
    let mut tracker = Tracker::new(kind, shoal_api::now_ms());
    let mut screen = Screen::default();
    let mut stable_since: Option<Instant> = None;
    let mut failure_seen = false;
    let mut last_progress = None;
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
        let settled = tracker.observe(service.update_status.as_ref());
        let snap = evaluate(&service, &tasks, &nodes, tracker.rolling_back());

        let mut lines: Vec<String> = tracker
            .rollback_line()
            .map(String::from)
            .into_iter()
            .collect();
        lines.extend(snap.lines.iter().cloned());
        let settled = match settled {
            Ok(settled) => settled,
            Err(e) => {
                display.show(&mut screen, &lines)?;
                return Err(e);
            }
        };
        if kind != Kind::Deploy {
            let progress = (
                snap.running,
                service.update_status.as_ref().map(|s| s.state),
                tracker.rolling_back(),
            );
            if last_progress.as_ref() != Some(&progress) {
                last_progress = Some(progress);
                started = Instant::now();
            }
        }
        let monitor = monitor_period(service.spec.as_ref(), tracker.rolling_back());
        // A job that finished stays finished: no stability check (Docker).
        if snap.converged() && service.job_status.is_some() {
            lines.push("job complete".into());
            display.show(&mut screen, &lines)?;
            return Ok(());
        }
        if snap.converged() && settled {
            let since = *stable_since.get_or_insert_with(Instant::now);
            let elapsed = since.elapsed();
            if elapsed >= monitor {
                lines.push(format!("verify: Service {name} converged"));
                display.show(&mut screen, &lines)?;
                return tracker.finish();
            }
            let left = (monitor - elapsed).as_secs_f64().ceil() as u64;
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
            let what = if kind == Kind::Deploy {
                format!("did not converge within {bound}")
            } else {
                format!("made no progress for {bound}")
            };
            match snap.last_error {
                Some(e) => bail!("service {name} {what}: {e}"),
                None => bail!("service {name} {what}: {}", snap.lines[0]),
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
