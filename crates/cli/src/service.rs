//! `shoal service create|update|rollback|ls|ps|inspect|scale|rm|logs`.
//!
//! # Layout
//! - `create`: flags → `ServiceSpec`, then the progress display.
//! - `update`: flags applied to the current spec (or a rollback requested),
//!   then the progress display; also `rollback`.
//! - `policy`: the `--update-*` / `--rollback-*` flags both share.
//! - `template`: placement, resources and health-check flags both share.
//! - `ls`: the services table, its `-f/--filter` and `--format`.
//! - `ps`: the tasks of the named services (the table is [`crate::task_table`]).
//! - `scale`, `rm`, `inspect`: small verbs over Get/Update/RemoveService.
//! - `logs`: the `ServiceLogs` stream with Docker's line prefix.

mod create;
mod logs;
mod ls;
mod policy;
mod ps;
mod simple;
mod template;
mod update;

use crate::client::{self, Host};

pub use create::CreateArgs;
pub use logs::LogsArgs;
pub use ls::LsArgs;
pub use ps::PsArgs;
pub use update::{RollbackArgs, UpdateArgs};

/// `shoal service ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// Create a new service.
    Create(Box<CreateArgs>),
    /// Update a service.
    Update(Box<UpdateArgs>),
    /// Revert changes to a service's configuration.
    Rollback(RollbackArgs),
    /// List services.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// List the tasks of one or more services.
    Ps(PsArgs),
    /// Display detailed information on one or more services.
    Inspect {
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
        /// Format output using a Go-template path, e.g. '{{.Spec.Name}}'.
        #[arg(short, long)]
        format: Option<String>,
        /// Service names or IDs.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Scale one or multiple replicated services.
    Scale {
        /// Exit immediately instead of waiting for the services to converge.
        #[arg(short, long)]
        detach: bool,
        /// SERVICE=REPLICAS pairs.
        #[arg(required = true, value_name = "SERVICE=REPLICAS")]
        scales: Vec<String>,
    },
    /// Remove one or more services.
    #[command(alias = "remove")]
    Rm {
        /// Service names or IDs.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Fetch the logs of a service.
    Logs(LogsArgs),
}

/// Runs a `service` subcommand. Each verb validates its flags before connecting,
/// so a typo is reported as such even when the daemon is down.
pub async fn run(host: &Host, cmd: ServiceCommand) -> anyhow::Result<()> {
    match cmd {
        ServiceCommand::Create(args) => create::run(host, &args).await,
        ServiceCommand::Update(args) => update::run(host, &args).await,
        ServiceCommand::Rollback(args) => update::rollback(host, &args).await,
        ServiceCommand::Ls(args) => ls::run(host, &args).await,
        ServiceCommand::Ps(args) => ps::run(host, &args).await,
        ServiceCommand::Inspect {
            pretty,
            format,
            services,
        } => simple::inspect(host, pretty, format.as_deref(), &services).await,
        ServiceCommand::Scale { detach, scales } => simple::scale(host, detach, &scales).await,
        ServiceCommand::Rm { services } => simple::rm(host, &services).await,
        ServiceCommand::Logs(args) => logs::run(host, &args).await,
    }
}

/// Connects, for verbs that have validated their flags.
async fn connect(host: &Host) -> anyhow::Result<client::Control> {
    client::connect(host).await
}
