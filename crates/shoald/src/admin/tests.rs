use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{serve, AdminLimits};

/// A server with `/healthz` under `limits`; its address and its stop token.
async fn start(limits: AdminLimits) -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, app, limits, stop.clone()));
    (addr, stop)
}

/// A connection that sent half a request head and nothing more.
async fn half_sent(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    stream
}

/// Reads until the server closes; how long that took.
async fn closed_after(mut stream: TcpStream, within: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {within:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn healthz(addr: std::net::SocketAddr, within: Duration) -> Result<String, String> {
    let ask = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        Ok(reply)
    };
    tokio::time::timeout(within, ask)
        .await
        .map_err(|_| format!("no answer within {within:?}"))?
}

#[tokio::test]
async fn half_sent_requests_and_idle_connections_are_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(400);
    let (addr, stop) = start(AdminLimits {
        header_read_timeout: timeout,
        max_connections: 64,
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(half_sent(addr).await);
    }
    // A connection that sends nothing at all is held no longer.
    held.push(TcpStream::connect(addr).await.unwrap());
    let waits = futures::future::join_all(
        held.into_iter()
            .map(|s| closed_after(s, Duration::from_secs(5))),
    )
    .await;
    for wait in waits {
        let took = wait.unwrap();
        assert!(
            took >= timeout - Duration::from_millis(50),
            "closed after {took:?}"
        );
    }
    assert!(healthz(addr, Duration::from_secs(2))
        .await
        .unwrap()
        .ends_with("ok\n"));
    stop.cancel();
}

#[tokio::test]
async fn beyond_the_cap_connections_wait_and_are_served_once_a_slot_frees() {
    let (addr, stop) = start(AdminLimits {
        header_read_timeout: Duration::from_millis(1500),
        max_connections: 4,
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(half_sent(addr).await);
    }
    // Let the server accept all four before asking.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = healthz(addr, Duration::from_millis(500)).await.unwrap_err();
    assert!(
        err.contains("no answer"),
        "{err}: a fifth connection was served"
    );
    // One slot frees: the next request is answered at once.
    drop(held.pop());
    assert!(healthz(addr, Duration::from_secs(1))
        .await
        .unwrap()
        .ends_with("ok\n"));
    // The other three are closed by the header timeout; the server still answers.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for _ in 0..8 {
        assert!(healthz(addr, Duration::from_secs(1))
            .await
            .unwrap()
            .ends_with("ok\n"));
    }
    stop.cancel();
}
