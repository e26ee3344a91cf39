//! One io_uring worker thread: its ring, listening sockets and connections,
//! driven by completions.
//!
//! A connection is a small state machine in a slot of a `slab::Slab`. Each operation in
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
//!
//! # Layout
//!
//! - this file: the worker, its ring and submission, the dispatch of
//!   completions, commands, and freeing a connection.
//! - `op`: the user data of a completion ([`Op`], [`Side`], slot).
//! - `state`: what a listening socket and a connection hold.
//! - `listen`: accepts, unlisten, and the backoff after failed accepts.
//! - `connect`: a new connection and its connects, candidate after candidate.
//! - `transfer`: receives, sends and splice bursts; half-close and failure.

mod connect;
mod listen;
mod op;
mod state;
mod transfer;

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use io_uring::{opcode, squeue, types, IoUring};
use slab::Slab;
use socket2::SockRef;
use tokio::sync::oneshot;
use tracing::warn;

use super::buffers::ProvidedBuffers;
use crate::accept_errors::{self, ACCEPT_BACKOFF_STEPS};
use crate::shared::Shared;
use op::{decode, user_data, Op, Side};
use state::{Buffer, Conn, ListenSocket};

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

/// What the control side asks of a worker.
pub(crate) enum Command {
    /// Accept on `socket` (this worker's member of the port's group); send on
    /// `closed` (or drop it) once the socket is closed.
    Listen {
        port: u16,
        socket: std::net::TcpListener,
        closed: oneshot::Sender<()>,
    },
    /// Stop accepting on `port` and close its socket.
    Unlisten { port: u16 },
    /// Close every open connection now (end of the shutdown grace).
    Abort,
}

/// One worker: owns its ring, its provided buffers, listeners and connections.
pub(crate) struct Worker {
    // Declared first: dropped (closed) before the buffers it reads from.
    ring: IoUring,
    /// The receive buffers the kernel picks from.
    buffers: ProvidedBuffers,
    /// The mesh's routing table, config, clock and connection tracker.
    shared: Arc<Shared>,
    /// Commands from the control side, read when `wake` is written.
    inbox: mpsc::Receiver<Command>,
    /// The eventfd the control side writes after each command.
    wake: Arc<OwnedFd>,
    /// Where the eventfd read lands.
    wake_buf: Box<[u8; 8]>,
    /// How long a listener waits after consecutive accept errors, by
    /// [`crate::accept_errors::accept_backoff`] (read by the kernel when a timeout
    /// is submitted).
    accept_backoffs: [types::Timespec; ACCEPT_BACKOFF_STEPS],
    /// Connections open on this worker (read by tests).
    open: Arc<AtomicUsize>,
    /// Listening sockets; the slot is the user data of their accepts.
    listeners: Slab<ListenSocket>,
    /// Connections, boxed so that what the kernel reads stays put when the
    /// slab grows; the slot is in the user data of their operations.
    conns: Slab<Box<Conn>>,
    /// The control side dropped its handle: close listeners, exit when idle.
    closing: bool,
    /// Completions taken from the ring, kept to reuse its allocation.
    completions: Vec<(u64, i32, u32)>,
    /// The user data of every entry pushed, for the model test to complete.
    #[cfg(test)]
    pushed: Vec<u64>,
}

// === impl Worker ===

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
    #[inline]
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

    #[inline]
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
    #[inline]
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

#[cfg(test)]
mod tests;
