//! Admin HTTP: `/metrics` (Prometheus text), `/healthz`, and `/routes` (the
//! node's current routing table as JSON, for humans and tests).

use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use shoal_mesh::Mesh;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    mesh: Mesh,
}

/// Binds now (so a taken address fails start-up) and serves until `shutdown`.
pub async fn bind(
    addr: SocketAddr,
    registry: Registry,
    mesh: Mesh,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind --metrics-addr {addr}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/routes", get(routes))
        .with_state(AdminState { registry, mesh });
    Ok(tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(err) = serve.await {
            tracing::error!(%err, "admin HTTP server failed");
        }
    }))
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
