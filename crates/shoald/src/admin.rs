//! Admin HTTP: `/metrics` (Prometheus text), `/healthz`, and `/routes` (the
//! node's current routing table as JSON, for humans and tests).
//!
//! It listens on all addresses by default, so it bounds what a client can
//! hold: a request's headers must arrive within [`AdminLimits::header_read_timeout`]
//! (also between requests on a kept-alive connection), and at most
//! [`AdminLimits::max_connections`] connections are served at once; more
//! wait in the kernel's listen queue until one ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use shoal_mesh::Mesh;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    mesh: Mesh,
}

/// What one client may hold of the admin server.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    /// A connection that has not sent a whole request head this long after
    /// it opened (or after its last response) is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// Binds now (so a taken address fails start-up) and serves until `shutdown`.
pub async fn bind(
    addr: SocketAddr,
    registry: Registry,
    mesh: Mesh,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind --metrics-addr {addr}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/routes", get(routes))
        .with_state(AdminState { registry, mesh });
    Ok(tokio::spawn(serve(
        listener,
        app,
        AdminLimits::default(),
        shutdown,
    )))
}

/// Serves `app` on `listener` within `limits` until `shutdown`, then lets
/// open connections finish their current request.
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: AdminLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut accept_failing = false;
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        let stream = match stream {
            Ok((stream, _)) => {
                accept_failing = false;
                stream
            }
            Err(err) => {
                // Out of descriptors, most likely: wait instead of spinning.
                if !std::mem::replace(&mut accept_failing, true) {
                    tracing::warn!(%err, "admin HTTP: accept failed; retrying");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (app, shutdown) = (app.clone(), shutdown.clone());
        connections.spawn(async move {
            serve_connection(stream, app, limits, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: AdminLimits,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request| app.clone().oneshot(request));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%err, "admin HTTP connection ended");
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(err) = encoder.encode(&state.registry.gather(), &mut buf) {
        tracing::warn!(%err, "encode metrics");
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_string())],
        buf,
    )
}

async fn routes(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let table = state.mesh.table();
    let services: Vec<_> = table
        .services()
        .map(|s| {
            json!({
                "service_id": s.id(),
                "service": s.name(),
                "ports": s.ports().map(|p| json!({"published": p.published, "target": p.target})).collect::<Vec<_>>(),
                "endpoints": s.endpoints().map(|e| json!({
                    "task_id": &*e.task_id,
                    "task": &*e.task_name,
                    "node": &*e.node,
                    "draining": e.draining,
                    "addrs": e.ports.iter().map(|(t, a)| json!({"target": t, "addr": a.to_string()})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(
        json!({ "revision": table.revision(), "listening": state.mesh.listening_ports(), "services": services }),
    )
}

#[cfg(test)]
mod tests;
