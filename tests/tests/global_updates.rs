//! Rolling updates of a global service, node by node, under load from
//! every node: nothing dropped, both versions served during the update, only
//! the new one after.

use shoal_testkit::{require_root, MultiCluster};
use shoal_tests::update_under_load;

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
    update_under_load(m, &c.nodes, "edge", 8080, order);
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
