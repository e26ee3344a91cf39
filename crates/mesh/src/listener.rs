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
use crate::forward::forward;
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
}

/// Binds a listening socket on `addr` (SO_REUSEADDR, nonblocking, backlog 1024).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts on one published port until `stop` is cancelled.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    port: u16,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((client, peer)) => {
                let shared2 = shared.clone();
                shared
                    .connections
                    .spawn(async move { handle(shared2, client, peer, port).await });
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

/// Sets TCP_NODELAY and keepalive on a connection leg. Failures are not fatal.
fn tune(stream: &TcpStream, keepalive: Duration) {
    let _ = stream.set_nodelay(true);
    let _ = SockRef::from(stream).set_tcp_keepalive(&TcpKeepalive::new().with_time(keepalive));
}

async fn handle(shared: Arc<Shared>, mut client: TcpStream, peer: SocketAddr, port: u16) {
    let Some(service) = shared.table.load().service_for_port(port).cloned() else {
        debug!(port, %peer, "no service on port; closing");
        return;
    };
    let Some(port_entry) = service.port(port) else {
        return;
    };
    port_entry.metrics.accepted.inc();
    tune(&client, shared.config.keepalive);

    let target = port_entry.route.target;
    let Some((endpoint, mut backend)) =
        balancer::connect(&service, target, &shared.config, shared.clock).await
    else {
        port_entry.metrics.refused.inc();
        debug!(service = %service.name(), port, %peer, "no endpoint reachable; closing client");
        return;
    };
    tune(&backend, shared.config.keepalive);

    let m = &endpoint.metrics;
    m.active.inc();
    tokio::select! {
        r = forward(&mut client, &mut backend, &m.bytes_from_client, &m.bytes_to_client) => {
            if let Err(e) = r {
                debug!(service = %service.name(), task = %endpoint.endpoint.task_name, %peer, error = %e, "connection ended with error");
            }
        }
        () = shared.abort.cancelled() => {
            debug!(service = %service.name(), task = %endpoint.endpoint.task_name, %peer, "closing connection at end of shutdown grace");
        }
    }
    m.active.dec();
}
