//! The `uring-proxy` subcommand: an experiment, not Shoal's data path.
//!
//! A round-robin L4 proxy whose worker threads each run one io_uring instead
//! of a tokio reactor: an SO_REUSEPORT listener per worker with a multishot
//! accept, an `IORING_OP_CONNECT` to the backend, then per direction a
//! `recv` into the connection's buffer and a `send` of what it read, with the
//! half-close propagated. It exists to measure, beside the mesh in the same
//! run (`shoal-bench mesh --with-uring`), what replacing tokio and epoll on
//! the mesh's workers would give: one `io_uring_enter` per batch of
//! completions instead of a syscall per read, write and readiness wait.
//!
//! What it leaves out, which the mesh has: routing tables, passive ejection,
//! connect timeouts, metrics, splice for bulk transfers, a shutdown drain, and
//! buffers held only while bytes move (it holds 32 KiB per connection, so it
//! is not measured on W4). `shutdown(2)` is a direct syscall:
//! `IORING_OP_SHUTDOWN` always runs on an io-wq worker thread, which made the
//! first version slower than the mesh on W2. (`IORING_RECVSEND_POLL_FIRST` on
//! reads that wait for an answer was tried and gave nothing measurable.)

use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Copy buffer per direction.
const BUF_SIZE: usize = 16 * 1024;
/// Submission queue entries per ring.
const RING_ENTRIES: u32 = 4096;
/// Keepalive idle time set on both legs, as the mesh's default.
const KEEPALIVE_IDLE_SECS: i32 = 60;

/// What a completion is for; the low byte of its user data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Accept,
    Connect,
    RecvClient,
    SendBackend,
    RecvBackend,
    SendClient,
    Close,
}

impl Op {
    const ALL: [Op; 7] = [
        Op::Accept,
        Op::Connect,
        Op::RecvClient,
        Op::SendBackend,
        Op::RecvBackend,
        Op::SendClient,
        Op::Close,
    ];

    fn user_data(self, slot: usize) -> u64 {
        ((slot as u64) << 8) | self as u64
    }

    fn decode(user_data: u64) -> (Op, usize) {
        let op = Op::ALL[(user_data & 0xff) as usize];
        (op, (user_data >> 8) as usize)
    }
}

/// One direction of a proxied connection: its buffer and what is in it.
struct Half {
    buf: Box<[u8]>,
    len: usize,
    sent: usize,
}

/// One proxied connection. Its buffers and address are read by the kernel
/// while operations are in flight, so a slot is freed only when `inflight`
/// is zero.
struct Conn {
    client: RawFd,
    backend: RawFd,
    backend_addr: libc::sockaddr_in,
    /// Client to backend.
    up: Half,
    /// Backend to client.
    down: Half,
    inflight: u32,
    /// Directions that have seen end of stream.
    ended: u8,
    connected: bool,
    /// Read from the client before the backend connect finished.
    up_waiting: bool,
    failed: bool,
}

/// Serves `listen` on one worker per `threads` until killed.
pub fn run(listen: SocketAddr, backends: Vec<SocketAddr>, threads: usize) -> anyhow::Result<()> {
    crate::idle::raise_nofile(crate::idle::NOFILE)?;
    let SocketAddr::V4(listen) = listen else {
        bail!("--listen: the experiment supports IPv4 only; give an IPv4 address");
    };
    let backends = backends
        .into_iter()
        .map(|b| match b {
            SocketAddr::V4(b) => Ok(b),
            SocketAddr::V6(_) => bail!("--backends: {b} is IPv6; the experiment supports IPv4"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut workers = Vec::new();
    for i in 0..threads.max(1) {
        let listener = bind(listen).with_context(|| format!("bind {listen}"))?;
        let backends = backends.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("uring-{i}"))
                .spawn(move || {
                    // Built on the thread that submits: a single-issuer ring
                    // belongs to the thread that created it.
                    let ring = IoUring::builder()
                        .setup_single_issuer()
                        .setup_coop_taskrun()
                        .setup_defer_taskrun()
                        .build(RING_ENTRIES)
                        .context("set up an io_uring (is io_uring disabled by sysctl?)")?;
                    Worker::new(ring, listener, backends, i).run()
                })
                .context("spawn a worker")?,
        );
    }
    for w in workers {
        match w.join() {
            Ok(r) => r?,
            Err(_) => bail!("a worker panicked"),
        }
    }
    Ok(())
}

struct Worker {
    ring: IoUring,
    listener: OwnedFd,
    conns: Vec<Option<Box<Conn>>>,
    free: Vec<usize>,
    backends: Vec<SocketAddrV4>,
    next: usize,
}

impl Worker {
    fn new(ring: IoUring, listener: OwnedFd, backends: Vec<SocketAddrV4>, first: usize) -> Self {
        Self {
            ring,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            backends,
            next: first,
        }
    }

    fn run(mut self) -> anyhow::Result<()> {
        self.arm_accept();
        let mut done = Vec::with_capacity(RING_ENTRIES as usize);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e).context("io_uring_enter"),
            }
            done.clear();
            done.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, res, flags) in &done {
                self.complete(user_data, res, flags);
            }
        }
    }

    /// Queues `entry`, submitting what is queued when the ring is full.
    ///
    /// # Safety
    /// Whatever `entry` points at must stay valid until its completion.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        // SAFETY: forwarded to the caller.
        while unsafe { self.ring.submission().push(entry) }.is_err() {
            if let Err(e) = self.ring.submit() {
                eprintln!("uring-proxy: io_uring_enter: {e}");
            }
        }
    }

    fn arm_accept(&mut self) {
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Op::Accept.user_data(0));
        // SAFETY: a multishot accept points at nothing but the listener.
        unsafe { self.push(&entry) };
    }

    fn conn(&mut self, slot: usize) -> &mut Conn {
        self.conns[slot]
            .as_mut()
            .expect("a completion for a live slot")
    }

    fn accepted(&mut self, client: RawFd) {
        let backend_addr = sockaddr(self.backends[self.next % self.backends.len()]);
        self.next += 1;
        // SAFETY: plain socket(2); the result is checked.
        let backend = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if backend < 0 {
            // SAFETY: `client` is ours and used nowhere else.
            unsafe { libc::close(client) };
            return;
        }
        tune(backend);
        let half = || Half {
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            len: 0,
            sent: 0,
        };
        let conn = Box::new(Conn {
            client,
            backend,
            backend_addr,
            up: half(),
            down: half(),
            inflight: 1,
            ended: 0,
            connected: false,
            up_waiting: false,
            failed: false,
        });
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let addr = std::ptr::from_ref(&conn.backend_addr).cast::<libc::sockaddr>();
        self.conns[slot] = Some(conn);
        let entry = opcode::Connect::new(types::Fd(backend), addr, sockaddr_len())
            .build()
            .user_data(Op::Connect.user_data(slot));
        // SAFETY: the address lives in the boxed connection, which outlives
        // the operation (the slot is freed only with nothing in flight).
        unsafe { self.push(&entry) };
        // The request is often queued already: read it while connecting.
        self.recv(slot, true);
    }

    /// Reads the next bytes of a direction into its (free) buffer.
    fn recv(&mut self, slot: usize, from_client: bool) {
        let c = self.conn(slot);
        c.inflight += 1;
        let (fd, half, op) = if from_client {
            (c.client, &mut c.up, Op::RecvClient)
        } else {
            (c.backend, &mut c.down, Op::RecvBackend)
        };
        let entry = opcode::Recv::new(types::Fd(fd), half.buf.as_mut_ptr(), BUF_SIZE as u32)
            .build()
            .user_data(op.user_data(slot));
        // SAFETY: the buffer is boxed in the connection (see `accepted`), and
        // its direction has one operation in flight at a time.
        unsafe { self.push(&entry) };
    }

    fn send(&mut self, slot: usize, to_backend: bool) {
        let c = self.conn(slot);
        c.inflight += 1;
        let (fd, half, op) = if to_backend {
            (c.backend, &c.up, Op::SendBackend)
        } else {
            (c.client, &c.down, Op::SendClient)
        };
        let rest = &half.buf[half.sent..half.len];
        let entry = opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(op.user_data(slot));
        // SAFETY: as in `recv`.
        unsafe { self.push(&entry) };
    }

    /// Ends a direction: the half-close goes to the other side, and the
    /// connection closes once both directions have ended.
    fn end(&mut self, slot: usize, from_client: bool) {
        let c = self.conn(slot);
        c.ended += 1;
        if c.ended == 2 {
            self.finish(slot);
            return;
        }
        let fd = if from_client { c.backend } else { c.client };
        // SAFETY: shutdown(2) on a socket this connection owns.
        unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    }

    /// Closes the connection once nothing is in flight; after a failure,
    /// shuts both sockets down so that pending reads complete.
    fn finish(&mut self, slot: usize) {
        let c = self.conn(slot);
        if c.inflight > 0 {
            if c.failed {
                // SAFETY: shutdown(2) on sockets this connection owns.
                unsafe {
                    libc::shutdown(c.client, libc::SHUT_RDWR);
                    libc::shutdown(c.backend, libc::SHUT_RDWR);
                }
            }
            return;
        }
        let (client, backend) = (c.client, c.backend);
        self.conns[slot] = None;
        self.free.push(slot);
        for fd in [client, backend] {
            let entry = opcode::Close::new(types::Fd(fd))
                .build()
                .user_data(Op::Close.user_data(0));
            // SAFETY: a close points at no memory.
            unsafe { self.push(&entry) };
        }
    }

    fn complete(&mut self, user_data: u64, res: i32, flags: u32) {
        let (op, slot) = Op::decode(user_data);
        match op {
            Op::Accept => {
                if res >= 0 {
                    self.accepted(res);
                }
                if !cqueue::more(flags) {
                    self.arm_accept();
                }
                return;
            }
            Op::Close => return,
            _ => {}
        }
        let c = self.conn(slot);
        c.inflight -= 1;
        if res < 0 || c.failed {
            c.failed = true;
            self.finish(slot);
            return;
        }
        let n = res as usize;
        match op {
            Op::Connect => {
                c.connected = true;
                if std::mem::take(&mut c.up_waiting) {
                    if c.up.len == 0 {
                        self.end(slot, true);
                    } else {
                        self.send(slot, true);
                    }
                }
                self.recv(slot, false);
            }
            Op::RecvClient | Op::RecvBackend => {
                let from_client = op == Op::RecvClient;
                let half = if from_client { &mut c.up } else { &mut c.down };
                (half.len, half.sent) = (n, 0);
                if from_client && !c.connected {
                    c.up_waiting = true;
                } else if n == 0 {
                    self.end(slot, from_client);
                } else {
                    self.send(slot, from_client);
                }
            }
            Op::SendBackend | Op::SendClient => {
                let to_backend = op == Op::SendBackend;
                let half = if to_backend { &mut c.up } else { &mut c.down };
                half.sent += n;
                if half.sent < half.len {
                    self.send(slot, to_backend);
                } else {
                    // The buffer is free: read the source again.
                    self.recv(slot, to_backend);
                }
            }
            Op::Accept | Op::Close => unreachable!("handled above"),
        }
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_len() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
}

fn set_int(fd: RawFd, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: setsockopt(2) reading one int from a live stack slot.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// TCP_NODELAY and keepalive, as the mesh sets them on both legs.
fn tune(fd: RawFd) {
    let _ = set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    let _ = set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPIDLE,
        KEEPALIVE_IDLE_SECS,
    );
}

/// A listening socket in the SO_REUSEPORT group on `addr`; accepted sockets
/// inherit TCP_NODELAY and keepalive from it.
fn bind(addr: SocketAddrV4) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    tune(fd);
    let sa = sockaddr(addr);
    // SAFETY: bind(2) and listen(2) with a live sockaddr_in.
    unsafe {
        if libc::bind(fd, std::ptr::from_ref(&sa).cast(), sockaddr_len()) != 0
            || libc::listen(fd, 1024) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(owned)
}
