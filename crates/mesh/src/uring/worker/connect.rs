//! A new connection: its entry in the slab, and the connect to each
//! candidate of its plan in turn (with a linked timeout) until one answers.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types};
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use tracing::debug;

use super::op::{user_data, Op, Side};
use super::state::Conn;
use super::Worker;
use crate::accept_errors::ErrorReason;
use crate::balancer::{self, Plan};
use crate::proxy_header::ProxyHeader;
use crate::route::ProxyProtocol;
use crate::socket;

impl Worker {
    pub(super) fn accepted(&mut self, client: OwnedFd, port: u16) {
        let shared = &self.shared;
        let Some(service) = shared.table.load().service_for_port(port) else {
            debug!(port, "no service on port; closing");
            return;
        };
        let Some(port_entry) = service.port(port) else {
            return;
        };
        port_entry.metrics.accepted.inc();
        // TCP_NODELAY and keepalive are inherited from the listening socket.
        let plan = Plan::new(&service, port_entry, shared.clock.now());
        let conn = Box::new(Conn {
            client,
            backend: None,
            connected: false,
            port,
            proxy_protocol: port_entry.route.proxy_protocol,
            service,
            plan,
            attempts: 0,
            endpoint: None,
            addr: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
            timeout: types::Timespec::from(shared.config.connect_timeout),
            connect_started: Instant::now(),
            dirs: Default::default(),
            inflight: 0,
            failed: false,
            closing: false,
            shut: false,
            _tracked: shared.connections.token(),
        });
        let slot = self.conns.insert(conn);
        self.open.fetch_add(1, Ordering::Relaxed);
        self.connect_next(slot);
        if self.conns.get_mut(slot).is_some_and(|c| !c.closing) {
            // The request is often queued already: read it while connecting.
            self.recv(slot, Side::Up);
        }
    }

    /// Starts a connect to the plan's next candidate, or gives up.
    pub(super) fn connect_next(&mut self, slot: usize) {
        let config = &self.shared.config;
        loop {
            let c = self.conns.get_mut(slot).expect("a live connection");
            let next = c
                .service
                .port(c.port)
                .and_then(|p| c.plan.iter(p).nth(c.attempts))
                .map(|(e, a)| (e.clone(), *a));
            let Some((entry, addr)) = next else {
                if let Some(p) = c.service.port(c.port) {
                    p.metrics.refused.inc();
                }
                debug!(service = %c.service.name(), port = c.port, "no endpoint reachable; closing client");
                c.failed = true;
                self.finish(slot);
                return;
            };
            c.attempts += 1;
            let socket = match backend_socket(addr, config.keepalive) {
                Ok(s) => s,
                Err(e) if ErrorReason::is_local_exhaustion(&e) => {
                    // Out of descriptors or memory here: no endpoint is at
                    // fault (none is ejected), and every one would fail alike.
                    if let Some(p) = c.service.port(c.port) {
                        p.metrics.refused.inc();
                    }
                    debug!(service = %c.service.name(), port = c.port, error = %e, "no backend socket; closing client");
                    c.failed = true;
                    self.finish(slot);
                    return;
                }
                Err(e) => {
                    balancer::connect_failed(
                        &c.service,
                        &entry,
                        addr,
                        &e,
                        config,
                        self.shared.clock,
                    );
                    continue;
                }
            };
            c.addr = SockAddr::from(addr);
            c.connect_started = Instant::now();
            let fd = socket.as_raw_fd();
            c.backend = Some(socket);
            c.endpoint = Some((entry, addr));
            c.inflight += 2;
            let connect = opcode::Connect::new(types::Fd(fd), c.addr.as_ptr().cast(), c.addr.len())
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(user_data(Op::Connect, Side::Up, slot));
            let timeout = opcode::LinkTimeout::new(&c.timeout)
                .build()
                .user_data(user_data(Op::ConnectTimeout, Side::Up, slot));
            // SAFETY: the address lives in the boxed connection, which is
            // freed only with nothing in flight; the timeout is read at
            // submission.
            unsafe { self.push(&[connect, timeout]) };
            return;
        }
    }

    pub(super) fn connect_completed(&mut self, slot: usize, res: i32) {
        let c = self.conns.get_mut(slot).expect("a live connection");
        c.inflight -= 1;
        if c.closing {
            self.finish(slot);
            return;
        }
        let (entry, addr) = c.endpoint.clone().expect("a connect in flight");
        if res < 0 {
            let err = if res == -libc::ECANCELED {
                io::Error::new(io::ErrorKind::TimedOut, "connect timed out")
            } else {
                io::Error::from_raw_os_error(-res)
            };
            balancer::connect_failed(
                &c.service,
                &entry,
                addr,
                &err,
                &self.shared.config,
                self.shared.clock,
            );
            c.backend = None;
            c.endpoint = None;
            self.connect_next(slot);
            return;
        }
        balancer::connected(&entry, c.connect_started.elapsed());
        entry.metrics.active.inc();
        c.connected = true;
        if let Some(version) = c.proxy_protocol {
            if let Err(e) = send_proxy_header(c, version) {
                self.fail(slot, Side::Up, e);
                return;
            }
        }
        self.recv(slot, Side::Down);
        let c = self.conn(slot);
        let up = c.dir(Side::Up);
        if up.chunk.is_some() {
            self.send(slot, Side::Up);
        } else if up.eof {
            self.end(slot, Side::Up);
        }
    }
}

/// Sends the task the PROXY header of the client's connection, before any
/// of its bytes: a plain send(2), as it is the first on a socket that has
/// just connected, whose send buffer has room for it.
fn send_proxy_header(c: &Conn, version: ProxyProtocol) -> io::Result<()> {
    let client = SockRef::from(&c.client);
    let peer = client.peer_addr()?.as_socket();
    let local = client.local_addr()?.as_socket();
    let (Some(peer), Some(local)) = (peer, local) else {
        return Err(io::Error::other(
            "the client's address is not an IP address",
        ));
    };
    let header = ProxyHeader::encode(version, peer, local);
    let backend = c.backend.as_ref().expect("a connected backend");
    let sent = SockRef::from(backend).send_with_flags(header.as_bytes(), libc::MSG_NOSIGNAL)?;
    if sent < header.as_bytes().len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the PROXY header did not fit the backend's send buffer",
        ));
    }
    Ok(())
}

/// A non-blocking backend socket with TCP_NODELAY and keepalive set, as the
/// epoll path's.
fn backend_socket(addr: SocketAddr, keepalive: Duration) -> io::Result<OwnedFd> {
    let ty = Type::STREAM.nonblocking().cloexec();
    let socket = Socket::new(Domain::for_address(addr), ty, Some(Protocol::TCP))?;
    socket::tune(&socket, keepalive);
    Ok(socket.into())
}
