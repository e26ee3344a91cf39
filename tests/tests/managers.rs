//! Three managers in one Raft group: writes through any manager, leader loss
//! with no acknowledged write lost, quorum loss with clear errors while the
//! mesh keeps serving.

use std::time::{Duration, Instant};

use shoal_testkit::{assert_eventually, require_root, text, MultiCluster};

/// (hostname, manager status) of every manager row in `node ls`.
fn manager_statuses(ls: &str) -> Vec<(String, String)> {
    ls.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().filter(|c| *c != "*").collect();
            let status = ["Leader", "Reachable", "Unavailable"]
                .into_iter()
                .find(|s| cols.contains(s))?;
            Some((cols.get(1)?.to_string(), status.to_string()))
        })
        .collect()
}

#[test]
fn three_managers_survive_the_leader_and_refuse_writes_without_quorum() {
    if !require_root("three_managers_survive_the_leader_and_refuse_writes_without_quorum") {
        return;
    }
    let mut c = MultiCluster::build("raft3", 3, 1, &[], &["--dispatcher-heartbeat", "500ms"]);
    let statuses = manager_statuses(&c.node_ls(1));
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|(_, s)| s == "Leader").count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|(h, s)| h == "node-1" && s == "Leader"),
        "{statuses:?}"
    );

    // Writes through a follower reach the leader; every manager sees them.
    c.node(1).shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "web",
        "--replicas",
        "4",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    assert!(c.node(2).shoal_ok(&["service", "ls"]).contains("web"));
    for n in &c.nodes {
        n.wait_routed(8080, 4);
    }
    // Logs asked on a follower are relayed to the leader's log broker.
    c.node(1).shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "tc",
        "shoal/timecheck:3",
    ]);
    assert_eventually(
        "service logs through a follower",
        Duration::from_secs(20),
        || {
            let logs = c.node(2).shoal_ok(&["service", "logs", "tc"]);
            if logs.contains("App version: 3; time check:") {
                Ok(())
            } else {
                Err(logs)
            }
        },
    );

    // A stream of creates through node-2 while the leader dies.
    let host = c.node(1).host();
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut failed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(12);
        let mut i = 0;
        while Instant::now() < deadline {
            let name = format!("s{i}");
            let out = std::process::Command::new(shoal_testkit::bin("shoal"))
                .args([
                    "-H",
                    &host,
                    "service",
                    "create",
                    "-d",
                    "--name",
                    &name,
                    "shoal/timecheck",
                ])
                .output()
                .unwrap();
            if out.status.success() {
                acked.push(name);
            } else {
                failed.push(format!("{name}: {}", text(&out).1.trim()));
            }
            i += 1;
        }
        (acked, failed)
    });
    std::thread::sleep(Duration::from_secs(2)); // let some creates land first (load, not synchronisation)
    let killed = Instant::now();
    c.node_mut(0).kill();
    let new_leader = assert_eventually("a new leader is elected", Duration::from_secs(15), || {
        let ls = c.node(1).shoal_ok(&["node", "ls"]);
        manager_statuses(&ls)
            .into_iter()
            .find(|(h, s)| h != "node-1" && s == "Leader")
            .map(|(h, _)| h)
            .ok_or(ls)
    });
    eprintln!(
        "leader killed: {new_leader} elected after {:?}",
        killed.elapsed()
    );
    let (acked, failed) = writer.join().unwrap();
    eprintln!(
        "{} creates acknowledged, {} refused during the election (first: {:?})",
        acked.len(),
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    assert!(acked.len() > 5, "writes kept working: {failed:?}");
    // A create whose reply was lost to the election is retried as the same
    // Raft proposal: it is never applied twice, so never refused as a
    // duplicate of itself.
    assert!(
        !failed
            .iter()
            .any(|f| f.contains("already exists") || f.contains("concurrent request")),
        "a retried create collided with itself: {failed:?}"
    );
    for via in [1, 2] {
        let ls = c.node(via).shoal_ok(&["service", "ls"]);
        for name in &acked {
            assert!(
                ls.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(name)),
                "acknowledged {name} lost (via node-{}):\n{ls}",
                via + 1
            );
        }
    }
    assert_eventually("node-1 shown unavailable", Duration::from_secs(15), || {
        let ls = c.node(2).shoal_ok(&["node", "ls"]);
        if manager_statuses(&ls)
            .iter()
            .any(|(h, s)| h == "node-1" && s == "Unavailable")
        {
            Ok(())
        } else {
            Err(ls)
        }
    });
    // The worker keeps routing to the surviving tasks.
    assert_eventually(
        "web runs 4 tasks on the survivors",
        Duration::from_secs(30),
        || {
            c.node(3).curl(8080)?;
            if c.node(3).routed_endpoints(8080) == 4 {
                Ok(())
            } else {
                Err(format!("{} endpoints", c.node(3).routed_endpoints(8080)))
            }
        },
    );

    // Lose quorum: writes are refused with a clear error; the mesh serves on.
    c.node_mut(2).kill();
    let err = assert_eventually(
        "writes refused without quorum",
        Duration::from_secs(30),
        || {
            let out = c
                .node(1)
                .shoal(&["service", "create", "-d", "--name", "late", "shoal/echo"]);
            let (_, err) = text(&out);
            if !out.status.success() && err.contains("lost quorum") {
                Ok(err)
            } else {
                Err(format!("{out:?}"))
            }
        },
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let body = c
        .node(3)
        .curl(8080)
        .expect("the mesh keeps serving without a manager quorum");
    assert!(body.starts_with("web."), "{body}");
}
