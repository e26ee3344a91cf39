//! `shoal swarm init`.

use std::io::Write;

use shoal_api::pb;

use crate::client::{self, DaemonExt, Host};

/// `shoal swarm ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SwarmCommand {
    /// Initialize a swarm.
    Init {
        /// Advertised address (format: <ip|interface>[:port]).
        #[arg(long = "advertise-addr")]
        advertise_addr: Option<String>,
        /// Task history retention limit.
        #[arg(long = "task-history-limit")]
        task_history_limit: Option<String>,
    },
}

/// Runs a `swarm` subcommand.
pub async fn run(host: &Host, cmd: SwarmCommand) -> anyhow::Result<()> {
    match cmd {
        SwarmCommand::Init {
            advertise_addr,
            task_history_limit,
        } => {
            let limit = match task_history_limit {
                Some(v) => crate::opts::parse_count(&v, "--task-history-limit")?,
                None => 0,
            };
            let mut c = client::connect(host).await?;
            let resp = c
                .swarm_init(pb::SwarmInitRequest {
                    advertise_addr: advertise_addr.unwrap_or_default(),
                    task_history_limit: limit,
                })
                .await
                .daemon()?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "Swarm initialized: current node ({}) is now a manager.",
                resp.node_id
            )?;
            writeln!(out)?;
            writeln!(
                out,
                "To add a worker to this swarm, run 'shoal swarm join-token worker' and follow the instructions."
            )?;
            writeln!(out)?;
            writeln!(
                out,
                "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions."
            )?;
            Ok(())
        }
    }
}
