//! `shoald`, the Shoal node daemon.
//!
//! One per node. It serves the gRPC API on a Unix socket (the CLI's
//! `Control`, the agents' `Dispatcher`), runs the manager when the node is
//! one, runs the agent that executes this node's tasks, feeds the routing
//! mesh from the discovery feed, and serves `/metrics` over HTTP. The
//! `workload` subcommand is how built-in workloads (`shoal/echo`,
//! `shoal/timecheck`) run as task processes.
//!
//! # Layout
//! - `config`: command-line flags.
//! - `node`: the node's persistent identity.
//! - `daemon`: role wiring, start-up and the ordered shutdown.
//! - `control`: the `Control` service before and after `swarm init`.
//! - `feed`: discovery feed → mesh routing table.
//! - `host_network`: the advertise address, an ingress subnet clear of the host's networks, the links removed on leave.
//! - `admin`: `/metrics`, `/healthz`, `/routes`.
//! - `tls`: the manager's mTLS listener for other nodes, and channels to it.

mod admin;
mod config;
mod control;
mod daemon;
mod feed;
mod host_network;
mod node;
mod tls;

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = config::Cli::parse();
    if let Some(config::Command::Workload { name }) = &cli.command {
        return run_workload(name);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(daemon::run(cli.daemon))
}

fn run_workload(name: &config::Workload) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async {
        match name {
            config::Workload::Echo => shoal_agent::workload::echo().await,
            config::Workload::Timecheck => shoal_agent::workload::timecheck().await,
        }
    })?;
    Ok(())
}
