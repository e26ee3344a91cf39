//! One io_uring worker thread: its ring, listening sockets and connections,
//! driven by completions.
//!
//! A connection is a small state machine in a slab slot. Each operation in
//! flight for it is counted, and the slot (with the sockets, buffers and
//! addresses the kernel may still read) is freed only when none is left:
//! once it has ended (both directions done, or failed) it is `closing`, and
//! whichever completion comes last, in any order (a connect's cancelled
//! timeout often does), frees it. The model test in `worker/tests.rs` plays
//! the kernel to drive every order of completions through it. A
//! completion's user data names its operation, the connection's direction
//! and the slot. Per direction, at most one operation is in flight: a
//! receive (or, for a bulk direction, a readiness poll), then a send of what
//! it received, then the next receive, so a slow receiver holds back its
//! sender as with the epoll path.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use tokio::sync::oneshot;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{debug, warn};

use super::buffers::ProvidedBuffers;
use super::Command;
use crate::accept_errors::{self, ErrorReason, ACCEPT_BACKOFF_STEPS};
use crate::balancer::{self, Plan};
use crate::pipe::Pipe;
use crate::shared::Shared;
use crate::socket;
use crate::table::{EndpointEntry, ServiceEntry};

/// Submission queue entries per ring.
const RING_ENTRIES: u32 = 4096;
/// The provided-buffer group of every receive.
const BUF_GROUP: u16 = 0;
/// Receive buffers per worker (a power of two). Only buffers that held
/// bytes at some point are resident. The tests run with a ring small enough
/// to run dry.
const BUF_COUNT: u16 = if cfg!(test) { 4 } else { 512 };
/// Size of a receive buffer; a receive that fills it switches the direction
/// to splice, as on the epoll path.
const BUF_SIZE: usize = 16 * 1024;

/// The slot of a completion that belongs to no connection (a listener's
/// cancel): no connection slot ever gets this high.
const NO_CONN: usize = usize::MAX >> 16;

/// What a completion is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// The eventfd read: commands are waiting.
    Wake,
    Accept,
    /// The backoff after an accept error ended.
    AcceptRetry,
    /// A cancel request's own completion.
    Cancel,
    Connect,
    ConnectTimeout,
    Recv,
    Send,
    /// A bulk direction's source became readable.
    PollIn,
    /// A bulk direction's destination can take more bytes.
    PollOut,
}

impl Op {
    const ALL: [Op; 10] = [
        Op::Wake,
        Op::Accept,
        Op::AcceptRetry,
        Op::Cancel,
        Op::Connect,
        Op::ConnectTimeout,
        Op::Recv,
        Op::Send,
        Op::PollIn,
        Op::PollOut,
    ];
}

/// A direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Client to backend.
    Up = 0,
    /// Backend to client.
    Down = 1,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Side::Up => Side::Down,
            Side::Down => Side::Up,
        }
    }
}

fn user_data(op: Op, side: Side, slot: usize) -> u64 {
    (slot as u64) << 16 | (side as u64) << 8 | op as u64
}

fn decode(user_data: u64) -> (Op, Side, usize) {
    let op = Op::ALL[(user_data & 0xff) as usize];
    let side = if user_data >> 8 & 1 == 0 {
        Side::Up
    } else {
        Side::Down
    };
    (op, side, (user_data >> 16) as usize)
}

/// A published port's listening socket on this worker.
struct ListenSocket {
    port: u16,
    socket: OwnedFd,
    /// Sent (dropped) once the socket is closed.
    _closed: oneshot::Sender<()>,
    /// Unlisten asked: close once the accept has ended.
    closing: bool,
    /// Consecutive failed accepts: how long to wait before the next.
    failures: u32,
}

/// Where a received chunk's bytes are.
enum Buffer {
    /// A provided buffer, by id.
    Provided(u16),
    /// A buffer of the connection's own (the ring had none left).
    Own(Box<[u8]>),
}

/// Bytes received from a direction's source and not yet all sent.
struct Chunk {
    buf: Buffer,
    len: usize,
    sent: usize,
}

/// One direction's state.
#[derive(Default)]
struct Dir {
    chunk: Option<Chunk>,
    /// The ring had no buffer for a receive: wait for readability, then
    /// receive into `spare`.
    starved: bool,
    /// A receive buffer of our own, used once when the ring ran out.
    spare: Option<Box<[u8]>>,
    /// A receive filled a whole buffer: move bytes with splice(2).
    splicing: bool,
    /// The pipe of a splice burst, held only while it lasts.
    pipe: Option<Pipe>,
    /// Bytes moved in the current splice burst.
    moved: usize,
    /// The source's end of stream was read.
    eof: bool,
    /// Everything up to the end of stream has been passed on.
    done: bool,
}

/// One proxied connection.
struct Conn {
    client: OwnedFd,
    /// The socket being connected, then the connected backend.
    backend: Option<OwnedFd>,
    connected: bool,
    port: u16,
    service: Arc<ServiceEntry>,
    plan: Plan,
    /// Candidates of the plan tried so far.
    attempts: usize,
    /// The endpoint being connected to, then the connected one.
    endpoint: Option<(Arc<EndpointEntry>, SocketAddr)>,
    /// The address of the connect in flight (read by the kernel).
    addr: SockAddr,
    /// The connect timeout (read by the kernel at submission).
    timeout: types::Timespec,
    connect_started: Instant,
    dirs: [Dir; 2],
    /// Operations in flight; the slot is freed only at zero, so no
    /// completion ever names a freed (or reused) slot.
    inflight: u32,
    /// Ended with an error: its sockets are shut down (and a connect
    /// cancelled) so that the operations in flight end soon.
    failed: bool,
    /// `finish` was called with operations in flight: every completion from
    /// then on only calls `finish` again, and the last one frees the slot.
    closing: bool,
    /// Sockets shut down to end the operations in flight.
    shut: bool,
    /// Counts the connection for the shutdown drain.
    _tracked: TaskTrackerToken,
}

impl Conn {
    fn fds(&self, side: Side) -> (RawFd, RawFd) {
        let backend = self.backend.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let client = self.client.as_raw_fd();
        match side {
            Side::Up => (client, backend),
            Side::Down => (backend, client),
        }
    }

    fn dir(&mut self, side: Side) -> &mut Dir {
        &mut self.dirs[side as usize]
    }
}

impl Drop for Conn {
    /// Also when the worker ends with connections open (its ring failed).
    fn drop(&mut self) {
        if self.connected {
            if let Some((entry, _)) = &self.endpoint {
                entry.metrics.active.dec();
            }
        }
    }
}

/// One worker: owns its ring, its provided buffers, listeners and connections.
pub(crate) struct Worker {
    // Declared first: dropped (closed) before the buffers it reads from.
    ring: IoUring,
    buffers: ProvidedBuffers,
    shared: Arc<Shared>,
    inbox: mpsc::Receiver<Command>,
    wake: Arc<OwnedFd>,
    /// Where the eventfd read lands.
    wake_buf: Box<[u8; 8]>,
    /// How long a listener waits after consecutive accept errors, by
    /// [`crate::accept_errors::accept_backoff`] (read by the kernel when a timeout
    /// is submitted).
    accept_backoffs: [types::Timespec; ACCEPT_BACKOFF_STEPS],
    open: Arc<AtomicUsize>,
    listeners: Slab<ListenSocket>,
    conns: Slab<Box<Conn>>,
    /// The control side dropped its handle: close listeners, exit when idle.
    closing: bool,
    completions: Vec<(u64, i32, u32)>,
    /// The user data of every entry pushed, for the model test to complete.
    #[cfg(test)]
    pushed: Vec<u64>,
}

impl Worker {
    /// Sets up this thread's ring and buffers.
    pub(crate) fn new(
        shared: Arc<Shared>,
        inbox: mpsc::Receiver<Command>,
        wake: Arc<OwnedFd>,
        open: Arc<AtomicUsize>,
    ) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_defer_taskrun()
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::new(RING_ENTRIES))?;
        let buffers = ProvidedBuffers::register(&ring.submitter(), BUF_GROUP, BUF_COUNT, BUF_SIZE)?;
        let mut worker = Self {
            ring,
            buffers,
            shared,
            inbox,
            wake,
            wake_buf: Box::new([0; 8]),
            accept_backoffs: std::array::from_fn(|i| {
                types::Timespec::from(accept_errors::accept_backoff(i as u32 + 1))
            }),
            open,
            listeners: Slab::new(),
            conns: Slab::new(),
            closing: false,
            completions: Vec::with_capacity(RING_ENTRIES as usize),
            #[cfg(test)]
            pushed: Vec::new(),
        };
        worker.arm_wake();
        Ok(worker)
    }

    /// Runs until the control side is gone and the last connection ended.
    pub(crate) fn run(mut self) {
        loop {
            if self.closing && self.listeners.is_empty() && self.conns.is_empty() {
                return;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => {
                    warn!(error = %e, "io_uring_enter failed; closing this worker's connections");
                    return;
                }
            }
            let mut done = std::mem::take(&mut self.completions);
            done.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, res, flags) in &done {
                self.complete(user_data, res, flags);
            }
            done.clear();
            self.completions = done;
        }
    }

    // --- submission ---

    /// Queues `entries` together (a linked chain must not be split by a
    /// submit), submitting what is queued when the ring is full.
    ///
    /// # Safety
    /// Whatever the entries point at must stay valid until they complete.
    unsafe fn push(&mut self, entries: &[squeue::Entry]) {
        #[cfg(test)]
        self.pushed
            .extend(entries.iter().map(squeue::Entry::get_user_data));
        // SAFETY: forwarded to the caller.
        while unsafe { self.ring.submission().push_multiple(entries) }.is_err() {
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    warn!(error = %e, "io_uring submit failed");
                }
            }
        }
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(user_data(Op::Wake, Side::Up, 0));
        // SAFETY: the buffer is boxed in the worker, which outlives the ring's
        // operations (the ring is dropped first).
        unsafe { self.push(&[entry]) };
    }

    // --- completions ---

    fn complete(&mut self, user_data: u64, res: i32, flags: u32) {
        let (op, side, slot) = decode(user_data);
        match op {
            Op::Wake => {
                self.commands();
                if !self.closing {
                    self.arm_wake();
                }
            }
            Op::Accept => self.accept_completed(slot, res, flags),
            Op::AcceptRetry => self.arm_accept(slot),
            Op::Cancel => {
                if let Some(c) = self.conns.get_mut(slot) {
                    c.inflight -= 1;
                    self.finish(slot);
                }
            }
            Op::Connect => self.connect_completed(slot, res),
            Op::ConnectTimeout => {
                // Also the completion of a connect that succeeded or failed
                // (its timeout is then cancelled): the connection may have
                // ended in between, and this may be its last completion.
                let c = self.conn(slot);
                c.inflight -= 1;
                if c.closing {
                    self.finish(slot);
                }
            }
            Op::Recv => self.recv_completed(slot, side, res, flags),
            Op::Send => self.send_completed(slot, side, res),
            Op::PollIn | Op::PollOut => {
                let c = self.conns.get_mut(slot).expect("a live connection");
                c.inflight -= 1;
                if c.closing {
                    self.finish(slot);
                } else if res < 0 {
                    self.fail(slot, side, io::Error::from_raw_os_error(-res));
                } else if std::mem::take(&mut c.dir(side).starved) {
                    // Bytes are there: read them into a buffer of our own.
                    let held = &self.shared.held;
                    held.acquire();
                    held.own_buffer();
                    c.dir(side).spare = Some(vec![0; BUF_SIZE].into_boxed_slice());
                    self.recv(slot, side);
                } else {
                    self.splice_burst(slot, side);
                }
            }
        }
        // Architecture invariant: an open connection always has an operation
        // in flight, as only a completion ever frees it.
        debug_assert!(
            matches!(op, Op::Wake | Op::Accept | Op::AcceptRetry)
                || self.conns.get_mut(slot).is_none_or(|c| c.inflight > 0),
            "connection {slot} is open with nothing in flight after {op:?}: never freed"
        );
    }

    fn conn(&mut self, slot: usize) -> &mut Conn {
        self.conns
            .get_mut(slot)
            .expect("a completion for a live connection")
    }

    fn commands(&mut self) {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Listen {
                    port,
                    socket,
                    closed,
                }) => {
                    let slot = self.listeners.insert(ListenSocket {
                        port,
                        socket: socket.into(),
                        _closed: closed,
                        closing: false,
                        failures: 0,
                    });
                    self.arm_accept(slot);
                }
                Ok(Command::Unlisten { port }) => self.unlisten(|l| l.port == port),
                Ok(Command::Abort) => self.abort_connections(),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.closing = true;
                    self.unlisten(|_| true);
                    return;
                }
            }
        }
    }

    /// Ends every open connection now (the end of the shutdown grace).
    fn abort_connections(&mut self) {
        for slot in slots(&self.conns) {
            let c = self.conn(slot);
            c.failed = true;
            self.finish(slot);
        }
    }

    // --- listeners ---

    fn arm_accept(&mut self, slot: usize) {
        let Some(l) = self.listeners.get_mut(slot) else {
            return;
        };
        if l.closing {
            self.close_listener(slot);
            return;
        }
        let entry = opcode::AcceptMulti::new(types::Fd(l.socket.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
            .user_data(user_data(Op::Accept, Side::Up, slot));
        // SAFETY: a multishot accept points at nothing but the socket, which
        // is closed only after its last completion.
        unsafe { self.push(&[entry]) };
    }

    /// Stops the accepts of the listeners `which` picks; each is closed at
    /// its accept's last completion.
    fn unlisten(&mut self, which: impl Fn(&ListenSocket) -> bool) {
        for slot in slots(&self.listeners) {
            let l = self.listeners.get_mut(slot).expect("a listed slot");
            if l.closing || !which(l) {
                continue;
            }
            l.closing = true;
            let entry = opcode::AsyncCancel::new(user_data(Op::Accept, Side::Up, slot))
                .build()
                .user_data(user_data(Op::Cancel, Side::Up, NO_CONN));
            // SAFETY: a cancel points at no memory.
            unsafe { self.push(&[entry]) };
        }
    }

    fn close_listener(&mut self, slot: usize) {
        if let Some(l) = self.listeners.try_remove(slot) {
            debug!(port = l.port, "listener closed");
        }
    }

    fn accept_completed(&mut self, slot: usize, res: i32, flags: u32) {
        let Some(l) = self.listeners.get_mut(slot) else {
            return;
        };
        let port = l.port;
        let more = cqueue::more(flags);
        if res >= 0 {
            l.failures = 0;
            self.shared.accept_errors.succeeded();
            // SAFETY: the kernel made this fd for us.
            let client = unsafe { OwnedFd::from_raw_fd(res) };
            self.accepted(client, port);
        }
        if more {
            return;
        }
        let closing = self.listeners.get_mut(slot).is_some_and(|l| l.closing);
        if closing || res == -libc::ECANCELED {
            self.close_listener(slot);
        } else if res < 0 {
            // Typically EMFILE: the connection stays queued and the next
            // accept fails the same way until descriptors free.
            self.shared
                .accept_errors
                .failed(port, &io::Error::from_raw_os_error(-res));
            let l = self.listeners.get_mut(slot).expect("checked above");
            l.failures = l.failures.saturating_add(1);
            let step = (l.failures as usize).min(ACCEPT_BACKOFF_STEPS) - 1;
            let entry = opcode::Timeout::new(&self.accept_backoffs[step])
                .build()
                .user_data(user_data(Op::AcceptRetry, Side::Up, slot));
            // SAFETY: the timespec is read when the entry is submitted; it
            // lives in the worker, which outlives its ring's submissions.
            unsafe { self.push(&[entry]) };
        } else {
            self.arm_accept(slot);
        }
    }

    // --- connections ---

    fn accepted(&mut self, client: OwnedFd, port: u16) {
        let shared = &self.shared;
        let Some(service) = shared.table.load().service_for_port(port) else {
            debug!(port, "no service on port; closing");
            return;
        };
        let Some(port_entry) = service.port(port) else {
            return;
        };
        port_entry.metrics.accepted.inc();
        // TCP_NODELAY and keepalive are inherited from the listening socket.
        let plan = Plan::new(&service, port_entry, shared.clock.now());
        let conn = Box::new(Conn {
            client,
            backend: None,
            connected: false,
            port,
            service,
            plan,
            attempts: 0,
            endpoint: None,
            addr: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
            timeout: types::Timespec::from(shared.config.connect_timeout),
            connect_started: Instant::now(),
            dirs: Default::default(),
            inflight: 0,
            failed: false,
            closing: false,
            shut: false,
            _tracked: shared.connections.token(),
        });
        let slot = self.conns.insert(conn);
        self.open.fetch_add(1, Ordering::Relaxed);
        self.connect_next(slot);
        if self.conns.get_mut(slot).is_some_and(|c| !c.closing) {
            // The request is often queued already: read it while connecting.
            self.recv(slot, Side::Up);
        }
    }

    /// Starts a connect to the plan's next candidate, or gives up.
    fn connect_next(&mut self, slot: usize) {
        let config = &self.shared.config;
        loop {
            let c = self.conns.get_mut(slot).expect("a live connection");
            let next = c
                .service
                .port(c.port)
                .and_then(|p| c.plan.iter(p).nth(c.attempts))
                .map(|(e, a)| (e.clone(), *a));
            let Some((entry, addr)) = next else {
                if let Some(p) = c.service.port(c.port) {
                    p.metrics.refused.inc();
                }
                debug!(service = %c.service.name(), port = c.port, "no endpoint reachable; closing client");
                c.failed = true;
                self.finish(slot);
                return;
            };
            c.attempts += 1;
            let socket = match backend_socket(addr, config.keepalive) {
                Ok(s) => s,
                Err(e) if ErrorReason::is_local_exhaustion(&e) => {
                    // Out of descriptors or memory here: no endpoint is at
                    // fault (none is ejected), and every one would fail alike.
                    if let Some(p) = c.service.port(c.port) {
                        p.metrics.refused.inc();
                    }
                    debug!(service = %c.service.name(), port = c.port, error = %e, "no backend socket; closing client");
                    c.failed = true;
                    self.finish(slot);
                    return;
                }
                Err(e) => {
                    balancer::connect_failed(
                        &c.service,
                        &entry,
                        addr,
                        &e,
                        config,
                        self.shared.clock,
                    );
                    continue;
                }
            };
            c.addr = SockAddr::from(addr);
            c.connect_started = Instant::now();
            let fd = socket.as_raw_fd();
            c.backend = Some(socket);
            c.endpoint = Some((entry, addr));
            c.inflight += 2;
            let connect = opcode::Connect::new(types::Fd(fd), c.addr.as_ptr().cast(), c.addr.len())
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(user_data(Op::Connect, Side::Up, slot));
            let timeout = opcode::LinkTimeout::new(&c.timeout)
                .build()
                .user_data(user_data(Op::ConnectTimeout, Side::Up, slot));
            // SAFETY: the address lives in the boxed connection, which is
            // freed only with nothing in flight; the timeout is read at
            // submission.
            unsafe { self.push(&[connect, timeout]) };
            return;
        }
    }

    fn connect_completed(&mut self, slot: usize, res: i32) {
        let c = self.conns.get_mut(slot).expect("a live connection");
        c.inflight -= 1;
        if c.closing {
            self.finish(slot);
            return;
        }
        let (entry, addr) = c.endpoint.clone().expect("a connect in flight");
        if res < 0 {
            let err = if res == -libc::ECANCELED {
                io::Error::new(io::ErrorKind::TimedOut, "connect timed out")
            } else {
                io::Error::from_raw_os_error(-res)
            };
            balancer::connect_failed(
                &c.service,
                &entry,
                addr,
                &err,
                &self.shared.config,
                self.shared.clock,
            );
            c.backend = None;
            c.endpoint = None;
            self.connect_next(slot);
            return;
        }
        balancer::connected(&entry, c.connect_started.elapsed());
        entry.metrics.active.inc();
        c.connected = true;
        self.recv(slot, Side::Down);
        let c = self.conn(slot);
        let up = c.dir(Side::Up);
        if up.chunk.is_some() {
            self.send(slot, Side::Up);
        } else if up.eof {
            self.end(slot, Side::Up);
        }
    }

    /// Arms the next read of a direction: a receive into a provided buffer
    /// (or the direction's own, when the ring ran out), or a readiness poll
    /// on its source for a bulk direction or one waiting for a buffer.
    fn recv(&mut self, slot: usize, side: Side) {
        let group = self.buffers.group();
        let c = self.conn(slot);
        let (src, _) = c.fds(side);
        let dir = c.dir(side);
        let entry = if dir.splicing || dir.starved {
            let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
            opcode::PollAdd::new(types::Fd(src), mask)
                .build()
                .user_data(user_data(Op::PollIn, side, slot))
        } else if let Some(spare) = dir.spare.as_mut() {
            opcode::Recv::new(types::Fd(src), spare.as_mut_ptr(), BUF_SIZE as u32)
                .build()
                .user_data(user_data(Op::Recv, side, slot))
        } else {
            opcode::Recv::new(types::Fd(src), std::ptr::null_mut(), BUF_SIZE as u32)
                .buf_group(group)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(user_data(Op::Recv, side, slot))
        };
        c.inflight += 1;
        // SAFETY: a spare buffer is boxed in the boxed connection, which is
        // freed only with nothing in flight; provided buffers and polls point
        // at nothing of ours.
        unsafe { self.push(&[entry]) };
    }

    fn recv_completed(&mut self, slot: usize, side: Side, res: i32, flags: u32) {
        let provided = cqueue::buffer_select(flags);
        let held = &self.shared.held;
        let c = self.conns.get_mut(slot).expect("a live connection");
        c.inflight -= 1;
        let dir = &mut c.dirs[side as usize];
        let chunk = match (res, provided) {
            (n, Some(id)) if n > 0 => {
                held.acquire();
                Some(Buffer::Provided(id))
            }
            (n, None) if n > 0 => dir.spare.take().map(Buffer::Own),
            _ => None,
        };
        if c.closing {
            if let Some(buf) = chunk {
                self.release(buf);
            }
            self.finish(slot);
            return;
        }
        if res == -libc::ENOBUFS {
            // Every provided buffer is in use (the kernel takes one before it
            // looks for bytes): wait for bytes without a buffer, then read
            // them into one of the direction's own.
            dir.starved = true;
            self.recv(slot, side);
            return;
        }
        if res < 0 {
            self.fail(slot, side, io::Error::from_raw_os_error(-res));
            return;
        }
        let Some(buf) = chunk else {
            if res > 0 {
                // Bytes with no buffer to hold them: not something the
                // kernel does; end the connection rather than lose them.
                let err = io::Error::other("receive completed without a buffer");
                self.fail(slot, side, err);
                return;
            }
            dir.eof = true;
            if side == Side::Down || c.connected {
                self.end(slot, side);
            }
            return;
        };
        let len = res as usize;
        if len == BUF_SIZE {
            dir.splicing = true;
        }
        dir.chunk = Some(Chunk { buf, len, sent: 0 });
        if c.connected {
            self.send(slot, side);
        }
    }

    fn send(&mut self, slot: usize, side: Side) {
        let c = self.conns.get_mut(slot).expect("a live connection");
        let (_, dst) = c.fds(side);
        let chunk = c.dirs[side as usize]
            .chunk
            .as_ref()
            .expect("a chunk to send");
        let bytes = match &chunk.buf {
            Buffer::Provided(id) => self.buffers.bytes(*id, chunk.len),
            Buffer::Own(buf) => &buf[..chunk.len],
        };
        let rest = &bytes[chunk.sent..];
        let entry = opcode::Send::new(types::Fd(dst), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Op::Send, side, slot));
        c.inflight += 1;
        // SAFETY: the bytes are in a provided buffer this connection owns
        // until the send completes, or in its own boxed buffer.
        unsafe { self.push(&[entry]) };
    }

    fn send_completed(&mut self, slot: usize, side: Side, res: i32) {
        let c = self.conn(slot);
        c.inflight -= 1;
        if c.closing {
            self.finish(slot);
            return;
        }
        if res < 0 {
            self.fail(slot, side, io::Error::from_raw_os_error(-res));
            return;
        }
        let sent = res as usize;
        if let Some((entry, _)) = &c.endpoint {
            counter(entry, side).inc_by(sent as u64);
        }
        let chunk = c.dir(side).chunk.as_mut().expect("a chunk in flight");
        chunk.sent += sent;
        if chunk.sent < chunk.len {
            self.send(slot, side);
            return;
        }
        let chunk = c.dir(side).chunk.take().expect("checked above");
        self.release(chunk.buf);
        self.recv(slot, side);
    }

    /// Moves a bulk direction's bytes with splice(2) until its source would
    /// block, its destination is full (then waits for it), or it ends.
    fn splice_burst(&mut self, slot: usize, side: Side) {
        let held = &self.shared.held;
        let c = self.conns.get_mut(slot).expect("a live connection");
        let (src, dst) = c.fds(side);
        let bytes = c.endpoint.as_ref().map(|(e, _)| counter(e, side).clone());
        let dir = &mut c.dirs[side as usize];
        if dir.pipe.is_none() {
            match Pipe::take() {
                Ok(pipe) => {
                    held.acquire();
                    dir.pipe = Some(pipe);
                    dir.moved = 0;
                }
                Err(_) => {
                    // Out of fds, say: copy instead.
                    dir.splicing = false;
                    self.recv(slot, side);
                    return;
                }
            }
        }
        let pipe = dir.pipe.as_mut().expect("taken above");
        loop {
            if pipe.pending() > 0 {
                match pipe.drain_to(dst) {
                    Ok(n) => {
                        if let Some(b) = &bytes {
                            b.inc_by(n as u64);
                        }
                        held.spliced(n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let mask = libc::POLLOUT as u32;
                        let entry = opcode::PollAdd::new(types::Fd(dst), mask)
                            .build()
                            .user_data(user_data(Op::PollOut, side, slot));
                        c.inflight += 1;
                        // SAFETY: a poll points at no memory.
                        unsafe { self.push(&[entry]) };
                        return;
                    }
                    Err(e) => return self.fail(slot, side, e),
                }
            }
            match pipe.fill_from(src) {
                Ok(0) => {
                    drop(dir.pipe.take());
                    held.release();
                    self.end(slot, side);
                    return;
                }
                Ok(n) => dir.moved += n,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || (dir.moved == 0 && e.raw_os_error() == Some(libc::EINVAL)) =>
                {
                    // A burst smaller than one buffer (or splice refused):
                    // copy the next ones, as a pipe costs a syscall more.
                    if dir.moved < BUF_SIZE {
                        dir.splicing = false;
                    }
                    drop(dir.pipe.take());
                    held.release();
                    self.recv(slot, side);
                    return;
                }
                Err(e) => return self.fail(slot, side, e),
            }
        }
    }

    /// A direction read its end of stream with everything before it passed
    /// on: the half-close goes to the other side, and the connection closes
    /// once both directions have ended.
    fn end(&mut self, slot: usize, side: Side) {
        let c = self.conn(slot);
        c.dir(side).done = true;
        if c.dir(side.other()).done {
            self.finish(slot);
            return;
        }
        let (_, dst) = c.fds(side);
        // The peer may be gone already.
        // SAFETY: shutdown(2) on a socket this connection owns.
        let _ = unsafe { libc::shutdown(dst, libc::SHUT_WR) };
    }

    /// The first I/O error ends both directions.
    fn fail(&mut self, slot: usize, side: Side, err: io::Error) {
        let c = self.conn(slot);
        let direction = match side {
            Side::Up => "client -> backend",
            Side::Down => "backend -> client",
        };
        debug!(service = %c.service.name(), port = c.port, error = %err, "{direction}: connection ended with error");
        c.failed = true;
        self.finish(slot);
    }

    /// Closes the connection once nothing is in flight; until then it is
    /// `closing`, and each completion calls this again. A failed connection
    /// first shuts its sockets down (and cancels a connect), which ends the
    /// operations in flight.
    fn finish(&mut self, slot: usize) {
        let c = self.conn(slot);
        if c.inflight > 0 {
            c.closing = true;
            if c.failed && !c.shut {
                c.shut = true;
                let _ = SockRef::from(&c.client).shutdown(Shutdown::Both);
                if c.connected {
                    if let Some(b) = &c.backend {
                        let _ = SockRef::from(b).shutdown(Shutdown::Both);
                    }
                } else if c.backend.is_some() {
                    c.inflight += 1;
                    let entry = opcode::AsyncCancel::new(user_data(Op::Connect, Side::Up, slot))
                        .build()
                        .user_data(user_data(Op::Cancel, Side::Up, slot));
                    // SAFETY: a cancel points at no memory.
                    unsafe { self.push(&[entry]) };
                }
            }
            return;
        }
        // Dropping it closes its sockets and books it inactive.
        let mut c = self.conns.remove(slot);
        for dir in &mut c.dirs {
            if let Some(chunk) = dir.chunk.take() {
                self.release(chunk.buf);
            }
            if dir.spare.take().is_some() {
                self.shared.held.release();
            }
            if dir.pipe.take().is_some() {
                self.shared.held.release();
            }
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Gives a chunk's buffer back: to the ring, or to the allocator.
    fn release(&mut self, buf: Buffer) {
        if let Buffer::Provided(id) = buf {
            self.buffers.recycle(id);
        }
        self.shared.held.release();
    }
}

/// The occupied slots of `slab`, collected so that the caller may remove
/// entries while it goes through them.
fn slots<T>(slab: &Slab<T>) -> Vec<usize> {
    slab.iter().map(|(slot, _)| slot).collect()
}

/// The byte counter of a direction.
fn counter(entry: &EndpointEntry, side: Side) -> &prometheus::IntCounter {
    match side {
        Side::Up => &entry.metrics.bytes_from_client,
        Side::Down => &entry.metrics.bytes_to_client,
    }
}

/// A non-blocking backend socket with TCP_NODELAY and keepalive set, as the
/// epoll path's.
fn backend_socket(addr: SocketAddr, keepalive: Duration) -> io::Result<OwnedFd> {
    let ty = Type::STREAM.nonblocking().cloexec();
    let socket = Socket::new(Domain::for_address(addr), ty, Some(Protocol::TCP))?;
    socket::tune(&socket, keepalive);
    Ok(socket.into())
}

#[cfg(test)]
mod tests;
