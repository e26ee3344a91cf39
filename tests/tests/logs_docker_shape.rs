//! `service logs` as Docker shapes it, on one node: `-t` puts a nanosecond
//! timestamp first and `--since` takes it back exactly, a task ID shows that
//! task's lines alone, `--details` prints the line's attributes; and the
//! progress display on a pipe prints each refresh, task errors included.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_testkit::{assert_eventually, bin, require_root, Cluster, Node};

/// Two tasks printing `tick N from SLOT` every 100 ms.
fn create_ticker(n: &Node) {
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "tk",
        "--replicas",
        "2",
        "--runtime",
        "process",
        "ticker",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo \"tick $i from $SHOAL_TASK_SLOT\"; sleep 0.1; done",
    ]);
}

/// Full task IDs of the service's running tasks.
fn task_ids(n: &Node, service: &str) -> Vec<String> {
    n.shoal_ok(&[
        "service",
        "ps",
        "-q",
        "--no-trunc",
        "-f",
        "desired-state=running",
        service,
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// The `RFC3339NanoFixed` timestamp starting `line`, if it starts with one.
fn timestamp_of(line: &str) -> Option<&str> {
    let ts = line.split(' ').next()?;
    let fraction = ts.strip_suffix('Z')?.split_once('.')?.1;
    (ts.len() == 30 && fraction.len() == 9 && fraction.bytes().all(|b| b.is_ascii_digit()))
        .then_some(ts)
}

#[test]
fn logs_timestamps_task_ids_and_details_as_docker() {
    if !require_root("logs_timestamps_task_ids_and_details_as_docker") {
        return;
    }
    let c = Cluster::single("logsshape");
    let n = &c.node;
    create_ticker(n);
    let out = assert_eventually("lines from both tasks", Duration::from_secs(30), || {
        let out = n.shoal_ok(&["service", "logs", "-t", "tk"]);
        let both = ["from 1", "from 2"]
            .iter()
            .all(|s| out.lines().filter(|l| l.ends_with(s)).count() >= 5);
        if both {
            Ok(out)
        } else {
            Err(out)
        }
    });

    // -t: `TIMESTAMP tk.SLOT.ID@node-1    | line`, nanoseconds as read.
    for line in out.lines() {
        let ts = timestamp_of(line).unwrap_or_else(|| panic!("no timestamp first: {line:?}"));
        let rest = &line[ts.len() + 1..];
        assert!(
            rest.starts_with("tk.") && rest.contains("@node-1    | tick "),
            "{line:?}"
        );
    }
    assert!(
        out.lines()
            .filter_map(timestamp_of)
            .any(|ts| !ts[23..29].chars().all(|c| c == '0')),
        "sub-millisecond digits are real: {out}"
    );

    // TASK_ID: only that task's lines; a prefix works too.
    let ids = task_ids(n, "tk");
    assert_eq!(ids.len(), 2, "{ids:?}");
    let task = &ids[0];
    let mine = n.shoal_ok(&["service", "logs", "-t", "--no-trunc", &task[..8]]);
    let slot = mine
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no line of task {task}: {mine}"))
        .to_string();
    for line in mine.lines() {
        assert!(line.contains(&format!(".{task}@node-1")), "{line:?}");
        assert!(line.ends_with(&format!("from {slot}")), "{line:?}");
    }
    let err = n.shoal_err(&["service", "logs", "nosuchthing"]);
    assert!(
        err.contains("no such task or service: nosuchthing"),
        "{err}"
    );

    // --since takes a -t timestamp back to the nanosecond.
    let lines: Vec<&str> = mine.lines().collect();
    let pick = lines[lines.len() / 2];
    let since = timestamp_of(pick).unwrap();
    let from = n.shoal_ok(&[
        "service",
        "logs",
        "-t",
        "--no-trunc",
        "--since",
        since,
        task,
    ]);
    let first = from.lines().next().unwrap_or_default();
    assert_eq!(first, pick, "--since {since} starts at that line");
    assert!(from.lines().all(|l| timestamp_of(l).unwrap() >= since));

    // --details: Docker prints the extra attributes (none here) after the
    // context; raw, the context IDs come as the daemon sends them.
    let details = n.shoal_ok(&["service", "logs", "--details", "--tail", "1", task]);
    assert!(details.contains("@node-1    |  tick "), "{details:?}");
    let node_json: serde_json::Value =
        serde_json::from_str(&n.shoal_ok(&["node", "inspect", "node-1"])).expect("node JSON");
    let node_id = node_json[0]["ID"].as_str().expect("node ID");
    let service_json: serde_json::Value =
        serde_json::from_str(&n.shoal_ok(&["service", "inspect", "tk"])).expect("service JSON");
    let service_id = service_json[0]["ID"].as_str().expect("service ID");
    let raw = n.shoal_ok(&["service", "logs", "--raw", "--details", "--tail", "1", task]);
    let want = format!(
        "com.docker.swarm.node.id={node_id},com.docker.swarm.service.id={},\
         com.docker.swarm.task.id={task} tick ",
        service_id
    );
    assert!(raw.starts_with(&want), "{raw:?} should start with {want:?}");
}

/// A child process killed and reaped on drop (also when a test panics).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_failed_task_on_a_pipe_prints_its_error_at_each_refresh() {
    if !require_root("a_failed_task_on_a_pipe_prints_its_error_at_each_refresh") {
        return;
    }
    let c = Cluster::single("logsfailed");
    let n = &c.node;
    // `service create` waits for convergence, printing to a pipe. Without a
    // restart the failed task stays its slot's task, so every refresh shows
    // its error (in a crash loop, only the refreshes that catch a failed
    // task before its replacement do, as Docker's).
    let mut child = Command::new(bin("shoal"))
        .args(["-H", &n.host(), "service", "create", "--name", "failed"])
        .args([
            "--restart-condition",
            "none",
            "--runtime",
            "process",
            "fail",
        ])
        .args(["sh", "-c", "sleep 0.3; exit 3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shoal service create");
    let stdout = child.stdout.take().unwrap();
    let _create = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut errors = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    while errors < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("three task errors on the pipe; saw {seen:?}"));
        if line == "1/1: task: non-zero exit (3)" {
            errors += 1;
        }
        seen.push(line);
    }
    // The service ID, Docker's first lines, then refreshes: no bars, no
    // cursor movement.
    assert_eq!(seen[0].len(), 25, "{seen:?}");
    assert_eq!(seen[1], "overall progress: 0 out of 1 tasks", "{seen:?}");
    assert_eq!(seen[2], "1/1:  ", "{seen:?}");
    assert!(
        seen.iter()
            .all(|l| !l.contains('\x1b') && !l.contains("[=")),
        "{seen:?}"
    );
    // Each refresh: the error, then the overall line.
    let at = seen.len() - 1;
    assert_eq!(
        seen[at - 2..at],
        [
            "1/1: task: non-zero exit (3)",
            "overall progress: 0 out of 1 tasks"
        ],
        "{seen:?}"
    );
}
