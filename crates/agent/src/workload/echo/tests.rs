use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn identity() -> EchoIdentity {
    EchoIdentity {
        task_name: "web.1.k3j4".into(),
        hostname: "hostos1".into(),
        image: "shoal/echo:2".into(),
        tag: "2".into(),
    }
}

/// Reads one response with a Content-Length body from `s`.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed early: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[test]
fn body_starts_with_the_task_name() {
    let body = identity().body();
    assert_eq!(body, "web.1.k3j4 on hostos1 (shoal/echo:2 tag 2)\n");
    assert_eq!(body.split_whitespace().next(), Some("web.1.k3j4"));
}

#[tokio::test]
async fn serves_identity_with_keep_alive() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, identity(), stop.clone()));

    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let resp = read_response(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(
            resp.to_ascii_lowercase()
                .contains("x-shoal-task: web.1.k3j4"),
            "{resp}"
        );
        assert!(
            resp.ends_with("web.1.k3j4 on hostos1 (shoal/echo:2 tag 2)\n"),
            "{resp}"
        );
    }

    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("server stops promptly")
        .unwrap()
        .unwrap();
}

/// A client that sends its request and at once shuts down its write side
/// (`printf 'GET / ...' | nc -q`, many scripts) still gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_clients_that_half_close_after_sending() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, identity(), stop.clone()));

    const CLIENTS: usize = 300;
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        clients.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request: &[u8] = if i % 2 == 0 {
                b"GET / HTTP/1.0\r\n\r\n"
            } else {
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            };
            s.write_all(request).await.unwrap();
            s.shutdown().await.unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.unwrap();
            reply
        });
    }
    let mut answered = 0;
    while let Some(reply) = clients.join_next().await {
        let reply = reply.unwrap();
        if reply.ends_with("web.1.k3j4 on hostos1 (shoal/echo:2 tag 2)\n") {
            answered += 1;
        }
    }
    assert_eq!(answered, CLIENTS, "every half-closing client is answered");

    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("server stops promptly")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn udp_datagrams_are_answered_with_the_task_node_and_payload() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve_udp(socket, identity(), stop.clone()));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(addr).await.unwrap();
    let mut buf = [0u8; 256];
    for payload in ["ping 1", "ping 2"] {
        client.send(payload.as_bytes()).await.unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            format!("web.1.k3j4 on hostos1: {payload}")
        );
    }
    stop.cancel();
    server.await.unwrap().unwrap();
}
