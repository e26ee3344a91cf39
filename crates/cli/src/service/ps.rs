//! `shoal service ps`: the tasks of the named services in the task table.

use anyhow::Context;
use shoal_api::pb;

use crate::client::{DaemonExt, Host};
use crate::opts;
use crate::task_table::{self, RowOptions};

/// `shoal service ps SERVICE...`.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Filter output based on conditions provided (desired-state=, node=, name=, id=).
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Do not truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Do not map IDs to names.
    #[arg(long = "no-resolve")]
    pub no_resolve: bool,
    /// Only display task IDs (in full, as Docker's).
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: 'table', 'table TEMPLATE', 'json' or a Go template
    /// ({{.ID}} {{.Name}} {{.Image}} {{.Node}} {{.DesiredState}}
    /// {{.CurrentState}} {{.Error}} {{.Ports}}).
    #[arg(long)]
    pub format: Option<String>,
    /// Service names or IDs.
    #[arg(required = true)]
    pub services: Vec<String>,
}

/// Lists the tasks of the named services.
pub async fn run(host: &Host, a: &PsArgs) -> anyhow::Result<()> {
    let filters = opts::parse_task_filters(&a.filter)?;
    let mut c = super::connect(host).await?;
    let mut ids = Vec::new();
    for s in &a.services {
        let svc = c
            .get_service(pb::GetServiceRequest { service: s.clone() })
            .await
            .daemon()?
            .service
            .with_context(|| format!("no such service: {s}"))?;
        ids.push(svc.id);
    }
    let tasks = c
        .list_tasks(pb::ListTasksRequest {
            services: ids,
            nodes: Vec::new(),
            desired_states: filters.desired_states.clone(),
        })
        .await
        .daemon()?
        .tasks;
    let hosts = task_table::hostnames(&mut c).await?;
    let opts = RowOptions {
        // As Docker's: `-q` prints whole IDs.
        no_trunc: a.no_trunc || a.quiet,
        no_resolve: a.no_resolve,
    };
    let rows = task_table::rows(&tasks, &hosts, &filters, opts, shoal_api::now_ms());
    task_table::print(&rows, a.quiet, a.format.as_deref())
}
