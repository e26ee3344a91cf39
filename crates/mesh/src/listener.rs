//! Published-port listeners: binding (socket2) and the accept loop, which
//! hands each connection to the balancer and the forwarder.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::balancer::{self, Clock};
use crate::forward::{forward, Held};
use crate::table::RoutingTable;
use crate::MeshConfig;

/// Listen backlog of every published port.
const BACKLOG: i32 = 1024;

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
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((client, peer)) => {
                let (shared2, abort) = (shared.clone(), abort.clone());
                shared
                    .connections
                    .spawn(async move { handle(shared2, client, peer, port, abort).await });
            }
            Err(e) => {
                // Typically EMFILE/ENFILE: back off briefly instead of spinning.
                warn!(port, error = %e, "accept failed");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
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
    m.active.inc();
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
    m.active.dec();
}
