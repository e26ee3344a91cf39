//! Root tests. Each runs in a sandbox network namespace of its own (created by fd, like task
//! namespaces), so nothing touches the namespace the test process started in; the sandbox and
//! everything in it vanish when the test ends, pass or fail.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::link::{self, with_netlink};

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

// === overlay ===

const OVL_BRIDGE: &str = "shoal-br";
const VXLAN: &str = "shoal-vx0";
const VNI: u32 = 4096;
const H1_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const H2_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const H1_NODE: Ipv4Addr = Ipv4Addr::new(10, 78, 255, 1);
const H2_NODE: Ipv4Addr = Ipv4Addr::new(10, 78, 255, 2);
const TASK_H2: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 5);
const TASK_H1: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 6);

/// Run `body` on a fresh thread inside the namespace `ns` (with its own runtime) and return
/// its output.
fn block_in<T, F, Fut>(ns: &OwnedFd, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    run_in_netns(ns.as_raw_fd(), move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build runtime")
            .block_on(body())
    })
    .expect("thread in netns")
}

fn overlay_spec(local: Ipv4Addr) -> OverlaySpec {
    OverlaySpec {
        vxlan: VXLAN.to_string(),
        vni: VNI,
        local,
        port: DEFAULT_VXLAN_PORT,
        bridge: OVL_BRIDGE.to_string(),
    }
}

/// Two sandbox "hosts" joined by an underlay veth pair (`ul0` in each), each with the ingress
/// bridge carrying its node address and a VXLAN port. Dropping the fds removes everything.
struct Hosts {
    h1: OwnedFd,
    h2: OwnedFd,
}

fn two_hosts() -> Hosts {
    let h1 = new_netns().expect("create h1");
    let h2 = new_netns().expect("create h2");
    // Descriptor numbers are process-wide, so h1's thread can move the peer into h2 by fd.
    let h2_raw = h2.as_raw_fd();
    block_in(&h1, move || async move {
        let op = "create underlay veth";
        with_netlink(op, |handle| async move {
            let peer = rtnetlink::LinkMessageBuilder::<rtnetlink::LinkUnspec>::new()
                .name("ul0")
                .setns_by_fd(h2_raw)
                .build();
            let veth = rtnetlink::LinkMessageBuilder::<rtnetlink::LinkVeth>::new_with_info_kind(
                netlink_packet_route::link::InfoKind::Veth,
            )
            .name("ul0".to_string())
            .set_info_data(netlink_packet_route::link::InfoData::Veth(
                netlink_packet_route::link::InfoVeth::Peer(peer),
            ))
            .build();
            handle
                .link()
                .add(veth)
                .execute()
                .await
                .map_err(|e| NetError::netlink(op, e))
        })
        .await
        .unwrap();
    });
    for (ns, underlay, node) in [(&h1, H1_UNDERLAY, H1_NODE), (&h2, H2_UNDERLAY, H2_NODE)] {
        block_in(ns, move || async move {
            let op = "configure underlay";
            with_netlink(op, |handle| async move {
                let index = link::require_link(&handle, op, "ul0").await?;
                link::set_up(&handle, index, "ul0").await?;
                let cidr = Ipv4Cidr::new(underlay, 24).unwrap();
                link::add_address(&handle, index, "ul0", cidr, false).await
            })
            .await
            .unwrap();
            ensure_bridge(OVL_BRIDGE, Ipv4Cidr::new(node, 16).unwrap())
                .await
                .unwrap();
            ensure_vxlan(&overlay_spec(underlay)).await.unwrap();
        });
    }
    Hosts { h1, h2 }
}

/// A task on `host`'s bridge, gateway = that node's bridge address.
fn overlay_task(host: &OwnedFd, veth: &'static str, ip: Ipv4Addr, gateway: Ipv4Addr) -> TaskNetns {
    block_in(host, move || async move {
        TaskNetns::create(&TaskNetSpec {
            veth_host: veth.to_string(),
            bridge: OVL_BRIDGE.to_string(),
            address: Ipv4Cidr::new(ip, 16).unwrap(),
            gateway,
        })
        .await
        .unwrap()
    })
}

fn reconcile(host: &OwnedFd, peers: &[(Ipv4Addr, Ipv4Addr)]) -> OverlayEntries {
    let peers: BTreeMap<Ipv4Addr, Ipv4Addr> = peers.iter().copied().collect();
    block_in(host, move || async move {
        reconcile_overlay(VXLAN, OVL_BRIDGE, &peers).await.unwrap();
        overlay_entries(VXLAN, OVL_BRIDGE).await.unwrap()
    })
}

/// What `reconcile_overlay(peers)` should leave in the tables.
fn expected_entries(peers: &[(Ipv4Addr, Ipv4Addr)]) -> OverlayEntries {
    let neighbours: BTreeMap<_, _> = peers.iter().map(|(ip, _)| (*ip, mac_for_ip(*ip))).collect();
    OverlayEntries {
        vxlan_neighbours: neighbours.clone(),
        bridge_neighbours: neighbours,
        fdb: peers
            .iter()
            .map(|(ip, vtep)| (mac_for_ip(*ip), *vtep))
            .collect(),
    }
}

/// Connect from inside `ns` with a short timeout; whether it got `reply`.
fn try_fetch_in(ns: RawFd, addr: &'static str) -> Result<String, std::io::Error> {
    run_in_netns(ns, move || {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        Ok(reply)
    })
    .expect("thread in netns")
}

#[test]
fn mac_for_ip_is_02_42_and_the_address_bytes() {
    assert_eq!(
        mac_for_ip(Ipv4Addr::new(10, 255, 0, 7)),
        [0x02, 0x42, 10, 255, 0, 7]
    );
    assert_eq!(
        mac_for_ip(Ipv4Addr::new(0, 0, 0, 0)),
        [0x02, 0x42, 0, 0, 0, 0]
    );
}

#[test]
fn vxlan_matches_requires_every_fixed_setting() {
    use netlink_packet_route::link::InfoVxlan;
    let spec = overlay_spec(H1_UNDERLAY);
    let good = vec![
        InfoVxlan::Id(VNI),
        InfoVxlan::Local(H1_UNDERLAY),
        InfoVxlan::Port(4789),
        InfoVxlan::Learning(false),
        InfoVxlan::Proxy(true),
        InfoVxlan::L2Miss(false),
        InfoVxlan::L3Miss(false),
        InfoVxlan::CollectMetadata(false),
        InfoVxlan::Ttl(0),
    ];
    assert!(overlay::vxlan_matches(&good, &spec));
    let mut other_vni = spec.clone();
    other_vni.vni = 4097;
    assert!(!overlay::vxlan_matches(&good, &other_vni));
    let mut learning = good.clone();
    learning[3] = InfoVxlan::Learning(true);
    assert!(!overlay::vxlan_matches(&learning, &spec));
    let mut with_group = good.clone();
    with_group.push(InfoVxlan::Group(Ipv4Addr::new(239, 1, 1, 1)));
    assert!(!overlay::vxlan_matches(&with_group, &spec));
}

#[test]
fn the_host_stack_and_a_task_on_node1_reach_a_task_on_node3_over_vxlan() {
    if !have_root("the_host_stack_and_a_task_on_node1_reach_a_task_on_node3") {
        return;
    }
    let hosts = two_hosts();
    let remote = overlay_task(&hosts.h2, "shovl5", TASK_H2, H2_NODE);
    serve_in(&remote, "task-on-h2");
    let local = overlay_task(&hosts.h1, "shovl6", TASK_H1, H1_NODE);

    reconcile(&hosts.h1, &[(TASK_H2, H2_UNDERLAY), (H2_NODE, H2_UNDERLAY)]);
    reconcile(&hosts.h2, &[(H1_NODE, H1_UNDERLAY), (TASK_H1, H1_UNDERLAY)]);

    // The mesh path: h1's own stack (source 10.78.255.1) to the task on h2 and back.
    let from_host = run_in_netns(hosts.h1.as_raw_fd(), || fetch("10.78.0.5:80")).unwrap();
    assert_eq!(from_host, "task-on-h2");
    // Task to task across nodes: ARP answered by the VXLAN proxy on both sides.
    let from_task = run_in_netns(local.raw_fd(), || fetch("10.78.0.5:80")).unwrap();
    assert_eq!(from_task, "task-on-h2");

    // Full-size segments fit: task MTUs follow the VXLAN port's (underlay 1500 - 50).
    let big: &'static str = Box::leak("0123456789".repeat(20_000).into_boxed_str());
    let listener = run_in_netns(remote.raw_fd(), || TcpListener::bind("0.0.0.0:81"))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(big.as_bytes());
        }
    });
    let bulk = run_in_netns(local.raw_fd(), || fetch("10.78.0.5:81")).unwrap();
    assert_eq!(bulk.len(), big.len());
    let bulk = run_in_netns(hosts.h1.as_raw_fd(), || fetch("10.78.0.5:81")).unwrap();
    assert_eq!(bulk.len(), big.len());
}

#[test]
fn reconcile_overlay_is_idempotent_and_removes_what_is_no_longer_wanted() {
    if !have_root("reconcile_overlay_is_idempotent") {
        return;
    }
    let hosts = two_hosts();
    let remote = overlay_task(&hosts.h2, "shovl5", TASK_H2, H2_NODE);
    serve_in(&remote, "task-on-h2");
    let h1_peers = [(TASK_H2, H2_UNDERLAY), (H2_NODE, H2_UNDERLAY)];
    reconcile(&hosts.h2, &[(H1_NODE, H1_UNDERLAY)]);

    // An entry we do not own (not 02:42) on the bridge must survive every reconcile.
    let foreign_mac = [0x0a, 0, 0, 0, 0, 1];
    block_in(&hosts.h1, move || async move {
        with_netlink("add foreign neighbour", |handle| async move {
            let index = link::require_link(&handle, "foreign", OVL_BRIDGE).await?;
            handle
                .neighbours()
                .add(index, Ipv4Addr::new(10, 78, 9, 9).into())
                .link_layer_address(&foreign_mac)
                .execute()
                .await
                .map_err(|e| NetError::netlink("add foreign neighbour", e))
        })
        .await
        .unwrap();
    });
    let foreign_present = |hosts: &Hosts| {
        block_in(&hosts.h1, || async {
            let out = Command::new("ip")
                .args(["-4", "neigh", "show", "dev", OVL_BRIDGE])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("10.78.9.9 lladdr 0a:00:00:00:00:01")
        })
    };

    let first = reconcile(&hosts.h1, &h1_peers);
    let second = reconcile(&hosts.h1, &h1_peers);
    assert_eq!(first, expected_entries(&h1_peers));
    assert_eq!(second, first);
    assert_eq!(
        run_in_netns(hosts.h1.as_raw_fd(), || fetch("10.78.0.5:80")).unwrap(),
        "task-on-h2"
    );

    // The peer moves to another VTEP: its FDB entry follows, nothing else changes.
    let moved = [
        (TASK_H2, Ipv4Addr::new(192, 168, 77, 9)),
        (H2_NODE, H2_UNDERLAY),
    ];
    assert_eq!(reconcile(&hosts.h1, &moved), expected_entries(&moved));

    // The task goes away: its neighbours and FDB entry are removed, and the path is gone
    // (ARP for it is answered by nobody and never leaves the node).
    let without = [(H2_NODE, H2_UNDERLAY)];
    assert_eq!(reconcile(&hosts.h1, &without), expected_entries(&without));
    let err = try_fetch_in(hosts.h1.as_raw_fd(), "10.78.0.5:80").unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::HostUnreachable
        ),
        "{err}"
    );
    assert!(foreign_present(&hosts), "foreign neighbour kept");

    // Back again: reachable again.
    assert_eq!(reconcile(&hosts.h1, &h1_peers), expected_entries(&h1_peers));
    assert_eq!(
        try_fetch_in(hosts.h1.as_raw_fd(), "10.78.0.5:80").unwrap(),
        "task-on-h2"
    );

    // Empty peers clears every managed entry and only those.
    assert_eq!(reconcile(&hosts.h1, &[]), OverlayEntries::default());
    assert!(foreign_present(&hosts), "foreign neighbour kept");
}

#[test]
fn ensure_vxlan_is_idempotent_recreates_on_change_and_macs_are_derived() {
    if !have_root("ensure_vxlan_is_idempotent") {
        return;
    }
    in_sandbox(|| async {
        ensure_bridge(OVL_BRIDGE, cidr("10.78.255.1/16"))
            .await
            .unwrap();
        let spec = overlay_spec(H1_UNDERLAY);
        ensure_vxlan(&spec).await.unwrap();
        let first = link_state(VXLAN).await.unwrap().expect("vxlan exists");
        ensure_vxlan(&spec).await.unwrap();
        let second = link_state(VXLAN).await.unwrap().expect("vxlan exists");
        assert_eq!(first, second, "second call changes nothing");
        assert!(second.up);
        assert_eq!(second.kind.as_deref(), Some("vxlan"));
        assert_eq!(
            vxlan_controller(VXLAN).await,
            link_state(OVL_BRIDGE).await.unwrap().map(|b| b.index)
        );

        // Another VNI: the device is replaced, still attached and up.
        let mut other = spec.clone();
        other.vni = 4097;
        ensure_vxlan(&other).await.unwrap();
        let third = link_state(VXLAN).await.unwrap().expect("vxlan exists");
        assert_ne!(third.index, second.index, "recreated");
        assert!(third.up);
        assert_eq!(
            vxlan_controller(VXLAN).await,
            link_state(OVL_BRIDGE).await.unwrap().map(|b| b.index)
        );
        let infos = with_netlink("get vxlan", |handle| async move {
            let link = link::find_link(&handle, VXLAN).await.unwrap().unwrap();
            Ok(overlay::vxlan_infos(&link))
        })
        .await
        .unwrap();
        assert!(overlay::vxlan_matches(&infos, &other), "{infos:?}");

        // The bridge carries the node's derived MAC; the VXLAN port lowered its MTU, and a
        // new task's eth0 gets its derived MAC and that MTU.
        let bridge = link_state(OVL_BRIDGE).await.unwrap().unwrap();
        assert_eq!(bridge.mac, Some(mac_for_ip(H1_NODE)));
        assert_eq!(bridge.mtu, Some(1450));
        let task = TaskNetns::create(&TaskNetSpec {
            veth_host: "shmac0".to_string(),
            bridge: OVL_BRIDGE.to_string(),
            address: cidr("10.78.0.7/16"),
            gateway: H1_NODE,
        })
        .await
        .unwrap();
        let eth0 = eth0_state(&task);
        assert_eq!(eth0.mac, Some(mac_for_ip(Ipv4Addr::new(10, 78, 0, 7))));
        assert_eq!(eth0.mtu, Some(1450));

        // An explicit MAC wins; set_link_mac is idempotent.
        let custom = [0x02, 0x42, 1, 2, 3, 4];
        let task2 = TaskNetns::create_with_mac(
            &TaskNetSpec {
                veth_host: "shmac1".to_string(),
                bridge: OVL_BRIDGE.to_string(),
                address: cidr("10.78.0.8/16"),
                gateway: H1_NODE,
            },
            Some(custom),
        )
        .await
        .unwrap();
        assert_eq!(eth0_state(&task2).mac, Some(custom));
        set_link_mac(OVL_BRIDGE, custom).await.unwrap();
        set_link_mac(OVL_BRIDGE, custom).await.unwrap();
        assert_eq!(
            link_state(OVL_BRIDGE).await.unwrap().unwrap().mac,
            Some(custom)
        );
        // ensure_bridge puts the derived MAC back.
        ensure_bridge(OVL_BRIDGE, cidr("10.78.255.1/16"))
            .await
            .unwrap();
        assert_eq!(
            link_state(OVL_BRIDGE).await.unwrap().unwrap().mac,
            Some(mac_for_ip(H1_NODE))
        );
        task.destroy().await.unwrap();
        task2.destroy().await.unwrap();
    });
}

async fn vxlan_controller(name: &'static str) -> Option<u32> {
    with_netlink("get controller", |handle| async move {
        let link = link::find_link(&handle, name).await.unwrap().unwrap();
        Ok(link.attributes.iter().find_map(|attr| match attr {
            netlink_packet_route::link::LinkAttribute::Controller(index) => Some(*index),
            _ => None,
        }))
    })
    .await
    .unwrap()
}

fn eth0_state(task: &TaskNetns) -> LinkState {
    let fd = task.fd().try_clone_to_owned().unwrap();
    block_in(&fd, || async {
        link_state("eth0").await.unwrap().expect("eth0")
    })
}
