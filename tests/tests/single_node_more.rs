//! More single-node scenarios: loopback network mode, a process task's
//! environment and working directory, `service logs -f` and `--since`, the
//! mesh draining open connections on SIGTERM, restart conditions and
//! attempts, and the JSON shapes of `service inspect` and `inspect TASK`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal_testkit::{assert_eventually, bin, require_root, text, Cluster, Node};

/// The `service ps` rows (header left out).
fn ps_rows(node: &Node, service: &str) -> Vec<String> {
    node.shoal_ok(&["service", "ps", "--no-trunc", service])
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// The number of tasks `service ps -q` lists.
fn task_count(node: &Node, service: &str) -> usize {
    node.shoal_ok(&["service", "ps", "-q", service])
        .lines()
        .count()
}

/// An absence check: `probe` must hold at every poll for the whole of
/// `window` (bounded; polls every 200 ms).
fn holds_for(what: &str, window: Duration, mut probe: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + window;
    loop {
        if let Err(e) = probe() {
            panic!("{what}: stopped holding: {e}");
        }
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2026-11-23T05:43:46.123Z`).
fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// A child process killed and reaped on drop (also when a test panics).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn loopback_mode_routes_to_plain_processes() {
    if !require_root("loopback_mode_routes_to_plain_processes") {
        return;
    }
    let node = Node::start_with(
        "loopback",
        "node-1",
        None,
        None,
        &["--network-mode", "loopback"],
    );
    node.shoal_ok(&["swarm", "init"]);
    node.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "3",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    node.wait_routed(8080, 3);
    let seen = node.distribution(8080, 30).unwrap();
    assert_eq!(seen.len(), 3, "three tasks answer: {seen:?}");
    assert!(seen.values().all(|c| *c == 10), "exactly 10 each: {seen:?}");
    assert!(seen.keys().all(|t| t.starts_with("web.")), "{seen:?}");

    // Tasks are plain processes on allocated loopback ports.
    let routes = node.routes();
    let web = routes["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == "web")
        .unwrap_or_else(|| panic!("web in /routes: {routes}"));
    let mut ports = BTreeSet::new();
    for e in web["endpoints"].as_array().expect("endpoints") {
        let addrs = e["addrs"].as_array().expect("addrs");
        assert_eq!(addrs.len(), 1, "{e}");
        assert_eq!(addrs[0]["target"], 80, "{e}");
        let addr = addrs[0]["addr"].as_str().expect("addr");
        let port = addr
            .strip_prefix("127.0.0.1:")
            .unwrap_or_else(|| panic!("loopback address: {addr}"));
        let port: u16 = port.parse().expect("port number");
        assert_ne!(port, 80, "an allocated port, not the target: {addr}");
        ports.insert(port);
    }
    assert_eq!(ports.len(), 3, "3 distinct loopback ports: {web}");

    // A process task finds its port in $PORT.
    let www = node.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "served on $PORT\n").unwrap();
    node.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "py",
        "-p",
        "8088:80",
        "--workdir",
        www.to_str().unwrap(),
        "--runtime",
        "process",
        "python3-http",
        "sh",
        "-c",
        "exec python3 -m http.server --bind 127.0.0.1 $PORT",
    ]);
    node.wait_routed(8088, 1);
    let body = assert_eventually(
        "python answers via the mesh",
        Duration::from_secs(15),
        || node.curl(8088),
    );
    assert_eq!(body, "served on $PORT\n");
}

#[test]
fn env_and_workdir_reach_the_process() {
    if !require_root("env_and_workdir_reach_the_process") {
        return;
    }
    let c = Cluster::single("env");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "env",
        "--runtime",
        "process",
        "--restart-condition",
        "none",
        "-e",
        "GREETING=hi",
        "-e",
        "EMPTY=",
        "-e",
        "SPACED=a b=c",
        "--workdir",
        "/tmp",
        "sh-img",
        "sh",
        "-c",
        "echo \"greeting=$GREETING cwd=$(pwd) slot=$SHOAL_TASK_SLOT\"; \
         echo \"empty=[${EMPTY-unset}] spaced=[$SPACED] svc=$SHOAL_SERVICE_NAME host=$SHOAL_NODE_HOSTNAME\"; \
         exec sleep 600",
    ]);
    let logs = assert_eventually("the task's first lines", Duration::from_secs(20), || {
        let logs = n.shoal_ok(&["service", "logs", "env"]);
        if logs.contains("greeting=") && logs.contains("empty=") {
            Ok(logs)
        } else {
            Err(logs)
        }
    });
    assert!(
        logs.contains("| greeting=hi cwd=/tmp slot=1\n"),
        "env, workdir and slot: {logs}"
    );
    assert!(
        logs.contains("| empty=[] spaced=[a b=c] svc=env host=node-1\n"),
        "an empty value is set, a value keeps its '=' and spaces: {logs}"
    );
    let row = ps_rows(n, "env").join("\n");
    assert!(row.contains("Running"), "{row}");
}

#[test]
fn logs_follow_streams_new_lines() {
    if !require_root("logs_follow_streams_new_lines") {
        return;
    }
    let c = Cluster::single("follow");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "py",
        "-p",
        "8086:80",
        "--runtime",
        "process",
        "python3-http",
        "python3",
        "-m",
        "http.server",
        "80",
    ]);
    n.wait_routed(8086, 1);

    // Follow first, then make the request: the line must arrive live.
    let child = Command::new(bin("shoal"))
        .arg("-H")
        .arg(n.host())
        .args(["service", "logs", "-f", "py"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal service logs -f");
    let mut follow = KillOnDrop(child);
    let stderr = follow.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eventually("http.server answers", Duration::from_secs(15), || {
        n.curl(8086)
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = Vec::new();
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("\"GET / HTTP/1.1\" 200") => break l,
            Ok(l) => got.push(l),
            Err(e) => panic!(
                "no request line from `service logs -f` ({e}); got {got:?}\n{}",
                n.log()
            ),
        }
    };
    assert!(line.starts_with("py.1."), "{line}");
    assert!(
        follow.0.try_wait().unwrap().is_none(),
        "logs -f keeps running"
    );
    drop(follow);
    reader.join().unwrap();

    // --since an instant after the first request shows only later lines.
    let since = rfc3339_now();
    n.ns.curl(8086, "/second").expect("second request");
    let (stdout, stderr) = assert_eventually(
        "the second request in logs --since",
        Duration::from_secs(15),
        || {
            let out = n.shoal(&["service", "logs", "--since", &since, "py"]);
            let (stdout, stderr) = text(&out);
            if !out.status.success() {
                return Err(format!("logs failed: {stderr}"));
            }
            if stderr.contains("\"GET /second HTTP/1.1\" 404") {
                Ok((stdout, stderr))
            } else {
                Err(format!(
                    "since {since}: stdout {stdout:?} stderr {stderr:?}"
                ))
            }
        },
    );
    assert!(
        !stderr.contains("\"GET / HTTP/1.1\""),
        "--since {since} leaves the first request out: {stderr}"
    );
    assert!(
        !stdout.contains("Serving HTTP"),
        "--since {since} leaves the start-up line out: {stdout}"
    );
    // Without --since, both are there.
    let out = n.shoal(&["service", "logs", "py"]);
    let (_, all) = text(&out);
    assert!(
        all.contains("\"GET / HTTP/1.1\" 200") && all.contains("\"GET /second HTTP/1.1\" 404"),
        "{all}"
    );
}

/// Accepts connections; answers each request `slow-ok` one second after it
/// arrived, touching `$MARK` when a request (not a bare connect, as a
/// readiness probe makes) has been read.
const SLOW_SERVER: &str = r#"
import os, socket, threading, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(16)
def handle(c):
    if not c.recv(65536):
        c.close()
        return
    open(os.environ["MARK"], "w").close()
    time.sleep(1)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nslow-ok\n")
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

#[test]
fn sigterm_drains_open_connections() {
    if !require_root("sigterm_drains_open_connections") {
        return;
    }
    let mut c = Cluster::single("drain");
    let mark = c.node.dir.path().join("accepted");
    c.node.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "slow",
        "-p",
        "8087:80",
        "-e",
        &format!("MARK={}", mark.display()),
        "--runtime",
        "process",
        "slow-img",
        "python3",
        "-c",
        SLOW_SERVER,
    ]);
    c.node.wait_routed(8087, 1);

    let curl = c
        .node
        .ns
        .command("curl")
        .args(["-s", "-S", "-m", "20", "http://127.0.0.1:8087/"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    let mut curl = KillOnDrop(curl);
    // The task has the request: it is now in flight through the mesh.
    assert_eventually(
        "the task accepted the request",
        Duration::from_secs(15),
        || {
            if mark.exists() {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    );
    let stopping = Instant::now();
    c.node.stop();
    let stop_took = stopping.elapsed();

    // curl gives up by itself after 20 s, so this read is bounded.
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut curl.0.stdout.take().unwrap(), &mut stdout).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut curl.0.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = curl.0.wait().expect("curl status");
    assert!(
        status.success() && stdout == "slow-ok\n",
        "in-flight request completes during shutdown (stop took {stop_took:?}): \
         status {status:?} stdout {stdout:?} stderr {stderr:?}\n--- shoald log ---\n{}",
        c.node.log()
    );
}

#[test]
fn restart_condition_none_and_on_failure() {
    if !require_root("restart_condition_none_and_on_failure") {
        return;
    }
    let c = Cluster::single("restartc");
    let n = &c.node;
    let create = |name: &str, extra: &[&str], script: &str| {
        let mut args = vec!["service", "create", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--runtime", "process", "sh-img", "sh", "-c", script]);
        n.shoal_ok(&args);
    };
    create("none", &["--restart-condition", "none"], "exit 3");
    create("onfail", &["--restart-condition", "on-failure"], "exit 0");
    create(
        "capped",
        &["--restart-max-attempts", "2", "--restart-delay", "200ms"],
        "exit 1",
    );

    let none = assert_eventually("none: the task failed", Duration::from_secs(20), || {
        let rows = ps_rows(n, "none");
        if rows.iter().any(|r| r.contains("Failed")) {
            Ok(rows)
        } else {
            Err(rows.join("\n"))
        }
    });
    assert_eq!(none.len(), 1, "{none:?}");
    assert!(none[0].contains("\"task: non-zero exit (3)\""), "{none:?}");
    let task = n.shoal_ok(&["service", "ps", "-q", "--no-trunc", "none"]);
    let json: serde_json::Value =
        serde_json::from_str(&n.shoal_ok(&["inspect", task.trim()])).unwrap();
    assert_eq!(json[0]["Status"]["State"], "failed", "{json}");
    assert_eq!(
        json[0]["Status"]["ContainerStatus"]["ExitCode"], 3,
        "{json}"
    );

    let onfail = assert_eventually(
        "on-failure: the task completed",
        Duration::from_secs(20),
        || {
            let rows = ps_rows(n, "onfail");
            if rows.iter().any(|r| r.contains("Complete")) {
                Ok(rows)
            } else {
                Err(rows.join("\n"))
            }
        },
    );
    assert_eq!(onfail.len(), 1, "{onfail:?}");

    let capped = assert_eventually(
        "capped: 1 + 2 restarts, all failed",
        Duration::from_secs(30),
        || {
            let rows = ps_rows(n, "capped");
            let failed = rows
                .iter()
                .filter(|r| r.contains("\"task: non-zero exit (1)\""))
                .count();
            if rows.len() >= 3 && failed == rows.len() {
                Ok(rows)
            } else {
                Err(rows.join("\n"))
            }
        },
    );
    assert_eq!(capped.len(), 3, "{capped:?}");

    // Nothing more is started, for any of them.
    holds_for("no replacement tasks", Duration::from_secs(5), || {
        match (
            task_count(n, "none"),
            task_count(n, "onfail"),
            task_count(n, "capped"),
        ) {
            (1, 1, 3) => Ok(()),
            got => Err(format!(
                "(none, onfail, capped) = {got:?}\n{}",
                n.shoal_ok(&["service", "ps", "none", "onfail", "capped"])
            )),
        }
    });
    let ls = n.shoal_ok(&["service", "ls"]);
    for name in ["none", "onfail", "capped"] {
        let row = ls
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} in ls: {ls}"));
        assert!(row.contains("0/1"), "{name} runs nothing: {ls}");
    }
}

#[test]
fn service_inspect_and_task_inspect_shapes() {
    if !require_root("service_inspect_and_task_inspect_shapes") {
        return;
    }
    let c = Cluster::single("inspect");
    let n = &c.node;
    let out = n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "-p",
        "8089:80",
        "--restart-delay",
        "3s",
        "-l",
        "tier=front",
        "shoal/echo:3",
    ]);
    let service_id = out.lines().next().unwrap().trim().to_string();
    n.wait_routed(8089, 2);

    let svc: serde_json::Value =
        serde_json::from_str(&n.shoal_ok(&["service", "inspect", "web"])).unwrap();
    let svc = &svc[0];
    assert_eq!(svc["ID"], service_id.as_str(), "{svc}");
    assert_eq!(svc["Spec"]["Name"], "web", "{svc}");
    assert_eq!(svc["Spec"]["Labels"]["tier"], "front", "{svc}");
    assert_eq!(svc["Spec"]["Mode"]["Replicated"]["Replicas"], 2, "{svc}");
    let tmpl = &svc["Spec"]["TaskTemplate"];
    assert_eq!(tmpl["ContainerSpec"]["Image"], "shoal/echo:3", "{svc}");
    assert_eq!(tmpl["Runtime"], "builtin", "{svc}");
    assert_eq!(tmpl["RestartPolicy"]["Condition"], "any", "{svc}");
    assert_eq!(
        tmpl["RestartPolicy"]["Delay"], 3_000_000_000u64,
        "Go nanoseconds: {svc}"
    );
    let port = &svc["Endpoint"]["Ports"][0];
    assert_eq!(port["PublishedPort"], 8089, "{svc}");
    assert_eq!(port["TargetPort"], 80, "{svc}");
    assert_eq!(port["Protocol"], "tcp", "{svc}");
    assert_eq!(port["PublishMode"], "ingress", "{svc}");
    assert_eq!(svc["Endpoint"]["Spec"]["Ports"][0]["PublishedPort"], 8089);
    let format = n.shoal_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.Mode}}",
        "web",
    ]);
    assert_eq!(format.trim(), r#"{"Replicated":{"Replicas":2}}"#);

    let node_id = n.shoal_ok(&["node", "ls", "-q"]).trim().to_string();
    assert_eq!(
        node_id.len(),
        25,
        "node ls -q prints the full ID: {node_id:?}"
    );
    let tasks = n.shoal_ok(&["service", "ps", "-q", "--no-trunc", "web"]);
    let tasks: Vec<&str> = tasks.lines().map(str::trim).collect();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let mut slots = BTreeSet::new();
    for id in &tasks {
        let t: serde_json::Value = serde_json::from_str(&n.shoal_ok(&["inspect", id])).unwrap();
        let t = &t[0];
        assert_eq!(t["ID"], *id, "{t}");
        assert_eq!(t["ServiceID"], service_id.as_str(), "{t}");
        assert_eq!(t["NodeID"], node_id.as_str(), "{t}");
        assert_eq!(t["DesiredState"], "running", "{t}");
        assert_eq!(t["Status"]["State"], "running", "{t}");
        assert_eq!(t["Status"]["ContainerStatus"]["ContainerID"], *id, "{t}");
        let pid = t["Status"]["ContainerStatus"]["PID"]
            .as_u64()
            .unwrap_or_else(|| panic!("PID: {t}"));
        assert!(pid > 0, "{t}");
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "PID {pid} is a live process: {t}"
        );
        assert_eq!(t["Spec"]["ContainerSpec"]["Image"], "shoal/echo:3", "{t}");
        let addr = t["NetworksAttachments"][0]["Addresses"][0]
            .as_str()
            .unwrap_or_else(|| panic!("an ingress address in netns mode: {t}"));
        assert!(addr.contains('/'), "CIDR: {addr}");
        assert_eq!(
            t["NetworksAttachments"][0]["Network"]["Spec"]["Name"],
            "ingress"
        );
        slots.insert(t["Slot"].as_u64().expect("Slot"));
    }
    assert_eq!(slots, BTreeSet::from([1, 2]));

    // Top-level inspect also finds services and nodes; a miss is an error.
    let node: serde_json::Value =
        serde_json::from_str(&n.shoal_ok(&["inspect", &node_id])).unwrap();
    assert_eq!(node[0]["Description"]["Hostname"], "node-1", "{node}");
    assert_eq!(node[0]["Spec"]["Role"], "manager", "{node}");
    let err = n.shoal_err(&["inspect", tasks[0], "nosuchthing"]);
    assert!(err.contains("No such object: nosuchthing"), "{err}");
}
