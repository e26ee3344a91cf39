//! `shoal`: Docker Swarm's CLI verbs, spoken over gRPC to the local `shoald`.
//!
//! Flags, defaults, table columns and the convergence display follow Docker's
//! CLI so a Swarm user's muscle memory works. Every error ends up as one line
//! on stderr and a non-zero exit.
//!
//! # Layout
//! - [`client`]: the `-H/--host` address, connecting, and mapping gRPC errors.
//! - [`opts`]: client-side flag parsing and validation (`--publish`, `--replicas`, ...).
//! - [`format`]: Docker-style tables, human durations, port columns, timestamps.
//! - [`inspect`]: Docker-shaped JSON for services, tasks and nodes, and `--format`.
//! - [`progress`]: the `overall progress: N out of M tasks` convergence display.
//! - [`service`]: `service create|update|rollback|ls|ps|inspect|scale|rm|logs`.
//! - [`node`]: `node ls|inspect|update|promote|demote|rm|ps`.
//! - [`swarm`]: `swarm init|join|join-token|leave`.
#![forbid(unsafe_code)]

mod client;
mod format;
mod inspect;
mod node;
mod opts;
mod progress;
mod service;
mod swarm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Swarm-style services and routing mesh"
)]
struct Cli {
    /// Daemon socket to connect to: unix:///PATH or tcp://HOST:PORT.
    #[arg(short = 'H', long, env = "SHOAL_HOST", default_value = client::DEFAULT_HOST, global = true)]
    host: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the swarm.
    Swarm {
        #[command(subcommand)]
        command: swarm::SwarmCommand,
    },
    /// Manage services.
    Service {
        #[command(subcommand)]
        command: service::ServiceCommand,
    },
    /// Manage swarm nodes.
    Node {
        #[command(subcommand)]
        command: node::NodeCommand,
    },
    /// Return low-level information on tasks, services or nodes.
    Inspect(inspect::InspectArgs),
    /// Show the shoal version information.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let host = cli.host.clone();
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if client::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", client::one_line(&err, &host));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let host = client::Host::parse(&cli.host)?;
    match cli.command {
        Command::Swarm { command } => swarm::run(&host, command).await,
        Command::Service { command } => service::run(&host, command).await,
        Command::Node { command } => node::run(&host, command).await,
        Command::Inspect(args) => inspect::run(&host, args).await,
        Command::Version => version(&host).await,
    }
}

/// `shoal version`: the client's version, and the daemon's when it answers.
async fn version(host: &client::Host) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Client:")?;
    writeln!(out, " Version:           {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, " API version:       shoal.v1")?;
    writeln!(
        out,
        " OS/Arch:           {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )?;
    drop(out);
    if let Ok(mut c) = client::connect(host).await {
        if let Ok(info) = c.info(shoal_api::pb::InfoRequest {}).await {
            let info = info.into_inner();
            let mut out = std::io::stdout().lock();
            writeln!(out)?;
            writeln!(out, "Server:")?;
            writeln!(out, " Engine Version:    {}", info.engine_version)?;
            writeln!(
                out,
                " Node:              {} ({})",
                info.hostname, info.node_id
            )?;
            writeln!(out, " Swarm:             {}", info.local_node_state)?;
            if info.node_cert_expiry_ms > 0 {
                // As `docker info` shows the cluster's CAConfig.NodeCertExpiry.
                writeln!(out, "  CA Configuration:")?;
                writeln!(
                    out,
                    "   Expiry Duration: {}",
                    format::human_duration(std::time::Duration::from_millis(
                        info.node_cert_expiry_ms
                    ))
                )?;
            }
        }
    }
    Ok(())
}
