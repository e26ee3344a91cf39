//! Connection hygiene on the data path this file's module name picks (it is
//! compiled twice, as `tests.rs` is): every connection is freed, with its
//! descriptors, buffers and slab entry, whatever order its events come in.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use prometheus::Registry;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::tests::{dead_addr, echo_backend, endpoint, hanging_addr, held, metric, route};
use crate::{DataPath, Mesh, MeshConfig};

/// How long a backend connect may take: short, so hanging connects end soon.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the mesh may take to free everything once the peers are done.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// The longest any one client or backend connection of a scenario lives.
const PEER_DEADLINE: Duration = Duration::from_secs(5);

// === fixtures ===

fn data_path() -> DataPath {
    if module_path!().ends_with("uring_hygiene_tests") {
        DataPath::Uring
    } else {
        DataPath::Epoll
    }
}

fn mesh() -> (Mesh, Registry) {
    let registry = Registry::new();
    let config = MeshConfig {
        listen_ip: Ipv4Addr::LOCALHOST.into(),
        connect_timeout: CONNECT_TIMEOUT,
        workers: std::num::NonZeroUsize::new(2).unwrap(),
        data_path: data_path(),
        ..MeshConfig::default()
    };
    (Mesh::new(config, &registry).unwrap(), registry)
}

/// A port that was free a moment ago, from a range of this module's own
/// (`tests.rs` counts up from 24000; the two data paths get separate halves).
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = if data_path() == DataPath::Uring {
        30_400
    } else {
        28_000
    };
    loop {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(offset < 2_400, "out of test ports");
        let port = base + offset;
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// How a backend treats each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// Echoes bytes as they arrive; closes at end of stream.
    Echo,
    /// Closes as soon as it has accepted.
    Close,
    /// Resets as soon as it has accepted (SO_LINGER 0).
    Reset,
    /// Reads to end of stream, then replies and closes: the client's
    /// half-close travels up.
    ReplyAfterEof,
    /// Says "bye" and half-closes first, then reads to end of stream: a
    /// half-close travelling down.
    ByeFirst,
    /// Sends 200 kB (enough to splice) and closes.
    Bulk,
    /// Nothing listens: the connect is refused.
    Refused,
    /// The connect hangs until the mesh's connect timeout.
    Hanging,
}

const BACKENDS: [Backend; 8] = [
    Backend::Echo,
    Backend::Close,
    Backend::Reset,
    Backend::ReplyAfterEof,
    Backend::ByeFirst,
    Backend::Bulk,
    Backend::Refused,
    Backend::Hanging,
];

/// What a client does once connected.
#[derive(Clone, Debug)]
enum Client {
    /// Closes at once (a TCP health check, a port scanner).
    Close,
    /// Resets at once.
    Reset,
    /// Sends this many bytes and closes without reading: bytes in flight
    /// both ways when the connection ends.
    SendClose(usize),
    /// Sends this many bytes, half-closes, reads to end of stream.
    HalfClose(usize),
    /// Waits this many milliseconds (the backend connect has usually
    /// completed by then), then closes.
    WaitClose(u64),
    /// Sends a line and closes after reading whatever comes within 50 ms.
    Exchange,
}

/// A service per backend behaviour, each on its own published port.
struct Services {
    /// Published port of each behaviour, in [`BACKENDS`] order.
    ports: Vec<u16>,
    /// Where the mesh connects to: the ports whose sockets are backend legs.
    backend_ports: Vec<u16>,
    /// Accept loops of the backends, aborted at drop.
    servers: Vec<JoinHandle<()>>,
    /// Keeps the hanging backend's listener and its one queued connection.
    _hanging: Box<dyn Send>,
}

impl Services {
    async fn publish(mesh: &Mesh) -> Self {
        let mut routes = Vec::new();
        let (mut ports, mut backend_ports, mut servers) = (Vec::new(), Vec::new(), Vec::new());
        let (hanging, hold) = hanging_addr();
        for (i, &kind) in BACKENDS.iter().enumerate() {
            let addr = match kind {
                Backend::Refused => dead_addr(),
                Backend::Hanging => hanging,
                Backend::Echo => echo_backend().await,
                _ => {
                    let (addr, server) = serve(kind).await;
                    servers.push(server);
                    addr
                }
            };
            let port = free_port();
            routes.push(route(
                &format!("s{i}"),
                port,
                vec![endpoint("t1", addr, false)],
            ));
            ports.push(port);
            backend_ports.push(addr.port());
        }
        assert!(mesh.apply_snapshot(routes).is_empty());
        Self {
            ports,
            backend_ports,
            servers,
            _hanging: Box::new(hold),
        }
    }

    fn port(&self, kind: Backend) -> u16 {
        self.ports[BACKENDS.iter().position(|&k| k == kind).unwrap()]
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

/// A backend that treats each connection as `kind` says.
async fn serve(kind: Backend) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(tokio::time::timeout(
                PEER_DEADLINE,
                backend_connection(kind, s),
            ));
        }
    });
    (addr, server)
}

async fn backend_connection(kind: Backend, mut s: TcpStream) {
    let mut sink = Vec::new();
    match kind {
        Backend::Close => {}
        Backend::Reset => {
            let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
        Backend::ReplyAfterEof => {
            let _ = s.read_to_end(&mut sink).await;
            let _ = s.write_all(b"reply").await;
        }
        Backend::ByeFirst => {
            let _ = s.write_all(b"bye").await;
            let _ = s.shutdown().await;
            let _ = s.read_to_end(&mut sink).await;
        }
        Backend::Bulk => {
            let _ = s.write_all(&[7; 200_000]).await;
        }
        Backend::Echo | Backend::Refused | Backend::Hanging => unreachable!("not served here"),
    }
}

async fn run_client(port: u16, action: Client) {
    let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await else {
        return;
    };
    let mut sink = Vec::new();
    match action {
        Client::Close => {}
        Client::Reset => {
            let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
        Client::SendClose(n) => {
            let _ = s.write_all(&vec![1; n]).await;
        }
        Client::HalfClose(n) => {
            let _ = s.write_all(&vec![2; n]).await;
            let _ = s.shutdown().await;
            let _ = s.read_to_end(&mut sink).await;
        }
        Client::WaitClose(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Client::Exchange => {
            let _ = s.write_all(b"hello\n").await;
            let mut buf = [0; 64];
            let _ = tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await;
        }
    }
}

/// What the mesh still holds.
#[derive(Debug, PartialEq, Eq)]
struct Holding {
    /// Connections counted for the shutdown drain (tasks on epoll, slab
    /// entries' tokens on io_uring).
    connections: usize,
    /// io_uring only: slab entries per worker.
    slab_entries: usize,
    /// Provided buffers, own buffers, copy buffers and pipes in use.
    buffers: usize,
    /// The mesh's sockets of these services in this process's fd table.
    descriptors: usize,
    /// `shoal_mesh_task_active_connections`, summed.
    active_gauge: i64,
}

fn still_held(mesh: &Mesh, registry: &Registry, services: &Services) -> Holding {
    let slab_entries = match &mesh.inner.engine {
        crate::Engine::Uring(w) => w.connections_per_worker().iter().sum(),
        crate::Engine::Epoll(_) => 0,
    };
    Holding {
        connections: mesh.inner.shared.connections.len(),
        slab_entries,
        buffers: held(mesh),
        descriptors: mesh_sockets(&services.ports, &services.backend_ports),
        active_gauge: metric(registry, "shoal_mesh_task_active_connections", &[]) as i64,
    }
}

/// Descriptors of this process that are the mesh's legs of connections to
/// these ports: accepted client legs (local port `published`, not
/// listening) and backend legs (remote port one of `backends`). The test's
/// own clients and backends have these ports on the other side.
fn mesh_sockets(published: &[u16], backends: &[u16]) -> usize {
    let mut sockets = HashMap::new();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
        let listening = fields[3] == "0A";
        sockets.insert(
            fields[9].to_owned(),
            (port(fields[1]), port(fields[2]), listening),
        );
    }
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|link| {
            let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            sockets.get(inode).copied()
        })
        .filter(|&(local, remote, listening)| {
            (published.contains(&local) && !listening) || backends.contains(&remote)
        })
        .count()
}

/// Waits until the mesh holds what it held before the clients came (its
/// descriptor baseline is the hanging backend's queued connection).
async fn drained(
    mesh: &Mesh,
    registry: &Registry,
    services: &Services,
    baseline: usize,
) -> Result<(), String> {
    let idle = Holding {
        connections: 0,
        slab_entries: 0,
        buffers: 0,
        descriptors: baseline,
        active_gauge: 0,
    };
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let now = still_held(mesh, registry, services);
        if now == idle {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "still held {DRAIN_DEADLINE:?} after the clients ended: {now:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `clients` at once against a fresh mesh, then checks that the mesh
/// has freed everything.
async fn scenario(clients: Vec<(Backend, Client)>) -> Result<(), String> {
    let (mesh, registry) = mesh();
    let services = Services::publish(&mesh).await;
    let baseline = mesh_sockets(&services.ports, &services.backend_ports);
    let runs: Vec<_> = clients
        .into_iter()
        .map(|(kind, action)| {
            let port = services.port(kind);
            tokio::spawn(tokio::time::timeout(
                PEER_DEADLINE,
                run_client(port, action),
            ))
        })
        .collect();
    for run in runs {
        run.await.unwrap().map_err(|_| "a client hung".to_owned())?;
    }
    drained(&mesh, &registry, &services, baseline).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// === tests ===

/// What every health check and port scanner does: connect and close at
/// once. The connection often ends before its backend connect (and the
/// connect's timeout) has completed.
#[test]
fn clients_that_connect_and_close_at_once_are_all_freed() {
    let clients = (0..400)
        .map(|i| {
            let kind = [
                Backend::Close,
                Backend::Echo,
                Backend::ReplyAfterEof,
                Backend::ByeFirst,
            ][i % 4];
            (kind, Client::Close)
        })
        .collect();
    runtime().block_on(scenario(clients)).unwrap();
}

fn client() -> impl Strategy<Value = Client> {
    prop_oneof![
        Just(Client::Close),
        Just(Client::Reset),
        (0usize..100_000).prop_map(Client::SendClose),
        (0usize..100_000).prop_map(Client::HalfClose),
        (0u64..30).prop_map(Client::WaitClose),
        Just(Client::Exchange),
    ]
}

/// Random mixes of client and backend behaviour, run at once: client close
/// before and after the backend connect completes, backend close, reset
/// either way, refusal, connect timeout, half-close either way, bytes in
/// flight. Each time every connection, descriptor, buffer and slab entry
/// is freed and the active-connections gauge is back to 0.
#[test]
fn every_connection_is_freed_whatever_the_order_of_events() {
    let runtime = runtime();
    let config = ProptestConfig {
        cases: 16,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let clients = prop::collection::vec((prop::sample::select(BACKENDS.to_vec()), client()), 1..32);
    TestRunner::new(config)
        .run(&clients, |clients| {
            runtime
                .block_on(scenario(clients))
                .map_err(TestCaseError::fail)
        })
        .unwrap();
}

// === descriptor exhaustion ===

/// Set in the child process of [`exhausted_descriptors_back_off_then_serve_again`].
const EXHAUSTION_CHILD: &str = "SHOAL_MESH_EXHAUSTION_CHILD";
/// The child's open-file limit, set before its mesh starts (an io_uring
/// accept takes the limit when it is submitted).
const CHILD_OPEN_FILE_LIMIT: u64 = 128;

#[test]
fn accept_backoff_doubles_from_5_ms_to_at_most_1_s() {
    use crate::accept_errors::accept_backoff;
    let ms: Vec<u128> = (1..=11).map(|n| accept_backoff(n).as_millis()).collect();
    assert_eq!(ms, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    assert_eq!(accept_backoff(u32::MAX), Duration::from_secs(1));
}

/// The child's side (a no-op unless [`EXHAUSTION_CHILD`] is set): lowers
/// its open-file limit, publishes an echo service, fills its descriptor
/// table, then does what the parent writes on stdin: `one` frees one
/// descriptor, `all` frees them all, `report` prints the counters and ends.
#[test]
#[allow(unsafe_code)] // setrlimit(2)
fn exhaustion_child() {
    if std::env::var_os(EXHAUSTION_CHILD).is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    let limit = libc::rlimit {
        rlim_cur: CHILD_OPEN_FILE_LIMIT,
        rlim_max: CHILD_OPEN_FILE_LIMIT,
    };
    // SAFETY: setrlimit reads one rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let runtime = runtime();
    let (mesh, registry) = mesh();
    let port = free_port();
    runtime.block_on(async {
        let backend = echo_backend().await;
        let routes = vec![route("s", port, vec![endpoint("t1", backend, false)])];
        assert!(mesh.apply_snapshot(routes).is_empty());
    });
    let mut filler = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => filler.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("open /dev/null: {e}"),
        }
    }
    println!("child: port {port}");
    for line in std::io::stdin().lines() {
        match line.unwrap().as_str() {
            "one" => drop(filler.pop()),
            "all" => filler.clear(),
            "report" => break,
            other => panic!("unknown command {other:?}"),
        }
        println!("child: done");
    }
    let count = |name, labels: &[(&str, &str)]| metric(&registry, name, labels);
    println!(
        "child: descriptors {} connect_errors {} refused {}",
        count(
            "shoal_mesh_accept_errors_total",
            &[("reason", "descriptors")]
        ),
        count("shoal_mesh_task_connect_errors_total", &[]),
        count("shoal_mesh_port_refused_total", &[]),
    );
}

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A process out of descriptors: its mesh backs off accepting (little CPU
/// over a second), logs one warning naming the limit however many accepts
/// fail, counts them, ejects no endpoint when a backend socket cannot be
/// had, and serves again once descriptors are free.
#[test]
fn exhausted_descriptors_back_off_then_serve_again() {
    use std::io::{BufRead, Read, Write};
    use std::process::{Command, Stdio};

    let name = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, rest)| rest);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &format!("{name}::exhaustion_child")])
        .args(["--nocapture", "--test-threads=1"])
        .env(EXHAUSTION_CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut logs = String::new();
        stderr.read_to_string(&mut logs).unwrap();
        logs
    });
    let mut reply = |prefix: &str| loop {
        let line = from_child.next().expect("the child ended").unwrap();
        // The harness prints the test's name first, on the same line.
        if let Some((_, rest)) = line.split_once(prefix) {
            return rest.to_owned();
        }
    };
    let port: u16 = reply("child: port ").parse().unwrap();

    // Out of descriptors: the connection waits in the accept queue.
    let mut first = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    first.write_all(b"ping").unwrap();
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu_ticks(child.id()) - before;
    // SAFETY: sysconf reads a constant.
    #[allow(unsafe_code)]
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(
        ticks * 5 < per_second,
        "the child used {ticks} ticks of CPU (of {per_second} a second) out of descriptors"
    );
    first
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0; 4];
    let waiting = first.read(&mut buf).unwrap_err();
    assert_eq!(waiting.kind(), std::io::ErrorKind::WouldBlock, "{waiting}");

    // One descriptor free: the client is accepted, but there is none left
    // for a backend socket; it is closed without ejecting the endpoint.
    writeln!(to_child, "one").unwrap();
    reply("child: done");
    first.set_read_timeout(Some(DRAIN_DEADLINE)).unwrap();
    match first.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the first client was not closed: {other:?}"),
    }

    // Descriptors free: served again.
    writeln!(to_child, "all").unwrap();
    reply("child: done");
    let mut second = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    second.set_read_timeout(Some(DRAIN_DEADLINE)).unwrap();
    second.write_all(b"pong").unwrap();
    second.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");

    writeln!(to_child, "report").unwrap();
    let report = reply("child: descriptors ");
    let numbers: Vec<f64> = report.split(' ').filter_map(|w| w.parse().ok()).collect();
    let [descriptors, connect_errors, refused] = numbers[..] else {
        panic!("report {report:?}");
    };
    assert!(descriptors >= 1.0, "{report}");
    assert_eq!(connect_errors, 0.0, "an endpoint was blamed: {report}");
    assert_eq!(refused, 1.0, "{report}");
    assert!(child.wait().unwrap().success());
    let logs = logs.join().unwrap();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("open-file limit"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(
        warnings[0].contains(&format!("RLIMIT_NOFILE {CHILD_OPEN_FILE_LIMIT}")),
        "{}",
        warnings[0]
    );
}
