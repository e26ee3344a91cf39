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
