//! Single-node services end to end: create, distribution, ls/ps/inspect,
//! scale, global mode, process runtime, logs, metrics.

use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, Cluster};

fn metric_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn create_distributes_exactly_round_robin_and_counts_per_task() {
    if !require_root("create_distributes_exactly_round_robin_and_counts_per_task") {
        return;
    }
    let c = Cluster::single("rr");
    let n = &c.node;
    let out = n.shoal_ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "-p",
        "8080:80",
        "shoal/echo:2",
    ]);
    let mut lines = out.lines();
    let id = lines.next().unwrap_or_default();
    assert_eq!(id.len(), 25, "first line is the service ID: {out}");
    assert!(out.contains("overall progress: 3 out of 3 tasks"), "{out}");
    assert!(out.contains("verify: Service web converged"), "{out}");

    n.wait_routed(8080, 3);
    let seen = n.distribution(8080, 30).unwrap();
    assert_eq!(seen.len(), 3, "three tasks answer: {seen:?}");
    assert!(seen.values().all(|c| *c == 10), "exactly 10 each: {seen:?}");
    for task in seen.keys() {
        assert!(task.starts_with("web."), "reply names the task: {task}");
    }
    let body = n.curl(8080).unwrap();
    assert!(
        body.contains("on node-1") && body.contains("tag 2"),
        "{body}"
    );

    let metrics = n.metrics();
    let total = metric_sum(
        &metrics,
        "shoal_mesh_task_connections_total",
        "service=\"web\"",
    );
    assert_eq!(
        total, 31.0,
        "per-task connection counters sum to the curls made"
    );
    assert!(metrics.contains("shoal_mesh_task_connect_duration_seconds_bucket"));
    assert!(metrics.contains("shoal_mesh_task_bytes_to_client_total"));
    assert_eq!(
        metric_sum(&metrics, "shoal_mesh_port_accepted_total", "port=\"8080\""),
        31.0
    );

    let ls = n.shoal_ok(&["service", "ls"]);
    let header = ls.lines().next().unwrap();
    for col in ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"] {
        assert!(header.contains(col), "{ls}");
    }
    let row = ls.lines().find(|l| l.contains("web")).unwrap();
    assert!(
        row.contains("replicated") && row.contains("3/3") && row.contains("*:8080->80/tcp"),
        "{ls}"
    );
    assert!(row.starts_with(&id[..12]), "{ls}");

    let ps = n.shoal_ok(&["service", "ps", "web"]);
    assert_eq!(
        ps.lines().filter(|l| l.contains("Running")).count(),
        3,
        "{ps}"
    );
    assert!(ps.lines().next().unwrap().contains("DESIRED STATE"), "{ps}");

    let inspect = n.shoal_ok(&["service", "inspect", "web"]);
    let json: serde_json::Value = serde_json::from_str(&inspect).expect("inspect is JSON");
    assert_eq!(json[0]["ID"], id);
    assert_eq!(json[0]["Spec"]["Name"], "web");
    let pretty = n.shoal_ok(&["service", "inspect", "--pretty", "web"]);
    assert!(
        pretty.contains("Name:") && pretty.contains("web") && pretty.contains("8080"),
        "{pretty}"
    );

    let nodes = n.shoal_ok(&["node", "ls"]);
    let row = nodes.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains('*')
            && row.contains("node-1")
            && row.contains("Ready")
            && row.contains("Active")
            && row.contains("Leader"),
        "{nodes}"
    );
}

#[test]
fn long_publish_syntax_and_allocated_ports() {
    if !require_root("long_publish_syntax_and_allocated_ports") {
        return;
    }
    let c = Cluster::single("ports");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "long",
        "-p",
        "published=8081,target=80,protocol=tcp,mode=ingress",
        "shoal/echo",
    ]);
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "auto",
        "-p",
        "80",
        "shoal/echo",
    ]);
    n.wait_routed(8081, 1);
    assert!(n.curl(8081).unwrap().starts_with("long.1."));
    let inspect: serde_json::Value =
        serde_json::from_str(&n.shoal_ok(&["service", "inspect", "auto"])).unwrap();
    let port = inspect[0]["Endpoint"]["Ports"][0]["PublishedPort"]
        .as_u64()
        .expect("allocated port");
    assert!((30000..=32767).contains(&port), "allocated {port}");
    n.wait_routed(port as u16, 1);
    assert!(n.curl(port as u16).unwrap().starts_with("auto.1."));
    let ls = n.shoal_ok(&["service", "ls"]);
    assert!(ls.contains(&format!("*:{port}->80/tcp")), "{ls}");
}

#[test]
fn scale_up_and_down_and_global_mode() {
    if !require_root("scale_up_and_down_and_global_mode") {
        return;
    }
    let c = Cluster::single("scale");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "api",
        "--replicas",
        "1",
        "-p",
        "8090:80",
        "shoal/echo",
    ]);
    let out = n.shoal_ok(&["service", "scale", "web=6", "api=2"]);
    assert!(
        out.contains("web scaled to 6") && out.contains("api scaled to 2"),
        "{out}"
    );
    n.wait_routed(8080, 6);
    n.wait_routed(8090, 2);
    let seen = n.distribution(8080, 30).unwrap();
    assert!(
        seen.len() == 6 && seen.values().all(|c| *c == 5),
        "{seen:?}"
    );

    n.shoal_ok(&["service", "scale", "-d", "web=2"]);
    n.wait_routed(8080, 2);
    assert_eventually(
        "scaled-down tasks are gone from ps",
        Duration::from_secs(30),
        || {
            let ps = n.shoal_ok(&["service", "ps", "-q", "web"]);
            match ps.lines().count() {
                2 => Ok(()),
                k => Err(format!("{k} tasks listed")),
            }
        },
    );
    let ls = n.shoal_ok(&["service", "ls"]);
    assert!(
        ls.lines().any(|l| l.contains("web") && l.contains("2/2")),
        "{ls}"
    );

    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "mon",
        "--mode",
        "global",
        "shoal/timecheck:1.0",
    ]);
    assert_eventually(
        "global service runs one task on the node",
        Duration::from_secs(30),
        || {
            let ls = n.shoal_ok(&["service", "ls"]);
            let row = ls
                .lines()
                .find(|l| l.contains("mon"))
                .unwrap_or_default()
                .to_string();
            if row.contains("global") && row.contains("1/1") {
                Ok(())
            } else {
                Err(ls)
            }
        },
    );
    let err = n.shoal_err(&["service", "scale", "mon=3"]);
    assert!(
        err.contains("scale can only be used with replicated"),
        "{err}"
    );

    let pids: Vec<i64> = n
        .shoal_ok(&["service", "ps", "-q", "--no-trunc", "api"])
        .lines()
        .map(|id| {
            n.shoal_ok(&["inspect", "-f", "{{.Status.ContainerStatus.PID}}", id])
                .trim()
                .parse()
                .expect("a task PID")
        })
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let removed = std::time::Instant::now();
    let out = n.shoal_ok(&["service", "rm", "api"]);
    assert!(out.contains("api"), "{out}");
    assert_eventually(
        "removed service stops being served",
        Duration::from_secs(20),
        || match n.curl(8090) {
            Err(_) => Ok(()),
            Ok(b) => Err(format!("still served: {b}")),
        },
    );
    // Its tasks stop as soon as the node confirmed their withdrawal, not at
    // the agent's 10 s limit for an unconfirmed one (the feed carries the
    // revision to confirm although no route changes with it).
    assert_eventually(
        "the removed service's task processes are gone",
        Duration::from_secs(20),
        || match pids
            .iter()
            .find(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        {
            None => Ok(()),
            Some(p) => Err(format!("task process {p} still runs")),
        },
    );
    assert!(
        removed.elapsed() < Duration::from_secs(8),
        "the tasks took {:?} to stop",
        removed.elapsed()
    );
}

#[test]
fn process_runtime_env_workdir_and_logs() {
    if !require_root("process_runtime_env_workdir_and_logs") {
        return;
    }
    let c = Cluster::single("proc");
    let n = &c.node;
    let www = n.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from a process task\n").unwrap();
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "py",
        "--replicas",
        "2",
        "-p",
        "8085:80",
        "--workdir",
        www.to_str().unwrap(),
        "-e",
        "GREETING=hi",
        "--runtime",
        "process",
        "python3-http",
        "python3",
        "-m",
        "http.server",
        "80",
    ]);
    n.wait_routed(8085, 2);
    assert_eq!(n.curl(8085).unwrap(), "hello from a process task\n");

    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "tc",
        "shoal/timecheck:1.0",
    ]);
    let line = assert_eventually("timecheck logs", Duration::from_secs(30), || {
        let logs = n.shoal_ok(&["service", "logs", "tc"]);
        logs.lines()
            .find(|l| l.contains("App version: 1.0; time check:"))
            .map(str::to_string)
            .ok_or(logs)
    });
    assert!(
        line.starts_with("tc.1.")
            && line.contains("@node-1")
            && line.contains("| App version: 1.0; time check: "),
        "{line}"
    );
    let tail = n.shoal_ok(&["service", "logs", "--tail", "1", "tc"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let ts = n.shoal_ok(&["service", "logs", "-t", "--since", "10m", "tc"]);
    assert!(
        ts.lines()
            .all(|l| l.starts_with("20") && l.contains(" tc.1.")),
        "timestamps start the lines: {ts}"
    );
    // http.server logs requests on stderr, and `service logs` keeps streams apart.
    let out = n.shoal(&["service", "logs", "py"]);
    let (stdout, stderr) = shoal_testkit::text(&out);
    assert!(
        stdout.contains("Serving HTTP on 0.0.0.0 port 80"),
        "{stdout}"
    );
    assert!(
        stderr.contains("\"GET / HTTP/1.1\" 200"),
        "request log on stderr: {stderr}"
    );
}

#[test]
fn stop_signal_and_grace_period() {
    if !require_root("stop_signal_and_grace_period") {
        return;
    }
    let c = Cluster::single("stopsig");
    let n = &c.node;
    let script =
        "trap 'echo got-int; exit 0' INT; trap '' TERM; echo up; while true; do sleep 0.1; done";
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "polite",
        "--stop-signal",
        "SIGINT",
        "--stop-grace-period",
        "30s",
        "--runtime",
        "process",
        "sh-img",
        "sh",
        "-c",
        script,
    ]);
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "stubborn",
        "--stop-grace-period",
        "1s",
        "--runtime",
        "process",
        "sh-img",
        "sh",
        "-c",
        script,
    ]);
    for svc in ["polite", "stubborn"] {
        assert_eventually(&format!("{svc} runs"), Duration::from_secs(20), || {
            let logs = n.shoal_ok(&["service", "logs", svc]);
            if logs.contains("| up") {
                Ok(())
            } else {
                Err(logs)
            }
        });
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&n.shoal_ok(&["service", "inspect", "polite"])).unwrap();
    let cs = &inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(cs["StopSignal"], "SIGINT", "{cs}");
    assert_eq!(cs["StopGracePeriod"], 30_000_000_000u64, "{cs}");

    // --force replaces each task; the old ones stay in history with their logs.
    let started = std::time::Instant::now();
    n.shoal_ok(&["service", "update", "-d", "--force", "polite"]);
    n.shoal_ok(&["service", "update", "-d", "--force", "stubborn"]);
    let stopped = |svc: &str| -> Result<serde_json::Value, String> {
        let ids = n.shoal_ok(&[
            "service",
            "ps",
            "-q",
            "--no-trunc",
            "-f",
            "desired-state=shutdown",
            svc,
        ]);
        let id = ids.lines().next().ok_or("no old task yet")?.to_string();
        let task: serde_json::Value = serde_json::from_str(&n.shoal_ok(&["inspect", &id])).unwrap();
        match task[0]["Status"]["State"].as_str() {
            Some("shutdown" | "failed" | "complete") => Ok(task[0]["Status"].clone()),
            other => Err(format!("{other:?}")),
        }
    };
    let polite = assert_eventually("polite's old task stopped", Duration::from_secs(20), || {
        stopped("polite")
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGINT stopped it well inside its 30 s grace: {polite}"
    );
    assert_eq!(polite["ContainerStatus"]["ExitCode"], 0, "{polite}");
    let logs = n.shoal_ok(&["service", "logs", "polite"]);
    assert!(
        logs.contains("| got-int"),
        "the task got its stop signal: {logs}"
    );
    let stubborn = assert_eventually(
        "stubborn's old task killed",
        Duration::from_secs(20),
        || stopped("stubborn"),
    );
    assert_eq!(
        stubborn["ContainerStatus"]["ExitCode"], 137,
        "SIGKILL after the 1 s grace period: {stubborn}"
    );
}
