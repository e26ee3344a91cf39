//! UDP ingress: published UDP ports, their client flows and the datagrams
//! relayed both ways.
//!
//! Every published UDP port has one socket per worker in a SO_REUSEPORT
//! group; the kernel hashes each datagram's addresses to pick the socket, so
//! a client flow (its address and port) always reaches the same worker, and
//! each socket keeps its own [`FlowTable`] without a lock. A flow's first
//! datagram pins it to a task in the service's round-robin order (the
//! counter TCP connections share; draining tasks take no new flows, ejected
//! ones come last) and opens a socket connected to that task; the task's
//! replies are read from it and sent to the client from the published
//! socket, so the client sees them come from the address it wrote to. A pin
//! to a task that left the routing table, or that refused a datagram (ICMP
//! port unreachable), is dropped on the flow's next datagram, which pins it
//! anew. A flow silent both ways for `MeshConfig::udp_idle_timeout` is
//! forgotten.
//!
//! Bounds: a datagram is up to 65535 bytes (read into one buffer per socket,
//! and one per worker thread for replies); a port keeps at most
//! [`MAX_FLOWS_PER_PORT`] flows, each holding one descriptor, and a datagram
//! that would start a flow beyond it is dropped.

mod flows;

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol as SocketProtocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::accept_errors::ErrorReason;
use crate::balancer;
use crate::metrics::UdpTaskMetrics;
use crate::route::Protocol;
use crate::shared::Shared;
use crate::table::{EndpointEntry, PortEntry, ServiceEntry};
use flows::{Flow, FlowState, FlowTable};

/// The most flows one published UDP port keeps at once, over all its
/// sockets. Each flow holds a socket to its task, so this bounds the
/// descriptors a flood of spoofed client addresses can take; 16384 is well
/// above what one service's clients hold within an idle timeout.
pub(crate) const MAX_FLOWS_PER_PORT: usize = 16_384;

// Datagrams are sent with a plain nonblocking `send` through `SockRef`,
// not tokio's `try_send`: tokio answers WouldBlock without a syscall until
// its reactor has seen the socket writable, which would drop a new flow's
// first datagram.

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

thread_local! {
    /// The buffer every reply relayed on this worker thread passes through:
    /// used only between a receive and its send, never across an await.
    static REPLY_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// Binds `count` UDP sockets on `addr`, one per worker: a SO_REUSEPORT group.
/// The port is first probed with a plain bind, which fails while anything
/// else is bound there (another mesh's group included).
pub(crate) fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let probe = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(SocketProtocol::UDP),
    )?;
    probe.bind(&addr.into())?;
    let addr = probe.local_addr()?.as_socket().unwrap_or(addr);
    drop(probe);
    (0..count.max(1))
        .map(|_| -> io::Result<std::net::UdpSocket> {
            let socket = Socket::new(
                Domain::for_address(addr),
                Type::DGRAM,
                Some(SocketProtocol::UDP),
            )?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            Ok(socket.into())
        })
        .collect()
}

/// Serves one socket of a published UDP port until `stop` fires; `workers`
/// is how many sockets the port has (its flow bound is split among them).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    socket: std::net::UdpSocket,
    port: u16,
    workers: usize,
    stop: CancellationToken,
) {
    let socket = match UdpSocket::from_std(socket) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            debug!(port, error = %e, "cannot register udp socket");
            return;
        }
    };
    let idle = shared.config.udp_idle_timeout;
    let mut flows = FlowTable::new(
        (MAX_FLOWS_PER_PORT / workers.max(1)).max(1),
        u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX),
    );
    let mut sweep = tokio::time::interval(sweep_period(idle));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        let (len, client) = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = sweep.tick() => {
                flows.expire(shared.clock.now());
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(port, error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        let relay = Relay {
            shared: &shared,
            published: &socket,
            port,
        };
        relay.forward(&mut flows, client, &buf[..len]);
    }
}

/// How often idle flows are looked for: often enough that a flow is
/// forgotten within a second of its timeout.
fn sweep_period(idle: Duration) -> Duration {
    (idle / 2).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// The far end of a flow: the socket connected to its task and the loop
/// relaying the task's replies, which ends when the flow is dropped.
pub(crate) struct Backend {
    socket: Arc<UdpSocket>,
    endpoint: Arc<EndpointEntry>,
    metrics: Arc<UdpTaskMetrics>,
    replies: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.replies.abort();
        self.metrics.active_flows.dec();
    }
}

/// One published socket's view, for forwarding a datagram.
struct Relay<'a> {
    shared: &'a Arc<Shared>,
    published: &'a Arc<UdpSocket>,
    port: u16,
}

impl Relay<'_> {
    /// Sends a client's datagram to its flow's task, pinning the flow first
    /// if it has no (valid) pin. Dropped when nothing routes the port, the
    /// table is full, or the socket's send queue is.
    fn forward(&self, flows: &mut FlowTable<Backend>, client: SocketAddr, data: &[u8]) {
        let table = self.shared.table.load();
        let Some(service) = table.service_for(self.port, Protocol::Udp) else {
            return;
        };
        let Some(port) = service.port_of(self.port, Protocol::Udp) else {
            return;
        };
        let now = self.shared.clock.now();
        // Two tries: a pin found stale by the send itself (the task refused
        // the previous datagram) is replaced once.
        for _ in 0..2 {
            let routed = |task: &Arc<str>, addr: SocketAddr| {
                service.endpoints.iter().any(|e| {
                    e.endpoint.task_id == *task && e.addr_for(port.route.target) == Some(addr)
                })
            };
            if flows.lookup(client, now, routed).is_none() {
                let Some(flow) = self.pin(&service, port, client, now) else {
                    return;
                };
                if flows.insert(client, flow, now).is_err() {
                    debug!(service = %service.name(), port = self.port, %client, "udp flow table full; datagram dropped");
                    return;
                }
            }
            let Some(flow) = flows.get(client) else {
                return;
            };
            let b = &flow.backend;
            match SockRef::from(&*b.socket).send(data) {
                Ok(_) => {
                    b.metrics.datagrams_from_client.inc();
                    b.metrics.bytes_from_client.inc_by(data.len() as u64);
                    return;
                }
                Err(e) if task_gone(&e) => {
                    refused(self.shared, &b.endpoint, &flow.state);
                }
                Err(e) => {
                    debug!(service = %service.name(), task = %b.endpoint.endpoint.task_name, error = %e, "udp datagram to task dropped");
                    return;
                }
            }
        }
    }

    /// A new flow of `client`, to the first candidate in round-robin order
    /// a socket could be opened to.
    fn pin(
        &self,
        service: &ServiceEntry,
        port: &PortEntry,
        client: SocketAddr,
        now: u64,
    ) -> Option<Flow<Backend>> {
        for &(ref entry, addr) in balancer::order(service, port, now) {
            let Some(metrics) = entry.udp_metrics.clone() else {
                continue;
            };
            let socket = match connect(addr) {
                Ok(s) => Arc::new(s),
                Err(e) if ErrorReason::is_local_exhaustion(&e) => {
                    debug!(service = %service.name(), error = %e, "no socket for a udp flow");
                    return None;
                }
                Err(e) => {
                    debug!(service = %service.name(), task = %entry.endpoint.task_name, %addr, error = %e, "udp socket to task failed");
                    continue;
                }
            };
            let state = Arc::new(FlowState::new(now));
            let replies = tokio::spawn(relay_replies(
                socket.clone(),
                self.published.clone(),
                client,
                state.clone(),
                entry.clone(),
                metrics.clone(),
                self.shared.clone(),
            ));
            metrics.flows.inc();
            metrics.active_flows.inc();
            return Some(Flow {
                task_id: entry.endpoint.task_id.clone(),
                backend_addr: addr,
                state,
                backend: Backend {
                    socket,
                    endpoint: entry.clone(),
                    metrics,
                    replies,
                },
            });
        }
        None
    }
}

/// A UDP socket connected to a task (an ephemeral local port).
fn connect(addr: SocketAddr) -> io::Result<UdpSocket> {
    let ty = Type::DGRAM.nonblocking().cloexec();
    let socket = Socket::new(Domain::for_address(addr), ty, Some(SocketProtocol::UDP))?;
    socket.connect(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Whether an error on a task's socket says the task is not there: an ICMP
/// port unreachable (nothing listens) or host or network unreachable (its
/// address no longer answers).
fn task_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH)
    )
}

/// Books a datagram the task refused: the flow's pin is stale and the
/// endpoint is ejected as after a failed connect, so new flows go elsewhere.
fn refused(shared: &Shared, endpoint: &EndpointEntry, state: &FlowState) {
    state.refuse();
    endpoint
        .health
        .record_failure(shared.clock.now(), &shared.config);
    debug!(task = %endpoint.endpoint.task_name, "task refused a udp datagram; flow re-pinned on its next one");
}

/// Relays the task's replies on `backend` to `client` from the published
/// socket, until the flow is dropped (which aborts this task).
async fn relay_replies(
    backend: Arc<UdpSocket>,
    published: Arc<UdpSocket>,
    client: SocketAddr,
    state: Arc<FlowState>,
    endpoint: Arc<EndpointEntry>,
    metrics: Arc<UdpTaskMetrics>,
    shared: Arc<Shared>,
) {
    loop {
        if backend.readable().await.is_err() {
            return;
        }
        let open = REPLY_BUFFER.with_borrow_mut(|buf| loop {
            match backend.try_recv(buf) {
                Ok(len) => {
                    state.touch(shared.clock.now());
                    // A full send queue drops the reply, as the network would.
                    if SockRef::from(&*published).send_to(&buf[..len], &client.into()).is_ok() {
                        metrics.datagrams_to_client.inc();
                        metrics.bytes_to_client.inc_by(len as u64);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if task_gone(&e) => {
                    refused(&shared, &endpoint, &state);
                }
                Err(e) => {
                    debug!(task = %endpoint.endpoint.task_name, error = %e, "udp receive from task failed");
                    return false;
                }
            }
        });
        if !open {
            return;
        }
    }
}
