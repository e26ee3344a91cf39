//! splice(2) through a pipe, and a small per-thread pool of empty pipes.
//!
//! The only module of the crate with `unsafe`: `pipe2`, `splice`, and taking
//! ownership of the fds `pipe2` returns.
//! Each pipe is owned (`OwnedFd`), non-blocking and close-on-exec; a pipe goes
//! back to the pool only when it is empty, so pooled pipes never hold bytes of
//! an earlier connection. New pipes are widened to [`PIPE_CAPACITY`] (512 KiB,
//! eight times Linux's default): one splice then moves up to that much. 256 KiB
//! cut the proxy's CPU per bulk gigabyte by a tenth against 64 KiB, and 512 KiB
//! raised bulk throughput by about a tenth again (`bench/README.md`). The
//! capacity only bounds what a pipe may hold; its pages are the sockets' own
//! and exist only while bytes are in flight, so an empty pipe costs the same.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most empty pipes kept per thread; more are closed when released.
const POOL_MAX: usize = 16;

/// Capacity asked for every new pipe (`F_SETPIPE_SZ`). Where the kernel
/// refuses it (an unprivileged user over `fs.pipe-user-pages-soft`, or a
/// lower `fs.pipe-max-size`) the pipe keeps the capacity it got.
pub(crate) const PIPE_CAPACITY: usize = 512 * 1024;

thread_local! {
    /// Empty pipes.
    static POOL: RefCell<Vec<PipeFds>> = const { RefCell::new(Vec::new()) };
}

/// Both ends of a pipe and its capacity in bytes.
#[derive(Debug)]
struct PipeFds {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

/// A pipe used to move bytes from one socket to another without copying
/// them through user space. `pending` counts bytes sitting in it. Dropping
/// it returns it to this thread's pool when empty and closes it otherwise.
#[derive(Debug)]
pub(crate) struct Pipe {
    /// `None` only while being dropped.
    fds: Option<PipeFds>,
    pending: usize,
}

// === impl Pipe ===

impl Pipe {
    /// An empty pipe from this thread's pool, or a new one.
    pub(crate) fn take() -> io::Result<Self> {
        if let Some(fds) = POOL.try_with(|pool| pool.borrow_mut().pop()).ok().flatten() {
            return Ok(Self {
                fds: Some(fds),
                pending: 0,
            });
        }
        let mut fds: [RawFd; 2] = [-1; 2];
        // SAFETY: `fds` is a valid, writable array of two ints, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let capacity = widen(&write);
        Ok(Self {
            fds: Some(PipeFds {
                read,
                write,
                capacity,
            }),
            pending: 0,
        })
    }

    /// Most bytes the pipe holds: what one [`Pipe::fill_from`] may move.
    pub(crate) fn capacity(&self) -> usize {
        self.fds.as_ref().map_or(0, |fds| fds.capacity)
    }

    /// Bytes in the pipe, not yet written out.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Moves up to the pipe's capacity from socket `src` into the pipe.
    /// `Ok(0)` is end of stream; `WouldBlock` means `src` has nothing to read
    /// (the pipe is only filled when empty, so it is never full here).
    pub(crate) fn fill_from(&mut self, src: RawFd) -> io::Result<usize> {
        let n = splice(src, self.end(|fds| &fds.write), self.capacity())?;
        self.pending += n;
        Ok(n)
    }

    /// Moves bytes from the pipe to socket `dst`; `WouldBlock` when its send
    /// buffer is full.
    pub(crate) fn drain_to(&mut self, dst: RawFd) -> io::Result<usize> {
        let n = splice(self.end(|fds| &fds.read), dst, self.pending)?;
        self.pending -= n;
        Ok(n)
    }

    fn end(&self, which: fn(&PipeFds) -> &OwnedFd) -> RawFd {
        self.fds.as_ref().map_or(-1, |fds| which(fds).as_raw_fd())
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let Some(fds) = self.fds.take() else { return };
        if self.pending != 0 {
            return; // closed: its bytes belong to a connection that is gone
        }
        // At thread exit the pool may be gone already; then the pipe is closed.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_MAX {
                pool.push(fds);
            }
        });
    }
}

/// Asks for [`PIPE_CAPACITY`] on a new pipe; returns the capacity it has.
fn widen(write: &OwnedFd) -> usize {
    const DEFAULT: usize = 64 * 1024;
    let fd = write.as_raw_fd();
    // SAFETY: fcntl on an fd this function borrows; F_SETPIPE_SZ and
    // F_GETPIPE_SZ take an int argument and return the capacity or -1.
    let set = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_CAPACITY as libc::c_int) };
    if let Ok(capacity) = usize::try_from(set) {
        return capacity;
    }
    // SAFETY: as above.
    let get = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    usize::try_from(get).unwrap_or(DEFAULT)
}

/// One non-blocking splice(2) call without offsets.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on two fds the caller keeps open for the duration
    // of the call; null offsets are allowed (both ends are a pipe or socket).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    // A negative return is -1 with errno set; anything else fits a usize.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// How many empty pipes this thread's pool holds (tests).
#[cfg(test)]
pub(crate) fn pooled() -> usize {
    POOL.with(|pool| pool.borrow().len())
}
