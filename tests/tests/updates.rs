//! Rolling updates and rollbacks end to end, under load from every node.

use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, text, MultiCluster};
use shoal_tests::{only_tag, update_under_load};

fn rolling_update_without_drops(order: &str) {
    let c = MultiCluster::build(
        &format!("upd{}", &order[..4]),
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
        "web",
        "--replicas",
        "4",
        "-p",
        "8080:80",
        "--update-parallelism",
        "2",
        "--update-delay",
        "2s",
        "--update-order",
        order,
        "shoal/echo:1",
    ]);
    for n in &c.nodes {
        n.wait_routed(8080, 4);
    }
    update_under_load(m, &c.nodes, "web", 8080, order);
    let ps = m.shoal_ok(&["service", "ps", "-f", "desired-state=running", "web"]);
    assert_eq!(
        ps.lines()
            .filter(|l| l.contains("shoal/echo:2") && l.contains("Running"))
            .count(),
        4,
        "{ps}"
    );

    // Manual rollback brings version 1 back.
    let out = m.shoal_ok(&["service", "rollback", "web"]);
    assert!(
        out.contains("rollback: manually requested rollback"),
        "{out}"
    );
    for n in &c.nodes {
        assert_eventually(
            &format!("version 1 again from {}", n.name),
            Duration::from_secs(30),
            || only_tag(n, 8080, "1"),
        );
    }
}

#[test]
fn stop_first_rolling_update_drops_nothing() {
    if !require_root("stop_first_rolling_update_drops_nothing") {
        return;
    }
    rolling_update_without_drops("stop-first");
}

#[test]
fn start_first_rolling_update_drops_nothing() {
    if !require_root("start_first_rolling_update_drops_nothing") {
        return;
    }
    rolling_update_without_drops("start-first");
}

#[test]
fn failing_update_rolls_back_or_pauses() {
    if !require_root("failing_update_rolls_back_or_pauses") {
        return;
    }
    let c = MultiCluster::build("updfail", 1, 1, &[], &["--dispatcher-heartbeat", "500ms"]);
    let m = c.node(0);
    let www = m.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "v1\n").unwrap();
    let common = [
        "--replicas",
        "2",
        "--update-monitor",
        "2s",
        "--workdir",
        www.to_str().unwrap(),
        "--restart-delay",
        "200ms",
    ];
    let mut create = vec![
        "service",
        "create",
        "-q",
        "--name",
        "auto",
        "-p",
        "8091:80",
        "--update-failure-action",
        "rollback",
    ];
    create.extend_from_slice(&common);
    create.extend_from_slice(&[
        "--runtime",
        "process",
        "py:1",
        "python3",
        "-m",
        "http.server",
        "80",
    ]);
    m.shoal_ok(&create);
    // The new version exits at once.
    let out = m.shoal(&[
        "service",
        "update",
        "--args",
        "-c 'import sys; sys.exit(3)'",
        "auto",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("rolled back"), "{stdout}{stderr}");
    let inspect: serde_json::Value =
        serde_json::from_str(&m.shoal_ok(&["service", "inspect", "auto"])).unwrap();
    assert_eq!(
        inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"][1], "-m",
        "{}",
        inspect[0]["Spec"]
    );
    assert_eventually(
        "back on the old version, serving",
        Duration::from_secs(30),
        || {
            let body = m.curl(8091)?;
            if body == "v1\n" {
                Ok(())
            } else {
                Err(body)
            }
        },
    );

    let mut create = vec![
        "service",
        "create",
        "-q",
        "--name",
        "held",
        "-p",
        "8092:80",
        "--update-failure-action",
        "pause",
    ];
    create.extend_from_slice(&common);
    create.extend_from_slice(&[
        "--runtime",
        "process",
        "py:1",
        "python3",
        "-m",
        "http.server",
        "80",
    ]);
    m.shoal_ok(&create);
    let out = m.shoal(&[
        "service",
        "update",
        "--args",
        "-c 'import sys; sys.exit(3)'",
        "held",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "service update paused: update paused due to failure or early termination of task"
        ),
        "{stdout}{stderr}"
    );
    // Paused: the other replica still runs the old version and serves.
    let body = m.curl(8092).expect("the untouched replica serves");
    assert_eq!(body, "v1\n");

    let err = m.shoal_err(&["service", "rollback", "nosuch"]);
    assert!(err.contains("no such service: nosuch"), "{err}");
    m.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "fresh",
        "shoal/timecheck",
    ]);
    let err = m.shoal_err(&["service", "rollback", "fresh"]);
    assert!(err.contains("service fresh has no previous spec"), "{err}");
    let err = m.shoal_err(&["service", "update", "--update-order", "sideways", "fresh"]);
    assert!(err.contains("--update-order"), "{err}");
    let err = m.shoal_err(&[
        "service",
        "update",
        "--update-max-failure-ratio",
        "1.5",
        "fresh",
    ]);
    assert!(err.contains("between 0 and 1"), "{err}");
    let err = m.shoal_err(&["service", "update", "--update-delay", "-1s", "fresh"]);
    assert!(err.contains("--update-delay"), "{err}");
}
