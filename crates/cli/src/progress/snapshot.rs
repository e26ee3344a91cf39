//! One poll's view of a rollout, a pure function of the service, its tasks
//! and the nodes: how many tasks run the current spec, and the lines Docker
//! draws for it (`overall progress: ...` or `job progress: ...`, a bar per
//! slot or node), and what of it Docker prints where stdout is not a
//! terminal ([`Plain`]: only what has no bar).

use std::collections::{BTreeMap, HashMap};

use shoal_api::pb::{self, NodeAvailability, NodeState, TaskState};

/// Width of the progress bar in `=` characters.
const BAR: u64 = 50;
/// Docker draws no row per slot or node beyond this many (`maxProgressBars`).
const MAX_ROWS: u64 = 20;

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
    /// The lines of this poll that carry no bar.
    pub plain: Plain,
}

/// What one poll shows where stdout is not a terminal. Docker's
/// `jsonmessage` prints a progress message there only when it has no bar:
/// so the overall line of a service, `active tasks`, the waiting lines and
/// task errors, never task states or `job progress`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plain {
    /// A job: no first overall line, and no quiet time once converged.
    pub job: bool,
    /// `overall progress: waiting for new tasks` (or a global job's `job
    /// progress: waiting for tasks`): nothing else is known yet.
    pub waiting: Option<String>,
    /// The overall line Docker lays out first, with nothing running yet.
    pub first: Option<String>,
    /// The rows (`1/3`) Docker lays out first, empty: replicated services
    /// and jobs of at most [`MAX_ROWS`] slots.
    pub rows: Vec<String>,
    /// `ID: ERROR` of each row whose task failed (none beyond [`MAX_ROWS`]).
    pub errors: Vec<String>,
    /// A service's `overall progress: N out of M tasks`.
    pub overall: Option<String>,
    /// A replicated job's `active tasks: N out of M tasks`.
    pub active: Option<String>,
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

/// `ID: ERROR` for a row whose task failed; `None` when it did not, or
/// when there are more rows than Docker draws.
fn error_row(id: &str, task: Option<&pb::Task>, rows: u64) -> Option<String> {
    let err = err_of(task?);
    (rows <= MAX_ROWS && !err.is_empty()).then(|| format!("{id}: {}", trunc_error(err)))
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
    snap.plain.job = true;
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
            let waiting = "job progress: waiting for tasks".to_string();
            snap.lines.push(waiting.clone());
            snap.plain.waiting = Some(waiting);
            return snap;
        }
        let total = by_key.len() as u64;
        snap.lines.push(job_overall(complete, total));
        for ((_, node), t) in &by_key {
            let id = shoal_api::id::short(node);
            snap.lines.push(job_task_line(id, Some(t)));
            snap.plain.errors.extend(error_row(id, Some(t), total));
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
    let active = format!("active tasks: {active:>w$} out of {room:>w$} tasks");
    snap.lines.push(active.clone());
    snap.plain.active = Some(active);
    if total <= MAX_ROWS {
        for slot in 1..=total {
            let id = format!("{slot}/{total}");
            let task = by_key.get(&(slot, "")).copied();
            snap.lines.push(job_task_line(&id, task));
            snap.plain.errors.extend(error_row(&id, task, total));
            snap.plain.rows.push(id);
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
            let waiting = "overall progress: waiting for new tasks".to_string();
            snap.lines.push(waiting.clone());
            snap.plain.waiting = Some(waiting);
            return snap;
        }
        let nodes = by_node.len() as u64;
        snap.running = by_node.values().filter(|t| is_running(t)).count() as u64;
        snap.desired = Some(nodes);
        let line = overall(snap.running, nodes, rolling_back);
        snap.lines.push(line.clone());
        snap.plain.first = Some(overall(0, nodes, rolling_back));
        snap.plain.overall = Some(line);
        for (node, t) in &by_node {
            let id = shoal_api::id::short(node);
            snap.lines.push(task_line(id, Some(t)));
            snap.plain.errors.extend(error_row(id, Some(t), nodes));
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
        let line = overall(snap.running, replicas, rolling_back);
        snap.lines.push(line.clone());
        snap.plain.first = Some(overall(0, replicas, rolling_back));
        snap.plain.overall = Some(line);
        for slot in 1..=replicas {
            let id = format!("{slot}/{replicas}");
            let task = by_slot.get(&slot).copied();
            snap.lines.push(task_line(&id, task));
            snap.plain.errors.extend(error_row(&id, task, replicas));
            if replicas <= MAX_ROWS {
                snap.plain.rows.push(id);
            }
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
