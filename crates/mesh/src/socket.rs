//! Mesh sockets: binding a published port's SO_REUSEPORT group (socket2)
//! and the options every client and backend socket gets.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// Listen backlog of every published port.
const BACKLOG: i32 = 1024;

/// Binds `count` listening sockets on `addr`, one per worker: a SO_REUSEPORT
/// group across which the kernel spreads new connections.
///
/// The unspecified address (`0.0.0.0` or `::`) is served dual-stack: the
/// group listens on `[::]` with IPV6_V6ONLY off, so IPv6 clients reach the
/// port as IPv4 ones do (those appear as `::ffff:a.b.c.d`). Where IPv6 is
/// disabled (no AF_INET6 sockets, or `::` not bindable) it listens on
/// `0.0.0.0`.
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
    if addr.ip().is_unspecified() {
        let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port());
        match bind_group_on(any6, keepalive, count) {
            Err(e) if ipv6_unavailable(&e) => {}
            bound => return bound,
        }
        let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
        return bind_group_on(any4, keepalive, count);
    }
    bind_group_on(addr, keepalive, count)
}

/// This host cannot listen on IPv6.
fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

fn bind_group_on(
    addr: SocketAddr,
    keepalive: Duration,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    if count <= 1 {
        return Ok(vec![bind_socket(addr, keepalive, false)?]);
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        probe.set_only_v6(false)?;
    }
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
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    tune(&socket, keepalive);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Sets TCP_NODELAY and keepalive on a socket. Failures are not fatal.
pub(crate) fn tune<'s>(socket: impl Into<SockRef<'s>>, keepalive: Duration) {
    let socket = socket.into();
    let _ = socket.set_tcp_nodelay(true);
    let _ = socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(keepalive));
}
