//! Host-mode ports through a real [`Mesh`] (epoll data path) on this node,
//! `node-1`: listeners open and close with the local tasks, and connections
//! go only to them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use prometheus::Registry;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::{DataPath, Endpoint, Mesh, MeshConfig, PortRoute, PublishMode, ServiceRoute};

const TARGET: u16 = 80;

fn mesh() -> Mesh {
    let config = MeshConfig {
        listen_ip: Ipv4Addr::LOCALHOST.into(),
        workers: std::num::NonZeroUsize::new(1).unwrap(),
        data_path: DataPath::Epoll,
        node_name: Some("node-1".into()),
        ..MeshConfig::default()
    };
    Mesh::new(config, &Registry::new()).unwrap()
}

/// A port that was free a moment ago (below the range `crate::tests` uses).
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(23_000);
    loop {
        let port = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(port < 24_000, "out of test ports");
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// A backend that replies with its name and closes.
async fn name_backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
            });
        }
    });
    addr
}

fn endpoint(task: &str, node: &str, addr: SocketAddr) -> Endpoint {
    Endpoint {
        task_id: task.into(),
        task_name: format!("web.{task}").into(),
        slot: 1,
        node: node.into(),
        ports: vec![(TARGET, addr)],
        draining: false,
    }
}

fn host_port(published: u16) -> PortRoute {
    PortRoute {
        mode: PublishMode::Host,
        ..PortRoute::tcp(published, TARGET)
    }
}

fn route(id: &str, ports: Vec<PortRoute>, endpoints: Vec<Endpoint>) -> ServiceRoute {
    ServiceRoute {
        service_id: id.into(),
        service_name: id.into(),
        ports,
        endpoints,
    }
}

async fn fetch(port: u16) -> String {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn a_host_mode_port_sends_only_to_this_nodes_tasks_and_ingress_to_all() {
    let mesh = mesh();
    let (host, ingress) = (free_port(), free_port());
    let here = name_backend("here").await;
    let there = name_backend("there").await;
    let errors = mesh.apply_snapshot(vec![route(
        "web",
        vec![host_port(host), PortRoute::tcp(ingress, TARGET)],
        vec![
            endpoint("t1", "node-2", there),
            endpoint("t2", "node-1", here),
        ],
    )]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(mesh.listening_ports(), sorted(vec![host, ingress]));
    for _ in 0..4 {
        assert_eq!(fetch(host).await, "here");
    }
    let mut picks: Vec<_> = (0..4).map(|_| mesh.pick(ingress).unwrap()).collect();
    picks.sort();
    picks.dedup();
    assert_eq!(picks.len(), 2, "ingress goes to both nodes' tasks");
}

#[tokio::test]
async fn a_host_mode_port_listens_only_while_a_task_runs_on_this_node() {
    let mesh = mesh();
    let port = free_port();
    let here = name_backend("here").await;
    let there = name_backend("there").await;
    let remote_only = vec![endpoint("t1", "node-2", there)];
    mesh.apply_snapshot(vec![route(
        "web",
        vec![host_port(port)],
        remote_only.clone(),
    )]);
    assert!(mesh.listening_ports().is_empty());
    assert_eq!(mesh.pick(port), None);
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .is_err());

    // Only the endpoints change: the port opens with the local task...
    let mut with_local = remote_only.clone();
    with_local.push(endpoint("t2", "node-1", here));
    mesh.apply_delta(vec![route("web", vec![host_port(port)], with_local)], &[]);
    assert_eq!(mesh.listening_ports(), vec![port]);
    assert_eq!(fetch(port).await, "here");

    // ...and closes when it leaves.
    mesh.apply_delta(vec![route("web", vec![host_port(port)], remote_only)], &[]);
    assert!(mesh.listening_ports().is_empty());
    assert_eq!(mesh.pick(port), None);
}

#[tokio::test]
async fn services_sharing_a_host_mode_port_on_other_nodes_do_not_clash() {
    let mesh = mesh();
    let port = free_port();
    let a = name_backend("a").await;
    let b = name_backend("b").await;
    let errors = mesh.apply_snapshot(vec![
        route(
            "a",
            vec![host_port(port)],
            vec![endpoint("a1", "node-1", a)],
        ),
        route(
            "b",
            vec![host_port(port)],
            vec![endpoint("b1", "node-2", b)],
        ),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(fetch(port).await, "a");
    // The tasks swap nodes: the port now belongs to b here (b comes first:
    // it takes the port a still holds in the table being replaced).
    let errors = mesh.apply_snapshot(vec![
        route(
            "b",
            vec![host_port(port)],
            vec![endpoint("b1", "node-1", b)],
        ),
        route(
            "a",
            vec![host_port(port)],
            vec![endpoint("a1", "node-2", a)],
        ),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(fetch(port).await, "b");
}

#[tokio::test]
async fn without_a_node_name_no_host_mode_port_is_served() {
    let mesh = Mesh::new(
        MeshConfig {
            listen_ip: Ipv4Addr::LOCALHOST.into(),
            workers: std::num::NonZeroUsize::new(1).unwrap(),
            data_path: DataPath::Epoll,
            ..MeshConfig::default()
        },
        &Registry::new(),
    )
    .unwrap();
    let port = free_port();
    let here = name_backend("here").await;
    mesh.apply_snapshot(vec![route(
        "web",
        vec![host_port(port)],
        vec![endpoint("t1", "node-1", here)],
    )]);
    assert!(mesh.listening_ports().is_empty());
}

fn sorted(mut v: Vec<u16>) -> Vec<u16> {
    v.sort_unstable();
    v
}
