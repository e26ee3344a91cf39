//! What a worker holds for each listening socket and each proxied
//! connection (a small state machine per direction).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use io_uring::types;
use socket2::SockAddr;
use tokio::sync::oneshot;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::op::Side;
use crate::balancer::Plan;
use crate::pipe::Pipe;
use crate::route::ProxyProtocol;
use crate::table::{EndpointEntry, ServiceEntry};

/// A published port's listening socket on this worker.
pub(super) struct ListenSocket {
    pub(super) port: u16,
    pub(super) socket: OwnedFd,
    /// Sent (dropped) once the socket is closed.
    pub(super) _closed: oneshot::Sender<()>,
    /// Unlisten asked: close once the accept has ended.
    pub(super) closing: bool,
    /// Consecutive failed accepts: how long to wait before the next.
    pub(super) failures: u32,
}

/// Where a received chunk's bytes are.
pub(super) enum Buffer {
    /// A provided buffer, by id.
    Provided(u16),
    /// A buffer of the connection's own (the ring had none left).
    Own(Box<[u8]>),
}

/// Bytes received from a direction's source and not yet all sent.
pub(super) struct Chunk {
    pub(super) buf: Buffer,
    pub(super) len: usize,
    pub(super) sent: usize,
}

/// One direction's state.
#[derive(Default)]
pub(super) struct Dir {
    pub(super) chunk: Option<Chunk>,
    /// The ring had no buffer for a receive: wait for readability, then
    /// receive into `spare`.
    pub(super) starved: bool,
    /// A receive buffer of our own, used once when the ring ran out.
    pub(super) spare: Option<Box<[u8]>>,
    /// A receive filled a whole buffer: move bytes with splice(2).
    pub(super) splicing: bool,
    /// The pipe of a splice burst, held only while it lasts.
    pub(super) pipe: Option<Pipe>,
    /// Bytes moved in the current splice burst.
    pub(super) moved: usize,
    /// The source's end of stream was read.
    pub(super) eof: bool,
    /// Everything up to the end of stream has been passed on.
    pub(super) done: bool,
}

/// One proxied connection.
pub(super) struct Conn {
    pub(super) client: OwnedFd,
    /// The socket being connected, then the connected backend.
    pub(super) backend: Option<OwnedFd>,
    pub(super) connected: bool,
    pub(super) port: u16,
    /// The PROXY header to send the task once connected, if the port asks.
    pub(super) proxy_protocol: Option<ProxyProtocol>,
    pub(super) service: Arc<ServiceEntry>,
    pub(super) plan: Plan,
    /// Candidates of the plan tried so far.
    pub(super) attempts: usize,
    /// The endpoint being connected to, then the connected one.
    pub(super) endpoint: Option<(Arc<EndpointEntry>, SocketAddr)>,
    /// The address of the connect in flight (read by the kernel).
    pub(super) addr: SockAddr,
    /// The connect timeout (read by the kernel at submission).
    pub(super) timeout: types::Timespec,
    pub(super) connect_started: Instant,
    pub(super) dirs: [Dir; 2],
    /// Operations in flight; the slot is freed only at zero, so no
    /// completion ever names a freed (or reused) slot.
    pub(super) inflight: u32,
    /// Ended with an error: its sockets are shut down (and a connect
    /// cancelled) so that the operations in flight end soon.
    pub(super) failed: bool,
    /// `finish` was called with operations in flight: every completion from
    /// then on only calls `finish` again, and the last one frees the slot.
    pub(super) closing: bool,
    /// Sockets shut down to end the operations in flight.
    pub(super) shut: bool,
    /// Counts the connection for the shutdown drain.
    pub(super) _tracked: TaskTrackerToken,
}

impl Conn {
    #[inline]
    pub(super) fn fds(&self, side: Side) -> (RawFd, RawFd) {
        let backend = self.backend.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let client = self.client.as_raw_fd();
        match side {
            Side::Up => (client, backend),
            Side::Down => (backend, client),
        }
    }

    #[inline]
    pub(super) fn dir(&mut self, side: Side) -> &mut Dir {
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
