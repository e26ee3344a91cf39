use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;

use super::*;

/// A header as the spec lays it out (the mesh's encoder lives in
/// `shoal-mesh`; this one is written from the spec independently).
fn v1(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        local.ip(),
        client.port(),
        local.port()
    )
    .into_bytes()
}

fn v2(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    match (client.ip(), local.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend([0x21, 0x11, 0, 12]);
            out.extend(s.octets());
            out.extend(d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend([0x21, 0x21, 0, 36]);
            out.extend(s.octets());
            out.extend(d.octets());
        }
        _ => unreachable!("one family"),
    }
    out.extend(client.port().to_be_bytes());
    out.extend(local.port().to_be_bytes());
    out
}

#[test]
fn the_specs_v1_examples() {
    let h = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
    assert_eq!(
        parse(h),
        Parsed::Header {
            len: 47,
            client: Some("192.168.0.1:56324".parse().unwrap())
        }
    );
    let h = b"PROXY TCP6 2001:db8::1 2001:db8::11 56324 443\r\n";
    assert_eq!(
        parse(h),
        Parsed::Header {
            len: h.len(),
            client: Some("[2001:db8::1]:56324".parse().unwrap())
        }
    );
    assert_eq!(
        parse(b"PROXY UNKNOWN\r\n"),
        Parsed::Header {
            len: 15,
            client: None
        }
    );
}

#[test]
fn plain_requests_are_not_headers_and_partial_ones_wait() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::NotProxy);
    assert_eq!(parse(b"PRO"), Parsed::Incomplete);
    assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Parsed::Incomplete);
    assert_eq!(parse(&V2_SIGNATURE[..5]), Parsed::Incomplete);
    assert_eq!(parse(b"PROD"), Parsed::NotProxy);
}

#[test]
fn malformed_headers_are_invalid() {
    assert!(matches!(
        parse(b"PROXY TCP4 x y 1 2\r\n"),
        Parsed::Invalid(_)
    ));
    assert!(matches!(
        parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'A'].repeat(20)),
        Parsed::Invalid(_)
    ));
    let mut h = V2_SIGNATURE.to_vec();
    h.extend([0x31, 0x11, 0, 12]);
    assert!(matches!(parse(&h), Parsed::Invalid(_)));
}

#[test]
fn v2_local_command_names_no_client() {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend([0x20, 0x00, 0, 0]);
    assert_eq!(
        parse(&h),
        Parsed::Header {
            len: 16,
            client: None
        }
    );
}

#[tokio::test]
async fn the_header_is_consumed_and_the_request_left() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let client: SocketAddr = "[2001:db8::7]:4242".parse().unwrap();
    let local: SocketAddr = "[::1]:8080".parse().unwrap();
    let mut sent = v2(client, local);
    sent.extend(b"GET /");
    let writer = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, &sent)
            .await
            .unwrap();
        s
    });
    let (mut s, _) = l.accept().await.unwrap();
    let _keep = writer.await.unwrap();
    assert_eq!(read_client_address(&mut s).await.unwrap(), Some(client));
    let mut rest = [0u8; 5];
    s.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"GET /");
}

/// The echo answers a connection that starts with a header with the
/// client's address, and the same request without one as before.
#[tokio::test]
async fn the_echo_names_the_client_of_a_header() {
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let identity = crate::workload::echo::EchoIdentity {
        task_name: "web.1.k3j4".into(),
        hostname: "node-1".into(),
        image: "shoal/echo".into(),
        tag: "latest".into(),
    };
    let server = tokio::spawn(crate::workload::echo::serve(
        listener,
        identity,
        stop.clone(),
    ));
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let client: SocketAddr = "10.1.0.2:41234".parse().unwrap();
    let local: SocketAddr = "10.1.0.3:8080".parse().unwrap();
    for (header, want) in [
        (
            v1(client, local),
            " (shoal/echo tag latest) for 10.1.0.2:41234\n",
        ),
        (
            v2(client, local),
            " (shoal/echo tag latest) for 10.1.0.2:41234\n",
        ),
        (Vec::new(), " (shoal/echo tag latest)\n"),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&header).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert!(
            reply.ends_with(&format!("web.1.k3j4 on node-1{want}")),
            "{reply}"
        );
    }
    stop.cancel();
    let _ = server.await;
}

fn addr_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<u16>()
        )
            .prop_map(|(a, p, b, q)| { (SocketAddr::from((a, p)), SocketAddr::from((b, q))) }),
        (
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>()
        )
            .prop_map(|(a, p, b, q)| { (SocketAddr::from((a, p)), SocketAddr::from((b, q))) }),
    ]
}

proptest! {
    /// Any header of either version, followed by anything, parses to its
    /// length and its client; any prefix of it asks for more bytes.
    #[test]
    fn headers_parse_to_their_client((client, local) in addr_pair(), v2_form in any::<bool>(),
                                     tail in proptest::collection::vec(any::<u8>(), 0..64),
                                     cut in any::<prop::sample::Index>()) {
        let header = if v2_form { v2(client, local) } else { v1(client, local) };
        let mut bytes = header.clone();
        bytes.extend(&tail);
        prop_assert_eq!(parse(&bytes), Parsed::Header { len: header.len(), client: Some(client) });
        let cut = cut.index(header.len());
        prop_assert_eq!(parse(&header[..cut]), Parsed::Incomplete);
    }

    /// Arbitrary bytes never panic the parser, and a reported header length
    /// never exceeds what v1 allows or v2's length field says.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Parsed::Header { len, .. } = parse(&bytes) {
            prop_assert!((15..=16 + 65535).contains(&len));
        }
    }

    /// Requests that do not start like a header are left alone.
    #[test]
    fn http_requests_are_not_headers(path in "[a-z/]{0,20}", method in "GET|POST|HEAD|PUT") {
        let request = format!("{method} /{path} HTTP/1.1\r\n\r\n");
        prop_assert_eq!(parse(request.as_bytes()), Parsed::NotProxy);
    }
}
