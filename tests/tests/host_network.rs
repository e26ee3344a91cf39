//! What a node takes of its host's network, and gives back: `swarm init`
//! picks an ingress subnet clear of the host's addresses, routes and name
//! servers from `--default-addr-pool`, takes `--advertise-addr` at run time
//! (a daemon started with no flags), and `swarm leave` or an exit leaves the
//! namespace's links, addresses and routes as they were before `init`.

use std::path::PathBuf;
use std::time::Duration;

use shoal_testkit::underlay::node_ip;
use shoal_testkit::{assert_eventually, require_root, text, Node, Underlay};

/// `/etc/netns/<ns>/`, which `ip netns exec` binds over `/etc`: the node's own
/// `resolv.conf`. Removed on drop, also when the test fails.
struct NetnsEtc(PathBuf);

impl NetnsEtc {
    fn resolv_conf(ns: &str, text: &str) -> NetnsEtc {
        let dir = PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
        NetnsEtc(dir)
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The namespace's links, addresses and routes (IPv4 and IPv6, every table),
/// without counters or the kernel's changing flags.
fn network_state(node: &Node) -> String {
    let show = |args: &[&str]| String::from_utf8_lossy(&node.ns.ip(args).stdout).into_owned();
    let links: Vec<String> = show(&["-o", "link"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    format!(
        "links: {links:?}\n{}\n{}\n{}",
        show(&["-o", "addr"]),
        show(&["-4", "route", "show", "table", "all"]),
        show(&["-6", "route", "show", "table", "all"]),
    )
}

fn bridge_address(node: &Node) -> Option<String> {
    let out = node
        .ns
        .command("ip")
        .args(["-4", "-o", "addr", "show", "dev", "shoal-ingress"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .map(str::to_string)
}

#[test]
fn init_takes_a_subnet_the_host_does_not_use_and_leave_gives_everything_back() {
    if !require_root("init_takes_a_subnet_the_host_does_not_use_and_leave_gives_everything_back") {
        return;
    }
    // A daemon with no flags: it advertises nothing of its own.
    let mut node = Node::start("hostnet", "node-1");
    // The host: an uplink in 10.0.5.0/24 and a name server in 10.1.0.0/16,
    // both inside Docker's default pool 10.0.0.0/8.
    node.ns.ip(&[
        "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    node.ns
        .ip(&["addr", "add", "10.0.5.1/24", "dev", "uplink0"]);
    node.ns.ip(&["link", "set", "uplink0", "up"]);
    node.ns.ip(&["link", "set", "uplink1", "up"]);
    let _etc = NetnsEtc::resolv_conf(&node.ns.name, "nameserver 10.1.255.53\n");
    node.restart();
    // Settled: IPv6 duplicate address detection has finished on the uplink.
    assert_eventually("the uplink settles", Duration::from_secs(10), || {
        let state = network_state(&node);
        if state.contains("tentative") {
            Err(state)
        } else {
            Ok(())
        }
    });
    let before = network_state(&node);

    // Refused, one line each, and nothing is stored.
    let cases: &[(&[&str], &str)] = &[
        (
            &["swarm", "init", "--advertise-addr", "bogus addr!"],
            "--advertise-addr \"bogus addr!\": not an IP address or a network interface",
        ),
        (
            &["swarm", "init", "--default-addr-pool", "10.0.5.0/24"],
            "--default-addr-pool 10.0.5.0/24: no free /24 left for the ingress network",
        ),
        (
            &["swarm", "init", "--default-addr-pool", "10.1.0.0/16"],
            "--default-addr-pool 10.1.0.0/16: no free /16 left",
        ),
        (
            &["swarm", "init", "--default-addr-pool", "10.0.0.1/8"],
            "host bits are set; use the network address 10.0.0.0/8",
        ),
    ];
    for (args, want) in cases {
        let out = node.shoal(args);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?} succeeded: {stdout}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("restart shoald"), "{stderr}");
    }
    let (_, err) = text(&node.shoal(&["node", "ls"]));
    assert!(
        err.contains("not a swarm manager") || err.contains("not part of a swarm"),
        "{err}"
    );
    assert_eq!(
        network_state(&node),
        before,
        "a refused init changed the network"
    );

    // An interface name as the advertise address, as Docker takes it.
    node.shoal_ok(&["swarm", "init", "--advertise-addr", "uplink0"]);
    // 10.0.0.0/16 holds the uplink, 10.1.0.0/16 the name server.
    assert_eq!(bridge_address(&node).as_deref(), Some("10.2.255.254/16"));
    let addr = node.shoal_ok(&["node", "inspect", "self", "-f", "{{.Status.Addr}}"]);
    assert_eq!(addr.trim(), "10.0.5.1");
    let version = node.shoal_ok(&["version"]);
    for want in [
        "Default Address Pool: 10.0.0.0/8",
        "SubnetSize: 24",
        "Data Path Port: 4789",
        "Ingress Subnet: 10.2.0.0/16",
    ] {
        assert!(version.contains(want), "{want}: {version}");
    }
    let join = node.shoal_ok(&["swarm", "join-token", "worker"]);
    assert!(join.contains("10.0.5.1:2377"), "{join}");

    node.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "web",
        "--replicas",
        "2",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    node.wait_routed(8080, 2);
    node.curl(8080).expect("the mesh serves on the new subnet");

    // An exit gives the bridge and its route back; a start takes them again.
    node.stop();
    assert_eq!(bridge_address(&node), None, "the bridge outlived shoald");
    node.start_again();
    assert_eventually(
        "bridge back after a restart",
        Duration::from_secs(20),
        || match bridge_address(&node) {
            Some(a) if a == "10.2.255.254/16" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    node.wait_routed(8080, 2);
    let addr = node.shoal_ok(&["node", "inspect", "self", "-f", "{{.Status.Addr}}"]);
    assert_eq!(
        addr.trim(),
        "10.0.5.1",
        "the advertise address survives a restart"
    );

    node.shoal_ok(&["swarm", "leave", "--force"]);
    assert_eventually(
        "the network as it was before init",
        Duration::from_secs(15),
        || {
            let now = network_state(&node);
            if now == before {
                Ok(())
            } else {
                Err(format!("before:\n{before}\nafter leave:\n{now}"))
            }
        },
    );
}

#[test]
fn daemons_started_with_no_flags_init_and_join_with_advertise_addr() {
    if !require_root("daemons_started_with_no_flags_init_and_join_with_advertise_addr") {
        return;
    }
    // Two daemons with no flags, then cabled to one switch (as a host gets
    // its address after the daemon started).
    let underlay = Underlay::new();
    let nodes = [
        Node::start("advjoin", "node-1"),
        Node::start("advjoin", "node-2"),
    ];
    let (ip1, ip2) = (node_ip(1), node_ip(2));
    let _ports = [
        underlay.attach(&nodes[0].ns, ip1),
        underlay.attach(&nodes[1].ns, ip2),
    ];

    nodes[0].shoal_ok(&["swarm", "init", "--advertise-addr", &ip1.to_string()]);
    let token = nodes[0].shoal_ok(&["swarm", "join-token", "-q", "worker"]);
    // A bad address is refused in one line before anything is asked of the manager.
    let err = nodes[1].shoal_err(&[
        "swarm",
        "join",
        "--token",
        token.trim(),
        "--advertise-addr",
        "999.1.1.1",
        &format!("{ip1}:2377"),
    ]);
    assert!(err.contains("--advertise-addr \"999.1.1.1\""), "{err}");
    nodes[1].shoal_ok(&[
        "swarm",
        "join",
        "--token",
        token.trim(),
        "--advertise-addr",
        &ip2.to_string(),
        &format!("{ip1}:2377"),
    ]);
    assert_eventually("both nodes Ready", Duration::from_secs(20), || {
        let ls = nodes[0].shoal_ok(&["node", "ls"]);
        if ls.matches("Ready").count() == 2 {
            Ok(())
        } else {
            Err(ls)
        }
    });
    let addr = nodes[0].shoal_ok(&["node", "inspect", "node-2", "-f", "{{.Status.Addr}}"]);
    assert_eq!(addr.trim(), ip2.to_string());

    nodes[0].shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "web",
        "--replicas",
        "4",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    for n in &nodes {
        n.wait_routed(8080, 4);
    }
    // The mesh on node-2 reaches node-1's tasks over the overlay, and back.
    let seen = nodes[1].distribution(8080, 8).unwrap();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let body = nodes[0]
        .curl_to(ip2, 8080)
        .expect("node-1 reaches the mesh on node-2");
    assert!(body.starts_with("web."), "{body}");
}
