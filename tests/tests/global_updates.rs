//! Rolling updates of a global service, node by node, under load from
//! every node: nothing dropped, both versions served during the update, only
//! the new one after.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, MultiCluster};
use shoal_tests::{curl_load, only_tag};

fn global_update_without_drops(order: &str) {
    let c = MultiCluster::build(
        &format!("gupd{}", &order[..4]),
        1,
        2,
        &[],
        &["--dispatcher-heartbeat", "500ms"],
    );
    let m = c.node(0);
    m.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "edge",
        "--mode",
        "global",
        "-p",
        "8080:80",
        "--update-parallelism",
        "1",
        "--update-delay",
        "1s",
        "--update-order",
        order,
        "shoal/echo:1",
    ]);
    for n in &c.nodes {
        n.wait_routed(8080, 3);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = c
        .nodes
        .iter()
        .map(|n| curl_load(n.ns.name.clone(), 8080, stop.clone()))
        .collect();
    let out = m.shoal_ok(&["service", "update", "--image", "shoal/echo:2", "edge"]);
    assert!(out.contains("verify: Service edge converged"), "{out}");
    for n in &c.nodes {
        assert_eventually(
            &format!("only version 2 from {}", n.name),
            Duration::from_secs(20),
            || only_tag(n, 8080, "2"),
        );
    }
    stop.store(true, Ordering::SeqCst);
    for (n, l) in c.nodes.iter().zip(loaders) {
        let (tags, failures) = l.join().unwrap();
        assert!(
            failures.is_empty(),
            "{order}: {} failed requests from {}: {:?}",
            failures.len(),
            n.name,
            &failures[..failures.len().min(5)]
        );
        assert!(
            tags.contains("1") && tags.contains("2"),
            "{order}: both versions served during the update from {}: {tags:?}",
            n.name
        );
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&m.shoal_ok(&["service", "inspect", "edge"])).unwrap();
    assert_eq!(
        inspect[0]["UpdateStatus"]["State"], "completed",
        "{}",
        inspect[0]["UpdateStatus"]
    );
    // One new task per node, each on the node of the task it replaced.
    let ps = m.shoal_ok(&["service", "ps", "-f", "desired-state=running", "edge"]);
    let mut nodes: Vec<&str> = ps
        .lines()
        .filter(|l| l.contains("shoal/echo:2") && l.contains("Running"))
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node-1", "node-2", "node-3"], "{ps}");
    let ps = m.shoal_ok(&["service", "ps", "edge"]);
    for node in ["node-1", "node-2", "node-3"] {
        let old = ps
            .lines()
            .filter(|l| l.contains("shoal/echo:1") && l.contains(node))
            .count();
        assert_eq!(old, 1, "{node} ran one old task: {ps}");
    }
    let ls = m.shoal_ok(&["service", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains("edge") && l.contains("global") && l.contains("3/3")),
        "{ls}"
    );
}

#[test]
fn global_stop_first_update_drops_nothing() {
    if !require_root("global_stop_first_update_drops_nothing") {
        return;
    }
    global_update_without_drops("stop-first");
}

#[test]
fn global_start_first_update_drops_nothing() {
    if !require_root("global_start_first_update_drops_nothing") {
        return;
    }
    global_update_without_drops("start-first");
}
