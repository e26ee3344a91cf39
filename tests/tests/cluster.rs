//! Multi-node clusters in network namespaces: joining with tokens, the mesh
//! on every node over the VXLAN ingress overlay, node lifecycle.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, MultiCluster, Node};

fn distribution_from(node: &Node, port: u16, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let body = node
            .curl(port)
            .unwrap_or_else(|e| panic!("curl #{i} on {} failed: {e}", node.name));
        *seen
            .entry(body.split_whitespace().next().unwrap_or("").to_string())
            .or_default() += 1;
    }
    seen
}

#[test]
fn one_manager_two_workers_every_node_serves_every_port() {
    if !require_root("one_manager_two_workers_every_node_serves_every_port") {
        return;
    }
    let c = MultiCluster::new("mesh3", 1, 2);
    let m = c.node(0);
    let ls = c.node_ls(0);
    assert_eq!(ls.lines().count(), 4, "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.contains("node-1") && l.contains("Leader")),
        "{ls}"
    );

    m.shoal_ok(&[
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
    let ps = m.shoal_ok(&["service", "ps", "web"]);
    for node in ["node-1", "node-2", "node-3"] {
        assert_eq!(
            ps.lines().filter(|l| l.contains(node)).count(),
            2,
            "spread evenly: {ps}"
        );
    }
    for node in &c.nodes {
        node.wait_routed(8080, 6);
    }
    for node in &c.nodes {
        let seen = distribution_from(node, 8080, 30);
        assert_eq!(seen.len(), 6, "from {}: {seen:?}", node.name);
        assert!(
            seen.values().all(|c| *c == 5),
            "from {}: exactly round-robin: {seen:?}",
            node.name
        );
    }
    // Any node's address, from any node: the routing mesh.
    let ip = c.node(2).ip.unwrap();
    let body = c
        .node(1)
        .curl_to(ip, 8080)
        .expect("node-2 reaches the mesh on node-3");
    assert!(body.starts_with("web."), "{body}");

    // Workers cannot touch cluster state.
    let err = c.node(1).shoal_err(&["service", "ls"]);
    assert!(
        err.contains("Worker nodes can't be used to view or modify cluster state"),
        "{err}"
    );
}

#[test]
fn join_with_a_bad_token_is_refused() {
    if !require_root("join_with_a_bad_token_is_refused") {
        return;
    }
    let c = MultiCluster::new("token", 1, 1);
    let m = c.node(0);
    let addr = format!("{}:2377", m.ip.unwrap());
    let token = m
        .shoal_ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    let rotated = m
        .shoal_ok(&["swarm", "join-token", "-q", "--rotate", "worker"])
        .trim()
        .to_string();
    assert_ne!(token, rotated);

    let underlay = &c.underlay;
    let extra = Node::start_with(
        "token",
        "node-9",
        Some(underlay),
        Some(shoal_testkit::underlay::node_ip(8)),
        &[],
    );
    let err = extra.shoal_err(&["swarm", "join", "--token", &token, &addr]);
    assert!(
        err.contains("invalid join token"),
        "old token refused: {err}"
    );
    let err = extra.shoal_err(&["swarm", "join", "--token", "SWMTKN-1-nonsense", &addr]);
    assert!(err.contains("invalid join token"), "{err}");
    let other_cluster = format!("SWMTKN-1-{}-{}", "0".repeat(64), "a".repeat(25));
    let err = extra.shoal_err(&["swarm", "join", "--token", &other_cluster, &addr]);
    assert!(err.contains("does not match the join token"), "{err}");
    let err = extra.shoal_err(&["swarm", "join", "--token", &rotated, "192.168.100.250:2377"]);
    assert!(err.contains("cannot reach manager"), "{err}");
    extra.shoal_ok(&["swarm", "join", "--token", &rotated, &addr]);
    assert_eventually("node-9 is Ready", Duration::from_secs(30), || {
        let ls = m.shoal_ok(&["node", "ls"]);
        if ls
            .lines()
            .any(|l| l.contains("node-9") && l.contains("Ready"))
        {
            Ok(())
        } else {
            Err(ls)
        }
    });
}
