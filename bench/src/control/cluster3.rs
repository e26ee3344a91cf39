//! Figures on a real 3-node cluster (1 manager + 2 workers, each `shoald` in
//! its own network namespace on one underlay switch, joined through the CLI):
//! a 100-replica service from `service create` until every replica is
//! running and routed on every node, and the discovery feed's propagation
//! time over a series of one-replica scale changes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shoal_testkit::MultiCluster;

use super::report::{self, Row};
use super::routes::{NodeTable, TableWatch};
use crate::procfs;

const CREATE_PORT: u16 = 8100;
const FEED_PORT: u16 = 8200;
const CREATE_REPLICAS: usize = 100;
/// Replica count the feed series oscillates from (one more, one less).
const FEED_BASE: usize = 2;

fn netns(c: &MultiCluster) -> Vec<String> {
    c.nodes.iter().map(|n| n.ns.name.clone()).collect()
}

/// The latest instant any node's routed set changed.
fn last_routed(tables: &[NodeTable]) -> Instant {
    tables
        .iter()
        .map(|t| t.routed_at)
        .max()
        .expect("at least one node")
}

fn describe(tables: &[NodeTable]) -> String {
    tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "node-{}: {} routed, {} listed{}",
                i + 1,
                t.routed.len(),
                t.all.len(),
                t.error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Task processes each daemon has now (its process tree minus itself).
fn task_processes(c: &MultiCluster) -> Vec<usize> {
    c.nodes
        .iter()
        .map(|n| {
            n.pid()
                .map_or(0, |p| procfs::tree(p).len().saturating_sub(1))
        })
        .collect()
}

/// Waits until no daemon has more child processes than at `baseline`.
fn wait_tasks_gone(c: &MultiCluster, baseline: &[usize], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let now = task_processes(c);
        if now.iter().zip(baseline).all(|(n, b)| n <= b) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "task processes still running after {within:?}: {now:?} (baseline {baseline:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `service create --replicas 100` until every node routes all 100, `runs`
/// times (`service rm` and every task process gone in between).
pub fn create_100(c: &MultiCluster, runs: u32) -> anyhow::Result<Vec<Row>> {
    let m = c.node(0);
    let baseline = task_processes(c);
    let mut samples = Vec::new();
    let mut cli = Vec::new();
    let mut removed = Vec::new();
    for run in 1..=runs {
        let watch = TableWatch::start(&netns(c), CREATE_PORT, Duration::from_millis(20))?;
        let t0 = Instant::now();
        m.shoal_ok(&[
            "service",
            "create",
            "-d",
            "-q",
            "--name",
            "bench100",
            "--replicas",
            &CREATE_REPLICAS.to_string(),
            "-p",
            &format!("{CREATE_PORT}:80"),
            "shoal/echo",
        ]);
        cli.push(t0.elapsed());
        let tables = watch
            .wait(Duration::from_secs(300), |ts| {
                ts.iter().all(|t| t.routed.len() == CREATE_REPLICAS)
            })
            .map_err(|ts| {
                anyhow::anyhow!(
                    "100 replicas not routed on every node within 300 s: {}",
                    describe(&ts)
                )
            })?;
        let took = last_routed(&tables) - t0;
        eprintln!(
            "create {run}/{runs}: 100 replicas running and routed on every node after {took:.2?}"
        );
        samples.push(took);
        drop(watch);
        let t_rm = Instant::now();
        m.shoal_ok(&["service", "rm", "bench100"]);
        wait_tasks_gone(c, &baseline, Duration::from_secs(180))?;
        removed.push(t_rm.elapsed());
        eprintln!(
            "create {run}/{runs}: service rm, every task process gone after {:.2?}",
            t_rm.elapsed()
        );
    }
    Ok(vec![
        report::runs_row(
            "100 replicas, 3 nodes: `service create` → all running and routed on every node",
            &samples,
            &format!(
            "from the CLI call (`create -d`, which returned after {}) until each node's `/routes` \
             lists 100 non-draining endpoints (polled every 20 ms in each node's namespace); \
             `service rm` between runs",
            report::secs(
                cli.iter().map(Duration::as_secs_f64).sum::<f64>() / cli.len().max(1) as f64
            )
        ),
        ),
        report::runs_row(
            "100 replicas, 3 nodes: `service rm` → every task process gone",
            &removed,
            "from the CLI call until no daemon has a task process left: each task drains \
         (withdrawn from every table, confirmed by every node), then gets SIGTERM",
        ),
    ])
}

/// Series of alternating `service scale` +1 / -1 changes, each timed until
/// every node's routing table reflects it.
pub fn feed_propagation(c: &MultiCluster, changes: u32) -> anyhow::Result<Vec<Row>> {
    let m = c.node(0);
    let within = Duration::from_secs(60);
    let watch = TableWatch::start(&netns(c), FEED_PORT, Duration::from_millis(5))?;
    m.shoal_ok(&[
        "service",
        "create",
        "-d",
        "-q",
        "--name",
        "feed",
        "--replicas",
        &FEED_BASE.to_string(),
        "-p",
        &format!("{FEED_PORT}:80"),
        "shoal/echo",
    ]);
    let same_set = |ts: &[NodeTable], n: usize| {
        ts.iter()
            .all(|t| t.error.is_none() && t.routed.len() == n && t.routed == ts[0].routed)
    };
    watch
        .wait(within, |ts| {
            same_set(ts, FEED_BASE) && ts.iter().all(|t| t.all.len() == FEED_BASE)
        })
        .map_err(|ts| anyhow::anyhow!("feed service not routed: {}", describe(&ts)))?;

    let mut up_request = Vec::new();
    let mut up_running = Vec::new();
    let mut down_draining = Vec::new();
    let mut down_gone = Vec::new();
    for i in 0..changes {
        let up = i % 2 == 0;
        let target = if up { FEED_BASE + 1 } else { FEED_BASE };
        let before = watch.tables()[0].routed.clone();
        let t0 = Instant::now();
        m.shoal_ok(&["service", "scale", "-d", &format!("feed={target}")]);
        let tables = watch
            .wait(within, |ts| same_set(ts, target))
            .map_err(|ts| {
                anyhow::anyhow!(
                    "change {i}: not {target} routed everywhere: {}",
                    describe(&ts)
                )
            })?;
        let routed = last_routed(&tables) - t0;
        if up {
            up_request.push(routed.as_secs_f64());
            let new: Vec<&String> = tables[0].routed.difference(&before).collect();
            let [id] = new.as_slice() else {
                anyhow::bail!("change {i}: expected one new task, got {new:?}");
            };
            let running_ms = running_timestamp_ms(m, id)?;
            let everywhere = tables.iter().map(|t| t.routed_wall_ms).max().unwrap_or(0);
            up_running.push((everywhere - running_ms) as f64 / 1e3);
        } else {
            down_draining.push(routed.as_secs_f64());
            let gone: BTreeSet<&String> = before.difference(&tables[0].routed).collect();
            let tables = watch
                .wait(within, |ts| {
                    ts.iter()
                        .all(|t| t.all.len() == target && !gone.iter().any(|g| t.all.contains(*g)))
                })
                .map_err(|ts| {
                    anyhow::anyhow!("change {i}: removed task still listed: {}", describe(&ts))
                })?;
            let last = tables.iter().map(|t| t.all_at).max().expect("nodes");
            down_gone.push((last - t0).as_secs_f64());
        }
        if (i + 1) % 20 == 0 {
            eprintln!("feed: {}/{changes} changes", i + 1);
        }
    }
    drop(watch);
    m.shoal_ok(&["service", "rm", "feed"]);
    Ok(vec![
        report::latency_row(
            "feed: scale +1, request → new task routed on every node",
            &up_request,
            "from the `service scale -d` call until each node's `/routes` shows the new task \
             (polled every 5 ms per node); includes scheduling and the task's start",
        ),
        report::latency_row(
            "feed: scale +1, task RUNNING → routed on every node",
            &up_running,
            "from the task's RUNNING timestamp (`shoal inspect`, set by its agent) to the last \
             node's table change (wall clock, same host, ms resolution): status report, Raft \
             write, feed delta, mesh update",
        ),
        report::latency_row(
            "feed: scale -1, request → task draining on every node",
            &down_draining,
            "from the `service scale -d` call until no node routes new connections to the \
             removed task (marked draining)",
        ),
        report::latency_row(
            "feed: scale -1, request → task gone from every node",
            &down_gone,
            "until every table dropped it: every node confirmed the drain (`FeedApplied`), its \
             agent stopped it and reported SHUTDOWN",
        ),
    ])
}

/// The task's status timestamp (its RUNNING report) in Unix ms.
fn running_timestamp_ms(m: &shoal_testkit::Node, id: &str) -> anyhow::Result<i64> {
    let out = m.shoal_ok(&[
        "inspect",
        id,
        "-f",
        "{{.Status.State}} {{.Status.Timestamp}}",
    ]);
    let (state, ts) = out
        .trim()
        .split_once(' ')
        .with_context(|| format!("inspect {id}: {out:?}"))?;
    anyhow::ensure!(state == "running", "task {id} is {state}, not running");
    let t = humantime::parse_rfc3339(ts).with_context(|| format!("timestamp {ts:?}"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64)
}
