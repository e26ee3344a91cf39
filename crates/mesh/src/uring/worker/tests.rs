//! A model test of the io_uring worker's connection state machine: the
//! kernel's part is played by the test, which completes the operations the
//! worker queued (never submitted) one at a time, in an order and with
//! results that proptest picks, then checks that the connection was freed
//! with everything it held.
//!
//! The sockets are real (an accepted client and the worker's own backend
//! socket); only the completions are made up. This reaches orders the kernel
//! produces only under load, such as a connect's timeout completing after
//! both directions have ended.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{decode, Op, Side, Worker, BUF_SIZE};
use crate::shared::Shared;
use crate::tests::{endpoint, route};
use crate::{DataPath, Mesh, MeshConfig};

/// The published port of the model's service (the mesh binds port 0).
const PORT: u16 = 0;
/// Steps after which a case has certainly gone wrong.
const MAX_STEPS: usize = 1_000;

/// A mesh whose shared state (routing table, tracker, counters) the model's
/// workers use; two endpoints, so a failed connect tries the next one.
fn shared() -> (Mesh, Arc<Shared>) {
    let config = MeshConfig {
        listen_ip: Ipv4Addr::LOCALHOST.into(),
        workers: std::num::NonZeroUsize::MIN,
        data_path: DataPath::Epoll,
        ..MeshConfig::default()
    };
    let mesh = Mesh::new(config, &prometheus::Registry::new()).unwrap();
    let addr = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let endpoints = vec![
        endpoint("t1", addr(1), false),
        endpoint("t2", addr(2), false),
    ];
    assert!(mesh
        .apply_snapshot(vec![route("s", PORT, endpoints)])
        .is_empty());
    let shared = mesh.inner.shared.clone();
    (mesh, shared)
}

/// A connected client socket as an accept would return it, and its peer.
fn client() -> (OwnedFd, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (accepted, _) = l.accept().unwrap();
    accepted.set_nonblocking(true).unwrap();
    (accepted.into(), peer)
}

/// The kernel's side: the operations in flight and what it knows of them.
struct Kernel {
    worker: Worker,
    /// User data of the operations queued and not completed.
    pending: Vec<u64>,
    /// Bytes of each direction's chunk not yet sent.
    unsent: [usize; 2],
    /// A receive found no provided buffer: the next readiness leads to a
    /// receive into the direction's own buffer.
    starved: [bool; 2],
    /// The next receive of the direction is into its own buffer.
    own_buffer_next: [bool; 2],
}

impl Kernel {
    fn new(shared: Arc<Shared>) -> Self {
        let (_commands, inbox) = mpsc::channel();
        let wake = Arc::new(super::super::eventfd().unwrap());
        let open = Arc::new(AtomicUsize::new(0));
        let worker = Worker::new(shared, inbox, wake, open).unwrap();
        let mut kernel = Self {
            worker,
            pending: Vec::new(),
            unsent: [0; 2],
            starved: [false; 2],
            own_buffer_next: [false; 2],
        };
        kernel.take_queued();
        kernel
    }

    /// Takes what the worker queued since the last call (not its eventfd
    /// read, which is never completed here).
    fn take_queued(&mut self) {
        let queued = self.worker.pushed.drain(..);
        self.pending
            .extend(queued.filter(|&ud| decode(ud).0 != Op::Wake));
    }

    /// The result of `op` on `side` (and its flags) that `how` picks; once
    /// the choices have run out (`ending`), results that end the connection.
    fn result(&mut self, op: Op, side: Side, how: u8, ending: bool) -> (i32, u32) {
        let s = side as usize;
        match op {
            Op::Connect if ending => (-libc::ECONNREFUSED, 0),
            Op::Connect => match how % 3 {
                0 => (0, 0),
                1 => (-libc::ECONNREFUSED, 0),
                // Its linked timeout fired.
                _ => (-libc::ECANCELED, 0),
            },
            Op::ConnectTimeout => (
                if how.is_multiple_of(2) {
                    -libc::ECANCELED
                } else {
                    -libc::ETIME
                },
                0,
            ),
            Op::Cancel => (
                if how.is_multiple_of(2) {
                    0
                } else {
                    -libc::ENOENT
                },
                0,
            ),
            Op::Recv => {
                let own = std::mem::take(&mut self.own_buffer_next[s]);
                let len = match how % 6 {
                    _ if ending => return (0, 0),
                    0 => return (0, 0),
                    1 => return (-libc::ECONNRESET, 0),
                    2 if !own => {
                        self.starved[s] = true;
                        return (-libc::ENOBUFS, 0);
                    }
                    // Fills the buffer: the direction switches to splice.
                    3 => BUF_SIZE,
                    _ => 1 + usize::from(how),
                };
                self.unsent[s] = len;
                // A provided buffer: the direction's own id, as a direction
                // holds at most one at a time.
                let flags = if own {
                    0
                } else {
                    // IORING_CQE_F_BUFFER, and the id above IORING_CQE_BUFFER_SHIFT.
                    1 | (s as u32) << 16
                };
                (len as i32, flags)
            }
            Op::Send => {
                let unsent = self.unsent[s];
                let sent = match how % 4 {
                    0 if !ending => return (-libc::EPIPE, 0),
                    1 if !ending && unsent > 1 => unsent / 2,
                    _ => unsent,
                };
                self.unsent[s] -= sent;
                (sent as i32, 0)
            }
            Op::PollIn | Op::PollOut => {
                if ending || how.is_multiple_of(4) {
                    return (-libc::ECONNRESET, 0);
                }
                if std::mem::take(&mut self.starved[s]) {
                    self.own_buffer_next[s] = true;
                }
                let ready = if op == Op::PollIn {
                    libc::POLLIN
                } else {
                    libc::POLLOUT
                };
                (i32::from(ready), 0)
            }
            Op::Wake | Op::Accept | Op::AcceptRetry => unreachable!("no listener here"),
        }
    }
}

/// Accepts one connection, then completes its operations as `choices` say
/// (which pending one, and how), aborting every connection at step
/// `abort_at` (the end of a shutdown grace); then ends it. Checks that the
/// connection was freed with all it held once nothing is in flight.
fn run(
    shared: &Arc<Shared>,
    choices: &[(u8, u8)],
    abort_at: Option<usize>,
) -> Result<(), TestCaseError> {
    let mut kernel = Kernel::new(shared.clone());
    let (client, _peer) = client();
    kernel.worker.accepted(client, PORT);
    kernel.take_queued();
    let mut step = 0;
    while !kernel.pending.is_empty() {
        prop_assert!(step < MAX_STEPS, "the connection never ends");
        if abort_at == Some(step) {
            kernel.worker.abort_connections();
            kernel.take_queued();
        }
        let ending = step >= choices.len();
        let (pick, how) = choices.get(step).copied().unwrap_or((0, 0));
        let user_data = kernel
            .pending
            .remove(usize::from(pick) % kernel.pending.len());
        let (op, side, _) = decode(user_data);
        let (res, flags) = kernel.result(op, side, how, ending);
        kernel.worker.complete(user_data, res, flags);
        kernel.take_queued();
        step += 1;
    }
    prop_assert!(
        kernel.worker.conns.is_empty(),
        "a connection is open with nothing in flight after {step} steps"
    );
    prop_assert_eq!(kernel.worker.open.load(Ordering::Relaxed), 0);
    prop_assert_eq!(shared.connections.len(), 0, "tracked connections");
    let held = shared.held.count.load(Ordering::Relaxed);
    prop_assert_eq!(held, 0, "buffers and pipes held");
    Ok(())
}

/// The order in which the leak showed: the client's end of stream,
/// the connect, the backend's end of stream, and only then the connect's
/// timeout (cancelled by the connect, but completing last).
#[test]
fn connection_whose_connect_timeout_completes_last_is_freed() {
    let (_mesh, shared) = shared();
    let mut kernel = Kernel::new(shared.clone());
    let (client, _peer) = client();
    kernel.worker.accepted(client, PORT);
    kernel.take_queued();
    let find = |kernel: &Kernel, op: Op| {
        kernel
            .pending
            .iter()
            .position(|&ud| decode(ud).0 == op)
            .map(|i| kernel.pending[i])
            .unwrap_or_else(|| panic!("no {op:?} in flight"))
    };
    for (op, res) in [
        (Op::Recv, 0),
        (Op::Connect, 0),
        (Op::Recv, 0),
        (Op::ConnectTimeout, -libc::ECANCELED),
    ] {
        let user_data = find(&kernel, op);
        kernel.pending.retain(|&ud| ud != user_data);
        kernel.worker.complete(user_data, res, 0);
        kernel.take_queued();
    }
    assert!(kernel.pending.is_empty(), "{:?}", kernel.pending);
    assert!(kernel.worker.conns.is_empty(), "connection never freed");
    assert_eq!(shared.connections.len(), 0);
}

/// A worker that ends with a connection open (its ring failed) leaves no
/// connection counted as active.
#[test]
fn connection_dropped_with_its_worker_is_no_longer_active() {
    let (_mesh, shared) = shared();
    let mut kernel = Kernel::new(shared.clone());
    let (client, _peer) = client();
    kernel.worker.accepted(client, PORT);
    kernel.take_queued();
    let connect = kernel
        .pending
        .iter()
        .copied()
        .find(|&ud| decode(ud).0 == Op::Connect)
        .expect("a connect in flight");
    kernel.worker.complete(connect, 0, 0);
    let active = || -> i64 {
        let table = shared.table.load();
        let service = table.service_for_port(PORT).expect("routed");
        service
            .endpoints
            .iter()
            .map(|e| e.metrics.active.get())
            .sum()
    };
    assert_eq!(active(), 1);
    drop(kernel);
    assert_eq!(active(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Every order and every result of the completions of one connection
    /// (connect refused, timed out or done; end of stream, reset, no
    /// buffer, short and bulk receives; short and failed sends; readiness
    /// and its errors; an abort at any point) frees the connection, its
    /// sockets, buffers and pipes once nothing is in flight.
    #[test]
    fn every_order_of_completions_frees_the_connection(
        choices in prop::collection::vec((any::<u8>(), any::<u8>()), 0..64),
        abort_at in prop::option::weighted(0.2, 0usize..64),
    ) {
        static SHARED: std::sync::OnceLock<(Mesh, Arc<Shared>)> = std::sync::OnceLock::new();
        let (_, shared) = SHARED.get_or_init(shared);
        run(shared, &choices, abort_at)?;
    }
}
