//! The epoll data path's accept loop: one per published port and worker,
//! handing each connection to the balancer and the forwarder, and backing
//! off when an accept fails (see `accept_errors`).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::accept_errors::accept_backoff;
use crate::balancer;
use crate::forward::{forward, write_all};
use crate::proxy_header::ProxyHeader;
use crate::route::ProxyProtocol;
use crate::shared::Shared;

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

    if let Some(version) = port_entry.route.proxy_protocol {
        if let Err(e) = send_proxy_header(version, &client, peer, &backend).await {
            debug!(service = %service.name(), task = %endpoint.endpoint.task_name, %peer, error = %e, "cannot send the PROXY header; closing");
            return;
        }
    }

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

/// Sends the task the PROXY header of the client's connection, before any
/// of its bytes.
async fn send_proxy_header(
    version: ProxyProtocol,
    client: &TcpStream,
    peer: SocketAddr,
    backend: &TcpStream,
) -> std::io::Result<()> {
    let local = client.local_addr()?;
    let header = ProxyHeader::encode(version, peer, local);
    write_all(backend, header.as_bytes(), false).await
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
