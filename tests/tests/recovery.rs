//! A task killed under load is replaced with its history kept, and no client
//! request started after the kill fails; a daemon restart keeps services,
//! ports and history and runs tasks again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, Cluster};

#[test]
fn killed_task_is_replaced_without_failed_requests() {
    if !require_root("killed_task_is_replaced_without_failed_requests") {
        return;
    }
    let c = Cluster::single("kill");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "web",
        "--replicas",
        "3",
        "--restart-delay",
        "1s",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    n.wait_routed(8080, 3);

    let ids = n.shoal_ok(&["service", "ps", "-q", "--no-trunc", "web"]);
    let victim = ids.lines().next().expect("a task").trim().to_string();
    let task: serde_json::Value = serde_json::from_str(&n.shoal_ok(&["inspect", &victim])).unwrap();
    assert_eq!(task[0]["Status"]["State"], "running", "{task}");
    let pid = task[0]["Status"]["ContainerStatus"]["PID"]
        .as_i64()
        .expect("PID");
    let by_format = n.shoal_ok(&[
        "inspect",
        "--format",
        "{{.Status.ContainerStatus.PID}}",
        &victim,
    ]);
    assert_eq!(by_format.trim(), pid.to_string());

    // Steady load while the task dies.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ns_name = n.ns.name.clone();
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let started = std::time::Instant::now();
                let out = std::process::Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &ns_name,
                        "curl",
                        "-s",
                        "-S",
                        "-m",
                        "5",
                        "http://127.0.0.1:8080/",
                    ])
                    .output()
                    .unwrap();
                if out.status.success() {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    errors.push((started, String::from_utf8_lossy(&out.stderr).into_owned()));
                }
            }
            errors
        })
    };
    assert_eventually("load is flowing", Duration::from_secs(10), || {
        if ok.load(Ordering::SeqCst) > 5 {
            Ok(())
        } else {
            Err("no responses yet".into())
        }
    });
    // SAFETY: kill(2) on the task's pid; no memory involved.
    assert_eq!(
        unsafe { libc::kill(pid as i32, libc::SIGKILL) },
        0,
        "kill task {pid}"
    );
    let killed = std::time::Instant::now();

    let ps = assert_eventually(
        "old task failed and a new one runs in its slot",
        Duration::from_secs(30),
        || {
            let ps = n.shoal_ok(&["service", "ps", "web"]);
            let history = ps.lines().any(|l| {
                l.contains(r"\_ web.")
                    && l.contains("Shutdown")
                    && l.contains("Failed")
                    && l.contains("\"task: non-zero exit (137)\"")
            });
            let running = ps
                .lines()
                .filter(|l| !l.contains(r"\_") && l.contains("Running"))
                .count();
            if history && running == 3 {
                Ok(ps)
            } else {
                Err(ps)
            }
        },
    );
    n.wait_routed(8080, 3);
    let before = ok.load(Ordering::SeqCst);
    assert_eventually(
        "load continues after recovery",
        Duration::from_secs(10),
        || {
            if ok.load(Ordering::SeqCst) > before + 10 {
                Ok(())
            } else {
                Err("stalled".into())
            }
        },
    );
    stop.store(true, Ordering::SeqCst);
    let errors = load.join().unwrap();
    // A request the dead task had already taken when it was killed cannot be
    // saved by a TCP proxy (its bytes went to the process that died); every
    // request that started after the kill succeeded: the mesh never sends a
    // new connection to the dead task for good (a refused connect is retried
    // on the next endpoint until the feed withdraws it).
    let after_kill: Vec<&String> = errors
        .iter()
        .filter(|(started, _)| *started >= killed)
        .map(|(_, e)| e)
        .collect();
    assert!(
        after_kill.is_empty() && errors.len() <= 1,
        "failed requests: {after_kill:?} after the kill, {} in all\n{ps}",
        errors.len()
    );
    assert_eq!(failed.load(Ordering::SeqCst), errors.len());

    let running = n.shoal_ok(&["service", "ps", "-f", "desired-state=running", "web"]);
    assert_eq!(running.lines().skip(1).count(), 3, "{running}");
    let task: serde_json::Value = serde_json::from_str(&n.shoal_ok(&["inspect", &victim])).unwrap();
    assert_eq!(task[0]["Status"]["State"], "failed");
    assert_eq!(task[0]["DesiredState"], "shutdown");
}

#[test]
fn restart_keeps_services_ports_and_history() {
    if !require_root("restart_keeps_services_ports_and_history") {
        return;
    }
    let mut c = Cluster::single("restart");
    c.node.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "web",
        "--replicas",
        "2",
        "--restart-delay",
        "1s",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    c.node.wait_routed(8080, 2);
    let id_before = c.node.shoal_ok(&["service", "ls", "-q"]);

    c.node.restart();
    let n = &c.node;
    assert_eq!(
        n.shoal_ok(&["service", "ls", "-q"]),
        id_before,
        "service survives"
    );
    // The old tasks end (the agent reports them) and new ones take their slots.
    assert_eventually(
        "old tasks in history, new ones running",
        Duration::from_secs(30),
        || {
            let ps = n.shoal_ok(&["service", "ps", "--no-trunc", "web"]);
            let history = ps
                .lines()
                .filter(|l| {
                    // Stopped cleanly on SIGTERM, or found gone after the restart.
                    l.contains(r"\_ web.")
                        && (l.contains("Shutdown   ")
                            || l.contains("task: shoald restarted while the task was running"))
                })
                .count();
            let running = ps
                .lines()
                .filter(|l| !l.contains(r"\_") && l.contains("Running"))
                .count();
            if history >= 2 && running == 2 {
                Ok(())
            } else {
                Err(ps)
            }
        },
    );
    n.wait_routed(8080, 2);
    let body = n.curl(8080).expect("published port served after restart");
    assert!(body.starts_with("web."), "{body}");
    assert!(n.log().contains("rejoined the cluster"), "{}", n.log());
}
