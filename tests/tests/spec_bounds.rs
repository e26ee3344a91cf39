//! Spec bounds and a truthful UpdateStatus, end to end: input that once broke
//! a node for good is refused with one line naming the field, nothing stored
//! changes, and the node keeps serving; `service inspect` shows an
//! UpdateStatus only for a real update.

use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, text, Cluster, Node};

/// Runs the CLI expecting a refusal: non-zero exit and one line on stderr.
fn refused(n: &Node, args: &[&str]) -> String {
    let out = n.shoal(args);
    let (stdout, stderr) = text(&out);
    let shown: Vec<&str> = args.iter().map(|a| &a[..a.len().min(60)]).collect();
    assert!(
        !out.status.success(),
        "shoal {shown:?} should fail but printed: {stdout}"
    );
    let err = stderr.trim().to_string();
    eprintln!("refused: {}", &err[..err.len().min(200)]);
    assert_eq!(err.lines().count(), 1, "one line for {shown:?}: {err}");
    err
}

fn inspect(n: &Node, service: &str) -> serde_json::Value {
    let out = n.shoal_ok(&["service", "inspect", service]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
    v[0].clone()
}

#[test]
fn absurd_specs_are_refused_and_the_node_keeps_serving() {
    if !require_root("absurd_specs_are_refused_and_the_node_keeps_serving") {
        return;
    }
    let c = Cluster::single("bounds");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "base",
        "--replicas",
        "2",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    n.wait_routed(8080, 2);
    let before = (
        n.shoal_ok(&["service", "ls"]),
        n.shoal_ok(&["service", "inspect", "base"]),
    );

    // The reproductions, each refused naming its field.
    let err = refused(n, &["service", "scale", "-d", "base=18446744073709551615"]);
    assert!(
        err.contains("replicas: 18446744073709551615 is more than the maximum 100000"),
        "{err}"
    );
    let err = refused(
        n,
        &[
            "service",
            "update",
            "--replicas",
            "18446744073709551615",
            "base",
        ],
    );
    assert!(err.contains("replicas:"), "{err}");

    let big = "x".repeat(100_000);
    let labels: Vec<String> = (0..15).map(|i| format!("l{i}={big}")).collect();
    let mut args = vec!["service", "create", "-q", "--name", "fat"];
    for l in &labels {
        args.extend(["-l", l.as_str()]);
    }
    args.push("shoal/echo");
    let err = refused(n, &args);
    assert!(err.contains("label") || err.contains("spec:"), "{err}");

    let ten_kb = format!("big={}", "x".repeat(10_000));
    let err = refused(
        n,
        &[
            "service",
            "create",
            "--name",
            "lab",
            "-l",
            &ten_kb,
            "shoal/echo",
        ],
    );
    assert!(err.contains("label"), "{err}");

    let err = refused(
        n,
        &[
            "service",
            "create",
            "--name",
            "nl",
            "-l",
            "a\nb=c",
            "shoal/echo",
        ],
    );
    assert!(err.contains("label"), "{err}");

    let err = refused(n, &["service", "update", "--update-delay", "1000y", "base"]);
    assert!(
        err.contains("update_delay") || err.contains("update-delay"),
        "{err}"
    );
    let err = refused(
        n,
        &[
            "service",
            "create",
            "--name",
            "slow",
            "--update-delay",
            "1000y",
            "shoal/echo",
        ],
    );
    assert!(
        err.contains("update_delay") || err.contains("update-delay"),
        "{err}"
    );

    // The other bounded fields, found by trying: each refused naming it
    // (by the CLI's flag or by the manager's field name).
    let big_env = format!("E={}", "x".repeat(40_000));
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--mode",
                "replicated-job",
                "--max-concurrent",
                "18446744073709551615",
            ],
            "max_concurrent",
        ),
        (
            &["--restart-max-attempts", "18446744073709551615"],
            "restart_max_attempts",
        ),
        (&["--restart-window", "1000y"], "restart_window"),
        (&["--restart-delay", "1000y"], "restart_delay"),
        (&["--stop-grace-period", "1000y"], "stop_grace_period"),
        (
            &["--update-parallelism", "18446744073709551615"],
            "update_parallelism",
        ),
        (&["--rollback-monitor", "1000y"], "rollback_monitor"),
        (
            &["--replicas-max-per-node", "18446744073709551615"],
            "replicas_max_per_node",
        ),
        (
            &["--health-cmd", "true", "--health-interval", "1000y"],
            "health_interval",
        ),
        (&["-e", &big_env], "env"),
        (&["--name", "web-"], "name"),
    ];
    for (flags, field) in cases {
        let mut args = vec!["service", "create", "-d"];
        if !flags.contains(&"--name") {
            args.extend(["--name", "probe"]);
        }
        args.extend_from_slice(flags);
        args.push("shoal/echo");
        let err = refused(n, &args);
        let flag = field.replace('_', "-");
        assert!(
            err.contains(field) || err.contains(&flag),
            "{flags:?}: {err}"
        );
    }

    // Node labels follow the same rules.
    let node_before = n.shoal_ok(&["node", "inspect", "node-1"]);
    let err = refused(n, &["node", "update", "--label-add", &ten_kb, "node-1"]);
    assert!(err.contains("labels:"), "{err}");
    let err = refused(n, &["node", "update", "--label-add", "a\tb=c", "node-1"]);
    assert!(err.contains("label"), "{err}");
    assert_eq!(node_before, n.shoal_ok(&["node", "inspect", "node-1"]));

    // Nothing stored changed, and the node still serves and still takes a
    // normal service.
    let after = (
        n.shoal_ok(&["service", "ls"]),
        n.shoal_ok(&["service", "inspect", "base"]),
    );
    assert_eq!(before, after, "a refused request changes nothing");
    assert!(n.curl(8080).is_ok());
    n.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "next",
        "-p",
        "8081:80",
        "shoal/echo",
    ]);
    n.wait_routed(8081, 1);
    assert!(n.curl(8081).is_ok());
    let log = n.log();
    assert!(
        !log.contains("panicked") && !log.contains("memory allocation"),
        "{log}"
    );
}

#[test]
fn update_status_appears_only_for_a_real_update() {
    if !require_root("update_status_appears_only_for_a_real_update") {
        return;
    }
    let c = Cluster::single("updstat");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-q",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "--restart-delay",
        "0s",
        "--update-monitor",
        "1s",
        "-p",
        "8080:80",
        "shoal/echo:1",
    ]);
    // Right after create -d, while the tasks start.
    assert!(
        inspect(n, "web").get("UpdateStatus").is_none(),
        "no UpdateStatus after create: {}",
        inspect(n, "web")
    );
    n.wait_routed(8080, 2);

    // A task killed with SIGKILL, then replaced: still no update.
    let before = inspect(n, "web");
    assert!(!before["Version"].is_null() && !before["UpdatedAt"].is_null());
    let ids = n.shoal_ok(&["service", "ps", "-q", "--no-trunc", "web"]);
    let victim = ids.lines().next().expect("a task").trim().to_string();
    let pid = n.shoal_ok(&["inspect", "-f", "{{.Status.ContainerStatus.PID}}", &victim]);
    let kill = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .output()
        .expect("kill");
    assert!(kill.status.success(), "kill -9 {pid}");
    assert_eventually("a replacement runs", Duration::from_secs(30), || {
        let ps = n.shoal_ok(&["service", "ps", "web"]);
        let running = ps.lines().filter(|l| l.contains("Running")).count();
        let failed = ps.lines().any(|l| l.contains("Failed"));
        if running >= 2 && failed {
            Ok(())
        } else {
            Err(ps)
        }
    });
    n.wait_routed(8080, 2);
    // Longer than the update monitor, so a false "completed" would show.
    std::thread::sleep(Duration::from_secs(3));
    let after = inspect(n, "web");
    assert!(
        after.get("UpdateStatus").is_none(),
        "a killed task is not an update: {after}"
    );
    assert_eq!(before["Version"], after["Version"], "{after}");
    assert_eq!(before["UpdatedAt"], after["UpdatedAt"], "{after}");

    // A scale is not an update either.
    n.shoal_ok(&["service", "scale", "web=3"]);
    assert!(inspect(n, "web").get("UpdateStatus").is_none());

    // A real update: updating, then completed.
    n.shoal_ok(&["service", "update", "-d", "--image", "shoal/echo:2", "web"]);
    let state = |n: &Node| inspect(n, "web")["UpdateStatus"]["State"].clone();
    assert_eq!(state(n), "updating");
    assert_eventually(
        "the update completes",
        Duration::from_secs(60),
        || match state(n) {
            s if s == "completed" => Ok(()),
            s => Err(s.to_string()),
        },
    );
}
