//! The routing mesh frees every connection: clients that connect and close
//! at once (what TCP health checks and port scanners do) leave shoald's
//! descriptor count at its baseline and no connection counted as active, on
//! the default data path and on epoll.

use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, Node};

/// Clients that connect to 127.0.0.1:`port` and close at once, `count`
/// times, 50 at a time without waiting for anything in between.
const CONNECT_AND_CLOSE: &str = r#"
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
done = 0
while done < count:
    batch = [socket.create_connection(("127.0.0.1", port)) for _ in range(min(50, count - done))]
    for s in batch:
        s.close()
    done += len(batch)
print(done)
"#;

const CLIENTS: usize = 2_000;
/// Descriptors shoald may hold above its baseline afterwards (the metrics
/// scrape's own connection, a pooled pipe or two).
const SLACK: usize = 8;

fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}

fn connect_and_close_clients_are_all_freed(test: &str, daemon_args: &[&str]) {
    let node = Node::start_with(test, "node-1", None, None, daemon_args);
    node.shoal_ok(&["swarm", "init"]);
    node.shoal_ok(&[
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
    node.wait_routed(8080, 2);
    node.distribution(8080, 10).unwrap();
    let pid = node.pid().expect("shoald runs");
    // Settled: the curls' connections are closed.
    std::thread::sleep(Duration::from_millis(500));
    let baseline = descriptors(pid);

    let out = node
        .ns
        .command("python3")
        .args(["-c", CONNECT_AND_CLOSE, "8080", &CLIENTS.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "clients: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        CLIENTS.to_string()
    );

    assert_eventually(
        "shoald's descriptors back at their baseline, no active connection",
        Duration::from_secs(10),
        || {
            let now = descriptors(pid);
            let active = metric_sum(&node.metrics(), "shoal_mesh_task_active_connections");
            if now <= baseline + SLACK && active == 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{now} descriptors (baseline {baseline}), {active} active connections"
                ))
            }
        },
    );
    // Still serving.
    assert!(node.curl(8080).unwrap().starts_with("web."));
    let accepted = metric_sum(&node.metrics(), "shoal_mesh_port_accepted_total");
    assert!(accepted >= (CLIENTS + 10) as f64, "{accepted} accepted");
}

#[test]
fn connect_and_close_clients_are_all_freed_on_the_default_data_path() {
    let test = "connect_and_close_clients_are_all_freed_on_the_default_data_path";
    if !require_root(test) {
        return;
    }
    connect_and_close_clients_are_all_freed("hyg-default", &[]);
}

#[test]
fn connect_and_close_clients_are_all_freed_on_epoll() {
    let test = "connect_and_close_clients_are_all_freed_on_epoll";
    if !require_root(test) {
        return;
    }
    connect_and_close_clients_are_all_freed("hyg-epoll", &["--mesh-data-path", "epoll"]);
}
