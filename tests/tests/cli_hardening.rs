//! The smaller faults of a careless world, end to end on one node: bad
//! numeric flags, concurrent writers of one service, a missing workdir,
//! clients that half-close.

use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, text, Cluster};

/// A negative value for a numeric flag is one line naming the flag, status
/// 125, and nothing stored changes.
#[test]
fn negative_flag_values_are_one_line_and_change_nothing() {
    if !require_root("negative_flag_values_are_one_line_and_change_nothing") {
        return;
    }
    let c = Cluster::single("flags");
    let n = &c.node;
    n.shoal_ok(&["service", "create", "-d", "--name", "web", "shoal/echo"]);
    let before = n.shoal_ok(&["service", "inspect", "web"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["service", "create", "--name", "x", "-p", "-1:80", "shoal/echo"],
            "invalid argument \"-1:80\" for \"-p, --publish\" flag: published port \"-1\" must be a number from 1 to 65535",
        ),
        (
            &["service", "create", "--name", "x", "--restart-delay", "-5s", "shoal/echo"],
            "invalid argument \"-5s\" for \"--restart-delay\" flag: duration cannot be negative",
        ),
        (
            &["service", "update", "--restart-max-attempts", "-1", "web"],
            "invalid argument \"-1\" for \"--restart-max-attempts\" flag: must be a non-negative integer",
        ),
    ];
    for (args, want) in cases {
        let out = n.shoal(args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end(), *want, "{args:?}");
    }
    assert_eq!(n.shoal_ok(&["service", "ls", "-q"]).lines().count(), 1);
    assert_eq!(n.shoal_ok(&["service", "inspect", "web"]), before);
}

/// Writers of one service at the same moment all get through: each one
/// that loses the race reads the service again and retries with backoff.
#[test]
fn concurrent_updates_of_one_service_all_succeed() {
    if !require_root("concurrent_updates_of_one_service_all_succeed") {
        return;
    }
    let c = Cluster::single("concur");
    let n = &c.node;
    n.shoal_ok(&["service", "create", "-d", "--name", "web", "shoal/echo"]);
    const WRITERS: usize = 8;
    let outs: Vec<_> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                s.spawn(move || {
                    let env = format!("K{i}=v");
                    n.shoal(&["service", "update", "-d", "--env-add", &env, "web"])
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for out in &outs {
        let (stdout, stderr) = text(out);
        assert!(out.status.success(), "{stdout}{stderr}");
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&n.shoal_ok(&["service", "inspect", "web"])).unwrap();
    let env = &inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"];
    for i in 0..WRITERS {
        let want = serde_json::Value::String(format!("K{i}=v"));
        assert!(
            env.as_array().is_some_and(|e| e.contains(&want)),
            "K{i} missing: {env}"
        );
    }
}

/// A `--workdir` that does not exist fails the task, and `service ps`
/// says so by name.
#[test]
fn a_missing_workdir_is_named_in_service_ps() {
    if !require_root("a_missing_workdir_is_named_in_service_ps") {
        return;
    }
    let c = Cluster::single("workdir");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "wd",
        "--runtime",
        "process",
        "-w",
        "/nonexistent/workdir",
        "wd",
        "sleep",
        "100",
    ]);
    assert_eventually(
        "the task fails naming its workdir",
        Duration::from_secs(20),
        || {
            let ps = n.shoal_ok(&["service", "ps", "--no-trunc", "wd"]);
            if ps.contains("task: workdir /nonexistent/workdir: no such directory") {
                Ok(())
            } else {
                Err(ps)
            }
        },
    );
}

/// Clients that send a request and shut down their write side (`nc -q`)
/// are all answered by `shoal/echo` behind the mesh.
#[test]
fn echo_answers_half_closing_clients_through_the_mesh() {
    if !require_root("echo_answers_half_closing_clients_through_the_mesh") {
        return;
    }
    let c = Cluster::single("halfclose");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "--name",
        "web",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    n.wait_routed(8080, 1);
    const CLIENTS: usize = 200;
    let script = format!(
        r#"
import socket
answered = 0
for _ in range({CLIENTS}):
    s = socket.create_connection(("127.0.0.1", 8080), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    s.close()
    if b" on node-1 (" in reply:
        answered += 1
print(answered)
"#
    );
    let out =
        n.ns.command("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), CLIENTS.to_string(), "answered of {CLIENTS}");
}
