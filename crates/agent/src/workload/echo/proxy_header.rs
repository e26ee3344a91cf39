//! Reading a PROXY protocol header (haproxy's spec, v1 and v2) at the start
//! of a connection, when one is there: the mesh sends it for ports that ask
//! for it, carrying the client's address. [`parse`] is the sans-IO part;
//! [`read_client_address`] peeks at the socket with it and consumes the
//! header, leaving the client's own bytes for the HTTP server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1's prefix.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// v1's longest header, CRLF included.
const V1_MAX: usize = 107;
/// Bytes peeked at: room for a v1 header or a v2 one's addresses.
const PEEK: usize = 128;
/// How long a header that has started may take to arrive whole.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Not a PROXY header: the client's own bytes.
    NotProxy,
    /// The start of one (or too few bytes to tell): more bytes are needed.
    Incomplete,
    /// A header of `len` bytes; `client` is None for v1 `UNKNOWN`, a v2
    /// `LOCAL` command or an address family other than IPv4 and IPv6.
    Header {
        len: usize,
        client: Option<SocketAddr>,
    },
    /// A malformed header: the connection must be closed.
    Invalid(&'static str),
}

/// Parses the start of a connection.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let starts = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    match (starts(V1_PREFIX), starts(V2_SIGNATURE)) {
        (false, false) => Parsed::NotProxy,
        _ if buf.is_empty() => Parsed::Incomplete,
        (true, _) if buf.len() < V1_PREFIX.len() => Parsed::Incomplete,
        (true, _) => parse_v1(buf),
        (_, true) if buf.len() < 16 => Parsed::Incomplete,
        (_, true) => parse_v2(buf),
    }
}

/// `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or `PROXY UNKNOWN...\r\n`.
fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    let len = end + 2;
    let Ok(line) = std::str::from_utf8(&buf[V1_PREFIX.len()..end]) else {
        return Parsed::Invalid("v1 header is not ASCII");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Parsed::Header { len, client: None },
        [family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: Option<IpAddr> = match *family {
                "TCP4" => src.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
                _ => src.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            };
            match (ip, sport.parse::<u16>()) {
                (Some(ip), Ok(port)) => Parsed::Header {
                    len,
                    client: Some(SocketAddr::new(ip, port)),
                },
                _ => Parsed::Invalid("v1 header with a bad source address or port"),
            }
        }
        _ => Parsed::Invalid("v1 header is not PROXY TCP4|TCP6|UNKNOWN ..."),
    }
}

/// Signature, version/command, family/transport, length, addresses.
fn parse_v2(buf: &[u8]) -> Parsed {
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return Parsed::Invalid("v2 header with an unknown version or command");
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let addrs = &buf[16..];
    let needed = match buf[13] >> 4 {
        1 => 12,
        2 => 36,
        // AF_UNSPEC or AF_UNIX: no IP address to report.
        _ => return Parsed::Header { len, client: None },
    };
    if command == 0 {
        return Parsed::Header { len, client: None };
    }
    if len < 16 + needed {
        return Parsed::Invalid("v2 header too short for its address family");
    }
    if addrs.len() < needed {
        return Parsed::Incomplete;
    }
    let client = if needed == 12 {
        let ip = Ipv4Addr::new(addrs[0], addrs[1], addrs[2], addrs[3]);
        SocketAddr::new(ip.into(), u16::from_be_bytes([addrs[8], addrs[9]]))
    } else {
        let octets: [u8; 16] = addrs[..16].try_into().expect("16 bytes");
        let port = u16::from_be_bytes([addrs[32], addrs[33]]);
        SocketAddr::new(Ipv6Addr::from(octets).into(), port)
    };
    Parsed::Header {
        len,
        client: Some(client),
    }
}

/// Reads a PROXY header off `stream` if the connection starts with one and
/// returns the client's address it names; leaves the stream untouched
/// otherwise. An error: the header is malformed or never completed.
pub(crate) async fn read_client_address(
    stream: &mut TcpStream,
) -> std::io::Result<Option<SocketAddr>> {
    let mut buf = [0u8; PEEK];
    let deadline = tokio::time::Instant::now() + HEADER_TIMEOUT;
    let (len, client) = loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        match parse(&buf[..n]) {
            Parsed::NotProxy => return Ok(None),
            Parsed::Header { len, client } => break (len, client),
            Parsed::Invalid(why) => {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why))
            }
            Parsed::Incomplete if tokio::time::Instant::now() >= deadline => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "PROXY header incomplete",
                ))
            }
            // Peeking again at once would return the same bytes.
            Parsed::Incomplete => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    let mut rest = len;
    while rest > 0 {
        let n = rest.min(buf.len());
        stream.read_exact(&mut buf[..n]).await?;
        rest -= n;
    }
    Ok(client)
}

#[cfg(test)]
mod tests;
