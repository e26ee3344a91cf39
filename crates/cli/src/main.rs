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
//! - [`list_filter`]: `-f/--filter` of `service ls` and `node ls`.
//! - [`names`]: Docker's names of Shoal's enums, printed and parsed in one place.
//! - [`progress`]: the `overall progress: N out of M tasks` convergence display.
//! - [`service`]: `service create|update|rollback|ls|ps|inspect|scale|rm|logs`.
//! - [`node`]: `node ls|inspect|update|promote|demote|rm|ps`.
//! - [`swarm`]: `swarm init|join|join-token|leave`.
//! - [`task_table`]: the task table `service ps` and `node ps` share.
//! - [`template`]: Go templates for `-f/--format` (gtmpl plus Docker's functions).
#![forbid(unsafe_code)]

mod client;
mod format;
mod inspect;
mod list_filter;
mod names;
mod node;
mod opts;
mod progress;
mod service;
mod swarm;
mod task_table;
mod template;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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

/// The command line as Docker's CLI reads it: a flag that takes a value takes
/// the next word whatever it is (`-p -1:80`, `--restart-delay -5s`), so the
/// value's own check names the flag and the fix.
fn command() -> clap::Command {
    fn values_may_start_with_a_hyphen(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|arg| {
            let takes_value = matches!(
                arg.get_action(),
                clap::ArgAction::Set | clap::ArgAction::Append
            );
            if takes_value && !arg.is_positional() {
                arg.allow_hyphen_values(true)
            } else {
                arg
            }
        })
        .mut_subcommands(values_may_start_with_a_hyphen)
    }
    values_may_start_with_a_hyphen(Cli::command())
}

/// Parses the command line; help and version are printed and end the process
/// with success, any other parse error is one line and Docker's exit status.
fn parse_command_line() -> Result<Cli, ExitCode> {
    let parsed = command()
        .try_get_matches()
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m));
    match parsed {
        Ok(cli) => Ok(cli),
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                let code = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    opts::FLAG_ERROR_EXIT
                } else {
                    0
                };
                return Err(ExitCode::from(code));
            }
            eprintln!("{}", usage_error_line(&e));
            Err(ExitCode::from(opts::FLAG_ERROR_EXIT))
        }
    }
}

/// clap's error as one line: its message (the lines before the first blank
/// one, without the `error: ` prefix), then which command's help to read.
fn usage_error_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    // `Usage: shoal service create [OPTIONS] <IMAGE>` names the command.
    let command: Vec<&str> = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .unwrap_or("shoal")
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '<', '-']))
        .collect();
    format!("{message}; see '{} --help'", command.join(" "))
}

fn main() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
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
            if opts::is_flag_error(&err) {
                ExitCode::from(opts::FLAG_ERROR_EXIT)
            } else {
                ExitCode::FAILURE
            }
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
            if !info.ingress_subnet.is_empty() {
                // As `docker info` shows them, plus the ingress subnet the
                // pools gave (Docker shows it in `network inspect ingress`).
                writeln!(
                    out,
                    "  Default Address Pool: {}",
                    info.default_addr_pool.join(" ")
                )?;
                writeln!(out, "  SubnetSize: {}", info.subnet_size)?;
                writeln!(out, "  Data Path Port: {}", info.data_path_port)?;
                writeln!(out, "  Ingress Subnet: {}", info.ingress_subnet)?;
            }
        }
    }
    Ok(())
}
