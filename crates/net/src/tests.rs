//! Root tests. Each runs in a sandbox network namespace of its own (created by fd, like task
//! namespaces), so nothing touches the namespace the test process started in; the sandbox and
//! everything in it vanish when the test ends, pass or fail.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use super::*;

const BRIDGE: &str = "shoal-test0";

/// Whether root tests can run here; without root they skip, unless `CI=true`.
fn have_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root and CI=true");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// Run `body` on a thread inside a fresh network namespace with its own current-thread
/// runtime. The namespace's only handle is dropped when this returns (or unwinds).
fn in_sandbox<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let sandbox = new_netns().expect("create sandbox netns");
    let result = run_in_netns(sandbox.as_raw_fd(), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build sandbox runtime");
        runtime.block_on(body());
    });
    if let Err(e) = result {
        panic!("sandbox: {e}");
    }
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

fn spec(veth: &str, address: &str) -> TaskNetSpec {
    TaskNetSpec {
        veth_host: veth.to_string(),
        bridge: BRIDGE.to_string(),
        address: cidr(address),
        gateway: Ipv4Addr::new(10, 77, 0, 1),
    }
}

async fn sandbox_bridge() {
    ensure_bridge(BRIDGE, cidr("10.77.0.1/16"))
        .await
        .expect("ensure bridge");
}

/// Bind `0.0.0.0:80` inside `task` and answer each connection with `reply`.
fn serve_in(task: &TaskNetns, reply: &'static str) {
    let listener = run_in_netns(task.raw_fd(), || TcpListener::bind("0.0.0.0:80"))
        .expect("thread in task netns")
        .expect("bind 0.0.0.0:80 in task netns");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(reply.as_bytes());
        }
    });
}

fn fetch(addr: &str) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn ensure_bridge_is_idempotent_and_leaves_it_up_with_the_address() {
    if !have_root("ensure_bridge_is_idempotent") {
        return;
    }
    in_sandbox(|| async {
        sandbox_bridge().await;
        sandbox_bridge().await;
        let state = link_state(BRIDGE).await.unwrap().expect("bridge exists");
        assert!(state.up, "bridge is up: {state:?}");
        assert_eq!(state.kind.as_deref(), Some("bridge"));
        assert_eq!(state.ipv4, vec![cidr("10.77.0.1/16")]);

        // A non-bridge under that name is refused, not silently reused.
        let veth = TaskNetns::create(&spec("shnotbr0", "10.77.0.9/16"))
            .await
            .unwrap();
        let err = ensure_bridge("shnotbr0", cidr("10.78.0.1/16"))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::NotABridge { .. }), "{err}");
        veth.destroy().await.unwrap();
    });
}

#[test]
fn two_replicas_listen_on_the_same_port_behind_the_bridge() {
    if !have_root("two_replicas_listen_on_the_same_port") {
        return;
    }
    in_sandbox(|| async {
        sandbox_bridge().await;
        let a = TaskNetns::create(&spec("shtaska000", "10.77.0.2/16"))
            .await
            .unwrap();
        let b = TaskNetns::create(&spec("shtaskb000", "10.77.0.3/16"))
            .await
            .unwrap();
        serve_in(&a, "replica-a");
        serve_in(&b, "replica-b");

        assert_eq!(fetch("10.77.0.2:80"), "replica-a");
        assert_eq!(fetch("10.77.0.3:80"), "replica-b");

        // Replicas reach each other through the bridge as well.
        let from_a = run_in_netns(a.raw_fd(), || fetch("10.77.0.3:80")).unwrap();
        assert_eq!(from_a, "replica-b");

        a.destroy().await.unwrap();
        b.destroy().await.unwrap();
    });
}

#[test]
fn destroy_removes_the_host_veth_and_the_address_can_be_reused() {
    if !have_root("destroy_removes_the_host_veth") {
        return;
    }
    in_sandbox(|| async {
        sandbox_bridge().await;
        let task_spec = spec("shreuse000", "10.77.0.4/16");
        let task = TaskNetns::create(&task_spec).await.unwrap();
        let host = link_state("shreuse000")
            .await
            .unwrap()
            .expect("host veth exists");
        assert!(host.up);
        assert_eq!(host.kind.as_deref(), Some("veth"));

        task.destroy().await.unwrap();
        assert_eq!(link_state("shreuse000").await.unwrap(), None);
        delete_link("shreuse000")
            .await
            .expect("deleting an absent link is fine");

        let again = TaskNetns::create(&task_spec).await.unwrap();
        serve_in(&again, "again");
        assert_eq!(fetch("10.77.0.4:80"), "again");

        // Same name while it exists: the error says which veth and bridge.
        let err = TaskNetns::create(&task_spec).await.unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("create veth shreuse000 on bridge shoal-test0: "),
            "{msg}"
        );
        again.destroy().await.unwrap();
    });
}

#[test]
fn create_reports_a_missing_bridge_and_a_bad_name() {
    if !have_root("create_reports_a_missing_bridge") {
        return;
    }
    in_sandbox(|| async {
        let err = TaskNetns::create(&spec("shnobridge", "10.77.0.5/16"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetError::LinkNotFound { ref link, .. } if link == BRIDGE),
            "{err}"
        );
        let err = TaskNetns::create(&spec("sh-name-too-long", "10.77.0.5/16"))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::InvalidLinkName { .. }), "{err}");
    });
}

#[test]
fn a_child_process_started_with_enter_netns_sees_eth0_and_the_default_route() {
    if !have_root("a_child_process_started_with_enter_netns") {
        return;
    }
    in_sandbox(|| async {
        sandbox_bridge().await;
        let task = TaskNetns::create(&spec("shchild000", "10.77.0.6/16"))
            .await
            .unwrap();
        let fd = task.raw_fd();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ip -o -4 addr show dev eth0; ip route show default"]);
        // SAFETY: the closure only calls `enter_netns`, a single async-signal-safe setns
        // syscall that does not allocate; `fd` stays open until exec (it is O_CLOEXEC).
        unsafe {
            cmd.pre_exec(move || enter_netns(fd));
        }
        let out = cmd.output().expect("spawn sh in task netns");
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("eth0") && stdout.contains("inet 10.77.0.6/16"),
            "{stdout}"
        );
        assert!(
            stdout.contains("default via 10.77.0.1 dev eth0"),
            "{stdout}"
        );
        task.destroy().await.unwrap();
    });
}

#[test]
fn enter_netns_rejects_a_descriptor_that_is_not_a_namespace() {
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    assert!(enter_netns(file.as_raw_fd()).is_err());
}

#[test]
fn a_failed_setup_inside_the_netns_leaves_no_host_veth() {
    if !have_root("a_failed_setup_inside_the_netns") {
        return;
    }
    in_sandbox(|| async {
        sandbox_bridge().await;
        // The gateway is outside the task's subnet, so the default route is refused.
        let mut bad = spec("shbadgw000", "10.77.0.8/16");
        bad.gateway = Ipv4Addr::new(10, 99, 0, 1);
        let err = TaskNetns::create(&bad).await.unwrap_err();
        assert!(
            err.to_string().contains("default route via 10.99.0.1"),
            "{err}"
        );
        assert_eq!(link_state("shbadgw000").await.unwrap(), None);
    });
}
