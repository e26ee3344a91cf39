//! Host-mode publishing (`-p published=8080,target=80,mode=host`): the port
//! answers only on the nodes running a task of the service, each node sends
//! to its own task; the scheduler never puts two tasks publishing the same
//! host port on one node and says why a task waits; host and ingress ports
//! may not share a number; `service ps` shows the port, `service ls` not.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, MultiCluster, Node};

/// Within how long the scheduler, agents and meshes settle a change.
const SETTLE: Duration = Duration::from_secs(30);

const HOST_PORT: &str = "published=8080,target=80,mode=host";

/// The running tasks of `svc` per node hostname (pending rows, which have
/// no NODE, left out).
fn running_per_node(node: &Node, svc: &str) -> BTreeMap<String, usize> {
    let ps = node.shoal_ok(&["service", "ps", "-f", "desired-state=running", svc]);
    let mut per = BTreeMap::new();
    for line in ps.lines().skip(1) {
        // ID NAME IMAGE NODE DESIRED CURRENT...
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 5 && cols[4] == "Running" && cols[5] == "Running" {
            *per.entry(cols[3].to_string()).or_default() += 1;
        }
    }
    per
}

/// Waits until `svc` runs `n` tasks; returns the running tasks per node.
fn wait_running(node: &Node, svc: &str, n: usize) -> BTreeMap<String, usize> {
    assert_eventually(&format!("{n} tasks of {svc} running"), SETTLE, || {
        let per = running_per_node(node, svc);
        if per.values().sum::<usize>() == n {
            Ok(per)
        } else {
            Err(format!("running per node: {per:?}"))
        }
    })
}

#[test]
fn a_host_mode_port_answers_only_on_the_nodes_with_a_task() {
    if !require_root("a_host_mode_port_answers_only_on_the_nodes_with_a_task") {
        return;
    }
    let c = MultiCluster::new("hostmode", 1, 2);
    let m = c.node(0);
    m.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "web",
        "--replicas",
        "2",
        "-p",
        HOST_PORT,
        "shoal/echo",
    ]);
    let per_node = wait_running(m, "web", 2);
    assert!(
        per_node.values().all(|n| *n == 1),
        "one task per node: {per_node:?}"
    );

    let (with, without): (Vec<&Node>, Vec<&Node>) =
        c.nodes.iter().partition(|n| per_node.contains_key(&n.name));
    assert_eq!((with.len(), without.len()), (2, 1), "{per_node:?}");
    for node in &with {
        // From the node itself and from the node without a task: the reply
        // always comes from the task on the node asked (no mesh hop).
        let ip = node.ip.unwrap();
        for from in [*node, without[0]] {
            let body = assert_eventually(
                &format!("{} serves 8080 to {}", node.name, from.name),
                SETTLE,
                || from.curl_to(ip, 8080),
            );
            assert!(
                body.starts_with("web.") && body.contains(&format!(" on {} ", node.name)),
                "asked {}, from {}: {body}",
                node.name,
                from.name
            );
        }
    }
    // The node without a task does not listen, locally or from outside.
    let idle = without[0];
    let err = idle.curl(8080).expect_err("no task here, no port");
    assert!(
        err.contains("refused") || err.contains("Couldn't connect"),
        "{err}"
    );
    assert!(with[0].curl_to(idle.ip.unwrap(), 8080).is_err());

    // PORTS: `service ps` shows the host port of each task, `service ls` not.
    let ps = m.shoal_ok(&["service", "ps", "web"]);
    let running: Vec<&str> = ps.lines().filter(|l| l.contains("Running")).collect();
    assert_eq!(running.len(), 2, "{ps}");
    assert!(
        running
            .iter()
            .all(|l| l.trim_end().ends_with("*:8080->80/tcp")),
        "{ps}"
    );
    let ls = m.shoal_ok(&["service", "ls"]);
    let web = ls.lines().find(|l| l.contains(" web ")).expect("web in ls");
    assert!(!web.contains("8080"), "{ls}");

    // A rolling update (stop-first) moves each task once its predecessor has
    // stopped and freed the port; every node with a task answers with the
    // new version from its own task.
    m.shoal_ok(&[
        "service",
        "update",
        "-q",
        "-d",
        "--image",
        "shoal/echo:2",
        "web",
    ]);
    assert_eventually("web updated on two nodes", SETTLE, || {
        let ps = m.shoal_ok(&["service", "ps", "-f", "desired-state=running", "web"]);
        let updated: Vec<&Node> = c
            .nodes
            .iter()
            .filter(|n| {
                ps.lines().any(|l| {
                    l.contains("shoal/echo:2")
                        && l.contains(&format!(" {} ", n.name))
                        && l.contains("Running")
                })
            })
            .collect();
        if updated.len() != 2 {
            return Err(ps);
        }
        for node in updated {
            let body = node.curl(8080)?;
            if !body.contains(&format!(" on {} ", node.name)) || !body.contains("tag 2") {
                return Err(format!("{}: {body}", node.name));
            }
        }
        Ok(())
    });

    // Bad input: an ingress port on a host-mode port, and the reverse.
    let err = m.shoal_err(&[
        "service",
        "create",
        "-d",
        "--name",
        "api",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    assert!(
        err.contains("published port 8080/tcp is a host-mode port of service web"),
        "{err}"
    );
    m.shoal_ok(&[
        "service",
        "create",
        "-q",
        "-d",
        "--name",
        "ing",
        "-p",
        "9090:80",
        "shoal/echo",
    ]);
    let err = m.shoal_err(&[
        "service",
        "create",
        "-d",
        "--name",
        "api",
        "-p",
        "published=9090,target=80,mode=host",
        "shoal/echo",
    ]);
    assert!(
        err.contains("published port 9090/tcp is an ingress port of service ing"),
        "{err}"
    );
    let ls = m.shoal_ok(&["service", "ls", "-q"]);
    assert_eq!(ls.lines().count(), 2, "nothing stored: {ls}");
}

#[test]
fn a_replica_with_no_free_host_port_stays_pending_with_the_reason() {
    if !require_root("a_replica_with_no_free_host_port_stays_pending_with_the_reason") {
        return;
    }
    let c = MultiCluster::new("hostpend", 1, 1);
    let m = c.node(0);
    m.shoal_ok(&[
        "service",
        "create",
        "-q",
        "-d",
        "--name",
        "web",
        "--replicas",
        "3",
        "-p",
        HOST_PORT,
        "shoal/echo",
    ]);
    let per_node = wait_running(m, "web", 2);
    assert!(per_node.values().all(|n| *n == 1), "{per_node:?}");
    let reason = "no suitable node (host-mode port already in use on 2 nodes)";
    let ps = assert_eventually("the third replica pending with its reason", SETTLE, || {
        let ps = m.shoal_ok(&["service", "ps", "--no-trunc", "web"]);
        let pending: Vec<&str> = ps.lines().filter(|l| l.contains("Pending")).collect();
        if pending.len() == 1 && pending[0].contains(reason) {
            Ok(ps)
        } else {
            Err(ps)
        }
    });
    // It stays so: two tasks, never two on one node.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(running_per_node(m, "web"), per_node, "{ps}");
}
