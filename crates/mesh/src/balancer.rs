//! Endpoint selection: round-robin over non-draining endpoints, with passive
//! ejection of endpoints whose connects fail.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::accept_errors::ErrorReason;
use crate::clock::Clock;
use crate::config::MeshConfig;
use crate::socket;
use crate::table::{EndpointEntry, PortEntry, ServiceEntry};

/// Which candidates were ejected when a connect started; no allocation for
/// up to 64 candidates.
#[derive(Clone)]
enum Ejected {
    Bits(u64),
    Many(Vec<bool>),
}

impl Ejected {
    fn snapshot(candidates: &[(Arc<EndpointEntry>, SocketAddr)], now: u64) -> Self {
        let ejected = |(e, _): &(Arc<EndpointEntry>, SocketAddr)| e.health.is_ejected(now);
        if candidates.len() <= 64 {
            let bits = candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| ejected(c))
                .fold(0u64, |bits, (i, _)| bits | 1 << i);
            Self::Bits(bits)
        } else {
            Self::Many(candidates.iter().map(ejected).collect())
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Self::Bits(bits) => bits & (1 << i) != 0,
            Self::Many(v) => v[i],
        }
    }
}

/// The order in which one new connection tries the candidates of its port:
/// non-ejected endpoints first, in round-robin order from the service's
/// counter, then ejected ones as a last resort (also in that order). Taken
/// once per connection; it holds indices, not the candidates, so a connection
/// driven by completions (`uring`) can keep it across attempts. Allocates
/// nothing for up to 64 candidates.
#[derive(Clone)]
pub(crate) struct Plan {
    start: usize,
    /// Ejection as it was before this connection's own failures ejected anything.
    ejected: Ejected,
}

impl Plan {
    /// Takes the next round-robin start of `service` (advancing its counter)
    /// and a snapshot of which candidates of `port` are ejected at `now`.
    pub(crate) fn new(service: &ServiceEntry, port: &PortEntry, now: u64) -> Self {
        let candidates = &port.candidates;
        let start = match candidates.len() {
            0 => 0,
            n => service.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        Self {
            start,
            ejected: Ejected::snapshot(candidates, now),
        }
    }

    /// The candidates of `port` in this plan's order. `port` must be the
    /// entry the plan was taken for.
    pub(crate) fn iter<'a>(
        &self,
        port: &'a PortEntry,
    ) -> impl Iterator<Item = &'a (Arc<EndpointEntry>, SocketAddr)> + 'a {
        let candidates = &port.candidates;
        let (n, start) = (candidates.len(), self.start);
        let rotated = (0..n).map(move |i| (start + i) % n);
        let healthy = rotated.clone().filter({
            let ejected = self.ejected.clone();
            move |&i| !ejected.get(i)
        });
        let ejected = self.ejected.clone();
        healthy
            .chain(rotated.filter(move |&i| ejected.get(i)))
            .map(move |i| &candidates[i])
    }
}

/// The candidates of one new connection in the order it tries them (see
/// [`Plan`]); advances the service's round-robin counter.
pub(crate) fn order<'a>(
    service: &ServiceEntry,
    port: &'a PortEntry,
    now: u64,
) -> impl Iterator<Item = &'a (Arc<EndpointEntry>, SocketAddr)> + 'a {
    Plan::new(service, port, now).iter(port)
}

/// Connects to `addr` with TCP_NODELAY and keepalive set before the connect.
///
/// A non-blocking connect whose outcome is read from the readiness epoll
/// reports: writable means connected, and only a failure (error or hang-up
/// reported) costs the `getsockopt(SO_ERROR)` that tokio's own connect always
/// makes.
async fn connect_to(addr: SocketAddr, config: &MeshConfig) -> io::Result<TcpStream> {
    let ty = Type::STREAM.nonblocking().cloexec();
    let socket = Socket::new(Domain::for_address(addr), ty, Some(Protocol::TCP))?;
    socket::tune(&socket, config.keepalive);
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    let ready = stream.ready(Interest::WRITABLE).await?;
    if ready.is_write_closed() || ready.is_error() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(stream)
}

/// Books a connect to `entry` that succeeded after `elapsed`: its metrics,
/// and the end of any ejection.
pub(crate) fn connected(entry: &EndpointEntry, elapsed: Duration) {
    let m = &entry.metrics;
    m.connect_duration.observe(elapsed.as_secs_f64());
    m.connections.inc();
    entry.health.record_success();
}

/// Books a connect to `entry` at `addr` that failed with `err`: counts it and
/// ejects the endpoint for its next backoff.
pub(crate) fn connect_failed(
    service: &ServiceEntry,
    entry: &EndpointEntry,
    addr: SocketAddr,
    err: &io::Error,
    config: &MeshConfig,
    clock: Clock,
) {
    entry.metrics.connect_errors.inc();
    let backoff = entry.health.record_failure(clock.now(), config);
    debug!(
        service = %service.name(),
        task = %entry.endpoint.task_name,
        %addr,
        error = %err,
        ?backoff,
        "backend connect failed; endpoint ejected",
    );
}

/// Connects to an endpoint of `service` for the published port `port`,
/// trying each candidate at most once, in [`order`]. Draining endpoints and
/// those that do not expose the target port are never candidates.
///
/// Returns `None` when no endpoint could be reached, or at once when this
/// process is out of descriptors or memory for a backend socket: then no
/// endpoint is at fault (none is ejected), and every one would fail alike.
pub(crate) async fn connect(
    service: &ServiceEntry,
    port: &PortEntry,
    config: &MeshConfig,
    clock: Clock,
) -> Option<(Arc<EndpointEntry>, TcpStream)> {
    for &(ref entry, addr) in order(service, port, clock.now()) {
        let t0 = Instant::now();
        let err = match tokio::time::timeout(config.connect_timeout, connect_to(addr, config)).await
        {
            Ok(Ok(stream)) => {
                connected(entry, t0.elapsed());
                return Some((entry.clone(), stream));
            }
            Ok(Err(e)) if ErrorReason::is_local_exhaustion(&e) => {
                debug!(service = %service.name(), error = %e, "no backend socket");
                return None;
            }
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        };
        connect_failed(service, entry, addr, &err, config, clock);
    }
    None
}
