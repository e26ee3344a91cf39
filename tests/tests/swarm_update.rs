//! `shoal swarm update`: `--task-history-limit` takes effect on the history
//! `service ps` shows (old rows are reaped at once), `--dispatcher-heartbeat`
//! changes how fast a dead node is Down, and bad values are refused in one
//! line.

use std::time::{Duration, Instant};

use shoal_testkit::{assert_eventually, require_root, text, Cluster, MultiCluster, Node};
use shoal_tests::running_task;

/// Rows of `service ps SVC` (header left out).
fn ps_rows(node: &Node, service: &str) -> Vec<String> {
    node.shoal_ok(&["service", "ps", service])
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// Kills the running task of `service` and waits for its replacement.
fn kill_task(node: &Node, service: &str, pid: i64) -> i64 {
    // SAFETY: kill(2) with a pid read from the daemon; no memory involved.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    running_task(node, service, pid as u32).1 as i64
}

#[test]
fn task_history_limit_applies_to_existing_and_new_history() {
    if !require_root("task_history_limit_applies_to_existing_and_new_history") {
        return;
    }
    let c = Cluster::single("swupd");
    let node = &c.node;
    node.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "sleeper",
        "--restart-delay",
        "0s",
        "--runtime",
        "process",
        "busybox",
        "sleep",
        "600",
    ]);
    // With the default limit (5), four kills leave five rows.
    let mut pid = running_task(node, "sleeper", 0).1 as i64;
    for _ in 0..4 {
        pid = kill_task(node, "sleeper", pid);
    }
    assert_eventually("five rows of history", Duration::from_secs(10), || {
        let rows = ps_rows(node, "sleeper");
        (rows.len() == 5).then_some(()).ok_or(rows.join("\n"))
    });

    let out = node.shoal_ok(&["swarm", "update", "--task-history-limit", "2"]);
    assert_eq!(out, "Swarm updated.\n");
    // The reaper trims what is there to the new limit...
    let rows = assert_eventually("history trimmed to 2 rows", Duration::from_secs(10), || {
        let rows = ps_rows(node, "sleeper");
        (rows.len() == 2)
            .then_some(rows.clone())
            .ok_or(rows.join("\n"))
    });
    assert!(rows[0].contains("Running"), "{rows:?}");
    assert!(rows[1].contains(r"\_ sleeper.1"), "{rows:?}");
    assert!(rows[1].contains("Failed"), "{rows:?}");
    // ...and keeps it as tasks keep failing.
    for _ in 0..3 {
        pid = kill_task(node, "sleeper", pid);
        assert_eventually("at most 2 rows", Duration::from_secs(10), || {
            let rows = ps_rows(node, "sleeper");
            (rows.len() <= 2).then_some(()).ok_or(rows.join("\n"))
        });
    }
    let old = ps_rows(node, "sleeper")
        .iter()
        .filter(|r| r.contains(r"\_ "))
        .count();
    assert!(old <= 2, "at most 2 old rows per slot");
}

#[test]
fn bad_swarm_update_values_are_refused_in_one_line() {
    if !require_root("bad_swarm_update_values_are_refused_in_one_line") {
        return;
    }
    let c = Cluster::single("swupdbad");
    let node = &c.node;
    for (flag, value, says) in [
        (
            "--task-history-limit",
            "-1",
            r#"invalid argument "-1" for "--task-history-limit" flag: must be a non-negative integer"#,
        ),
        (
            "--task-history-limit",
            "abc",
            r#"invalid argument "abc" for "--task-history-limit" flag: must be a non-negative integer"#,
        ),
        (
            "--task-history-limit",
            "0",
            r#"invalid argument "0" for "--task-history-limit" flag: must be at least 1"#,
        ),
        (
            "--dispatcher-heartbeat",
            "abc",
            r#"invalid argument "abc" for "--dispatcher-heartbeat" flag"#,
        ),
        (
            "--dispatcher-heartbeat",
            "-1s",
            r#"invalid argument "-1s" for "--dispatcher-heartbeat" flag: duration cannot be negative"#,
        ),
        (
            "--dispatcher-heartbeat",
            "10ms",
            r#"invalid argument "10ms" for "--dispatcher-heartbeat" flag: must be at least 100ms"#,
        ),
    ] {
        let out = node.shoal(&["swarm", "update", flag, value]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{flag} {value} accepted: {stdout}");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
    // No flags: nothing to change, and Docker's line.
    assert_eq!(node.shoal_ok(&["swarm", "update"]), "Swarm updated.\n");
}

#[test]
fn a_shorter_dispatcher_heartbeat_finds_a_dead_node_sooner() {
    if !require_root("a_shorter_dispatcher_heartbeat_finds_a_dead_node_sooner") {
        return;
    }
    // Default heartbeat: 5 s, so Down after 15 s of silence.
    let mut c = MultiCluster::new("swupdhb", 1, 1);
    let out = c
        .node(0)
        .shoal_ok(&["swarm", "update", "--dispatcher-heartbeat", "500ms"]);
    assert_eq!(out, "Swarm updated.\n");
    let worker = c.node(1).name.clone();
    // Worker refused: control commands are for managers.
    let err = c
        .node(1)
        .shoal_err(&["swarm", "update", "--task-history-limit", "3"]);
    assert!(err.contains("not a swarm manager"), "{err}");

    let killed = Instant::now();
    c.node_mut(1).kill();
    c.wait_node_status(0, &worker, "Down", Duration::from_secs(10));
    let took = killed.elapsed();
    eprintln!("worker Down {took:?} after the kill (heartbeat 500ms)");
    assert!(
        took < Duration::from_secs(10),
        "Down after {took:?}: the 5 s default would take 15 s"
    );
}
