//! The io_uring data path (`DataPath::Uring`): the mesh's worker threads
//! each drive one io_uring instead of a tokio runtime.
//!
//! Same model as `workers` (one thread per core, one SO_REUSEPORT listener
//! per published port and worker, a connection lives on the worker that
//! accepted it), but every accept, connect, receive and send is an io_uring
//! operation: a worker makes one `io_uring_enter` per batch of completions
//! instead of a syscall per read, write and readiness wait. Receives take
//! provided buffers (`buffers`), so an idle connection holds none; bulk
//! directions switch to splice(2) on readiness (`IORING_OP_POLL_ADD`) with
//! the same pooled pipes as the epoll path, as `IORING_OP_SPLICE` on sockets
//! runs on io-wq threads. Connects carry a linked timeout. Routing, balancing,
//! ejection and metrics are the crate's shared code.
//!
//! The control side talks to a worker through a command channel and an
//! eventfd the worker keeps a read armed on. Dropping [`UringWorkers`] closes
//! the channels: each worker closes its listeners and exits once its last
//! connection has ended.

mod buffers;
mod worker;

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc};

use crate::shared::Shared;
pub(crate) use worker::Command;

/// The io_uring worker threads.
pub(crate) struct UringWorkers {
    workers: Vec<Handle>,
}

struct Handle {
    commands: mpsc::Sender<Command>,
    wake: Arc<OwnedFd>,
    /// Connections open on this worker (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    open: Arc<AtomicUsize>,
}

impl UringWorkers {
    /// Starts `count` worker threads, each with its own ring; fails if this
    /// kernel cannot set one up (too old, or io_uring disabled by sysctl).
    pub(crate) fn start(count: NonZeroUsize, shared: &Arc<Shared>) -> io::Result<Self> {
        // On error, dropping `this` stops the workers already started.
        let mut this = Self {
            workers: Vec::with_capacity(count.get()),
        };
        for index in 0..count.get() {
            let wake = Arc::new(eventfd()?);
            let (commands, inbox) = mpsc::channel();
            let open = Arc::new(AtomicUsize::new(0));
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            let (shared, wake2, open2) = (shared.clone(), wake.clone(), open.clone());
            std::thread::Builder::new()
                .name(format!("shoal-uring-{index}"))
                .spawn(move || {
                    // A single-issuer ring belongs to the thread that created it.
                    let worker = match worker::Worker::new(shared, inbox, wake2, open2) {
                        Ok(w) => {
                            let _ = ready_tx.send(Ok(()));
                            w
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    worker.run();
                })?;
            ready_rx
                .recv()
                .map_err(|_| io::Error::other("io_uring worker thread ended at start"))?
                .map_err(|e| io::Error::new(e.kind(), format!("set up an io_uring: {e}")))?;
            this.workers.push(Handle {
                commands,
                wake,
                open,
            });
        }
        Ok(this)
    }

    /// How many workers there are.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Sends `command` to worker `index`.
    pub(crate) fn send(&self, index: usize, command: Command) {
        let w = &self.workers[index];
        if w.commands.send(command).is_ok() {
            wake(&w.wake);
        }
    }

    /// Sends a command made by `command` to every worker.
    pub(crate) fn broadcast(&self, command: impl Fn() -> Command) {
        for index in 0..self.workers.len() {
            self.send(index, command());
        }
    }

    /// Connections open on each worker.
    #[cfg(test)]
    pub(crate) fn connections_per_worker(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.open.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }
}

/// Wakes a worker through its eventfd.
fn wake(eventfd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: write(2) of 8 bytes from a live buffer to an eventfd we own.
    // It fails only if the counter would overflow, when a wake is pending.
    let _ = unsafe { libc::write(eventfd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

impl Drop for UringWorkers {
    fn drop(&mut self) {
        for w in std::mem::take(&mut self.workers) {
            drop(w.commands);
            // The worker sees the closed channel after this wake.
            wake(&w.wake);
        }
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain eventfd(2); the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
