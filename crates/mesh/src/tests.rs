use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::{DataPath, Endpoint, Mesh, MeshConfig, MeshError, PortRoute, ServiceRoute};

const DEADLINE: Duration = Duration::from_secs(10);
const TARGET: u16 = 80;

// === fixtures ===

/// The data path under test: this file is compiled twice, as `tests` and
/// as `uring_tests` (see `lib.rs`).
fn data_path() -> DataPath {
    if module_path!().ends_with("uring_tests") {
        DataPath::Uring
    } else {
        DataPath::Epoll
    }
}

fn mesh() -> (Mesh, Registry) {
    let registry = Registry::new();
    let config = MeshConfig {
        listen_ip: Ipv4Addr::LOCALHOST.into(),
        connect_timeout: Duration::from_millis(500),
        workers: std::num::NonZeroUsize::new(2).unwrap(),
        data_path: data_path(),
        ..MeshConfig::default()
    };
    (Mesh::new(config, &registry).unwrap(), registry)
}

/// A port that was free a moment ago.
///
/// Ports come from a counter below the kernel's ephemeral range (32768 and
/// up, where backends bound to port 0 land), so no two tests of this process
/// (both data paths run at once) ever get the same one.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(24_000);
    loop {
        let port = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(port < 32_768, "out of test ports");
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// An address nothing listens on, and nothing will for the rest of the test
/// run: a socket bound there (without SO_REUSEADDR) and never listening is
/// kept open, so a backend of a test running alongside cannot get the port.
pub(crate) fn dead_addr() -> SocketAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(socket);
    addr
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

/// A backend that reads until EOF, then echoes everything it read and closes.
async fn echo_after_eof_backend() -> SocketAddr {
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

/// A backend that echoes everything as it arrives.
pub(crate) async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A backend that says "ready\n", waits for EOF, then says "bye".
async fn ready_bye_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                s.write_all(b"ready\n").await.unwrap();
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
                let _ = s.write_all(b"bye").await;
            });
        }
    });
    addr
}

pub(crate) fn endpoint(task: &str, addr: SocketAddr, draining: bool) -> Endpoint {
    Endpoint {
        task_id: task.into(),
        task_name: format!("web.{task}").into(),
        slot: task.trim_start_matches('t').parse().unwrap_or(0),
        node: "node-1".into(),
        ports: vec![(TARGET, addr)],
        draining,
    }
}

pub(crate) fn route(id: &str, published: u16, endpoints: Vec<Endpoint>) -> ServiceRoute {
    ServiceRoute {
        service_id: id.into(),
        service_name: format!("svc-{id}").into(),
        ports: vec![PortRoute::tcp(published, TARGET)],
        endpoints,
    }
}

/// A connection through the mesh on `port` to an echo backend, after `msg`
/// went there and back intact.
async fn echoed_connection(port: u16, msg: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    s.write_all(msg).await.unwrap();
    let mut back = vec![0; msg.len()];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, msg);
    s
}

/// A mesh publishing one echo backend, and an open connection through it
/// for each message, which it echoed.
async fn echo_connections<M: AsRef<[u8]>>(
    msgs: impl IntoIterator<Item = M>,
) -> (Mesh, Vec<TcpStream>) {
    let (mesh, _registry) = mesh();
    let port = free_port();
    let backend = echo_backend().await;
    mesh.apply_snapshot(vec![route("s", port, vec![endpoint("t1", backend, false)])]);
    let mut conns = Vec::new();
    for msg in msgs {
        conns.push(echoed_connection(port, msg.as_ref()).await);
    }
    (mesh, conns)
}

/// Connects through the mesh and returns everything the backend sent.
async fn fetch(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

async fn fetch_n(port: u16, n: usize) -> HashMap<String, usize> {
    let mut hits = HashMap::new();
    for i in 0..n {
        let name = fetch(port).await.unwrap();
        assert!(!name.is_empty(), "connection {i} got no reply");
        *hits.entry(name).or_default() += 1;
    }
    hits
}

/// Sum of a family's samples whose labels include all of `labels`.
pub(crate) fn metric(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
        .sum()
}

fn has_series(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> bool {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .any(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
}

/// Polls `f` until it returns true or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn port_refuses(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .is_err()
}

// === tests ===

#[tokio::test]
async fn round_robin_hits_each_endpoint_equally() {
    let (mesh, registry) = mesh();
    let port = free_port();
    let eps = vec![
        endpoint("t1", name_backend("a").await, false),
        endpoint("t2", name_backend("b").await, false),
        endpoint("t3", name_backend("c").await, false),
    ];
    assert!(mesh.apply_snapshot(vec![route("s", port, eps)]).is_empty());

    let hits = fetch_n(port, 30).await;
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert!(hits.values().all(|&n| n == 10), "{hits:?}");

    let total = metric(
        &registry,
        "shoal_mesh_task_connections_total",
        &[("service", "svc-s")],
    );
    assert_eq!(total, 30.0);
    for task in ["t1", "t2", "t3"] {
        let n = metric(
            &registry,
            "shoal_mesh_task_connections_total",
            &[("task", task), ("node", "node-1")],
        );
        assert_eq!(n, 10.0, "task {task}");
    }
    let accepted = metric(
        &registry,
        "shoal_mesh_port_accepted_total",
        &[("port", &port.to_string())],
    );
    assert_eq!(accepted, 30.0);
}

#[tokio::test]
async fn dead_endpoint_is_skipped_and_ejected() {
    let (mesh, registry) = mesh();
    let port = free_port();
    let eps = vec![
        endpoint("t1", name_backend("a").await, false),
        endpoint("t2", dead_addr(), false),
        endpoint("t3", name_backend("c").await, false),
    ];
    mesh.apply_snapshot(vec![route("s", port, eps)]);

    let hits = fetch_n(port, 30).await;
    assert_eq!(hits.values().sum::<usize>(), 30);
    assert_eq!(
        hits.keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        ["a", "c"].into()
    );

    assert!(
        metric(
            &registry,
            "shoal_mesh_task_connect_errors_total",
            &[("task", "t2")]
        ) > 0.0
    );
    assert_eq!(
        metric(
            &registry,
            "shoal_mesh_task_connect_errors_total",
            &[("task", "t1")]
        ),
        0.0
    );
    assert_eq!(metric(&registry, "shoal_mesh_port_refused_total", &[]), 0.0);
}

/// A listening socket whose accept queue is full and never drained: the
/// kernel drops further SYNs, so a connect to it hangs. Returns its address
/// and what must stay open.
pub(crate) fn hanging_addr() -> (SocketAddr, (socket2::Socket, std::net::TcpStream)) {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    // A backlog of 0 queues one connection; it is never accepted.
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let queued = std::net::TcpStream::connect(addr).unwrap();
    (addr, (l, queued))
}

/// A connect that hangs is given up after the connect timeout and the next
/// endpoint serves the client; the hanging one is ejected.
#[tokio::test]
async fn hanging_connect_times_out_and_the_next_endpoint_serves() {
    let (mesh, registry) = mesh();
    let port = free_port();
    let (hanging, _hold) = hanging_addr();
    let eps = vec![
        endpoint("t1", hanging, false),
        endpoint("t2", name_backend("b").await, false),
    ];
    mesh.apply_snapshot(vec![route("s", port, eps)]);
    // The first connection tries t1 first (round-robin from the start).
    let started = Instant::now();
    let got = tokio::time::timeout(DEADLINE, fetch(port))
        .await
        .expect("served within the deadline")
        .unwrap();
    assert_eq!(got, "b");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "answered after {:?}: t1 did not hang",
        started.elapsed()
    );
    let errors = |task| {
        metric(
            &registry,
            "shoal_mesh_task_connect_errors_total",
            &[("task", task)],
        )
    };
    assert_eq!(errors("t1"), 1.0);
    assert_eq!(errors("t2"), 0.0);
    // Ejected: the next connections go straight to t2.
    for _ in 0..4 {
        assert_eq!(fetch(port).await.unwrap(), "b");
    }
    assert_eq!(errors("t1"), 1.0);
}

#[tokio::test]
async fn all_endpoints_dead_refuses_client() {
    let (mesh, registry) = mesh();
    let port = free_port();
    let eps = vec![
        endpoint("t1", dead_addr(), false),
        endpoint("t2", dead_addr(), false),
    ];
    mesh.apply_snapshot(vec![route("s", port, eps)]);
    for _ in 0..3 {
        // Closed without data (or reset).
        assert_eq!(fetch(port).await.unwrap_or_default(), "");
    }
    // Every endpoint is tried each time, even while ejected.
    eventually("refused count", || async {
        metric(
            &registry,
            "shoal_mesh_port_refused_total",
            &[("service", "svc-s")],
        ) == 3.0
    })
    .await;
    assert_eq!(
        metric(&registry, "shoal_mesh_task_connect_errors_total", &[]),
        6.0
    );
}

#[tokio::test]
async fn removed_and_draining_endpoints_get_no_new_connections() {
    let (mesh, _registry) = mesh();
    let port = free_port();
    let a = endpoint("t1", name_backend("a").await, false);
    let b = endpoint("t2", name_backend("b").await, false);
    let c = endpoint("t3", name_backend("c").await, false);
    mesh.apply_snapshot(vec![route(
        "s",
        port,
        vec![a.clone(), b.clone(), c.clone()],
    )]);
    assert_eq!(fetch_n(port, 3).await.len(), 3);

    // Remove c.
    mesh.apply_delta(vec![route("s", port, vec![a.clone(), b.clone()])], &[]);
    let hits = fetch_n(port, 20).await;
    assert_eq!(hits.get("a"), Some(&10), "{hits:?}");
    assert_eq!(hits.get("b"), Some(&10), "{hits:?}");
    assert!(!hits.contains_key("c"));

    // b drains.
    let b_draining = Endpoint {
        draining: true,
        ..b
    };
    mesh.apply_delta(vec![route("s", port, vec![a, b_draining])], &[]);
    let hits = fetch_n(port, 10).await;
    assert_eq!(hits.get("a"), Some(&10), "{hits:?}");
}

/// Bytes known to come right before a FIN are held in the send queue
/// (`MSG_MORE`) and leave with it; other bytes leave at once.
#[tokio::test]
async fn bytes_before_a_fin_wait_for_it() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
    let (a, (mut b, _)) = (a.unwrap(), b.unwrap());
    a.set_nodelay(true).unwrap();

    crate::forward::write_all(&a, b"first ", false)
        .await
        .unwrap();
    assert_eq!(
        not_sent(&a),
        0,
        "bytes with no FIN after them leave at once"
    );
    crate::forward::write_all(&a, b"last words", true)
        .await
        .unwrap();
    assert_eq!(not_sent(&a), 10, "bytes before a FIN wait for it");
    socket2::SockRef::from(&a)
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), b.read_to_end(&mut got))
        .await
        .expect("data and FIN arrive")
        .unwrap();
    assert_eq!(got, b"first last words");
}

/// Bytes in the send queue of `s` not yet sent (`tcpi_notsent_bytes`).
#[allow(unsafe_code)] // getsockopt(TCP_INFO); socket2 has no wrapper for it
fn not_sent(s: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(
        rc,
        0,
        "getsockopt(TCP_INFO): {}",
        std::io::Error::last_os_error()
    );
    info.tcpi_notsent_bytes
}

#[tokio::test]
async fn half_close_is_propagated() {
    let (mesh, _registry) = mesh();
    let port = free_port();
    let backend = echo_after_eof_backend().await;
    mesh.apply_snapshot(vec![route("s", port, vec![endpoint("t1", backend, false)])]);

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload);
}

#[tokio::test]
async fn small_payload_arriving_with_its_fin_is_forwarded_then_half_closed() {
    // Data and FIN read in one go (the FIN seen before the read) end the
    // direction without a further read; the other direction keeps flowing.
    let (mesh, _registry) = mesh();
    let port = free_port();
    let backend = echo_after_eof_backend().await;
    mesh.apply_snapshot(vec![route("s", port, vec![endpoint("t1", backend, false)])]);
    for i in 0..20u8 {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        let msg = [b'p', b'i', b'n', b'g', i];
        s.write_all(&msg).await.unwrap();
        s.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, msg);
    }
}

#[tokio::test]
async fn bytes_are_counted_per_direction() {
    let (mesh, registry) = mesh();
    let port = free_port();
    let backend = echo_after_eof_backend().await;
    mesh.apply_snapshot(vec![route("s", port, vec![endpoint("t1", backend, false)])]);
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"hello");
    eventually("bytes counted and connection closed", || async {
        metric(
            &registry,
            "shoal_mesh_task_bytes_from_client_total",
            &[("task", "t1")],
        ) == 5.0
            && metric(
                &registry,
                "shoal_mesh_task_bytes_to_client_total",
                &[("task", "t1")],
            ) == 5.0
            && metric(
                &registry,
                "shoal_mesh_task_active_connections",
                &[("task", "t1")],
            ) == 0.0
    })
    .await;
}

#[tokio::test]
async fn removed_service_closes_its_port() {
    let (mesh, _registry) = mesh();
    let port = free_port();
    let other = free_port();
    let a = endpoint("t1", name_backend("a").await, false);
    mesh.apply_snapshot(vec![
        route("s", port, vec![a.clone()]),
        route("o", other, vec![a]),
    ]);
    assert_eq!(fetch(port).await.unwrap(), "a");

    mesh.apply_delta(vec![], &["s".to_owned()]);
    assert!(mesh.table().service_for_port(port).is_none());
    eventually("port closed", || port_refuses(port)).await;
    assert_eq!(mesh.listening_ports(), vec![other]);
    assert_eq!(fetch(other).await.unwrap(), "a");
}

#[tokio::test]
async fn port_without_endpoints_closes_and_counts_refused() {
    let (mesh, registry) = mesh();
    let port = free_port();
    mesh.apply_snapshot(vec![route("s", port, vec![])]);
    assert_eq!(fetch(port).await.unwrap_or_default(), "");
    eventually("refused counted", || async {
        metric(
            &registry,
            "shoal_mesh_port_refused_total",
            &[("service", "svc-s"), ("port", &port.to_string())],
        ) == 1.0
    })
    .await;
}

#[tokio::test]
async fn port_moves_between_services() {
    let (mesh, _registry) = mesh();
    let port = free_port();
    let a = endpoint("t1", name_backend("a").await, false);
    let b = endpoint("t2", name_backend("b").await, false);
    mesh.apply_snapshot(vec![route("s1", port, vec![a])]);
    assert_eq!(fetch(port).await.unwrap(), "a");
    assert!(mesh
        .apply_snapshot(vec![route("s2", port, vec![b])])
        .is_empty());
    assert_eq!(fetch(port).await.unwrap(), "b");
    assert_eq!(mesh.table().service_for_port(port).unwrap().id(), "s2");
}

#[tokio::test]
async fn bind_error_is_reported_and_other_ports_served() {
    let (mesh, _registry) = mesh();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let port = free_port();
    let a = endpoint("t1", name_backend("a").await, false);
    let errors = mesh.apply_snapshot(vec![
        route("web", taken_port, vec![a.clone()]),
        route("api", port, vec![a]),
    ]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(matches!(&errors[0], MeshError::Bind { port, .. } if *port == taken_port));
    let msg = errors[0].to_string();
    assert!(
        msg.starts_with(&format!(
            "bind 127.0.0.1:{taken_port} for service svc-web: "
        )),
        "{msg}"
    );
    assert_eq!(fetch(port).await.unwrap(), "a");

    // Retried on the next update once the port is free.
    drop(taken);
    assert!(mesh.apply_delta(vec![], &[]).is_empty());
    assert_eq!(fetch(taken_port).await.unwrap(), "a");
}

#[tokio::test]
async fn unchanged_services_are_shared_and_counter_carries_over() {
    let (mesh, _registry) = mesh();
    let (p1, p2) = (free_port(), free_port());
    let a = endpoint("t1", name_backend("a").await, false);
    let b = endpoint("t2", name_backend("b").await, false);
    mesh.apply_snapshot(vec![
        route("s1", p1, vec![a.clone(), b.clone()]),
        route("s2", p2, vec![a.clone()]),
    ]);
    let table = mesh.table();
    let s1 = table.service("s1").unwrap();
    let revision = table.revision();
    assert_eq!(fetch(p1).await.unwrap(), "a");

    // Upsert s2 with other endpoints, same ports: its entry changes in its
    // slot, the port map (the table) is the same allocation, and s1's entry
    // is untouched.
    mesh.apply_delta(vec![route("s2", p2, vec![b.clone()])], &[]);
    assert_eq!(mesh.table().revision(), revision + 1);
    assert!(Arc::ptr_eq(&table, &mesh.table()), "no new table");
    assert!(Arc::ptr_eq(&s1, &mesh.table().service("s1").unwrap()));
    let s2: Vec<String> = table
        .service("s2")
        .unwrap()
        .endpoints()
        .map(|e| e.task_id.to_string())
        .collect();
    assert_eq!(s2, ["t2"], "the published table sees the new entry");

    // Changing s1 keeps its round-robin position: next is b.
    let a_renamed = Endpoint {
        node: "node-2".into(),
        ..a
    };
    mesh.apply_delta(vec![route("s1", p1, vec![a_renamed, b.clone()])], &[]);
    assert!(!Arc::ptr_eq(&s1, &mesh.table().service("s1").unwrap()));
    assert_eq!(fetch(p1).await.unwrap(), "b");

    // A new published port needs a new table (and a listener).
    let p3 = free_port();
    mesh.apply_delta(vec![route("s2", p3, vec![b])], &[]);
    assert!(!Arc::ptr_eq(&table, &mesh.table()));
    assert_eq!(fetch(p3).await.unwrap(), "b");
    assert!(mesh.table().service_for_port(p2).is_none());
}

#[tokio::test]
async fn task_series_removed_when_task_leaves_table() {
    let (mesh, registry) = mesh();
    let port = free_port();
    let a = endpoint("t1", name_backend("a").await, false);
    let b = endpoint("t2", name_backend("b").await, false);
    mesh.apply_snapshot(vec![route("s", port, vec![a.clone(), b])]);
    fetch_n(port, 2).await;
    assert!(has_series(
        &registry,
        "shoal_mesh_task_connections_total",
        &[("task", "t2")]
    ));

    mesh.apply_delta(vec![route("s", port, vec![a])], &[]);
    eventually("t2 series removed", || async {
        !has_series(
            &registry,
            "shoal_mesh_task_connections_total",
            &[("task", "t2")],
        )
    })
    .await;
    assert!(has_series(
        &registry,
        "shoal_mesh_task_connections_total",
        &[("task", "t1")]
    ));

    mesh.apply_snapshot(vec![]);
    eventually("all series removed", || async {
        !has_series(&registry, "shoal_mesh_task_connections_total", &[])
            && !has_series(&registry, "shoal_mesh_port_accepted_total", &[])
    })
    .await;
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_connection() {
    let (mesh, _registry) = mesh();
    let port = free_port();
    mesh.apply_snapshot(vec![route(
        "s",
        port,
        vec![endpoint("t1", ready_bye_backend().await, false)],
    )]);

    let mut client = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let mut ready = [0u8; 6];
    client.read_exact(&mut ready).await.unwrap();
    assert_eq!(&ready, b"ready\n");

    let stopping = tokio::spawn({
        let mesh = mesh.clone();
        async move { mesh.shutdown(Duration::from_secs(60)).await }
    });
    eventually("port closed", || port_refuses(port)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown returned with a connection in flight"
    );

    client.shutdown().await.unwrap();
    let mut rest = String::new();
    client.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "bye");
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .unwrap()
        .unwrap();

    // Idempotent, and no listener is reopened afterwards.
    mesh.shutdown(Duration::from_secs(1)).await;
    mesh.apply_delta(vec![], &[]);
    assert!(mesh.listening_ports().is_empty());
    assert!(port_refuses(port).await);
}

#[tokio::test]
async fn shutdown_closes_connections_after_grace() {
    let (mesh, _registry) = mesh();
    let port = free_port();
    mesh.apply_snapshot(vec![route(
        "s",
        port,
        vec![endpoint("t1", ready_bye_backend().await, false)],
    )]);
    let mut client = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let mut ready = [0u8; 6];
    client.read_exact(&mut ready).await.unwrap();

    tokio::time::timeout(DEADLINE, mesh.shutdown(Duration::from_millis(100)))
        .await
        .unwrap();
    // The mesh closed the client leg: EOF (or reset), never "bye".
    let mut rest = String::new();
    let r = tokio::time::timeout(DEADLINE, client.read_to_string(&mut rest))
        .await
        .unwrap();
    assert!(r.is_err() || rest.is_empty(), "{rest:?}");
}

#[test]
fn ejection_backoff_doubles_caps_and_resets() {
    let config = MeshConfig::default();
    let health = crate::health::Health::default();
    let secs = |s: u64| Duration::from_secs(s);
    assert!(!health.is_ejected(0));
    let backoffs: Vec<_> = (0..7).map(|_| health.record_failure(0, &config)).collect();
    assert_eq!(
        backoffs,
        [
            secs(1),
            secs(2),
            secs(4),
            secs(8),
            secs(16),
            secs(30),
            secs(30)
        ]
    );
    assert!(health.is_ejected(secs(29).as_nanos() as u64));
    assert!(!health.is_ejected(secs(30).as_nanos() as u64));
    health.record_success();
    assert!(!health.is_ejected(0));
    assert_eq!(health.record_failure(0, &config), secs(1));
}

pub(crate) fn held(mesh: &Mesh) -> usize {
    mesh.inner
        .shared
        .held
        .count
        .load(std::sync::atomic::Ordering::Relaxed)
}

fn spliced(mesh: &Mesh) -> u64 {
    mesh.inner
        .shared
        .held
        .spliced
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_body_is_spliced_intact_with_half_close() {
    let (mesh, registry) = mesh();
    let port = free_port();
    let backend = echo_after_eof_backend().await;
    mesh.apply_snapshot(vec![route("s", port, vec![endpoint("t1", backend, false)])]);

    const LEN: usize = 4 << 20;
    let payload: Vec<u8> = (0..LEN as u32).map(|i| (i % 253) as u8).collect();
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut echoed = Vec::with_capacity(LEN);
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed.len(), LEN);
    assert!(echoed == payload, "body corrupted");
    // Most of both directions went through splice, not the copy buffers.
    assert!(spliced(&mesh) > LEN as u64, "spliced {}", spliced(&mesh));
    eventually("both directions counted, nothing held", || async {
        metric(
            &registry,
            "shoal_mesh_task_bytes_from_client_total",
            &[("task", "t1")],
        ) == LEN as f64
            && metric(
                &registry,
                "shoal_mesh_task_bytes_to_client_total",
                &[("task", "t1")],
            ) == LEN as f64
            && held(&mesh) == 0
    })
    .await;
}

#[tokio::test]
async fn mesh_runs_the_data_path_asked_for() {
    let (mesh, _registry) = mesh();
    assert_eq!(mesh.data_path(), data_path());
}

/// `auto` takes io_uring where it can be set up and falls back to epoll
/// where it cannot; an explicit `io_uring` fails instead.
#[test]
fn auto_falls_back_to_epoll_without_io_uring() {
    use crate::Engine;
    let denied = || Err(std::io::Error::from_raw_os_error(libc::EPERM));
    let epoll = || {
        let tracker = tokio_util::task::TaskTracker::new();
        crate::workers::Workers::start(std::num::NonZeroUsize::MIN, &tracker)
    };
    let engine = Engine::start(DataPath::Auto, denied, epoll).unwrap();
    assert!(matches!(engine, Engine::Epoll(_)));
    let err = Engine::start(DataPath::Uring, denied, epoll)
        .err()
        .expect("io_uring asked for and denied");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    // On this kernel io_uring is allowed: auto picks it.
    let (mesh, _registry) = {
        let registry = Registry::new();
        let config = MeshConfig {
            data_path: DataPath::Auto,
            ..MeshConfig::default()
        };
        (Mesh::new(config, &registry).unwrap(), registry)
    };
    assert_eq!(mesh.data_path(), DataPath::Uring);
}

/// Many receives completing at once: on the io_uring path (whose tests run
/// with 4 provided buffers per worker) some find the ring empty and read
/// into a buffer of their own; every byte still arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_beyond_the_buffer_ring_are_forwarded() {
    let (mesh, mut conns) = echo_connections([b"hi"; 48]).await;
    let own_buffers = || {
        mesh.inner
            .shared
            .held
            .own_buffers
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = Instant::now() + DEADLINE;
    for round in 0u8.. {
        let msg: Vec<u8> = (0..3000).map(|i| (i as u8) ^ round).collect();
        for s in &mut conns {
            s.write_all(&msg).await.unwrap();
        }
        for s in &mut conns {
            let mut back = vec![0; msg.len()];
            tokio::time::timeout(DEADLINE, s.read_exact(&mut back))
                .await
                .unwrap()
                .unwrap();
            assert!(back == msg, "echo corrupted in round {round}");
        }
        if data_path() == DataPath::Epoll || own_buffers() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the buffer ring never ran dry");
    }
    eventually("nothing held once idle", || async { held(&mesh) == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_hold_no_buffer() {
    // Small and bulk exchanges, so both copy buffers and pipes were used.
    let msgs = (0..50u32).map(|i| {
        if i % 2 == 0 {
            b"ping".to_vec()
        } else {
            vec![i as u8; 100_000]
        }
    });
    let (mesh, mut conns) = echo_connections(msgs).await;
    assert!(spliced(&mesh) > 0);
    eventually("idle connections release buffers and pipes", || async {
        held(&mesh) == 0
    })
    .await;
    // Still open and working after going idle.
    for s in &mut conns {
        s.write_all(b"again").await.unwrap();
        let mut back = [0; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"again");
    }
}

#[tokio::test]
async fn accepted_sockets_inherit_nodelay_and_keepalive() {
    let keepalive = Duration::from_secs(77);
    let group = crate::socket::bind_group((Ipv4Addr::LOCALHOST, 0).into(), keepalive, 2).unwrap();
    let addr = group[0].local_addr().unwrap();
    assert_eq!(
        group[1].local_addr().unwrap(),
        addr,
        "one port for the group"
    );
    let mut group = group
        .into_iter()
        .map(|l| TcpListener::from_std(l).unwrap())
        .collect::<Vec<_>>();
    let _c = TcpStream::connect(addr).await.unwrap();
    let (l1, l0) = (group.pop().unwrap(), group.pop().unwrap());
    let (accepted, _) = tokio::select! {
        r = l0.accept() => r.unwrap(),
        r = l1.accept() => r.unwrap(),
    };
    let s = socket2::SockRef::from(&accepted);
    assert!(s.tcp_nodelay().unwrap());
    assert!(s.keepalive().unwrap());
    assert_eq!(s.tcp_keepalive_time().unwrap(), keepalive);
}

#[tokio::test]
async fn port_served_by_another_mesh_is_a_bind_error() {
    // Both meshes bind SO_REUSEPORT groups: without the probe, the second
    // would silently take a share of the first one's connections.
    let (first, _r1) = mesh();
    let (second, _r2) = mesh();
    let port = free_port();
    let a = endpoint("t1", name_backend("a").await, false);
    let b = endpoint("t2", name_backend("b").await, false);
    assert!(first
        .apply_snapshot(vec![route("web", port, vec![a])])
        .is_empty());
    let errors = second.apply_snapshot(vec![route("web", port, vec![b])]);
    assert!(
        matches!(&errors[..], [MeshError::Bind { port: p, .. }] if *p == port),
        "{errors:?}"
    );
    for _ in 0..20 {
        assert_eq!(fetch(port).await.unwrap(), "a");
    }
}

#[tokio::test]
async fn connections_spread_over_the_workers() {
    // Each accepted connection runs on the worker whose socket accepted it; the
    // kernel hashes connections over the group, so 64 land on both workers.
    let (mesh, _conns) = echo_connections([b"x"; 64]).await;
    let per_worker = match &mesh.inner.engine {
        // One accept loop per worker, plus the connections it runs.
        crate::Engine::Epoll(w) => w.tasks_per_worker().iter().map(|n| n - 1).collect(),
        crate::Engine::Uring(w) => w.connections_per_worker(),
    };
    assert_eq!(per_worker.len(), 2);
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
    assert_eq!(per_worker.iter().sum::<usize>(), 64, "{per_worker:?}");
}

#[test]
fn empty_pipes_are_pooled_and_reused() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    let m = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(m.local_addr().unwrap()).unwrap();
    let (mut d, _) = m.accept().unwrap();

    let before = crate::pipe::pooled();
    let mut pipe = crate::pipe::Pipe::take().unwrap();
    a.write_all(b"through the pipe").unwrap();
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let mut moved = 0;
    loop {
        match pipe.fill_from(b.as_raw_fd()) {
            Ok(0) => break,
            Ok(_) => {
                while pipe.pending() > 0 {
                    moved += pipe.drain_to(c.as_raw_fd()).unwrap();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("splice: {e}"),
        }
    }
    assert_eq!(moved, 16);
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = String::new();
    d.read_to_string(&mut got).unwrap();
    assert_eq!(got, "through the pipe");
    drop(pipe);
    assert_eq!(
        crate::pipe::pooled(),
        before + 1,
        "empty pipe returned to the pool"
    );
    let _again = crate::pipe::Pipe::take().unwrap();
    assert_eq!(crate::pipe::pooled(), before, "pooled pipe reused");
    drop(b);
}

#[tokio::test]
async fn more_than_64_endpoints_rotate_and_skip_dead_ones() {
    let (mesh, registry) = mesh();
    let port = free_port();
    const NAMES: [&str; 3] = ["a", "b", "c"];
    let mut eps = Vec::new();
    for i in 0..70 {
        let addr = if i % 10 == 0 {
            dead_addr()
        } else {
            name_backend(NAMES[i % 3]).await
        };
        eps.push(endpoint(&format!("t{i}"), addr, false));
    }
    mesh.apply_snapshot(vec![route("s", port, eps)]);
    let hits = fetch_n(port, 140).await;
    assert_eq!(hits.values().sum::<usize>(), 140, "{hits:?}");
    // Every client got an answer; each dead endpoint failed at least once
    // and was ejected (it may be retried once its 1 s backoff ends if the
    // machine is slow, so the count is not exact).
    let errors = metric(&registry, "shoal_mesh_task_connect_errors_total", &[]);
    assert!(errors >= 7.0, "{errors}");
}

#[tokio::test]
async fn pick_rotates_over_endpoints_not_draining_without_connecting() {
    let (mesh, _registry) = mesh();
    let port = free_port();
    let addr = |n: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, 20_000 + n));
    mesh.apply_snapshot(vec![route(
        "web",
        port,
        vec![
            endpoint("t1", addr(1), false),
            endpoint("t2", addr(2), true),
            endpoint("t3", addr(3), false),
        ],
    )]);
    let picks: Vec<SocketAddr> = (0..4).filter_map(|_| mesh.pick(port)).collect();
    assert_eq!(picks, [addr(1), addr(3), addr(1), addr(3)]);
    assert_eq!(mesh.pick(free_port()), None);
}

#[test]
fn one_splice_moves_up_to_the_widened_pipe_capacity() {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    let pipe = crate::pipe::Pipe::take().unwrap();
    if pipe.capacity() != crate::pipe::PIPE_CAPACITY {
        // Only an unprivileged user over fs.pipe-user-pages-soft is refused.
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").unwrap().uid();
        assert_ne!(uid, 0, "root got a {} B pipe", pipe.capacity());
        return;
    }
    drop(pipe);
    let mut pipe = crate::pipe::Pipe::take().unwrap();
    // A receive buffer big enough to queue 384 KiB (more than Linux's
    // default pipe, and than the 256 KiB pipes the mesh had) without reading.
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.set_recv_buffer_size(1 << 20).unwrap();
    l.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    l.listen(1).unwrap();
    let l: std::net::TcpListener = l.into();
    let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    b.set_nonblocking(true).unwrap();
    let sent = vec![7u8; 384 * 1024];
    a.write_all(&sent).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut peeked = vec![0u8; sent.len()];
    loop {
        let queued = b.peek(&mut peeked).unwrap_or(0);
        if queued == sent.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{queued} B queued");
        std::thread::yield_now();
    }
    let n = pipe.fill_from(b.as_raw_fd()).unwrap();
    assert_eq!(n, sent.len(), "one splice moved the whole 384 KiB");
    assert_eq!(pipe.pending(), sent.len());
    // A pipe that still holds bytes is closed, not pooled.
    let before = crate::pipe::pooled();
    drop(pipe);
    assert_eq!(crate::pipe::pooled(), before);
}
