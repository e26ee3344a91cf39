//! Node certificates over a cluster's life: removal that sticks (a removed
//! node's identity is refused, it leaves the swarm and must join again with
//! a token, as a new node), and certificates renewed before they expire.

use std::time::{Duration, Instant};

use shoal_testkit::multi::node_states;
use shoal_testkit::{assert_eventually, require_root, MultiCluster, Node};

/// `Swarm:` of `shoal version` on `node` (active / inactive).
fn swarm_state(node: &Node) -> String {
    let out = node.shoal_ok(&["version"]);
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Swarm:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn node_id(node: &Node) -> String {
    let out = node.shoal_ok(&["version"]);
    let line = out
        .lines()
        .find(|l| l.trim().starts_with("Node:"))
        .unwrap_or_default()
        .to_string();
    line.rsplit('(')
        .next()
        .unwrap_or_default()
        .trim_end_matches(')')
        .to_string()
}

fn web_create(m: &Node, replicas: &str) {
    m.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "web",
        "--replicas",
        replicas,
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
}

#[test]
fn removed_node_is_refused_leaves_the_swarm_and_rejoins_only_with_a_token() {
    if !require_root("removed_node_is_refused_leaves_the_swarm_and_rejoins_only_with_a_token") {
        return;
    }
    let mut c = MultiCluster::build("rmstick", 1, 2, &[], &["--dispatcher-heartbeat", "500ms"]);
    let m = c.node(0);
    web_create(m, "3");
    assert_eventually("3 tasks running", Duration::from_secs(30), || {
        let web = m.running_per_node("web");
        (web.values().sum::<usize>() == 3)
            .then_some(())
            .ok_or(format!("{web:?}"))
    });

    // 1. `node rm --force` of a running worker: it learns it was removed,
    // says so, stops its tasks and is in no swarm any more.
    m.shoal_ok(&["node", "rm", "--force", "node-3"]);
    let n3 = c.node(2);
    assert_eventually(
        "node-3 logs its removal and leaves",
        Duration::from_secs(20),
        || {
            let log = n3.log();
            let state = swarm_state(n3);
            (log.contains("this node was removed from the swarm") && state == "inactive")
                .then_some(())
                .ok_or(format!("swarm state {state}"))
        },
    );

    // 2. A worker removed while it was down comes back with its old
    // identity: every manager refuses it; it never shows Ready, gets no
    // task, and leaves the swarm.
    let old_id = node_id(c.node(1));
    c.node_mut(1).kill();
    c.wait_node_status(0, "node-2", "Down", Duration::from_secs(15));
    c.node(0).shoal_ok(&["node", "rm", "node-2"]);
    c.node_mut(1).start_again();
    let m = c.node(0);
    m.shoal_ok(&["service", "scale", "-d", "web=4"]);
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let ls = m.shoal_ok(&["node", "ls"]);
        assert!(
            !node_states(&ls).iter().any(|(h, _)| h == "node-2"),
            "the removed node-2 is listed again:\n{ls}"
        );
        let web = m.running_per_node("web");
        assert!(!web.contains_key("node-2"), "{web:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let n2 = c.node(1);
    assert!(
        n2.log().contains("this node was removed from the swarm"),
        "{}",
        n2.log()
    );
    assert_eq!(swarm_state(n2), "inactive");

    // 3. It joins again with a token, as a new node, and gets tasks.
    let token = m.shoal_ok(&["swarm", "join-token", "-q", "worker"]);
    let remote = format!("{}:2377", m.ip.expect("node-1 ip"));
    let ip = n2.ip.expect("node-2 ip").to_string();
    n2.shoal_ok(&[
        "swarm",
        "join",
        "--token",
        token.trim(),
        "--advertise-addr",
        &ip,
        &remote,
    ]);
    let new_id = node_id(n2);
    assert_ne!(new_id, old_id, "a removed node rejoins as a new node");
    c.wait_node_status(0, "node-2", "Ready", Duration::from_secs(20));
    let m = c.node(0);
    m.shoal_ok(&["service", "scale", "-d", "web=6"]);
    assert_eventually(
        "the rejoined node-2 gets tasks",
        Duration::from_secs(30),
        || {
            let web = m.running_per_node("web");
            (web.get("node-2").copied().unwrap_or(0) > 0 && web.values().sum::<usize>() == 6)
                .then_some(())
                .ok_or(format!("{web:?}"))
        },
    );
}

/// The node certificate on disk.
fn node_cert(node: &Node) -> String {
    std::fs::read_to_string(node.data_root().join("certificates/node.pem")).unwrap_or_default()
}

#[test]
fn one_minute_certificates_renew_and_the_cluster_keeps_working_past_several_expiries() {
    if !require_root(
        "one_minute_certificates_renew_and_the_cluster_keeps_working_past_several_expiries",
    ) {
        return;
    }
    let c = MultiCluster::new("certexp", 2, 1);
    let m = c.node(0);
    web_create(m, "3");
    for n in &c.nodes {
        n.wait_routed(8080, 3);
    }

    let out = m.shoal_ok(&["swarm", "update", "--cert-expiry", "1m"]);
    assert_eq!(out.trim(), "Swarm updated.");
    let version = m.shoal_ok(&["version"]);
    assert!(
        version.contains("CA Configuration:")
            && version.contains("Expiry Duration: About a minute"),
        "{version}"
    );
    let err = m.shoal_err(&["swarm", "update", "--cert-expiry", "30s"]);
    assert!(
        err.contains("--cert-expiry") && err.contains("at least 1m"),
        "{err}"
    );

    // Four minutes: every certificate expires several times over.
    let mut seen: Vec<Vec<String>> = c.nodes.iter().map(|n| vec![node_cert(n)]).collect();
    let until = Instant::now() + Duration::from_secs(240);
    let mut round = 0;
    while Instant::now() < until {
        round += 1;
        for via in [0, 1] {
            c.wait_ready(via, Duration::from_secs(10));
        }
        for n in &c.nodes {
            assert_eventually(
                &format!("curl through the mesh on {}", n.name),
                Duration::from_secs(5),
                || n.curl(8080),
            );
        }
        if round == 6 {
            m.shoal_ok(&["service", "scale", "-d", "web=5"]);
        }
        for (i, n) in c.nodes.iter().enumerate() {
            let cert = node_cert(n);
            if !seen[i].contains(&cert) {
                seen[i].push(cert);
            }
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let m = c.node(0);
    assert_eventually(
        "web scaled to 5 with 1-minute certificates",
        Duration::from_secs(30),
        || {
            let web = m.running_per_node("web");
            (web.values().sum::<usize>() == 5)
                .then_some(())
                .ok_or(format!("{web:?}"))
        },
    );
    for (i, n) in c.nodes.iter().enumerate() {
        // The 90-day certificate, then one a minute, renewed between 30 and 48 s.
        assert!(
            seen[i].len() >= 5,
            "{}: only {} distinct certificates on disk in 4 minutes",
            n.name,
            seen[i].len()
        );
        assert!(n.log().contains("node certificate renewed"), "{}", n.name);
    }
}

/// The roots a node trusts (its `ca.pem`).
fn trusted_roots(node: &Node) -> String {
    std::fs::read_to_string(node.data_root().join("certificates/ca.pem")).unwrap_or_default()
}

#[test]
fn root_ca_rotation_moves_every_node_to_the_new_root_then_drops_the_old_one() {
    if !require_root("root_ca_rotation_moves_every_node_to_the_new_root_then_drops_the_old_one") {
        return;
    }
    let c = MultiCluster::new("carot", 2, 1);
    let m = c.node(0);
    web_create(m, "3");
    for n in &c.nodes {
        n.wait_routed(8080, 3);
    }
    let old_root = m.shoal_ok(&["swarm", "ca"]);
    assert!(
        old_root.starts_with("-----BEGIN CERTIFICATE-----"),
        "{old_root}"
    );
    assert_eq!(trusted_roots(c.node(2)).trim(), old_root.trim());
    let old_token = m.shoal_ok(&["swarm", "join-token", "-q", "worker"]);

    let new_root = m.shoal_ok(&["swarm", "ca", "--rotate", "-d"]);
    assert!(
        new_root.starts_with("-----BEGIN CERTIFICATE-----"),
        "{new_root}"
    );
    assert_ne!(new_root, old_root);
    // Every node ends up trusting the new root alone: each renewed, and the
    // rotation ended once all had.
    assert_eventually(
        "every node trusts only the new root",
        Duration::from_secs(60),
        || {
            let pending: Vec<&str> = c
                .nodes
                .iter()
                .filter(|n| trusted_roots(n).trim() != new_root.trim())
                .map(|n| n.name.as_str())
                .collect();
            pending
                .is_empty()
                .then_some(())
                .ok_or(format!("{pending:?}"))
        },
    );
    // A second rotation, waited for: it prints the root once every node holds
    // a certificate of it.
    let newest_root = m.shoal_ok(&["swarm", "ca", "--rotate", "-q"]);
    assert!(
        newest_root.starts_with("-----BEGIN CERTIFICATE-----"),
        "{newest_root}"
    );
    assert_ne!(
        newest_root, new_root,
        "a second rotation makes another root"
    );
    assert_eq!(m.shoal_ok(&["swarm", "ca"]), newest_root);
    assert_eventually(
        "every node trusts only the newest root",
        Duration::from_secs(60),
        || {
            let pending: Vec<&str> = c
                .nodes
                .iter()
                .filter(|n| trusted_roots(n).trim() != newest_root.trim())
                .map(|n| n.name.as_str())
                .collect();
            pending
                .is_empty()
                .then_some(())
                .ok_or(format!("{pending:?}"))
        },
    );
    let new_token = m.shoal_ok(&["swarm", "join-token", "-q", "worker"]);
    assert_ne!(new_token, old_token, "join tokens pin the new root");

    // The cluster works on the new root.
    for via in [0, 1] {
        c.wait_ready(via, Duration::from_secs(20));
    }
    m.shoal_ok(&["service", "scale", "-d", "web=4"]);
    for n in &c.nodes {
        n.wait_routed(8080, 4);
        assert_eventually(
            &format!("curl through the mesh on {}", n.name),
            Duration::from_secs(5),
            || n.curl(8080),
        );
    }
}

#[test]
fn swarm_init_takes_cert_expiry_and_refuses_one_out_of_range() {
    if !require_root("swarm_init_takes_cert_expiry_and_refuses_one_out_of_range") {
        return;
    }
    let node = Node::start("initexp", "node-1");
    let err = node.shoal_err(&["swarm", "init", "--cert-expiry", "30s"]);
    assert!(
        err.contains(r#"invalid argument "30s" for "--cert-expiry" flag: must be at least 1m"#),
        "{err}"
    );
    assert_eq!(
        swarm_state(&node),
        "inactive",
        "a refused init stores nothing"
    );
    node.shoal_ok(&["swarm", "init", "--cert-expiry", "2h"]);
    let version = node.shoal_ok(&["version"]);
    assert!(version.contains("Expiry Duration: 2 hours"), "{version}");
}
