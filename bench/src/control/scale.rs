//! One real manager against many simulated agents ([`super::sim`]): join,
//! sessions, convergence of N tasks to RUNNING, and the reschedule after a
//! tenth of the agents vanish, with the manager's CPU time and memory read
//! from `/proc` of its `shoald`. Optionally a `perf` profile of the manager
//! while it converges.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shoal_testkit::underlay::node_ip;
use shoal_testkit::{MultiCluster, NetNs, Node};

use super::cleanup;
use super::report::{self, Row};
use super::sim::Fleet;
use crate::procfs;
use crate::procs::Procs;

/// Replicas per service: `tasks / REPLICAS_PER_SERVICE` services are created.
const REPLICAS_PER_SERVICE: usize = 100;
/// Agents joining at once.
const JOIN_PARALLEL: usize = 16;
/// The dispatcher's default heartbeat period (Swarm's 5 s); Down after 3 missed.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long the manager's CPU at rest is sampled.
const REST_WINDOW: Duration = Duration::from_secs(5);
/// At most this much of the convergence is profiled.
pub const PERF_WINDOW: Duration = Duration::from_secs(40);

/// A cluster size: simulated agents and tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub agents: usize,
    pub tasks: usize,
}

impl std::str::FromStr for Size {
    type Err = String;

    /// `AGENTSxTASKS`, e.g. `500x5000`.
    fn from_str(s: &str) -> Result<Size, String> {
        let bad = || format!("invalid size {s:?}: use AGENTSxTASKS, e.g. 500x5000");
        let (a, t) = s.split_once('x').ok_or_else(bad)?;
        let size = Size {
            agents: a.trim().parse().map_err(|_| bad())?,
            tasks: t.trim().parse().map_err(|_| bad())?,
        };
        if size.agents == 0 || size.tasks == 0 {
            return Err(bad());
        }
        Ok(size)
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} agents / {} tasks", self.agents, self.tasks)
    }
}

/// How one size is run.
pub struct ScaleOpts {
    pub converge_limit: Duration,
    pub feed: bool,
    /// Where to write `perf.data` when this size is profiled.
    pub profile: Option<std::path::PathBuf>,
}

/// What one size measured.
pub struct Outcome {
    pub rows: Vec<Row>,
    /// False when the tasks did not all run within the limit.
    pub converged: bool,
    pub profile: Option<String>,
}

fn cpu_secs(pid: u32, clk: u64) -> f64 {
    procfs::cpu_ticks(pid) as f64 / clk as f64
}

/// CPU seconds of this process alone (the simulated agents; the daemons
/// are children, not threads).
fn own_cpu_secs(clk: u64) -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| procfs::parse_stat_ticks(&s))
        .unwrap_or(0) as f64
        / clk as f64
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// Polls `done` every 50 ms until true or `within` after `from`; the
/// elapsed time from `from`, or `None` on timeout.
fn until(from: Instant, within: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let deadline = from + within;
    loop {
        if done() {
            return Some(from.elapsed());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs one size on a fresh one-manager cluster.
pub fn run(size: Size, opts: &ScaleOpts) -> anyhow::Result<Outcome> {
    let clk = procfs::clock_ticks_per_sec();
    let c = MultiCluster::build("ctlscale", 1, 0, &[], &[]);
    cleanup::register_cluster(&c);
    let m = c.node(0);
    let pid = m.pid().context("manager pid")?;
    // The manager's own agent takes no tasks: every task goes to a simulated one.
    m.shoal_ok(&["node", "update", "--availability", "drain", "node-1"]);
    let ns = NetNs::new("simagents");
    cleanup::register_netns(&ns.name);
    let agents_ip = node_ip(2);
    let _port = c.underlay.attach(&ns, agents_ip);
    let token = m.shoal_ok(&["swarm", "join-token", "-q", "worker"]);
    let manager = format!("{}:{}", node_ip(1), shoal_testkit::node::SWARM_PORT);
    let label = size.to_string();
    let mut rows = Vec::new();
    let mut fleet = Fleet::new(&ns.name, 2, &agents_ip.to_string())?;

    let t = Instant::now();
    fleet.join(&manager, token.trim(), size.agents, JOIN_PARALLEL)?;
    let joined = t.elapsed();
    eprintln!("{label}: joined in {joined:.2?}");

    let t = Instant::now();
    fleet.start_sessions(&manager, opts.feed)?;
    let sessions = until(t, Duration::from_secs(180), || {
        fleet.stats.sessions_open.load(Ordering::Relaxed) >= size.agents
    })
    .with_context(|| {
        format!(
            "{label}: sessions not all open within 180 s ({} open; last error: {:?})",
            fleet.stats.sessions_open.load(Ordering::Relaxed),
            fleet
                .stats
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default()
        )
    })?;
    eprintln!(
        "{label}: {} sessions open after {sessions:.2?}",
        size.agents
    );
    rows.push(report::value_row(
        &format!("{label}: join, then all sessions open"),
        format!(
            "{} + {}",
            report::secs(joined.as_secs_f64()),
            report::secs(sessions.as_secs_f64())
        ),
        &format!(
            "{JOIN_PARALLEL} joins at a time (CA pinned from the token, own key, \
             `IssueNodeCertificate`), then one mTLS session per agent until each got its first \
             assignment set"
        ),
    ));

    let idle_rss = procfs::rss_kib(pid);
    let cpu0 = cpu_secs(pid, clk);
    let sim0 = own_cpu_secs(clk);
    fleet.take_status_calls();
    let statuses0 = fleet.stats.statuses.load(Ordering::Relaxed);
    let mut perf = Procs::default();
    if let Some(dir) = &opts.profile {
        start_perf(&mut perf, pid, dir)?;
    }
    let services = size.tasks.div_ceil(REPLICAS_PER_SERVICE);
    let t0 = Instant::now();
    let deadline = t0 + opts.converge_limit;
    let mut refused = Vec::new();
    let mut created_tasks = 0;
    for s in 0..services {
        let replicas = REPLICAS_PER_SERVICE.min(size.tasks - s * REPLICAS_PER_SERVICE);
        if !create_service(m, &format!("scale{s:03}"), replicas, deadline, &mut refused)? {
            break;
        }
        created_tasks += replicas;
    }
    let created = t0.elapsed();
    let target = size.tasks as i64;
    let mut last_report = Instant::now();
    let mut perf = Some(perf);
    let converge = until(t0, opts.converge_limit, || {
        if t0.elapsed() > PERF_WINDOW {
            // Stops perf: enough samples, and `perf report` stays quick.
            perf.take();
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("{label}: {} / {} running", fleet.running(), size.tasks);
            last_report = Instant::now();
        }
        fleet.running() >= target
    });
    let window = t0.elapsed().as_secs_f64();
    let cpu_converge = cpu_secs(pid, clk) - cpu0;
    let sim_converge = own_cpu_secs(clk) - sim0;
    let status_calls = fleet.take_status_calls();
    let statuses = fleet.stats.statuses.load(Ordering::Relaxed) - statuses0;
    let running = fleet.running();
    let feed_per_agent = fleet.stats.feed_messages.load(Ordering::Relaxed) / size.agents;
    drop(perf);
    let profile = match &opts.profile {
        Some(dir) => {
            let t = Instant::now();
            let summary = perf_summary(dir)?;
            eprintln!("{label}: perf report took {:.1?}", t.elapsed());
            Some(summary)
        }
        None => None,
    };
    let rss = procfs::rss_kib(pid);
    let hwm = procfs::status_kib(pid, "VmHWM:").unwrap_or(0);
    let errors = fleet.stats.errors.load(Ordering::Relaxed);
    let reopened = fleet
        .stats
        .session_opens
        .load(Ordering::Relaxed)
        .saturating_sub(size.agents);
    let health = format!(
        "{feed_per_agent} feed messages per agent, {errors} failed dispatcher calls, \
         {reopened} sessions reopened{}",
        fleet
            .stats
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .map(|e| format!(" (last: {e})"))
            .unwrap_or_default()
    );
    match converge {
        Some(d) => {
            eprintln!("{label}: all running after {d:.2?} ({health})");
            rows.push(report::value_row(
                &format!("{label}: converge, create → all RUNNING"),
                report::secs(d.as_secs_f64()),
                &format!(
                    "{services} × `service create -d --replicas {REPLICAS_PER_SERVICE}` (took {}{}), \
                     until the dispatcher accepted every task's RUNNING; {health}",
                    report::secs(created.as_secs_f64()),
                    refusals(&refused)
                ),
            ));
        }
        None => {
            eprintln!(
                "{label}: only {running} / {} running after {:?}",
                size.tasks, opts.converge_limit
            );
            rows.push(report::value_row(
                &format!("{label}: converge, create → all RUNNING"),
                format!("> {}", report::secs(opts.converge_limit.as_secs_f64())),
                &format!(
                    "**not converged**: {running} of {} RUNNING when the limit ran out \
                     ({created_tasks} tasks' services created in {}{}); {health}",
                    size.tasks,
                    report::secs(created.as_secs_f64()),
                    refusals(&refused)
                ),
            ));
        }
    }
    rows.push(report::value_row(
        &format!("{label}: manager CPU while converging"),
        format!("{cpu_converge:.1} CPU-s"),
        &format!(
            "utime+stime of the manager's `shoald` over those {}: {:.0}% of one core \
             (the simulated agents used {sim_converge:.1} CPU-s)",
            report::secs(window),
            100.0 * cpu_converge / window.max(1e-3)
        ),
    ));
    let mut status_row = report::latency_row(
        &format!("{label}: UpdateTaskStatus call while converging"),
        &status_calls,
        &format!(
            "each agent's batched status report (accepted calls); {statuses} updates accepted, \
             {:.0}/s (the manager writes what arrives together in one Raft write)",
            statuses as f64 / window.max(1e-3)
        ),
    );
    status_row.median = String::new();
    rows.push(status_row);
    rows.push(report::value_row(
        &format!("{label}: manager memory"),
        format!("{} RSS", mib(rss)),
        &format!(
            "VmRSS after converging (idle with the agents joined: {}; peak VmHWM {})",
            mib(idle_rss),
            mib(hwm)
        ),
    ));

    if converge.is_some() {
        let c0 = cpu_secs(pid, clk);
        std::thread::sleep(REST_WINDOW);
        let rest = (cpu_secs(pid, clk) - c0) / REST_WINDOW.as_secs_f64();
        rows.push(report::value_row(
            &format!("{label}: manager CPU at rest"),
            format!("{:.0}% of a core", 100.0 * rest),
            &format!(
                "over {} s after converging, nothing changing but {} agents heartbeating every {} s",
                REST_WINDOW.as_secs(),
                size.agents,
                HEARTBEAT.as_secs()
            ),
        ));
    }

    if converge.is_some() {
        let k = (size.agents / 10).max(1);
        fleet.mark();
        let cpu1 = cpu_secs(pid, clk);
        let tv = Instant::now();
        let lost = fleet.vanish(k);
        let limit = HEARTBEAT * 3 + opts.converge_limit;
        let done = until(tv, limit, || fleet.running() >= target);
        let cpu_resched = cpu_secs(pid, clk) - cpu1;
        let first = fleet.first_start().map(|f| f.saturating_duration_since(tv));
        let fmt = |d: Option<Duration>| d.map_or("-".into(), |d| report::secs(d.as_secs_f64()));
        eprintln!(
            "{label}: {k} agents vanished with {lost} tasks: first replacement started after {}, all running after {}",
            fmt(first),
            fmt(done)
        );
        rows.push(report::value_row(
            &format!("{label}: {k} agents vanish → all their tasks RUNNING elsewhere"),
            done.map_or(format!("> {}", report::secs(limit.as_secs_f64())), |d| {
                report::secs(d.as_secs_f64())
            }),
            &format!(
                "{k} agents drop their connections and stop heartbeating while holding {lost} \
                 tasks; first replacement started after {} (Down after 3 missed {}s heartbeats); \
                 manager CPU {cpu_resched:.1} CPU-s",
                fmt(first),
                HEARTBEAT.as_secs()
            ),
        ));
    }
    drop(fleet);
    drop(c);
    drop(ns);
    cleanup::clear();
    Ok(Outcome {
        rows,
        converged: converge.is_some(),
        profile,
    })
}

/// `, N refused: "<first error>"` when creates were refused and retried.
fn refusals(refused: &[String]) -> String {
    match refused.first() {
        None => String::new(),
        Some(first) => format!(
            "; {} create calls refused and retried, first: \"{first}\"",
            refused.len()
        ),
    }
}

/// `service create -d`, retried (up to 20 times, 1 s apart) when the
/// manager refuses it; every refusal is added to `refused`. A retry that
/// finds the service already there counts as done (the refused write did
/// commit after all). False when `deadline` passed first.
fn create_service(
    m: &Node,
    name: &str,
    replicas: usize,
    deadline: Instant,
    refused: &mut Vec<String>,
) -> anyhow::Result<bool> {
    for _ in 0..20 {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        let out = m.shoal(&[
            "service",
            "create",
            "-d",
            "-q",
            "--name",
            name,
            "--replicas",
            &replicas.to_string(),
            "shoal/echo",
        ]);
        if out.status.success() {
            return Ok(true);
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !refused.is_empty() && err.contains(&format!("service {name} already exists")) {
            return Ok(true);
        }
        eprintln!("service create {name} refused: {err}");
        refused.push(err);
        std::thread::sleep(Duration::from_secs(1));
    }
    anyhow::bail!(
        "service create {name} refused 20 times; last: {:?}",
        refused.last()
    )
}

/// `perf record` (DWARF call graphs, 49 Hz) of the manager until stopped.
fn start_perf(procs: &mut Procs, pid: u32, dir: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("perf");
    cmd.args([
        "record",
        "-F",
        "49",
        "--call-graph",
        "dwarf,16384",
        "-p",
        &pid.to_string(),
        "-o",
    ])
    .arg(dir.join("perf.data"));
    procs.spawn("perf", cmd, dir)?;
    Ok(())
}

/// The manager's Shoal functions (and the libraries they spend in) by
/// inclusive share of samples, from `perf report --children`.
fn perf_summary(dir: &Path) -> anyhow::Result<String> {
    let out = Command::new("perf")
        .args([
            "report",
            "--children",
            "--stdio",
            "--sort",
            "symbol",
            "-g",
            "none",
            "--percent-limit",
            "1.5",
            // Inline frames come from addr2line and make the report take minutes.
            "--no-inline",
            "-i",
        ])
        .arg(dir.join("perf.data"))
        .output()
        .context("run perf report")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = vec!["children  self  function".to_string()];
    lines.extend(
        text.lines()
            .filter_map(perf_line)
            .filter(|(_, _, f)| {
                ["shoal_", "prost", "redb", "openraft", "tonic"]
                    .iter()
                    .any(|k| f.contains(k))
            })
            .take(35)
            .map(|(c, s, f)| format!("{c:>7}  {s:>6}  {f}")),
    );
    Ok(lines.join("\n"))
}

/// `(children, self, function)` from one `perf report --children` line.
fn perf_line(line: &str) -> Option<(&str, &str, &str)> {
    let mut parts = line.split_whitespace();
    let children = parts.next().filter(|p| p.ends_with('%'))?;
    let own = parts.next().filter(|p| p.ends_with('%'))?;
    let (_, symbol) = line.split_once("] ")?;
    let symbol = symbol.trim_end().trim_end_matches(['-', ' ']);
    Some((children, own, symbol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(
            "500x5000".parse::<Size>(),
            Ok(Size {
                agents: 500,
                tasks: 5000
            })
        );
        assert!("500".parse::<Size>().is_err());
        assert!("0x10".parse::<Size>().is_err());
    }

    #[test]
    fn perf_lines_lose_their_padding() {
        let l = "    52.78%     0.00%  [.] shoal_manager::dispatcher::assigned_tasks (inlined)        -      -   ";
        assert_eq!(
            perf_line(l),
            Some((
                "52.78%",
                "0.00%",
                "shoal_manager::dispatcher::assigned_tasks (inlined)"
            ))
        );
        assert_eq!(perf_line("# Overhead"), None);
    }
}
