//! `node promote` / `node demote` on a running cluster: a worker becomes a
//! Raft voter (new certificate, store, listener) and a manager becomes a
//! worker again (removed from Raft by the leader, also when it is the leader
//! itself), while every task keeps running and every node keeps serving.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, MultiCluster, Node};

/// (hostname, manager status or "") of every row in `node ls`.
fn roles(ls: &str) -> Vec<(String, String)> {
    ls.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().filter(|c| *c != "*").collect();
            let status = ["Leader", "Reachable", "Unavailable"]
                .into_iter()
                .find(|s| cols.contains(s))
                .unwrap_or("");
            Some((cols.get(1)?.to_string(), status.to_string()))
        })
        .collect()
}

fn status_of(node: &Node, host: &str) -> Result<String, String> {
    let ls = node.shoal(&["node", "ls"]);
    let out = String::from_utf8_lossy(&ls.stdout).to_string();
    if !ls.status.success() {
        return Err(String::from_utf8_lossy(&ls.stderr).to_string());
    }
    roles(&out)
        .into_iter()
        .find(|(h, _)| h == host)
        .map(|(_, s)| s)
        .ok_or(out)
}

fn wait_status(node: &Node, host: &str, want: &str, within: Duration) {
    assert_eventually(
        &format!("{host} is {want:?} in node ls"),
        within,
        || match status_of(node, host) {
            Ok(s) if s == want => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// IDs of the running tasks of `svc`.
fn running(node: &Node, svc: &str) -> BTreeSet<String> {
    node.shoal_ok(&[
        "service",
        "ps",
        "-q",
        "--no-trunc",
        "-f",
        "desired-state=running",
        svc,
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

fn leader(node: &Node) -> Result<String, String> {
    let ls = node.shoal(&["node", "ls"]);
    let out = String::from_utf8_lossy(&ls.stdout).to_string();
    roles(&out)
        .into_iter()
        .find(|(_, s)| s == "Leader")
        .map(|(h, _)| h)
        .ok_or(out)
}

#[test]
fn promote_and_demote_change_raft_membership_and_keep_tasks_running() {
    if !require_root("promote_and_demote_change_raft_membership_and_keep_tasks_running") {
        return;
    }
    let mut c = MultiCluster::build("roles", 1, 3, &[], &["--dispatcher-heartbeat", "500ms"]);
    c.node(0).shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "web",
        "--replicas",
        "6",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    for n in &c.nodes {
        n.wait_routed(8080, 6);
    }
    let tasks = running(c.node(0), "web");
    assert_eq!(tasks.len(), 6, "{tasks:?}");

    // A worker's control calls are refused until it is promoted.
    let err = c.node(1).shoal_err(&["node", "ls"]);
    assert!(err.contains("Worker nodes can't be used"), "{err}");
    let out = c.node(0).shoal_ok(&["node", "promote", "node-2", "node-3"]);
    assert!(
        out.contains("Node node-2 promoted to a manager in the swarm."),
        "{out}"
    );
    for host in ["node-2", "node-3"] {
        wait_status(c.node(0), host, "Reachable", Duration::from_secs(30));
    }
    // The promoted nodes answer control calls themselves now.
    for i in [1, 2] {
        assert_eventually(
            "a promoted node serves the control API",
            Duration::from_secs(20),
            || {
                let out = c.node(i).shoal(&["service", "ls"]);
                let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                if out.status.success() && stdout.contains("web") {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).to_string())
                }
            },
        );
    }
    assert_eq!(
        running(c.node(1), "web"),
        tasks,
        "promotion restarted tasks"
    );
    let out = c.node(0).shoal_ok(&["node", "promote", "node-2"]);
    assert!(out.contains("is already a manager"), "{out}");

    // Three voters: the first leader can die and the promoted pair carry on.
    c.node_mut(0).kill();
    let new_leader = assert_eventually("a promoted node leads", Duration::from_secs(20), || {
        leader(c.node(1)).and_then(|l| if l == "node-1" { Err(l) } else { Ok(l) })
    });
    eprintln!("after the first leader died, {new_leader} leads");
    c.node(2).shoal_ok(&["service", "scale", "-d", "web=7"]);
    // node-4 joined when node-1 was the only manager: it learned of the
    // promoted ones from its session, so its feed fails over to them.
    c.node(3).wait_routed(8080, 7);
    // Demoting one of the two reachable managers would lose quorum.
    wait_status(c.node(1), "node-1", "Unavailable", Duration::from_secs(10));
    let other = if new_leader == "node-2" {
        "node-3"
    } else {
        "node-2"
    };
    let err = c.node(1).shoal_err(&["node", "demote", other]);
    assert!(err.contains("loss of quorum"), "{err}");
    c.node_mut(0).start_again();
    wait_status(c.node(1), "node-1", "Reachable", Duration::from_secs(30));

    // Demote the leader itself: it leaves the group, another leads, and it
    // keeps its tasks and serves the mesh as a worker.
    let leader_idx: usize = new_leader
        .trim_start_matches("node-")
        .parse::<usize>()
        .unwrap()
        - 1;
    let via = if leader_idx == 1 { 2 } else { 1 };
    let on_leader = |node: &Node| -> BTreeSet<String> {
        node.shoal_ok(&[
            "node",
            "ps",
            "-q",
            "--no-trunc",
            "-f",
            "desired-state=running",
            &new_leader,
        ])
        .lines()
        .map(str::to_string)
        .collect()
    };
    let kept = on_leader(c.node(via));
    // node-1 may flap once while it finds the leader after its restart.
    let out = assert_eventually(
        "demoting the leader is accepted",
        Duration::from_secs(20),
        || {
            let o = c.node(via).shoal(&["node", "demote", &new_leader]);
            if o.status.success() {
                Ok(String::from_utf8_lossy(&o.stdout).to_string())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).to_string())
            }
        },
    );
    assert!(
        out.contains(&format!("Manager {new_leader} demoted in the swarm.")),
        "{out}"
    );
    wait_status(c.node(via), &new_leader, "", Duration::from_secs(30));
    let next = assert_eventually(
        "a new leader after the demotion",
        Duration::from_secs(20),
        || leader(c.node(via)).and_then(|l| if l == new_leader { Err(l) } else { Ok(l) }),
    );
    eprintln!("{new_leader} demoted; {next} leads");
    assert_eventually(
        "the demoted node refuses control calls",
        Duration::from_secs(20),
        || {
            let out = c.node(leader_idx).shoal(&["node", "ls"]);
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            if !out.status.success() && err.contains("Worker nodes can't be used") {
                Ok(())
            } else {
                Err(err)
            }
        },
    );
    // Writes still work, and every node (the demoted one too) routes them.
    c.node(via).shoal_ok(&["service", "scale", "-d", "web=8"]);
    for n in &c.nodes {
        n.wait_routed(8080, 8);
    }
    // The demoted leader was never called Down: while it was outside the
    // Raft group its agent went on through the other managers, so the tasks
    // it ran before its demotion still run there.
    let after = on_leader(c.node(via));
    assert!(
        kept.is_subset(&after),
        "tasks moved off the demoted leader: before {kept:?}, after {after:?}"
    );
    let ls = c.node(via).shoal_ok(&["node", "ls"]);
    let managers = roles(&ls)
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .count();
    assert_eq!(managers, 2, "{ls}");

    // The demoted node survives a restart as a worker.
    c.node_mut(leader_idx).restart();
    wait_status(c.node(via), &new_leader, "", Duration::from_secs(5));
    assert_eventually(
        "the demoted node comes back Ready",
        Duration::from_secs(30),
        || {
            let ls = c.node(via).shoal_ok(&["node", "ls"]);
            let line = ls.lines().find(|l| l.contains(&new_leader)).unwrap_or("");
            if line.contains("Ready") {
                Ok(())
            } else {
                Err(ls)
            }
        },
    );
    c.node(leader_idx).wait_routed(8080, 8);
}
