//! The underlay without any `shoald`: plain namespaces, a Python listener
//! and curl.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;
use crate::{assert_eventually, require_root};

/// Answers every connection on `ip:port` with an HTTP 200 "hello", from
/// inside a namespace. Killed on drop (before the namespace goes).
struct Listener(Child);

const SERVE: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    c, _ = s.accept()
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    finally:
        c.close()
"#;

impl Listener {
    fn start(ns: &NetNs, ip: Ipv4Addr, port: u16) -> Listener {
        let child = ns
            .command("python3")
            .args(["-c", SERVE, &ip.to_string(), &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn python3 listener");
        Listener(child)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PORT: u16 = 8000;
const QUICK: Duration = Duration::from_millis(1500);

fn url(ip: Ipv4Addr) -> String {
    format!("http://{ip}:{PORT}/")
}

fn namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_gone(names: &[String]) {
    let list = namespaces();
    for name in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "namespace {name} left behind:\n{list}"
        );
    }
}

#[test]
fn node_ip_numbers_from_eleven() {
    assert_eq!(node_ip(1), Ipv4Addr::new(192, 168, 100, 11));
    assert_eq!(node_ip(3), Ipv4Addr::new(192, 168, 100, 13));
}

#[test]
fn nodes_talk_across_the_switch_until_cut_and_after_heal() {
    if !require_root("nodes_talk_across_the_switch_until_cut_and_after_heal") {
        return;
    }
    let names;
    {
        let switch = Underlay::new();
        let a = NetNs::new("ula");
        let b = NetNs::new("ulb");
        let c = NetNs::new("ulc");
        let (ip_a, ip_b, ip_c) = (node_ip(1), node_ip(2), node_ip(3));
        let port_a = switch.attach(&a, ip_a);
        switch.attach(&b, ip_b);
        switch.attach(&c, ip_c);
        names = vec![
            switch.ns.name.clone(),
            a.name.clone(),
            b.name.clone(),
            c.name.clone(),
        ];
        assert!(switch.ns.name.starts_with("shoalt-sw-"));

        // Declared after the namespaces: killed before they are deleted.
        let _on_a = Listener::start(&a, ip_a, PORT);
        let _on_c = Listener::start(&c, ip_c, PORT);

        assert_eventually("b reaches a", Duration::from_secs(10), || {
            b.curl_url(&url(ip_a), QUICK)
        });
        assert_eventually("a reaches c", Duration::from_secs(10), || {
            a.curl_url(&url(ip_c), QUICK)
        });
        assert_eq!(b.curl_url(&url(ip_c), QUICK).as_deref(), Ok("hello"));

        port_a.cut();
        // Nothing crosses a's cable, either way; the rest of the switch and
        // a's own address still work.
        assert!(
            b.curl_url(&url(ip_a), QUICK).is_err(),
            "b reached a through a cut cable"
        );
        assert!(
            a.curl_url(&url(ip_c), QUICK).is_err(),
            "a reached c through a cut cable"
        );
        assert_eq!(b.curl_url(&url(ip_c), QUICK).as_deref(), Ok("hello"));
        assert_eq!(a.curl_url(&url(ip_a), QUICK).as_deref(), Ok("hello"));

        port_a.heal();
        assert_eventually("b reaches a after heal", Duration::from_secs(10), || {
            b.curl_url(&url(ip_a), QUICK)
        });
        assert_eventually("a reaches c after heal", Duration::from_secs(10), || {
            a.curl_url(&url(ip_c), QUICK)
        });
    }
    assert_gone(&names);
}

#[test]
fn a_panicking_test_leaves_no_namespace_behind() {
    if !require_root("a_panicking_test_leaves_no_namespace_behind") {
        return;
    }
    let names = std::sync::Mutex::new(Vec::new());
    let r = std::panic::catch_unwind(|| {
        let switch = Underlay::new();
        let a = NetNs::new("ulpanic");
        switch.attach(&a, node_ip(1));
        names
            .lock()
            .unwrap()
            .extend([switch.ns.name.clone(), a.name.clone()]);
        panic!("test failure while the underlay is up");
    });
    assert!(r.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    assert_gone(&names);
}
