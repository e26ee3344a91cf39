//! Jobs end to end: `--mode replicated-job` and `--mode global-job` run
//! their tasks to completion, `--max-concurrent` at a time, retry failures
//! per the restart policy and never restart a completed task.

use std::path::Path;
use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, Cluster, MultiCluster, Node};

/// Lines of a file the tasks append to (empty while it does not exist).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The most tasks that ran at once, from `+ <ns>` / `- <ns>` lines (a task
/// that ended at the instant another started does not overlap it).
fn max_overlap(events: &[String]) -> usize {
    let mut points: Vec<(u128, i32)> = events
        .iter()
        .filter_map(|l| {
            let (sign, ts) = l.split_once(' ')?;
            let ts: u128 = ts.trim().parse().ok()?;
            Some((ts, if sign == "+" { 1 } else { -1 }))
        })
        .collect();
    points.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in points {
        now += d;
        max = max.max(now);
    }
    max as usize
}

/// `service ps` rows of a service whose CURRENT STATE is `state` (the
/// columns are ID NAME IMAGE NODE DESIRED-STATE CURRENT-STATE ...).
fn ps_count(node: &Node, service: &str, state: &str) -> usize {
    node.shoal_ok(&["service", "ps", service])
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l
                .split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            cols.get(5)
                .and_then(|c| c.split_whitespace().next())
                .is_some_and(|s| s == state)
        })
        .count()
}

/// The `service ls` row of a service.
fn ls_row(node: &Node, name: &str) -> String {
    node.shoal_ok(&["service", "ls"])
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_default()
        .to_string()
}

/// For a negative check: `f` keeps holding for `window` (polled).
fn holds_for(window: Duration, what: &str, f: impl Fn() -> Result<(), String>) {
    let end = std::time::Instant::now() + window;
    while std::time::Instant::now() < end {
        if let Err(e) = f() {
            panic!("{what}: {e}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn jobs_run_to_completion_across_nodes() {
    if !require_root("jobs_run_to_completion_across_nodes") {
        return;
    }
    let c = MultiCluster::build("jobs", 1, 2, &[], &["--dispatcher-heartbeat", "500ms"]);
    let m = c.node(0);

    // A replicated job: 6 completions, at most 2 at once.
    let log = m.dir.path().join("batch.log");
    let script = format!(
        "echo \"+ $(date +%s%N)\" >> {log}; sleep 1; echo \"- $(date +%s%N)\" >> {log}",
        log = log.display()
    );
    let out = m.shoal_ok(&[
        "service",
        "create",
        "--name",
        "batch",
        "--mode",
        "replicated-job",
        "--replicas",
        "6",
        "--max-concurrent",
        "2",
        "--runtime",
        "process",
        "job",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.contains("job complete"), "{out}");
    // On a pipe Docker prints no bar (so no `job progress`), but the active tasks.
    assert!(out.contains("active tasks: 0 out of 0 tasks"), "{out}");
    let events = lines(&log);
    assert_eq!(
        events.iter().filter(|l| l.starts_with('+')).count(),
        6,
        "exactly six runs: {events:?}"
    );
    assert_eq!(max_overlap(&events), 2, "two at a time: {events:?}");
    assert_eq!(ps_count(m, "batch", "Complete"), 6);
    let row = ls_row(m, "batch");
    assert!(
        row.contains("replicated job") && row.contains("0/2 (6/6 completed)"),
        "{row}"
    );
    // Completed tasks are never run again.
    holds_for(
        Duration::from_secs(3),
        "a finished job stays finished",
        || {
            let runs = lines(&log).iter().filter(|l| l.starts_with('+')).count();
            if runs == 6 {
                Ok(())
            } else {
                Err(format!("{runs} runs"))
            }
        },
    );
    let tasks: serde_json::Value =
        serde_json::from_str(&m.shoal_ok(&["service", "inspect", "batch"])).unwrap();
    assert_eq!(
        tasks[0]["Spec"]["Mode"]["ReplicatedJob"],
        serde_json::json!({"MaxConcurrent": 2, "TotalCompletions": 6})
    );

    // Scaling a replicated job runs it again with the new completion count.
    let out = m.shoal_ok(&["service", "scale", "batch=3"]);
    assert!(
        out.contains("batch scaled to 3") && out.contains("job complete"),
        "{out}"
    );
    let runs = lines(&log).iter().filter(|l| l.starts_with('+')).count();
    assert_eq!(runs, 9, "three more runs");
    let row = ls_row(m, "batch");
    assert!(row.contains("0/2 (3/3 completed)"), "{row}");

    // A global job: once on every node.
    let glog = m.dir.path().join("global.log");
    let gscript = format!("echo $SHOAL_NODE_HOSTNAME >> {}", glog.display());
    let out = m.shoal_ok(&[
        "service",
        "create",
        "--name",
        "everywhere",
        "--mode",
        "global-job",
        "--runtime",
        "process",
        "job",
        "sh",
        "-c",
        &gscript,
    ]);
    assert!(out.contains("job complete"), "{out}");
    let mut hosts = lines(&glog);
    hosts.sort();
    assert_eq!(hosts, ["node-1", "node-2", "node-3"]);
    let row = ls_row(m, "everywhere");
    assert!(
        row.contains("global job") && row.contains("0/0 (3/3 completed)"),
        "{row}"
    );
    assert_eq!(ps_count(m, "everywhere", "Complete"), 3);

    // `service update --force` runs the job again, as a new iteration.
    let out = m.shoal_ok(&["service", "update", "--force", "everywhere"]);
    assert!(out.contains("job complete"), "{out}");
    let mut hosts = lines(&glog);
    hosts.sort();
    assert_eq!(
        hosts,
        ["node-1", "node-1", "node-2", "node-2", "node-3", "node-3"]
    );
    let svc: serde_json::Value =
        serde_json::from_str(&m.shoal_ok(&["service", "inspect", "everywhere"])).unwrap();
    assert_eq!(svc[0]["JobStatus"]["JobIteration"]["Index"], 1);
    let row = ls_row(m, "everywhere");
    assert!(row.contains("0/0 (3/3 completed)"), "{row}");
}

#[test]
fn failing_job_tasks_follow_the_restart_policy() {
    if !require_root("failing_job_tasks_follow_the_restart_policy") {
        return;
    }
    let c = Cluster::single("jobfail");
    let n = &c.node;
    // Fails twice, then succeeds: retried until it completes.
    let count = n.dir.path().join("count");
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]",
        c = count.display()
    );
    let out = n.shoal_ok(&[
        "service",
        "create",
        "--name",
        "flaky",
        "--mode",
        "replicated-job",
        "--restart-delay",
        "100ms",
        "--runtime",
        "process",
        "job",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.contains("job complete"), "{out}");
    assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "3");
    assert_eq!(ps_count(n, "flaky", "Failed"), 2);
    assert_eq!(ps_count(n, "flaky", "Complete"), 1);

    // Always fails, one restart allowed: two attempts, then it stays failed.
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "doomed",
        "--mode",
        "replicated-job",
        "--restart-delay",
        "100ms",
        "--restart-max-attempts",
        "1",
        "--runtime",
        "process",
        "job",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eventually(
        "two failed attempts",
        Duration::from_secs(30),
        || match ps_count(n, "doomed", "Failed") {
            2 => Ok(()),
            k => Err(format!("{k} failed")),
        },
    );
    holds_for(Duration::from_secs(2), "no third attempt", || {
        let ps = n.shoal_ok(&["service", "ps", "doomed"]);
        match ps.lines().count() - 1 {
            2 => Ok(()),
            k => Err(format!("{k} tasks:\n{ps}")),
        }
    });
    let ps = n.shoal_ok(&["service", "ps", "doomed"]);
    assert!(ps.contains("\"task: non-zero exit (3)\""), "{ps}");
}

#[test]
fn bad_job_input_is_refused_and_stores_nothing() {
    if !require_root("bad_job_input_is_refused_and_stores_nothing") {
        return;
    }
    let c = Cluster::single("jobbad");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "once",
        "--mode",
        "global-job",
        "--runtime",
        "process",
        "job",
        "true",
    ]);
    let before = n.shoal_ok(&["service", "inspect", "once"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "service",
                "create",
                "--name",
                "j",
                "--mode",
                "replicated-job",
                "--update-parallelism",
                "2",
                "shoal/echo",
            ],
            "update and rollback configuration is not supported for jobs: remove --update-parallelism",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "j",
                "--mode",
                "global-job",
                "--rollback-order",
                "start-first",
                "shoal/echo",
            ],
            "update and rollback configuration is not supported for jobs: remove --rollback-order",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "j",
                "--max-concurrent",
                "2",
                "shoal/echo",
            ],
            "--max-concurrent can only be used with replicated-job mode",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "j",
                "--mode",
                "global-job",
                "--replicas",
                "2",
                "shoal/echo",
            ],
            "--replicas can only be used with replicated or replicated-job mode",
        ),
        (
            &["service", "create", "--name", "j", "--mode", "batch", "shoal/echo"],
            "invalid argument \"batch\" for \"--mode\" flag: must be replicated, global, replicated-job or global-job",
        ),
        (
            &["service", "scale", "once=3"],
            "once: scale can only be used with replicated or replicated-job mode",
        ),
        (
            &["service", "update", "--update-delay", "1s", "once"],
            "update and rollback configuration is not supported for jobs: remove --update-delay",
        ),
        (
            &["service", "update", "--max-concurrent", "2", "once"],
            "--max-concurrent can only be used with replicated-job mode",
        ),
    ];
    for (args, want) in cases {
        let err = n.shoal_err(args);
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let ls = n.shoal_ok(&["service", "ls", "-q"]);
    assert_eq!(ls.lines().count(), 1, "nothing stored: {ls}");
    assert_eq!(n.shoal_ok(&["service", "inspect", "once"]), before);
}
