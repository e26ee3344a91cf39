//! The PROXY protocol header (haproxy's `proxy-protocol.txt`, versions 1 and
//! 2) a port that asks for it sends to its task before the client's bytes:
//! the client's address and the address it connected to.
//!
//! A header is built on the stack (at most 107 bytes, v1's limit), so a
//! connection that sends one allocates nothing for it. Addresses are
//! canonical: an IPv4 client of a dual-stack listener (`::ffff:a.b.c.d`) is
//! sent as IPv4 (`TCP4`, `AF_INET`); should the two addresses still differ in
//! family, the IPv4 one is sent as its IPv4-mapped IPv6 address.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use crate::route::ProxyProtocol;

/// The v2 signature, the first 12 bytes of every v2 header.
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// v1's longest header (`PROXY TCP6` with two full IPv6 addresses).
const MAX_LEN: usize = 107;

/// An encoded header, ready to be sent.
pub(crate) struct ProxyHeader {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl ProxyHeader {
    /// The header of a connection from `client` to `local` (the mesh's
    /// address the client connected to).
    pub(crate) fn encode(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Self {
        let (client, local) = same_family(client, local);
        let mut header = Self {
            buf: [0; MAX_LEN],
            len: 0,
        };
        let mut out = &mut header.buf[..];
        let room = out.len();
        // Writing to a slice of MAX_LEN bytes: both forms fit, by their
        // definition, so the writes cannot fail.
        let _ = match version {
            ProxyProtocol::V1 => write_v1(&mut out, client, local),
            ProxyProtocol::V2 => write_v2(&mut out, client, local),
        };
        header.len = room - out.len();
        header
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`.
fn write_v1(out: &mut &mut [u8], client: SocketAddr, local: SocketAddr) -> std::io::Result<()> {
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    write!(
        out,
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        local.ip(),
        client.port(),
        local.port()
    )
}

/// Signature, version 2 + PROXY, family + STREAM, length, addresses, ports.
fn write_v2(out: &mut &mut [u8], client: SocketAddr, local: SocketAddr) -> std::io::Result<()> {
    out.write_all(&V2_SIGNATURE)?;
    match (client.ip(), local.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.write_all(&[0x21, 0x11])?;
            out.write_all(&12u16.to_be_bytes())?;
            out.write_all(&src.octets())?;
            out.write_all(&dst.octets())?;
        }
        (src, dst) => {
            out.write_all(&[0x21, 0x21])?;
            out.write_all(&36u16.to_be_bytes())?;
            out.write_all(&v6(src).octets())?;
            out.write_all(&v6(dst).octets())?;
        }
    }
    out.write_all(&client.port().to_be_bytes())?;
    out.write_all(&local.port().to_be_bytes())
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Both addresses canonical, and of one family.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, local) = (canonical(client), canonical(local));
    if client.is_ipv4() == local.is_ipv4() {
        return (client, local);
    }
    let mapped = |a: SocketAddr| SocketAddr::new(IpAddr::V6(v6(a.ip())), a.port());
    (mapped(client), mapped(local))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(version: ProxyProtocol, client: &str, local: &str) -> Vec<u8> {
        let header = ProxyHeader::encode(version, client.parse().unwrap(), local.parse().unwrap());
        header.as_bytes().to_vec()
    }

    #[test]
    fn v1_matches_the_specs_examples() {
        assert_eq!(
            encode(ProxyProtocol::V1, "192.168.0.1:56324", "192.168.0.11:443"),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        assert_eq!(
            encode(
                ProxyProtocol::V1,
                "[2001:db8::1]:56324",
                "[2001:db8::11]:443"
            ),
            b"PROXY TCP6 2001:db8::1 2001:db8::11 56324 443\r\n"
        );
    }

    #[test]
    fn v1_of_the_longest_addresses_fits() {
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let header = encode(
            ProxyProtocol::V1,
            &format!("[{ip}]:65535"),
            &format!("[{ip}]:65535"),
        );
        // The spec's 107 bytes leave room for `PROXY UNKNOWN` with addresses.
        assert_eq!(header.len(), 104);
        assert!(header.ends_with(b" 65535 65535\r\n"));
    }

    #[test]
    fn v2_ipv4_is_the_specs_layout() {
        let mut want = V2_SIGNATURE.to_vec();
        want.extend([0x21, 0x11, 0, 12]);
        want.extend([192, 168, 0, 1, 192, 168, 0, 11]);
        want.extend(56324u16.to_be_bytes());
        want.extend(443u16.to_be_bytes());
        assert_eq!(
            encode(ProxyProtocol::V2, "192.168.0.1:56324", "192.168.0.11:443"),
            want
        );
    }

    #[test]
    fn v2_ipv6_is_the_specs_layout() {
        let got = encode(ProxyProtocol::V2, "[2001:db8::1]:56324", "[::1]:8080");
        assert_eq!(got.len(), 16 + 36);
        assert_eq!(&got[..12], &V2_SIGNATURE);
        assert_eq!(&got[12..16], &[0x21, 0x21, 0, 36]);
        let src: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(&got[16..32], &src.octets());
        assert_eq!(&got[32..48], &std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(&got[48..50], &56324u16.to_be_bytes());
        assert_eq!(&got[50..52], &8080u16.to_be_bytes());
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_sent_as_ipv4() {
        assert_eq!(
            encode(
                ProxyProtocol::V1,
                "[::ffff:10.1.0.2]:41234",
                "[::ffff:10.1.0.3]:8080"
            ),
            b"PROXY TCP4 10.1.0.2 10.1.0.3 41234 8080\r\n"
        );
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        assert_eq!(
            encode(ProxyProtocol::V1, "10.1.0.2:41234", "[::1]:8080"),
            b"PROXY TCP6 ::ffff:10.1.0.2 ::1 41234 8080\r\n"
        );
    }
}
