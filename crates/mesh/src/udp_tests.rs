//! UDP ingress over real sockets on 127.0.0.1, on both data paths (UDP runs
//! on the epoll workers, or on threads of its own beside io_uring ones).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use prometheus::Registry;
use tokio::net::UdpSocket;

use crate::tests::{endpoint, metric};
use crate::{DataPath, Mesh, MeshConfig, PortRoute, Protocol, ServiceRoute};

const DEADLINE: Duration = Duration::from_secs(5);

fn mesh(data_path: DataPath, idle: Duration) -> (Mesh, Registry) {
    let registry = Registry::new();
    let config = MeshConfig {
        listen_ip: Ipv4Addr::LOCALHOST.into(),
        workers: std::num::NonZeroUsize::new(2).unwrap(),
        data_path,
        udp_idle_timeout: idle,
        ..MeshConfig::default()
    };
    (Mesh::new(config, &registry).unwrap(), registry)
}

/// A UDP port that was free a moment ago.
/// A port number free a moment ago for UDP and for TCP alike (a test may
/// publish it for both).
fn free_udp_port() -> u16 {
    for _ in 0..50 {
        let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = s.local_addr().unwrap().port();
        if std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// A UDP echo task answering `<name>: <payload>`; stops when the returned
/// sender is dropped (its socket is closed: datagrams are then refused).
async fn udp_backend(name: &'static str) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut buf = vec![0; 65_535];
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                r = socket.recv_from(&mut buf) => {
                    let Ok((n, peer)) = r else { continue };
                    let mut reply = format!("{name}: ").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        }
    });
    (addr, stop)
}

fn udp_route(published: u16, endpoints: Vec<crate::Endpoint>) -> ServiceRoute {
    ServiceRoute {
        service_id: "dns".into(),
        service_name: "svc-dns".into(),
        ports: vec![PortRoute {
            protocol: Protocol::Udp,
            ..PortRoute::tcp(published, 80)
        }],
        endpoints,
    }
}

/// A client flow: its own socket connected to the published port.
async fn client(port: u16) -> UdpSocket {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    s.connect((Ipv4Addr::LOCALHOST, port)).await.unwrap();
    s
}

/// Sends `payload` and returns the name of the task that answered, or None
/// if no answer came within `wait`.
async fn ask(c: &UdpSocket, payload: &str, wait: Duration) -> Option<String> {
    c.send(payload.as_bytes()).await.unwrap();
    let mut buf = vec![0; 65_535];
    loop {
        let n = match tokio::time::timeout(wait, c.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => continue,
            Err(_) => return None,
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (name, echoed) = text.split_once(": ").unwrap();
        // A late answer to an earlier datagram is skipped.
        if echoed == payload {
            return Some(name.to_owned());
        }
    }
}

/// Asks until a task answers (the port may still be opening).
async fn ask_until_answered(c: &UdpSocket, payload: &str) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(name) = ask(c, payload, Duration::from_millis(200)).await {
            return name;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer to {payload:?}"
        );
    }
}

const DATA_PATHS: [DataPath; 2] = [DataPath::Epoll, DataPath::Uring];

#[tokio::test]
async fn flows_spread_round_robin_and_each_stays_on_its_task() {
    for data_path in DATA_PATHS {
        let (mesh, registry) = mesh(data_path, Duration::from_secs(30));
        let mut backends = Vec::new();
        let mut endpoints = Vec::new();
        for (task, name) in [("t1", "a"), ("t2", "b"), ("t3", "c")] {
            let (addr, stop) = udp_backend(name).await;
            backends.push(stop);
            endpoints.push(endpoint(task, addr, false));
        }
        let port = free_udp_port();
        assert!(mesh
            .apply_snapshot(vec![udp_route(port, endpoints)])
            .is_empty());
        assert_eq!(mesh.listening_udp_ports(), [port]);
        assert!(
            mesh.listening_ports().is_empty(),
            "no TCP listener for a UDP port"
        );
        let mut clients = Vec::new();
        let mut spread: HashMap<String, usize> = HashMap::new();
        for i in 0..30 {
            let c = client(port).await;
            let name = ask_until_answered(&c, &format!("hello {i}")).await;
            *spread.entry(name.clone()).or_default() += 1;
            clients.push((c, name));
        }
        assert_eq!(
            spread,
            HashMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)]),
            "{data_path}"
        );
        for (c, name) in &clients[..3] {
            for j in 0..5 {
                assert_eq!(&ask_until_answered(c, &format!("again {j}")).await, name);
            }
        }
        let flows = metric(
            &registry,
            "shoal_mesh_task_udp_flows_total",
            &[("protocol", "udp")],
        );
        assert_eq!(flows, 30.0);
        let active = metric(
            &registry,
            "shoal_mesh_task_udp_active_flows",
            &[("task", "t1")],
        );
        assert_eq!(active, 10.0);
        // A reply is counted just after it is sent: the count may trail
        // the client by a moment.
        let counted = |name: &str| metric(&registry, name, &[]);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while counted("shoal_mesh_task_udp_datagrams_to_client_total") < 45.0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let from = counted("shoal_mesh_task_udp_datagrams_from_client_total");
        let to = counted("shoal_mesh_task_udp_datagrams_to_client_total");
        assert!(from >= 45.0 && to >= 45.0, "{from} {to}");
        let bytes = metric(
            &registry,
            "shoal_mesh_task_udp_bytes_to_client_total",
            &[("task", "t1")],
        );
        assert!(bytes > 0.0);
        mesh.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_withdrawn_task_s_flow_moves_on_its_next_datagram_and_draining_keeps_its_flows() {
    for data_path in DATA_PATHS {
        let (mesh, _registry) = mesh(data_path, Duration::from_secs(30));
        let (a, _stop_a) = udp_backend("a").await;
        let (b, _stop_b) = udp_backend("b").await;
        let port = free_udp_port();
        mesh.apply_snapshot(vec![udp_route(port, vec![endpoint("t1", a, false)])]);
        let c = client(port).await;
        assert_eq!(ask_until_answered(&c, "1").await, "a");
        // Draining: the flow stays; a new flow goes to the other task.
        mesh.apply_snapshot(vec![udp_route(
            port,
            vec![endpoint("t1", a, true), endpoint("t2", b, false)],
        )]);
        assert_eq!(ask_until_answered(&c, "2").await, "a");
        assert_eq!(ask_until_answered(&client(port).await, "x").await, "b");
        // Withdrawn: the very next datagram is answered by the other task.
        mesh.apply_snapshot(vec![udp_route(port, vec![endpoint("t2", b, false)])]);
        assert_eq!(ask(&c, "3", DEADLINE).await.as_deref(), Some("b"));
        mesh.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_dead_task_s_flow_moves_without_waiting_for_the_feed() {
    for data_path in DATA_PATHS {
        let (mesh, _registry) = mesh(data_path, Duration::from_secs(30));
        let (a, stop_a) = udp_backend("a").await;
        let (b, _stop_b) = udp_backend("b").await;
        let port = free_udp_port();
        mesh.apply_snapshot(vec![udp_route(
            port,
            vec![endpoint("t1", a, false), endpoint("t2", b, false)],
        )]);
        let c = client(port).await;
        let first = ask_until_answered(&c, "1").await;
        let c = if first == "a" {
            c
        } else {
            let c2 = client(port).await;
            assert_eq!(ask_until_answered(&c2, "1").await, "a");
            c2
        };
        drop(stop_a);
        // The dead task refuses (ICMP port unreachable): within a few
        // datagrams the flow is answered by the other task.
        let mut moved = false;
        for i in 0..5 {
            if ask(&c, &format!("after {i}"), Duration::from_millis(200))
                .await
                .as_deref()
                == Some("b")
            {
                moved = true;
                break;
            }
        }
        assert!(
            moved,
            "{data_path}: the flow did not move off the dead task"
        );
        mesh.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn idle_flows_are_forgotten() {
    for data_path in DATA_PATHS {
        let (mesh, registry) = mesh(data_path, Duration::from_millis(200));
        let (a, _stop_a) = udp_backend("a").await;
        let port = free_udp_port();
        mesh.apply_snapshot(vec![udp_route(port, vec![endpoint("t1", a, false)])]);
        let c = client(port).await;
        ask_until_answered(&c, "1").await;
        let active = || metric(&registry, "shoal_mesh_task_udp_active_flows", &[]);
        assert_eq!(active(), 1.0);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(active(), 0.0, "{data_path}");
        // The client's next datagram starts a new flow.
        ask_until_answered(&c, "2").await;
        assert_eq!(
            metric(&registry, "shoal_mesh_task_udp_flows_total", &[]),
            2.0
        );
        mesh.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn one_service_publishes_a_number_for_tcp_and_udp() {
    for data_path in DATA_PATHS {
        let (mesh, _registry) = mesh(data_path, Duration::from_secs(30));
        // A TCP listener on the UDP backend's port number; other tests may
        // hold that number over TCP, so try another backend until one fits.
        let mut attempts = 0;
        let (udp_addr, _stop, tcp) = loop {
            let (addr, stop) = udp_backend("a").await;
            match tokio::net::TcpListener::bind(addr).await {
                Ok(tcp) => break (addr, stop, tcp),
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    let _ = e;
                }
                Err(e) => panic!("no port free for both UDP and TCP: {e}"),
            }
        };
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(b"tcp a").await;
            }
        });
        let port = free_udp_port();
        let mut route = udp_route(port, vec![endpoint("t1", udp_addr, false)]);
        route.ports.push(PortRoute::tcp(port, 80));
        let errors = mesh.apply_snapshot(vec![route]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(mesh.listening_ports(), [port]);
        assert_eq!(mesh.listening_udp_ports(), [port]);
        assert_eq!(ask_until_answered(&client(port).await, "q").await, "a");
        let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        let mut text = String::new();
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(DEADLINE, s.read_to_string(&mut text))
            .await
            .ok();
        assert_eq!(text, "tcp a");
        // Removing the service closes both.
        mesh.apply_snapshot(vec![]);
        assert!(mesh.listening_ports().is_empty() && mesh.listening_udp_ports().is_empty());
        mesh.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_udp_port_bound_by_another_program_is_a_bind_error_naming_udp() {
    let taken = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let (mesh, _registry) = mesh(DataPath::Epoll, Duration::from_secs(30));
    let errors = mesh.apply_snapshot(vec![udp_route(port, vec![])]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(text.contains(&format!("{port}/udp")), "{text}");
}
