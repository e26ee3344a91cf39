//! UDP ingress through the CLI on a 3-node cluster: `-p 5353:53/udp` with 3
//! `shoal/echo` replicas (its UDP echo answers `<task> on <node>: <payload>`).
//! Flows spread round-robin, a flow stays on its task, and a flow whose task
//! is killed moves to another task within a second; bad port specs are
//! refused with one line naming the field.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_testkit::{require_root, MultiCluster, Node};

/// Sends one datagram from each of `src_ports` (bound in `node`'s
/// namespace) to `127.0.0.1:port`; returns each source port's reply, when one
/// came within `wait`. Each port number is one client flow, kept across
/// calls.
fn udp_ask(
    node: &Node,
    port: u16,
    src_ports: &[u16],
    payload: &str,
    wait: Duration,
) -> BTreeMap<u16, String> {
    const CLIENT: &str = r#"
import socket, sys, time
port, payload, wait = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
socks = []
for src in sys.argv[4:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", int(src)))
    s.connect(("127.0.0.1", port))
    s.sendto(payload.encode(), ("127.0.0.1", port))
    socks.append((src, s))
deadline = time.time() + wait
for src, s in socks:
    s.settimeout(max(0.001, deadline - time.time()))
    try:
        print(src, s.recv(65535).decode(), flush=True)
    except OSError:
        pass
"#;
    let mut cmd = node.ns.command("python3");
    cmd.args([
        "-c",
        CLIENT,
        &port.to_string(),
        payload,
        &format!("{:.3}", wait.as_secs_f64()),
    ]);
    cmd.args(src_ports.iter().map(u16::to_string));
    let out = cmd.output().expect("run python3");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (src, reply) = l.split_once(' ')?;
            Some((src.parse().ok()?, reply.to_owned()))
        })
        .collect()
}

/// The task name of an echo reply: `dns.1.<id> on node-2: payload` → `dns.1.<id>`.
fn task_of(reply: &str) -> &str {
    reply.split_whitespace().next().unwrap_or_default()
}

#[test]
fn udp_flows_spread_stick_and_move_off_a_killed_task() {
    if !require_root("udp_flows_spread_stick_and_move_off_a_killed_task") {
        return;
    }
    let c = MultiCluster::new("udp3", 1, 2);
    let m = c.node(0);
    // PORT=53: shoal/echo serves HTTP and UDP on the target port.
    m.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "dns",
        "--replicas",
        "3",
        "-e",
        "PORT=53",
        "--restart-delay",
        "5s",
        "-p",
        "5353:53/udp",
        "shoal/echo",
    ]);
    let ls = m.shoal_ok(&["service", "ls"]);
    assert!(ls.contains("*:5353->53/udp"), "{ls}");
    for node in &c.nodes {
        node.wait_routed(5353, 3);
    }
    let client = c.node(1);

    // 30 flows from one node: 10 per task.
    let flows: Vec<u16> = (41_000..41_030).collect();
    let replies = udp_ask(client, 5353, &flows, "hello", Duration::from_secs(3));
    assert_eq!(replies.len(), 30, "{replies:?}");
    let mut spread: BTreeMap<&str, usize> = BTreeMap::new();
    for reply in replies.values() {
        assert!(reply.ends_with(": hello"), "{reply}");
        *spread.entry(task_of(reply)).or_default() += 1;
    }
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(spread.values().all(|n| *n == 10), "{spread:?}");

    // One flow's datagrams all reach one task.
    let flow = 41_100;
    let first = udp_ask(client, 5353, &[flow], "0", Duration::from_secs(2));
    let task = task_of(&first[&flow]).to_owned();
    for i in 1..10 {
        let r = udp_ask(
            client,
            5353,
            &[flow],
            &i.to_string(),
            Duration::from_secs(2),
        );
        assert_eq!(task_of(&r[&flow]), task, "datagram {i}: {r:?}");
    }

    // Kill that task: the flow is answered by another task within 1 s.
    let id = task.rsplit('.').next().unwrap();
    let pid: i32 = m
        .shoal_ok(&["inspect", "--format", "{{.Status.ContainerStatus.PID}}", id])
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: kill(2) on the task's pid; no memory involved.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill task {pid}"
    );
    let killed = Instant::now();
    let moved_to = loop {
        let r = udp_ask(client, 5353, &[flow], "after", Duration::from_millis(100));
        if let Some(reply) = r.get(&flow) {
            if task_of(reply) != task {
                break task_of(reply).to_owned();
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the flow did not move off the killed task {task}"
        );
    };
    let took = killed.elapsed();
    eprintln!("the flow moved from {task} to {moved_to} {took:?} after the kill");
    assert!(
        took <= Duration::from_secs(1),
        "moved to {moved_to} after {took:?}"
    );
    // And it stays there.
    let r = udp_ask(client, 5353, &[flow], "later", Duration::from_secs(2));
    assert_eq!(task_of(&r[&flow]), moved_to, "{r:?}");
    let metrics = client.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shoal_mesh_task_udp_flows_total{")
                && l.contains("protocol=\"udp\"")),
        "{metrics}"
    );
}

#[test]
fn udp_port_specs_refused_and_accepted() {
    if !require_root("udp_port_specs_refused_and_accepted") {
        return;
    }
    let c = MultiCluster::new("udpbad", 1, 0);
    let m = c.node(0);
    let create = |name: &str, ports: &[&str]| {
        let mut args = vec!["service", "create", "-q", "-d", "--name", name];
        for p in ports {
            args.extend(["-p", p]);
        }
        args.push("shoal/echo");
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        m.shoal(&args)
    };
    // sctp: a clear refusal naming the field, nothing stored.
    let out = run(create("s1", &["published=7000,target=53,protocol=sctp"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("protocol") && err.contains("sctp"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!m.shoal_ok(&["service", "ls"]).contains("s1"));

    // One service, one number, TCP and UDP: accepted.
    let out = run(create("dns", &["5353:53/tcp", "5353:53/udp"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = m.shoal_ok(&["service", "ls"]);
    assert!(
        ls.contains("*:5353->53/tcp") && ls.contains("*:5353->53/udp"),
        "{ls}"
    );

    // A second service on 5353/udp clashes; on 5354/udp it does not.
    let out = run(create("dns2", &["5353:53/udp"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("5353/udp") && err.contains("dns"), "{err}");
    assert!(!m.shoal_ok(&["service", "ls"]).contains("dns2"));
    let out = run(create("dns2", &["5354:53/udp"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
