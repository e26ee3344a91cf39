//! Byte forwarding between a client and a backend connection, with half-close.
//!
//! Each direction waits for its source to become readable *before* it takes a
//! copy buffer, and gives the buffer back (to a small per-thread pool) as soon
//! as the source has nothing more to read: an idle connection holds no buffer.
//! A direction that fills a whole buffer in one read is a bulk transfer and
//! switches to splice(2) through a pipe (also pooled, and also held only while
//! bytes move), so its bytes no longer cross user space; it switches back to
//! copying after a burst smaller than one buffer, or if splice is refused
//! (`EINVAL`, e.g. an unsupported socket type). A short read on a socket whose
//! peer's FIN had already arrived ends the direction without the read of 0,
//! and its bytes are written with `MSG_MORE`: they wait in the send queue for
//! the FIN that follows at once, and leave in one segment with it (as
//! HAProxy does), which saves a segment and a wake-up of the receiver per
//! closing connection.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::IntCounter;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::pipe::Pipe;

/// Size of a copy buffer; a read that fills it switches the direction to splice.
const BUF_SIZE: usize = 16 * 1024;
/// Most free copy buffers kept per thread.
const BUF_POOL_MAX: usize = 32;

thread_local! {
    static BUFS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// Counts the buffers and pipes connections hold, so tests can check that
/// idle connections hold none. Compiles to nothing outside tests.
#[derive(Debug, Default)]
pub(crate) struct Held {
    #[cfg(test)]
    pub(crate) count: std::sync::atomic::AtomicUsize,
    /// Bytes moved by splice rather than copied.
    #[cfg(test)]
    pub(crate) spliced: std::sync::atomic::AtomicU64,
    /// Receives the io_uring path made into a buffer of the connection's own,
    /// its provided-buffer ring having run dry.
    #[cfg(test)]
    pub(crate) own_buffers: std::sync::atomic::AtomicU64,
}

/// What one burst of reads on a readable source ended with.
enum Burst {
    /// The source has nothing more to read for now.
    Idle,
    /// End of stream.
    Eof,
    /// A read filled the whole buffer: switch to splice.
    Bulk,
    /// Back to copying: splice is not supported for these sockets, or the
    /// burst was small (a pipe costs an extra syscall per burst).
    Copy,
}

/// Copies both directions until both have ended. When one side reads EOF the
/// other side's write half is shut down and the opposite direction keeps
/// flowing. The first I/O error ends both directions.
pub(crate) async fn forward(
    client: &TcpStream,
    backend: &TcpStream,
    from_client: &IntCounter,
    to_client: &IntCounter,
    held: &Held,
) -> io::Result<()> {
    let ended = AtomicBool::new(false);
    tokio::try_join!(
        pump(
            client,
            backend,
            from_client,
            held,
            &ended,
            "client -> backend"
        ),
        pump(
            backend,
            client,
            to_client,
            held,
            &ended,
            "backend -> client"
        ),
    )?;
    Ok(())
}

/// Forwards one direction; an error names the direction it happened in.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    bytes: &IntCounter,
    held: &Held,
    ended: &AtomicBool,
    direction: &'static str,
) -> io::Result<()> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{direction}: {e}"));
    let mut splicing = false;
    loop {
        let ready = src.ready(Interest::READABLE).await.map_err(context)?;
        let burst = if splicing {
            splice_burst(src, dst, bytes, held).await
        } else {
            copy_burst(src, dst, bytes, held, ready.is_read_closed()).await
        }
        .map_err(context)?;
        match burst {
            Burst::Idle => {}
            Burst::Bulk => splicing = true,
            Burst::Copy => splicing = false,
            Burst::Eof => {
                // Propagate the half-close; the peer may already be gone. When
                // the other direction has ended too, both sockets are closed
                // right after this (a FIN, as everything was read), so the
                // shutdown syscall is skipped.
                if ended.swap(true, Ordering::Relaxed) {
                    return Ok(());
                }
                let _ = SockRef::from(dst).shutdown(Shutdown::Write);
                return Ok(());
            }
        }
    }
}

/// Reads from `src` and writes to `dst` through a pooled buffer until `src`
/// would block, ends, or fills the buffer.
///
/// `read_closed`: the peer's FIN had arrived before the first read. A short
/// read then took everything before the FIN, so the stream is known to have
/// ended without the read that would only return 0.
async fn copy_burst(
    src: &TcpStream,
    dst: &TcpStream,
    bytes: &IntCounter,
    held: &Held,
    read_closed: bool,
) -> io::Result<Burst> {
    let mut buf = Buf::take(held);
    loop {
        let (n, drained) = match read_some(src, &mut buf.data) {
            Ok((0, _)) => return Ok(Burst::Eof),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Idle),
            Err(e) => return Err(e),
        };
        // Everything before the FIN: the caller shuts `dst` down (or closes
        // it) right after, and the FIN joins these bytes.
        let last = drained && read_closed;
        write_all(dst, &buf.data[..n], last).await?;
        bytes.inc_by(n as u64);
        if n == buf.data.len() {
            return Ok(Burst::Bulk);
        }
        if drained {
            return Ok(if read_closed { Burst::Eof } else { Burst::Idle });
        }
    }
}

/// One read from `src`. A short read (fewer bytes than asked) means the
/// socket's receive queue is empty: its readiness is cleared right away, as
/// tokio's own `poll_read` does, which saves the read that would only have
/// returned `EAGAIN`. Returns the byte count and whether readiness was cleared.
fn read_some(src: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut got = 0;
    let len = buf.len();
    let r = src.try_io(Interest::READABLE, || {
        got = src.try_read(buf)?;
        if got > 0 && got < len {
            // Makes try_io clear the readiness it observed (not any newer one).
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match r {
        Ok(n) => Ok((n, false)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok((got, true)),
        Err(e) => Err(e),
    }
}

/// Moves bytes from `src` to `dst` through a pooled pipe until `src` would
/// block or ends.
async fn splice_burst(
    src: &TcpStream,
    dst: &TcpStream,
    bytes: &IntCounter,
    held: &Held,
) -> io::Result<Burst> {
    let Ok(pipe) = Pipe::take() else {
        // Out of fds, say: copy this burst instead.
        return copy_burst(src, dst, bytes, held, false).await;
    };
    let mut pipe = HeldPipe::new(pipe, held);
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut moved = 0;
    loop {
        match src.try_io(Interest::READABLE, || pipe.pipe.fill_from(src_fd)) {
            Ok(0) => return Ok(Burst::Eof),
            Ok(n) => moved += n,
            // A burst smaller than one copy buffer: copy the next ones.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && moved < BUF_SIZE => {
                return Ok(Burst::Copy)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Idle),
            Err(e) if moved == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(Burst::Copy)
            }
            Err(e) => return Err(e),
        }
        while pipe.pipe.pending() > 0 {
            match dst.try_io(Interest::WRITABLE, || pipe.pipe.drain_to(dst_fd)) {
                Ok(n) => {
                    bytes.inc_by(n as u64);
                    held.spliced(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes all of `data` to `dst`, waiting for writability as needed.
///
/// `fin_follows`: `dst` is shut down or closed right after, so the bytes are
/// sent with `MSG_MORE` and held back (up to one segment) for the FIN to join
/// them. Full segments still leave at once, so a full send buffer drains.
pub(crate) async fn write_all(
    dst: &TcpStream,
    mut data: &[u8],
    fin_follows: bool,
) -> io::Result<()> {
    // MSG_NOSIGNAL: a peer that is gone is an EPIPE error, never a SIGPIPE.
    let flags = libc::MSG_NOSIGNAL | if fin_follows { libc::MSG_MORE } else { 0 };
    while !data.is_empty() {
        let sent = dst.try_io(Interest::WRITABLE, || {
            SockRef::from(dst).send_with_flags(data, flags)
        });
        match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A copy buffer borrowed from this thread's pool; returned on drop.
struct Buf<'a> {
    data: Box<[u8]>,
    held: &'a Held,
}

impl<'a> Buf<'a> {
    fn take(held: &'a Held) -> Self {
        held.acquire();
        let data = BUFS
            .try_with(|b| b.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0; BUF_SIZE].into_boxed_slice());
        Self { data, held }
    }
}

impl Drop for Buf<'_> {
    fn drop(&mut self) {
        self.held.release();
        let data = std::mem::take(&mut self.data);
        // At thread exit the pool may be gone already; then the buffer is freed.
        let _ = BUFS.try_with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < BUF_POOL_MAX {
                b.push(data);
            }
        });
    }
}

/// A pipe counted in [`Held`] while a burst uses it.
struct HeldPipe<'a> {
    pipe: Pipe,
    held: &'a Held,
}

impl<'a> HeldPipe<'a> {
    fn new(pipe: Pipe, held: &'a Held) -> Self {
        held.acquire();
        Self { pipe, held }
    }
}

impl Drop for HeldPipe<'_> {
    fn drop(&mut self) {
        self.held.release();
    }
}

// === impl Held ===

impl Held {
    #[inline]
    pub(crate) fn acquire(&self) {
        #[cfg(test)]
        self.count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn spliced(&self, _n: usize) {
        #[cfg(test)]
        self.spliced
            .fetch_add(_n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn own_buffer(&self) {
        #[cfg(test)]
        self.own_buffers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn release(&self) {
        #[cfg(test)]
        self.count
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
