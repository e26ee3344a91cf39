//! The client's address reaches the task: a port published with
//! `proxy-protocol=v1|v2` (or a service labelled
//! `com.shoal.mesh.proxy-protocol`) sends a PROXY header before the client's
//! bytes, and `shoal/echo` names the address it carries, over IPv4 from
//! another node and over IPv6 on the node itself. Without the option the
//! task sees nothing new. A bad version is refused in one line.

use std::time::Duration;

use shoal_testkit::{require_root, text, Cluster, MultiCluster, Node};

fn create(node: &Node, name: &str, extra: &[&str]) {
    let mut args = vec!["service", "create", "-q", "--name", name];
    args.extend_from_slice(extra);
    args.push("shoal/echo");
    node.shoal_ok(&args);
}

/// The port's JSON in `service inspect`.
fn inspected_port(node: &Node, name: &str) -> serde_json::Value {
    let out = node.shoal_ok(&["service", "inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
    v[0]["Spec"]["EndpointSpec"]["Ports"][0].clone()
}

#[test]
fn the_echo_names_the_curling_hosts_address_from_another_node() {
    if !require_root("the_echo_names_the_curling_hosts_address_from_another_node") {
        return;
    }
    let c = MultiCluster::new("clientaddr", 1, 1);
    let (m, other) = (c.node(0), c.node(1));
    create(
        m,
        "v2",
        &["-p", "published=8080,target=80,proxy-protocol=v2"],
    );
    create(
        m,
        "v1",
        &[
            "--label",
            "com.shoal.mesh.proxy-protocol=v1",
            "-p",
            "8081:80",
        ],
    );
    create(m, "plain", &["-p", "8082:80"]);
    for port in [8080, 8081, 8082] {
        m.wait_routed(port, 1);
        other.wait_routed(port, 1);
    }
    assert_eq!(inspected_port(m, "v2")["ProxyProtocol"], "v2");
    assert!(inspected_port(m, "plain").get("ProxyProtocol").is_none());

    let (from, to) = (other.ip.unwrap(), m.ip.unwrap());
    for port in [8080, 8081] {
        let body = other.curl_to(to, port).expect("curl through the mesh");
        assert!(
            body.trim_end().contains(&format!(" for {from}:")),
            "port {port}: the reply names {from}: {body}"
        );
    }
    let body = other.curl_to(to, 8082).expect("curl through the mesh");
    assert!(body.starts_with("plain."), "{body}");
    assert!(!body.contains(" for "), "no header, no address: {body}");
}

#[test]
fn ipv6_clients_reach_the_service_and_their_address_is_sent() {
    if !require_root("ipv6_clients_reach_the_service_and_their_address_is_sent") {
        return;
    }
    let c = Cluster::single("clientaddr6");
    let n = &c.node;
    // An IPv6 address of the node's own, besides ::1.
    n.ns.ip(&["-6", "addr", "add", "fd00:5a::1/64", "dev", "lo", "nodad"]);
    create(
        n,
        "v1",
        &["-p", "published=8080,target=80,proxy-protocol=v1"],
    );
    create(n, "plain", &["-p", "8082:80"]);
    n.wait_routed(8080, 1);
    n.wait_routed(8082, 1);
    let within = Duration::from_secs(5);
    for (url, client) in [
        ("http://[::1]:8080/", "[::1]:"),
        ("http://[fd00:5a::1]:8080/", "[fd00:5a::1]:"),
        ("http://127.0.0.1:8080/", "127.0.0.1:"),
    ] {
        let body = n.ns.curl_url(url, within).expect("curl over the mesh");
        assert!(
            body.trim_end().contains(&format!(" for {client}")),
            "{url}: {body}"
        );
    }
    let body =
        n.ns.curl_url("http://[::1]:8082/", within)
            .expect("curl [::1]");
    assert!(body.starts_with("plain."), "{body}");
    assert!(!body.contains(" for "), "{body}");
}

#[test]
fn a_bad_proxy_protocol_is_refused_in_one_line_and_nothing_is_stored() {
    if !require_root("a_bad_proxy_protocol_is_refused_in_one_line_and_nothing_is_stored") {
        return;
    }
    let c = Cluster::single("clientaddrbad");
    let n = &c.node;
    let cases: &[(&[&str], &str)] = &[
        (
            &["-p", "published=8080,target=80,proxy-protocol=v3"],
            "invalid proxy-protocol \"v3\": must be v1 or v2",
        ),
        (
            &[
                "-p",
                "published=8080,target=80,protocol=udp,proxy-protocol=v2",
            ],
            "proxy-protocol is for tcp ports only",
        ),
        (
            &[
                "--label",
                "com.shoal.mesh.proxy-protocol=v3",
                "-p",
                "8080:80",
            ],
            "com.shoal.mesh.proxy-protocol=\"v3\": use v1 or v2",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["service", "create", "--name", "bad"];
        args.extend_from_slice(extra);
        args.push("shoal/echo");
        let out = n.shoal(&args);
        let (_, err) = text(&out);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    let ls = n.shoal_ok(&["service", "ls", "-q"]);
    assert!(ls.trim().is_empty(), "nothing stored: {ls}");
}
