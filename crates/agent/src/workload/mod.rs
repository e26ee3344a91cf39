//! Built-in workloads (`shoal/echo`, `shoal/timecheck`), run inside a task's
//! process through shoald's `workload` subcommand. They read the SHOAL_* env.

pub mod echo;
pub mod timecheck;

use thiserror::Error;

/// A built-in workload could not run.
#[derive(Debug, Error)]
pub enum WorkloadError {
    #[error("bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("install signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the echo server until SIGTERM.
pub async fn echo() -> Result<(), WorkloadError> {
    echo::run().await
}

/// Prints the time check line until SIGTERM.
pub async fn timecheck() -> Result<(), WorkloadError> {
    timecheck::run().await
}

/// Cancelled on SIGTERM or SIGINT.
fn termination() -> Result<tokio_util::sync::CancellationToken, WorkloadError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(WorkloadError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(WorkloadError::Signal)?;
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        t.cancel();
    });
    Ok(token)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}
