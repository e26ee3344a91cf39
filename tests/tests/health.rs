//! Health checks: a task takes traffic only while healthy.

use std::time::{Duration, Instant};

use shoal_testkit::{assert_eventually, require_root, Cluster};

#[test]
fn unhealthy_tasks_take_no_traffic_and_are_replaced() {
    if !require_root("unhealthy_tasks_take_no_traffic_and_are_replaced") {
        return;
    }
    let c = Cluster::single("health");
    let n = &c.node;
    let www = n.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "ok\n").unwrap();
    let dir = www.to_str().unwrap();

    // Never healthy: running, but never routed.
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "never",
        "-p",
        "8093:80",
        "--workdir",
        dir,
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "300ms",
        "--health-retries",
        "1000",
        "--runtime",
        "process",
        "py",
        "python3",
        "-m",
        "http.server",
        "80",
    ]);
    // Healthy unless its slot's "sick" file exists (checked in its workdir).
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "-p",
        "8094:80",
        "--workdir",
        dir,
        "--health-cmd",
        "test ! -f sick-$SHOAL_TASK_SLOT",
        "--health-interval",
        "300ms",
        "--health-retries",
        "1",
        "--restart-delay",
        "200ms",
        "--runtime",
        "process",
        "py",
        "python3",
        "-m",
        "http.server",
        "80",
    ]);
    n.wait_routed(8094, 2);
    assert_eventually(
        "the never-healthy task is running",
        Duration::from_secs(20),
        || {
            let ps = n.shoal_ok(&["service", "ps", "never"]);
            if ps.contains("Running") {
                Ok(())
            } else {
                Err(ps)
            }
        },
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert_eq!(
            n.routed_endpoints(8093),
            0,
            "a task that was never healthy is never routed"
        );
        assert!(n.curl(8093).is_err(), "no traffic reaches it");
    }

    // Slot 1 turns unhealthy: out of routing within about one interval.
    std::fs::write(www.join("sick-1"), "").unwrap();
    let sick = Instant::now();
    assert_eventually("slot 1 withdrawn", Duration::from_secs(5), || {
        match n.routed_endpoints(8094) {
            1 => Ok(()),
            k => Err(format!("{k} endpoints")),
        }
    });
    eprintln!(
        "unhealthy task withdrawn {:?} after turning sick (interval 300ms)",
        sick.elapsed()
    );
    for _ in 0..10 {
        n.curl(8094).expect("the healthy task keeps serving");
    }
    let ps = assert_eventually(
        "the unhealthy task failed and was replaced",
        Duration::from_secs(20),
        || {
            let ps = n.shoal_ok(&["service", "ps", "--no-trunc", "web"]);
            if ps.contains("task: unhealthy container") {
                Ok(ps)
            } else {
                Err(ps)
            }
        },
    );
    assert!(ps.contains(r"\_ web.1"), "{ps}");
    std::fs::remove_file(www.join("sick-1")).unwrap();
    n.wait_routed(8094, 2);
}
