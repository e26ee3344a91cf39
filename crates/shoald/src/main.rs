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
//! - `data_root`: the data root's permissions and crash-safe private writes.
//! - `api_socket`: the API socket: its owner, group and mode, and an accept
//!   loop that survives descriptor exhaustion.
//! - `lifecycle`: start-up and the ordered shutdown.
//! - `control`: the `Control` service before and after `swarm init`.
//! - `membership`: `swarm init`, `join`, `leave`, and the roles a restart
//!   brings back.
//! - `role_change`: `node promote` / `node demote` as the node carries them out.
//! - `renewal`: node certificate renewal, and learning of `node rm`.
//! - `daemon`: the node's state and the steps its roles are made of.
//! - `role`: the role the node runs now, held in one place.
//! - `feed`: discovery feed → mesh routing table.
//! - `host_network`: the advertise address, an ingress subnet clear of the host's networks, the links removed on leave.
//! - `admin`: `/metrics`, `/healthz`, `/routes`.
//! - `tls`: the manager's mTLS listener for other nodes, and channels to it.
//!
//! Files import only files below them in this list (bottom up: `tls`,
//! `role`, `daemon`, then `renewal` and `role_change`, `membership`,
//! `control`, `lifecycle`), never one that imports them back.

mod admin;
mod api_socket;
mod config;
mod control;
mod daemon;
mod data_root;
mod feed;
mod host_network;
mod lifecycle;
mod membership;
mod node;
mod renewal;
mod role;
mod role_change;
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
    // Whatever the daemon creates is private unless it says otherwise (the
    // API socket, its directory); task processes get Docker's 022 back.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    match raise_open_file_limit() {
        Ok(limit) => tracing::info!(
            limit,
            "open file limit (RLIMIT_NOFILE) raised to the hard limit"
        ),
        Err(err) => tracing::warn!(%err, "could not raise the open file limit (RLIMIT_NOFILE)"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(lifecycle::run(cli.daemon))
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

/// Raises the soft RLIMIT_NOFILE to the hard limit (each proxied connection
/// takes two descriptors; the usual soft default of 1024 is reached at about
/// 500) and returns the new soft limit.
fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer to ours.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one rlimit through a valid pointer to ours.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}
