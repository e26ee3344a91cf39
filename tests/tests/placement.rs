//! Placement on a three-node cluster: constraints (and the constraint
//! enforcer when labels move), unsatisfiable constraints left PENDING with
//! Swarm's reason, the per-node cap, and spread preferences.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, MultiCluster, Node};

/// Within how long the scheduler and agents settle a change.
const SETTLE: Duration = Duration::from_secs(30);

/// Rows of `service ps -f desired-state=running`: running tasks per node
/// hostname, and the ERROR text of each pending task.
fn placement_of(node: &Node, svc: &str) -> (BTreeMap<String, usize>, Vec<String>) {
    let ps = node.shoal_ok(&[
        "service",
        "ps",
        "--no-trunc",
        "-f",
        "desired-state=running",
        svc,
    ]);
    let mut running = BTreeMap::new();
    let mut pending = Vec::new();
    for line in ps.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // ID NAME IMAGE NODE DESIRED CURRENT...; a pending task has no NODE.
        if cols.len() > 5 && cols[4] == "Running" && cols[5] == "Running" {
            *running.entry(cols[3].to_string()).or_default() += 1;
        } else if cols.len() > 4 && cols[3] == "Running" && cols[4] == "Pending" {
            pending.push(line.split_once('"').map_or("", |(_, e)| e).to_string());
        }
    }
    (running, pending)
}

fn wait_for(
    node: &Node,
    svc: &str,
    what: &str,
    want: impl Fn(&BTreeMap<String, usize>, &[String]) -> bool,
) -> (BTreeMap<String, usize>, Vec<String>) {
    assert_eventually(what, SETTLE, || {
        let (running, pending) = placement_of(node, svc);
        if want(&running, &pending) {
            Ok((running, pending))
        } else {
            Err(format!("running {running:?}, pending {pending:?}"))
        }
    })
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[test]
fn constraints_place_tasks_and_the_enforcer_moves_them() {
    if !require_root("constraints_place_tasks_and_the_enforcer_moves_them") {
        return;
    }
    let c = MultiCluster::build("place", 1, 2, &[], &["--dispatcher-heartbeat", "500ms"]);
    let m = c.node(0);

    // A constraint with no operator never reaches the manager.
    let err = m.shoal_err(&[
        "service",
        "create",
        "--constraint",
        "node.role",
        "shoal/echo",
    ]);
    assert!(
        err.contains(
            r#"invalid argument "node.role" for "--constraint" flag: constraint has no operator"#
        ),
        "{err}"
    );

    m.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "mgr",
        "--replicas",
        "3",
        "--constraint",
        "node.role==manager",
        "shoal/echo",
    ]);
    wait_for(m, "mgr", "every task on the manager", |r, p| {
        *r == counts(&[("node-1", 3)]) && p.is_empty()
    });
    let inspect: serde_json::Value =
        serde_json::from_str(&m.shoal_ok(&["service", "inspect", "mgr"])).unwrap();
    assert_eq!(
        inspect[0]["Spec"]["TaskTemplate"]["Placement"]["Constraints"][0], "node.role==manager",
        "{inspect}"
    );

    // Labels: only node-2 has zone=a.
    m.shoal_ok(&["node", "update", "--label-add", "zone=a", "node-2"]);
    m.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "zoned",
        "--replicas",
        "2",
        "--constraint",
        "node.labels.zone==a",
        "shoal/echo",
    ]);
    wait_for(m, "zoned", "both tasks on node-2", |r, p| {
        *r == counts(&[("node-2", 2)]) && p.is_empty()
    });

    // The label moves to node-3: the enforcer moves the tasks.
    m.shoal_ok(&["node", "update", "--label-rm", "zone", "node-2"]);
    m.shoal_ok(&["node", "update", "--label-add", "zone=a", "node-3"]);
    wait_for(m, "zoned", "both tasks moved to node-3", |r, p| {
        *r == counts(&[("node-3", 2)]) && p.is_empty()
    });

    // Nothing matches: the task stays PENDING with the reason.
    m.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "nowhere",
        "--constraint",
        "node.labels.zone==mars",
        "shoal/echo",
    ]);
    // (A node that misses a heartbeat on a loaded machine briefly counts as
    // "not available": the reason is re-evaluated on every pass.)
    wait_for(m, "nowhere", "one pending task, no node fits", |r, p| {
        r.is_empty()
            && p.len() == 1
            && p[0]
                .starts_with("no suitable node (scheduling constraints not satisfied on 3 nodes)")
    });
    let ps = m.shoal_ok(&["service", "ps", "nowhere"]);
    assert!(
        ps.contains("Pending") && ps.contains("no suitable node"),
        "{ps}"
    );
}

#[test]
fn per_node_cap_and_spread_preferences() {
    if !require_root("per_node_cap_and_spread_preferences") {
        return;
    }
    let c = MultiCluster::build("plcap", 1, 2, &[], &["--dispatcher-heartbeat", "500ms"]);
    let m = c.node(0);

    m.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "capped",
        "--replicas",
        "4",
        "--replicas-max-per-node",
        "1",
        "shoal/echo",
    ]);
    let (_, pending) = wait_for(m, "capped", "one task per node, one pending", |r, p| {
        *r == counts(&[("node-1", 1), ("node-2", 1), ("node-3", 1)]) && p.len() == 1
    });
    assert!(
        pending[0].starts_with("no suitable node (max replicas per node limit exceed)"),
        "{pending:?}"
    );
    m.shoal_ok(&["service", "rm", "capped"]);

    // Two nodes in zone a, one in zone b: the zones get half each.
    m.shoal_ok(&["node", "update", "--label-add", "zone=a", "node-1"]);
    m.shoal_ok(&["node", "update", "--label-add", "zone=a", "node-2"]);
    m.shoal_ok(&["node", "update", "--label-add", "zone=b", "node-3"]);
    m.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "spread",
        "--replicas",
        "6",
        "--placement-pref",
        "spread=node.labels.zone",
        "shoal/echo",
    ]);
    let (running, _) = wait_for(m, "spread", "six tasks running", |r, p| {
        r.values().sum::<usize>() == 6 && p.is_empty()
    });
    assert_eq!(running.get("node-3"), Some(&3), "zone b: {running:?}");
    assert_eq!(
        running.get("node-1").copied().unwrap_or(0) + running.get("node-2").copied().unwrap_or(0),
        3,
        "zone a: {running:?}"
    );
    let pretty = m.shoal_ok(&["service", "inspect", "--pretty", "spread"]);
    assert!(
        pretty.contains("Preferences:   [spread=node.labels.zone]"),
        "{pretty}"
    );
}
