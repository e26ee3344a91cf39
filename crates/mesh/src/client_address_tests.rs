//! The client's address reaches the task (PROXY protocol v1 and v2, over
//! IPv4 and IPv6), and an idle connection outlives its keepalive time, on
//! real sockets. Compiled once per data path, as `tests.rs` is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::proxy_header::V2_SIGNATURE;
use crate::tests::{echo_backend, endpoint};
use crate::{DataPath, Mesh, MeshConfig, PortRoute, ProxyProtocol, ServiceRoute};

const DEADLINE: Duration = Duration::from_secs(10);

fn data_path() -> DataPath {
    if module_path!().ends_with("uring_client_address_tests") {
        DataPath::Uring
    } else {
        DataPath::Epoll
    }
}

fn mesh(listen_ip: IpAddr, keepalive: Duration) -> (Mesh, Registry) {
    let registry = Registry::new();
    let config = MeshConfig {
        listen_ip,
        connect_timeout: Duration::from_millis(500),
        keepalive,
        workers: std::num::NonZeroUsize::new(2).unwrap(),
        data_path: data_path(),
        ..MeshConfig::default()
    };
    (Mesh::new(config, &registry).unwrap(), registry)
}

/// A port free on IPv4 and IPv6 a moment ago; each data path's copy of
/// this file takes its own range, below `tests.rs`'s.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = if data_path() == DataPath::Uring {
        22_500
    } else {
        22_000
    };
    loop {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(port < base + 500, "out of test ports");
        // One at a time: a dual-stack `[::]` conflicts with `0.0.0.0`.
        let v4 = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok();
        let v6 = std::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).is_ok();
        if v4 && (v6 || !has_ipv6()) {
            return port;
        }
    }
}

/// This host has IPv6 loopback.
fn has_ipv6() -> bool {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// A backend that reads until EOF, then sends back everything it read.
async fn mirror_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
            });
        }
    });
    addr
}

/// Publishes `port` with `proxy` to a mirror backend.
async fn publish(mesh: &Mesh, port: u16, proxy: Option<ProxyProtocol>) {
    let backend = mirror_backend().await;
    let errors = mesh.apply_snapshot(vec![ServiceRoute {
        service_id: "s".into(),
        service_name: "svc-s".into(),
        ports: vec![PortRoute {
            proxy_protocol: proxy,
            ..PortRoute::tcp(port, 80)
        }],
        endpoints: vec![endpoint("t1", backend, false)],
    }]);
    assert!(errors.is_empty(), "{errors:?}");
}

/// Sends `hello` to `addr` through the mesh; returns what the task got and
/// the client's own address.
async fn mirrored(addr: SocketAddr) -> (Vec<u8>, SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    (got, me)
}

#[tokio::test]
async fn v1_header_names_the_client_before_its_bytes() {
    let (mesh, _r) = mesh(Ipv4Addr::LOCALHOST.into(), Duration::from_secs(60));
    let port = free_port();
    publish(&mesh, port, Some(ProxyProtocol::V1)).await;
    let (got, me) = mirrored((Ipv4Addr::LOCALHOST, port).into()).await;
    let want = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {} {port}\r\nhello",
        me.port()
    );
    assert_eq!(String::from_utf8_lossy(&got), want);
}

#[tokio::test]
async fn v2_header_names_the_client_before_its_bytes() {
    let (mesh, _r) = mesh(Ipv4Addr::LOCALHOST.into(), Duration::from_secs(60));
    let port = free_port();
    publish(&mesh, port, Some(ProxyProtocol::V2)).await;
    let (got, me) = mirrored((Ipv4Addr::LOCALHOST, port).into()).await;
    let mut want = V2_SIGNATURE.to_vec();
    want.extend([0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 1]);
    want.extend(me.port().to_be_bytes());
    want.extend(port.to_be_bytes());
    want.extend(b"hello");
    assert_eq!(got, want);
}

#[tokio::test]
async fn without_the_option_the_task_gets_only_the_clients_bytes() {
    let (mesh, _r) = mesh(Ipv4Addr::LOCALHOST.into(), Duration::from_secs(60));
    let port = free_port();
    publish(&mesh, port, None).await;
    let (got, _) = mirrored((Ipv4Addr::LOCALHOST, port).into()).await;
    assert_eq!(got, b"hello");
}

#[tokio::test]
async fn the_unspecified_address_serves_ipv6_and_ipv4_clients() {
    if !has_ipv6() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let (mesh, _r) = mesh(Ipv4Addr::UNSPECIFIED.into(), Duration::from_secs(60));
    let port = free_port();
    publish(&mesh, port, Some(ProxyProtocol::V1)).await;
    let (got, me) = mirrored((Ipv6Addr::LOCALHOST, port).into()).await;
    let want = format!("PROXY TCP6 ::1 ::1 {} {port}\r\nhello", me.port());
    assert_eq!(String::from_utf8_lossy(&got), want);
    let (got, me) = mirrored((Ipv4Addr::LOCALHOST, port).into()).await;
    let want = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {} {port}\r\nhello",
        me.port()
    );
    assert_eq!(String::from_utf8_lossy(&got), want, "IPv4 stays IPv4");
}

/// The mesh has no idle limit of its own; what cuts an idle connection is
/// a middlebox's state timeout (IPVS's 900 s in Swarm) or a keepalive that
/// gives up. With keepalive probes every second on both legs, a connection
/// idle several keepalive periods still carries bytes afterwards.
#[tokio::test]
async fn a_connection_idle_beyond_its_keepalive_still_works() {
    let keepalive = Duration::from_secs(1);
    let (mesh, _r) = mesh(Ipv4Addr::LOCALHOST.into(), keepalive);
    let port = free_port();
    let backend = echo_backend().await;
    let errors = mesh.apply_snapshot(vec![ServiceRoute {
        service_id: "s".into(),
        service_name: "svc-s".into(),
        ports: vec![PortRoute::tcp(port, 80)],
        endpoints: vec![endpoint("t1", backend, false)],
    }]);
    assert!(errors.is_empty(), "{errors:?}");
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    for round in 0..2 {
        if round > 0 {
            tokio::time::sleep(keepalive * 3).await;
        }
        s.write_all(b"ping").await.unwrap();
        let mut back = [0; 4];
        tokio::time::timeout(DEADLINE, s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"ping", "round {round}");
    }
}

#[tokio::test]
async fn turning_the_header_on_applies_to_new_connections() {
    let (mesh, _r) = mesh(Ipv4Addr::LOCALHOST.into(), Duration::from_secs(60));
    let port = free_port();
    publish(&mesh, port, None).await;
    let (got, _) = mirrored((Ipv4Addr::LOCALHOST, port).into()).await;
    assert_eq!(got, b"hello");
    publish(&mesh, port, Some(ProxyProtocol::V1)).await;
    let (got, _) = mirrored((Ipv4Addr::LOCALHOST, port).into()).await;
    assert!(
        got.starts_with(b"PROXY TCP4 127.0.0.1 127.0.0.1 "),
        "{got:?}"
    );
}
