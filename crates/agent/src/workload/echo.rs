//! `shoal/echo`: an HTTP/1.1 server answering every request with the task's
//! identity, e.g. `web.1.k3j4... on hostos1 (shoal/echo:2 tag 2)`. A
//! connection that starts with a PROXY protocol header (v1 or v2, which the
//! mesh sends for ports that ask for it) is answered with the client's
//! address it names too: `... (shoal/echo:2 tag 2) for 10.1.0.2:41234`. On
//! the same port number, a UDP echo answers every datagram with the task's
//! name, node and the datagram: `web.1.k3j4... on hostos1: <payload>`.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::WorkloadError;

mod proxy_header;

/// Who is answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoIdentity {
    pub task_name: String,
    pub hostname: String,
    pub image: String,
    pub tag: String,
}

// === impl EchoIdentity ===

impl EchoIdentity {
    /// From the SHOAL_* environment of a task.
    pub fn from_env() -> Self {
        Self {
            task_name: super::env_or("SHOAL_TASK_NAME", "echo"),
            hostname: super::env_or("SHOAL_NODE_HOSTNAME", "localhost"),
            image: super::env_or("SHOAL_IMAGE", "shoal/echo"),
            tag: super::env_or("SHOAL_IMAGE_TAG", "latest"),
        }
    }

    /// The response body.
    pub fn body(&self) -> String {
        format!(
            "{} on {} ({} tag {})\n",
            self.task_name, self.hostname, self.image, self.tag
        )
    }

    /// The response body of a connection whose PROXY header named `client`.
    pub fn body_for(&self, client: Option<SocketAddr>) -> String {
        match client {
            None => self.body(),
            Some(client) => format!(
                "{} on {} ({} tag {}) for {client}\n",
                self.task_name, self.hostname, self.image, self.tag
            ),
        }
    }
}

pub(crate) async fn run() -> Result<(), WorkloadError> {
    let stop = super::termination()?;
    let port = super::env_or("PORT", "80");
    let addr = format!("0.0.0.0:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| WorkloadError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let identity = EchoIdentity::from_env();
    // The UDP echo is a bonus: a task whose UDP port is taken still serves
    // HTTP (in loopback mode only the TCP port was found free).
    let udp = match UdpSocket::bind(&addr).await {
        Ok(socket) => Some(tokio::spawn(serve_udp(
            socket,
            identity.clone(),
            stop.clone(),
        ))),
        Err(e) => {
            eprintln!("shoal/echo: no UDP echo: bind {addr}/udp: {e}");
            None
        }
    };
    serve(listener, identity, stop)
        .await
        .map_err(|source| WorkloadError::Io {
            what: "accept",
            source,
        })?;
    if let Some(Ok(Err(source))) = match udp {
        Some(task) => Some(task.await),
        None => None,
    } {
        return Err(WorkloadError::Io {
            what: "udp receive",
            source,
        });
    }
    Ok(())
}

/// Answers every datagram on `socket` with `<task> on <node>: <datagram>`
/// until `shutdown` fires.
pub async fn serve_udp(
    socket: UdpSocket,
    identity: EchoIdentity,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let prefix = format!("{} on {}: ", identity.task_name, identity.hostname);
    let mut buf = vec![0; 65_535];
    let mut reply = Vec::with_capacity(prefix.len() + buf.len());
    loop {
        let (len, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // An ICMP error for an earlier reply: not this socket's fault.
                Err(e) if is_transient(&e) || e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            },
        };
        reply.clear();
        reply.extend_from_slice(prefix.as_bytes());
        reply.extend_from_slice(&buf[..len]);
        // A reply that does not fit a datagram is cut, as the client asked
        // for one datagram back.
        reply.truncate(buf.len());
        // A lost reply is UDP's normal; the client asks again.
        let _ = socket.send_to(&reply, peer).await;
    }
}

/// Serves on `listener` until `shutdown` fires; then stops accepting and lets
/// open connections finish their current request (bounded), so a task being
/// stopped after its withdrawal from routing drops nothing.
pub async fn serve(
    listener: TcpListener,
    identity: EchoIdentity,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let identity = Arc::new(identity);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                // Per-connection errors (e.g. ECONNABORTED) must not stop the server.
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e),
            },
        };
        // Reap finished connections as we go.
        while connections.try_join_next().is_some() {}
        let identity = identity.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            // A malformed or unfinished PROXY header: the spec says to close.
            let Ok(client) = proxy_header::read_client_address(&mut stream).await else {
                return;
            };
            let svc = service_fn(move |req| respond(req, peer, client, identity.clone()));
            // half_close: a client that shuts down its write side after
            // sending (`nc -q`, many scripts) still waits for the answer;
            // without it hyper drops the connection on that EOF.
            let conn = http1::Builder::new()
                .keep_alive(true)
                .half_close(true)
                .serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(GRACEFUL_LIMIT, conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACEFUL_LIMIT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// How long open connections get to finish after SIGTERM.
const GRACEFUL_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
        || e.raw_os_error() == Some(libc::EMFILE)
}

/// `client`: the address a PROXY header named, if the connection had one.
async fn respond(
    req: Request<Incoming>,
    peer: SocketAddr,
    client: Option<SocketAddr>,
    identity: Arc<EchoIdentity>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    {
        let mut out = std::io::stdout().lock();
        let _ = match client {
            None => writeln!(out, "{} {} from {peer}", req.method(), req.uri()),
            Some(client) => writeln!(
                out,
                "{} {} from {client} via {peer}",
                req.method(),
                req.uri()
            ),
        };
        let _ = out.flush();
    }
    let body = Bytes::from(identity.body_for(client));
    let resp = Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-shoal-task", identity.task_name.as_str())
        .body(Full::new(body.clone()))
        .unwrap_or_else(|_| Response::new(Full::new(body)));
    Ok(resp)
}

#[cfg(test)]
mod tests;
