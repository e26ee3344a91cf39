//! `service logs` across nodes with one node dead: the stream returns (or,
//! with `-f`, goes on) with every line the live nodes hold, and swarmkit's
//! "incomplete log stream" warning names the node that could not be reached.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_testkit::{assert_eventually, bin, require_root, text, MultiCluster, Node};

/// A task per node printing a numbered line every 200 ms.
fn create_ticker(m: &Node) {
    m.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "ticker",
        "--replicas",
        "3",
        "--runtime",
        "process",
        "ticker",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo \"tick $i on $SHOAL_NODE_HOSTNAME\"; sleep 0.2; done",
    ]);
    let ps = m.shoal_ok(&["service", "ps", "ticker"]);
    for node in ["node-1", "node-2", "node-3"] {
        assert_eq!(
            ps.lines().filter(|l| l.contains(node)).count(),
            1,
            "one task per node: {ps}"
        );
    }
}

/// Lines of `service logs` output from tasks on `node`.
fn lines_from<'a>(out: &'a str, node: &str) -> Vec<&'a str> {
    let tag = format!("@{node} ");
    out.lines().filter(|l| l.contains(&tag)).collect()
}

/// Waits until `service logs` (no follow) has lines from every node.
fn wait_logs_everywhere(m: &Node) {
    assert_eventually("logs from all three nodes", Duration::from_secs(30), || {
        let out = m.shoal_ok(&["service", "logs", "ticker"]);
        let missing: Vec<&str> = ["node-1", "node-2", "node-3"]
            .into_iter()
            .filter(|n| lines_from(&out, n).is_empty())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("none from {missing:?}:\n{out}"))
        }
    });
}

/// The ID of the node named `hostname`.
fn node_id(m: &Node, hostname: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(&m.shoal_ok(&["node", "inspect", hostname])).expect("node JSON");
    json[0]["ID"].as_str().expect("ID").to_string()
}

#[test]
fn logs_with_a_node_down_return_what_the_others_hold_and_warn() {
    if !require_root("logs_with_a_node_down_return_what_the_others_hold_and_warn") {
        return;
    }
    let mut c = MultiCluster::new("logsdown", 1, 2);
    let m = c.node(0);
    create_ticker(m);
    wait_logs_everywhere(m);
    let dead = node_id(m, "node-3");
    c.node_mut(2).kill();

    let m = c.node(0);
    let started = Instant::now();
    let out = m.shoal(&["service", "logs", "ticker"]);
    let took = started.elapsed();
    let (stdout, stderr) = text(&out);
    eprintln!("service logs with node-3 dead took {took:?}");
    assert!(out.status.success(), "exit status 0: {stderr}");
    assert!(took < Duration::from_secs(12), "took {took:?}");
    for live in ["node-1", "node-2"] {
        assert!(
            lines_from(&stdout, live).len() >= 3,
            "lines from {live}:\n{stdout}"
        );
    }
    assert!(lines_from(&stdout, "node-3").is_empty(), "{stdout}");
    let warning = format!(
        "warning: incomplete log stream. some logs could not be retrieved for the following reasons: node {dead} (node-3) is not available"
    );
    assert_eq!(stderr.trim(), warning);
}

/// Reads a child's output lines into a channel as (stream, line).
fn forward(
    out: impl Read + Send + 'static,
    name: &'static str,
    tx: mpsc::Sender<(&'static str, String)>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send((name, line)).is_err() {
                return;
            }
        }
    });
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
fn followed_logs_go_on_from_the_live_nodes_after_one_dies() {
    if !require_root("followed_logs_go_on_from_the_live_nodes_after_one_dies") {
        return;
    }
    let mut c = MultiCluster::new("logsfollow", 1, 2);
    let m = c.node(0);
    create_ticker(m);
    wait_logs_everywhere(m);
    let dead = node_id(m, "node-3");

    let mut child = Command::new(bin("shoal"))
        .args([
            "-H",
            &m.host(),
            "service",
            "logs",
            "-f",
            "--tail",
            "0",
            "ticker",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal service logs -f");
    let (tx, rx) = mpsc::channel();
    forward(child.stdout.take().unwrap(), "stdout", tx.clone());
    forward(child.stderr.take().unwrap(), "stderr", tx);
    let mut follow = KillOnDrop(child);

    // `ticker.<slot>.<task id>` of a line.
    let task_of = |line: &str| line.split('@').next().unwrap_or_default().to_string();
    // New lines from every node arrive while all are up.
    let mut seen = std::collections::BTreeSet::new();
    let mut tasks_before = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, line) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("followed lines from 3 nodes; saw {seen:?}"));
        tasks_before.insert(task_of(&line));
        for n in ["node-1", "node-2", "node-3"] {
            if line.contains(&format!("@{n} ")) {
                seen.insert(n);
            }
        }
    }

    c.node_mut(2).kill();
    // After the kill: a warning naming node-3, and lines from the live
    // nodes keep coming.
    let mut after = std::collections::BTreeMap::<&str, usize>::new();
    let mut warned = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while warned.is_none() || after.values().filter(|n| **n >= 10).count() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (stream, line) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("after the kill: lines {after:?}, warning {warned:?}"));
        if stream == "stderr" {
            warned = Some(line);
            continue;
        }
        for n in ["node-1", "node-2"] {
            if line.contains(&format!("@{n} ")) {
                *after.entry(n).or_default() += 1;
            }
        }
    }
    let warned = warned.unwrap();
    assert!(
        warned.starts_with("warning: incomplete log stream.")
            && warned.contains(&format!("node {dead} (node-3) is not available")),
        "{warned}"
    );
    assert!(
        follow.0.try_wait().expect("poll the follower").is_none(),
        "service logs -f keeps running"
    );
    // Once node-3 is Down its task is replaced on a live node, and the
    // followed stream picks the new task up, as Docker's does.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (stream, line) = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("no line from a replacement task (before: {tasks_before:?})")
        });
        if stream == "stdout" && !tasks_before.contains(&task_of(&line)) {
            assert!(!line.contains("@node-3 "), "{line}");
            break;
        }
    }
}

#[test]
fn logs_with_a_hung_node_return_within_a_bound() {
    if !require_root("logs_with_a_hung_node_return_within_a_bound") {
        return;
    }
    // A hung daemon keeps its connections open: it is found out by its
    // missed heartbeats (or the broker's 10 s bound).
    let mut c = MultiCluster::build("logshung", 1, 2, &[], &["--dispatcher-heartbeat", "500ms"]);
    let m = c.node(0);
    create_ticker(m);
    wait_logs_everywhere(m);
    let hung = node_id(m, "node-3");
    c.node_mut(2).pause();

    let m = c.node(0);
    let started = Instant::now();
    let out = m.shoal(&["service", "logs", "ticker"]);
    let took = started.elapsed();
    let (stdout, stderr) = text(&out);
    eprintln!("service logs with node-3 hung took {took:?}");
    assert!(out.status.success(), "exit status 0: {stderr}");
    assert!(took < Duration::from_secs(12), "took {took:?}");
    for live in ["node-1", "node-2"] {
        assert!(!lines_from(&stdout, live).is_empty(), "{live}:\n{stdout}");
    }
    assert!(
        stderr.contains(&format!("node {hung} (node-3) is not available")),
        "{stderr}"
    );
    c.node_mut(2).resume();
}
