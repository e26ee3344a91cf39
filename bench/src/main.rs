//! Shoal's benchmark harness: the routing mesh beside HAProxy and nginx, and
//! the control plane's figures.
//!
//! `shoal-bench mesh` installs what is missing (wrk, HAProxy, nginx with the stream
//! module), starts three nginx backends and every proxy on loopback, runs the
//! workloads interleaved across targets and prints one markdown table with
//! medians and Shoal's ratios. `shoal-bench mesh-proxy` is the Shoal target: the
//! `shoal-mesh` data path fed a one-service routing table, run as a child process.
//! `shoal-bench control` measures the control plane on real `shoald`
//! processes in network namespaces (convergence, feed propagation, one
//! manager against hundreds of simulated agents).
//! Nothing here runs under `cargo test`; only the parsers are unit-tested.
//!
//! # Layout
//!
//! - `install`: idempotent apt-get install of the peer proxies and wrk.
//! - `procs`: child processes stopped by PID on drop, panic and Ctrl-C.
//! - `procfs`: CPU ticks and RSS of a process tree from `/proc`.
//! - `wrk`: running wrk and parsing its output.
//! - `targets`: backend and proxy configurations, and starting them.
//! - `mesh_proxy`: the `mesh-proxy` subcommand (Shoal's target process).
//! - `idle`: the W4 idle-connection client and the fd limit.
//! - `report`: aggregation over runs and the markdown table.
//! - `run`: the interleaved measurement loop.
//! - `control`: the `control` subcommand (its own layout is in its module doc).
//! - `udp`: the `udp` subcommand: UDP through the mesh beside nginx (its layout is in its module doc).

#![deny(unsafe_op_in_unsafe_fn)]

mod control;
mod idle;
mod install;
mod mesh_proxy;
mod procfs;
mod procs;
mod report;
mod run;
mod targets;
mod udp;
mod wrk;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "shoal-bench", about = "Shoal data-plane benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the routing mesh beside HAProxy and nginx and print a markdown table.
    Mesh(run::MeshOpts),
    /// Measure the control plane (convergence, feed propagation, simulated agents).
    Control(control::ControlOpts),
    /// Measure UDP request/response through the mesh beside nginx's stream UDP proxy.
    Udp(udp::UdpOpts),
    /// Run the UDP echo backends the `udp` subcommand measures through.
    UdpEcho {
        /// Comma-separated addresses to answer on.
        #[arg(long, value_delimiter = ',', required = true)]
        listen: Vec<SocketAddr>,
    },
    /// Run the Shoal target: a Mesh routing one service over the given backends.
    MeshProxy {
        /// Published address (its IP is the mesh's listen IP).
        #[arg(long)]
        listen: SocketAddr,
        /// Comma-separated backend addresses.
        #[arg(long, value_delimiter = ',', required = true)]
        backends: Vec<SocketAddr>,
        /// The mesh's data path: auto (io_uring where the kernel allows it,
        /// as in shoald), epoll or io_uring.
        #[arg(long, default_value = "auto")]
        data_path: shoal_mesh::DataPath,
        /// The published port's protocol: tcp or udp.
        #[arg(long, default_value = "tcp", value_parser = mesh_proxy::parse_protocol)]
        protocol: shoal_mesh::Protocol,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Mesh(opts) => run::mesh(opts),
        Command::Control(opts) => control::control(opts),
        Command::Udp(opts) => udp::udp(opts),
        Command::UdpEcho { listen } => udp::run_echo(&listen),
        Command::MeshProxy {
            listen,
            backends,
            data_path,
            protocol,
        } => mesh_proxy::run(listen, backends, data_path, protocol),
    }
}

/// Parses a duration such as `10s` or `500ms`.
fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}
