//! Failure injection on a real `shoald`. Skipped when the binaries have not
//! been built (`cargo build --workspace --bins`), since this crate's tests do
//! not build them.

use std::time::Duration;

use super::*;
use crate::multi::node_states;
use crate::require_root;
use crate::underlay::node_ip;

/// Whether `shoald` and `shoal` are built next to this test binary.
fn binaries_built(test: &str) -> bool {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let built = dir.join("shoald").exists() && dir.join("shoal").exists();
    if !built {
        eprintln!("skipping {test}: shoald/shoal not built");
    }
    built
}

/// The scheduler state letter of `pid` (`T` when stopped), `None` once gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn status_of(node: &Node) -> Option<String> {
    node_states(&node.shoal_ok(&["node", "ls"]))
        .into_iter()
        .find(|(h, _)| *h == node.name)
        .map(|(_, s)| s)
}

#[test]
fn a_node_survives_pause_kill_and_start_again() {
    let test = "a_node_survives_pause_kill_and_start_again";
    if !require_root(test) || !binaries_built(test) {
        return;
    }
    let mut node = Node::start("nodeops", "node-1");
    node.shoal_ok(&["swarm", "init"]);

    let pid = node.pid().expect("running");
    node.pause();
    assert!(node.is_paused());
    assert_eventually(
        "shoald stopped",
        Duration::from_secs(5),
        || match proc_state(pid) {
            Some('T') => Ok(()),
            s => Err(format!("state {s:?}")),
        },
    );
    node.resume();
    assert_eventually(
        "shoald running",
        Duration::from_secs(5),
        || match proc_state(pid) {
            Some('T') | None => Err(format!("state {:?}", proc_state(pid))),
            Some(_) => Ok(()),
        },
    );
    assert_eq!(status_of(&node).as_deref(), Some("Ready"));

    node.kill();
    assert!(!node.is_running());
    assert_eq!(proc_state(pid), None, "killed shoald still present");

    // Same data root: still the one-node swarm it was.
    node.start_again();
    assert_ne!(node.pid(), Some(pid));
    assert_eventually(
        "node-1 Ready again",
        Duration::from_secs(30),
        || match status_of(&node) {
            Some(s) if s == "Ready" => Ok(()),
            s => Err(format!("{s:?}")),
        },
    );

    // Stopping a paused daemon still ends it (SIGCONT follows SIGTERM).
    node.pause();
    node.restart();
    assert!(!node.is_paused());
    node.shoal_ok(&["node", "ls"]);
}

#[test]
fn start_with_an_underlay_advertises_and_listens_on_its_ip() {
    let test = "start_with_an_underlay_advertises_and_listens_on_its_ip";
    if !require_root(test) || !binaries_built(test) {
        return;
    }
    let help = Command::new(bin("shoald"))
        .arg("--help")
        .output()
        .expect("shoald --help");
    if !String::from_utf8_lossy(&help.stdout).contains("--listen-addr") {
        eprintln!("skipping {test}: shoald has no --listen-addr yet");
        return;
    }
    let switch = Underlay::new();
    let ip = node_ip(1);
    let node = Node::start_with(test, "node-1", Some(&switch), Some(ip), &[]);
    assert_eq!(node.ip, Some(ip));
    assert_eq!(
        node.args(),
        [
            "--advertise-addr".to_string(),
            ip.to_string(),
            "--listen-addr".to_string(),
            format!("{ip}:{SWARM_PORT}"),
        ]
    );
    let addrs = node.ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(String::from_utf8_lossy(&addrs.stdout).contains(&format!("{ip}/24")));
    // A cut leaves the daemon and its socket alone.
    node.cut();
    node.shoal(&["node", "ls"]);
    node.heal();
}
