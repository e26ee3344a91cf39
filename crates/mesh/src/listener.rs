//! Published-port listeners: binding (socket2) and the accept loop, which
//! hands each connection to the balancer and the forwarder; and what both
//! data paths do when an accept fails ([`AcceptErrors`], [`accept_backoff`]):
//! an accept that fails for want of a descriptor leaves the connection
//! queued, so the next one would fail at once too. The listener waits (5 ms,
//! doubling up to 1 s) instead of spinning, one warning is logged per
//! episode, every failure is counted, and accepting resumes by itself once
//! descriptors free.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::balancer::{self, Clock};
use crate::forward::{forward, Held};
use crate::table::RoutingTable;
use crate::MeshConfig;

/// Listen backlog of every published port.
const BACKLOG: i32 = 1024;
/// The wait after a first failed accept; it doubles with each further
/// consecutive failure of the same listener, up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest wait between two failing accepts: how long the mesh may take
/// to notice that descriptors are free again.
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How many distinct waits the backoff has (5 ms to 640 ms, then 1 s).
pub(crate) const ACCEPT_BACKOFF_STEPS: usize = 9;
/// A successful accept ends an episode of failing accepts once none has
/// failed for this long.
const EPISODE_QUIET: Duration = Duration::from_secs(1);
/// A failure this long after the previous one starts a new episode (and
/// logs again) even if no accept succeeded in between.
const EPISODE_GAP: Duration = Duration::from_secs(60);

/// What accept loops and connections share; deliberately not the listener set,
/// so that dropping the last [`crate::Mesh`] handle can stop them.
pub(crate) struct Shared {
    pub(crate) config: MeshConfig,
    pub(crate) table: ArcSwap<RoutingTable>,
    pub(crate) clock: Clock,
    /// Tracks every connection task, for the shutdown drain.
    pub(crate) connections: TaskTracker,
    /// Cancelled when the shutdown grace period is over: open connections close.
    pub(crate) abort: CancellationToken,
    /// Copy buffers and pipes held by connections (counted in tests only).
    pub(crate) held: Held,
    /// Counts and logs failed accepts of every listener of both data paths.
    pub(crate) accept_errors: AcceptErrors,
}

/// Why an accept (or a backend socket) could not get a descriptor: the
/// `reason` label of `shoal_mesh_accept_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorReason {
    /// EMFILE (this process's open-file limit) or ENFILE (the system's).
    Descriptors,
    /// ENOBUFS or ENOMEM.
    Memory,
    Other,
}

/// Counts failed accepts by reason and logs one warning per episode of them
/// (not one per accept): a listener that fails keeps retrying, waiting
/// [`accept_backoff`] in between, and each retry would fail the same way
/// until descriptors or memory free.
pub(crate) struct AcceptErrors {
    /// `shoal_mesh_accept_errors_total`, by [`ErrorReason`] in its order.
    counters: [prometheus::IntCounter; 3],
    /// An episode of failing accepts is on: logged, not yet over.
    failing: AtomicBool,
    /// When the latest accept failed, on `clock`.
    last_failure: AtomicU64,
    clock: Clock,
}

/// Binds `count` listening sockets on `addr`, one per worker: a SO_REUSEPORT
/// group across which the kernel spreads new connections.
///
/// SO_REUSEPORT would also let a socket that is already listening there with
/// that option (another mesh of this user) take part of the port's
/// connections without either side noticing, so the port is first probed with
/// a plain bind, which fails while anything listens on it.
pub(crate) fn bind_group(
    addr: SocketAddr,
    keepalive: Duration,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    if count <= 1 {
        return Ok(vec![bind_socket(addr, keepalive, false)?]);
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())?;
    drop(probe);
    let first = bind_socket(addr, keepalive, true)?;
    // The port the first one got, should `addr` have asked for any.
    let addr = first.local_addr()?;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(bind_socket(addr, keepalive, true)?);
    }
    Ok(group)
}

/// Binds a listening socket on `addr` (SO_REUSEADDR, nonblocking, backlog 1024).
///
/// TCP_NODELAY and keepalive are set on the listening socket: Linux copies
/// them to every accepted socket, which saves three syscalls per connection.
fn bind_socket(
    addr: SocketAddr,
    keepalive: Duration,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    tune(&socket, keepalive);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

// === impl ErrorReason ===

impl ErrorReason {
    pub(crate) fn of(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => Self::Descriptors,
            Some(libc::ENOBUFS | libc::ENOMEM) => Self::Memory,
            _ => Self::Other,
        }
    }

    /// This process or host ran out of something: every other endpoint would
    /// fail the same way, and none of them is at fault.
    pub(crate) fn is_local_exhaustion(err: &io::Error) -> bool {
        Self::of(err) != Self::Other
    }

    fn label(self) -> &'static str {
        match self {
            Self::Descriptors => "descriptors",
            Self::Memory => "memory",
            Self::Other => "other",
        }
    }
}

// === impl AcceptErrors ===

impl AcceptErrors {
    pub(crate) fn new(family: &prometheus::IntCounterVec, clock: Clock) -> Self {
        let counter = |reason: ErrorReason| family.with_label_values(&[reason.label()]);
        Self {
            counters: [
                counter(ErrorReason::Descriptors),
                counter(ErrorReason::Memory),
                counter(ErrorReason::Other),
            ],
            failing: AtomicBool::new(false),
            last_failure: AtomicU64::new(0),
            clock,
        }
    }

    /// Books a failed accept on `port`: counts it, and logs it if it starts
    /// an episode.
    pub(crate) fn failed(&self, port: u16, err: &io::Error) {
        let reason = ErrorReason::of(err);
        self.counters[reason as usize].inc();
        let now = self.clock.now();
        let previous = self.last_failure.swap(now, Ordering::Relaxed);
        let ongoing = self.failing.swap(true, Ordering::Relaxed);
        if ongoing && now.saturating_sub(previous) < nanos(EPISODE_GAP) {
            return;
        }
        match reason {
            ErrorReason::Descriptors if err.raw_os_error() == Some(libc::EMFILE) => {
                let limit = open_file_limit();
                warn!(
                    port,
                    error = %err,
                    "the mesh cannot accept: this process has reached its open-file limit \
                     (RLIMIT_NOFILE {limit}); it retries, backing off up to {ACCEPT_BACKOFF_MAX:?}, \
                     until descriptors free (counted in \
                     shoal_mesh_accept_errors_total{{reason=\"descriptors\"}})"
                );
            }
            ErrorReason::Descriptors => warn!(
                port,
                error = %err,
                "the mesh cannot accept: the system has run out of file descriptors \
                 (fs.file-max); it retries, backing off up to {ACCEPT_BACKOFF_MAX:?}, until \
                 descriptors free (counted in shoal_mesh_accept_errors_total{{reason=\"descriptors\"}})"
            ),
            ErrorReason::Memory => warn!(
                port,
                error = %err,
                "the mesh cannot accept: out of socket memory; it retries, backing off up to \
                 {ACCEPT_BACKOFF_MAX:?} (counted in shoal_mesh_accept_errors_total{{reason=\"memory\"}})"
            ),
            ErrorReason::Other => warn!(
                port,
                error = %err,
                "accept failed; retrying, backing off up to {ACCEPT_BACKOFF_MAX:?} \
                 (counted in shoal_mesh_accept_errors_total{{reason=\"other\"}})"
            ),
        }
    }

    /// Books a successful accept: it ends an episode of failures once none
    /// has failed for a second. Costs one relaxed load outside an episode.
    pub(crate) fn succeeded(&self) {
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        let quiet = self
            .clock
            .now()
            .saturating_sub(self.last_failure.load(Ordering::Relaxed));
        if quiet >= nanos(EPISODE_QUIET) && self.failing.swap(false, Ordering::Relaxed) {
            info!("the mesh accepts again");
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How long a listener waits before it accepts again after `failures`
/// consecutive failed accepts (at least 1): 5 ms, doubling, at most 1 s.
pub(crate) fn accept_backoff(failures: u32) -> Duration {
    let doublings = failures
        .saturating_sub(1)
        .min(ACCEPT_BACKOFF_STEPS as u32 - 1);
    ACCEPT_BACKOFF_MIN
        .saturating_mul(1 << doublings)
        .min(ACCEPT_BACKOFF_MAX)
}

/// This process's soft open-file limit, for the log line.
#[allow(unsafe_code)] // getrlimit(2): std and socket2 have no wrapper
fn open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc == 0 {
        limit.rlim_cur
    } else {
        0
    }
}

/// Accepts on one published port until `stop` is cancelled. Runs on a mesh
/// worker, which registers `listener` with its own reactor and runs every
/// connection it accepts.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    port: u16,
    stop: CancellationToken,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(port, error = %e, "cannot register listener");
            return;
        }
    };
    // Connections wait on a token of their own worker's: every wake of a
    // connection task polls it, and the token locks a mutex each time, which
    // must not be one cache line shared by the connections of every worker.
    let abort = shared.abort.child_token();
    // Consecutive failed accepts of this listener.
    let mut failures = 0;
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((client, peer)) => {
                failures = 0;
                shared.accept_errors.succeeded();
                let (shared2, abort) = (shared.clone(), abort.clone());
                shared
                    .connections
                    .spawn(async move { handle(shared2, client, peer, port, abort).await });
            }
            Err(e) => {
                // Typically EMFILE: the connection stays queued and the next
                // accept fails the same way until descriptors free, so back
                // off rather than spin.
                failures += 1;
                shared.accept_errors.failed(port, &e);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(accept_backoff(failures)) => {}
                }
            }
        }
    }
}

/// Sets TCP_NODELAY and keepalive on a socket. Failures are not fatal.
pub(crate) fn tune<'s>(socket: impl Into<SockRef<'s>>, keepalive: Duration) {
    let socket = socket.into();
    let _ = socket.set_tcp_nodelay(true);
    let _ = socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(keepalive));
}

async fn handle(
    shared: Arc<Shared>,
    client: TcpStream,
    peer: SocketAddr,
    port: u16,
    abort: CancellationToken,
) {
    let Some(service) = shared.table.load().service_for_port(port) else {
        debug!(port, %peer, "no service on port; closing");
        return;
    };
    let Some(port_entry) = service.port(port) else {
        return;
    };
    port_entry.metrics.accepted.inc();
    // TCP_NODELAY and keepalive are inherited from the listening socket.

    let Some((endpoint, backend)) =
        balancer::connect(&service, port_entry, &shared.config, shared.clock).await
    else {
        port_entry.metrics.refused.inc();
        debug!(service = %service.name(), port, %peer, "no endpoint reachable; closing client");
        return;
    };

    let m = &endpoint.metrics;
    let _active = Active::count(&m.active);
    tokio::select! {
        r = forward(&client, &backend, &m.bytes_from_client, &m.bytes_to_client, &shared.held) => {
            if let Err(e) = r {
                debug!(service = %service.name(), task = %endpoint.endpoint.task_name, %peer, error = %e, "connection ended with error");
            }
        }
        () = abort.cancelled() => {
            debug!(service = %service.name(), task = %endpoint.endpoint.task_name, %peer, "closing connection at end of shutdown grace");
        }
    }
}

/// Counts a connection in its task's active-connections gauge for as long
/// as it lives, also should its task be dropped unfinished.
struct Active<'a>(&'a prometheus::IntGauge);

impl<'a> Active<'a> {
    fn count(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
