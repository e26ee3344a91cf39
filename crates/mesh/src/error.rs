//! [`MeshError`], every failure the mesh reports.

use std::net::SocketAddr;

use crate::route::Protocol;

/// Errors of the mesh. Those returned by `apply_*` are per port and non-fatal.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A published port could not be bound; it is retried on the next update.
    #[error("bind {addr}{} for service {service}: {source}", .protocol.suffix())]
    Bind {
        addr: SocketAddr,
        port: u16,
        protocol: Protocol,
        service: String,
        source: std::io::Error,
    },
    /// Two services claimed the same published port; the later one owns it.
    #[error(
        "published port {port} of service {service} was already claimed by service {previous}"
    )]
    PortConflict {
        port: u16,
        service: String,
        previous: String,
    },
    #[error("register mesh metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("start the mesh worker threads: {0}")]
    Workers(std::io::Error),
}
