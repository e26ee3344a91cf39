//! `shoal service ps`: one row per task, the newest of each slot first and
//! older ones indented with ` \_ `.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context;
use shoal_api::pb::{self, TaskState};

use crate::client::{DaemonExt, Host};
use crate::format::{age, ellipsis, human_duration, natural_cmp, port, Table};
use crate::opts::{self, TaskFilters};

/// Docker's ERROR column width when truncating.
const MAX_ERR: usize = 30;

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
    /// Only display task IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Service names or IDs.
    #[arg(required = true)]
    pub services: Vec<String>,
}

/// How rows are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowOptions {
    /// Full IDs and errors.
    pub no_trunc: bool,
    /// Node IDs instead of hostnames.
    pub no_resolve: bool,
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
    let hosts = crate::node::hostnames(&mut c).await?;
    let opts = RowOptions {
        no_trunc: a.no_trunc,
        no_resolve: a.no_resolve,
    };
    let rows = rows(&tasks, &hosts, &filters, opts, shoal_api::now_ms());
    print(&rows, a.quiet)
}

/// Prints `rows` as the `service ps` / `node ps` table, or only their IDs.
pub fn print(rows: &[Vec<String>], quiet: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if quiet {
        for r in rows {
            writeln!(out, "{}", r[0])?;
        }
        return Ok(());
    }
    write!(out, "{}", table(rows).render())?;
    Ok(())
}

/// The task table with Docker's header.
pub fn table(rows: &[Vec<String>]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
        "PORTS",
    ]);
    for r in rows {
        t.row(r.clone());
    }
    t
}

fn state(s: i32) -> TaskState {
    TaskState::try_from(s).unwrap_or(TaskState::New)
}

/// Docker's task name in `ps`: `web.1`, or `web.<node id>` for global tasks.
pub fn slot_name(t: &pb::Task) -> String {
    if t.slot > 0 {
        format!("{}.{}", t.service_name, t.slot)
    } else {
        format!("{}.{}", t.service_name, t.node_id)
    }
}

fn matches(t: &pb::Task, f: &TaskFilters, hosts: &HashMap<String, String>) -> bool {
    let desired = shoal_api::state::task_state_name(state(t.desired_state));
    let host = hosts.get(&t.node_id).map(String::as_str).unwrap_or("");
    let name = slot_name(t);
    (f.desired_states.is_empty() || f.desired_states.iter().any(|d| d == desired))
        && (f.nodes.is_empty()
            || f.nodes
                .iter()
                .any(|n| n == host || (!t.node_id.is_empty() && t.node_id.starts_with(n.as_str()))))
        && (f.names.is_empty()
            || f.names
                .iter()
                .any(|n| name == *n || name.starts_with(n.as_str())))
        && (f.ids.is_empty() || f.ids.iter().any(|i| t.id.starts_with(i.as_str())))
}

/// What CURRENT STATE adds for a task's health check, as `docker ps` does:
/// nothing when healthy or without a check.
pub fn health_suffix(health: &str) -> &'static str {
    match health {
        "starting" => " (health: starting)",
        "unhealthy" => " (unhealthy)",
        _ => "",
    }
}

/// The table rows (ID, NAME, IMAGE, NODE, DESIRED STATE, CURRENT STATE,
/// ERROR, PORTS), grouped by slot with the newest task first.
pub fn rows(
    tasks: &[pb::Task],
    hosts: &HashMap<String, String>,
    filters: &TaskFilters,
    o: RowOptions,
    now_ms: i64,
) -> Vec<Vec<String>> {
    let mut tasks: Vec<&pb::Task> = tasks
        .iter()
        .filter(|t| matches(t, filters, hosts))
        .collect();
    let created = |t: &pb::Task| t.meta.as_ref().map_or(0, |m| m.created_at_ms);
    tasks.sort_by(|a, b| {
        natural_cmp(&slot_name(a), &slot_name(b))
            .then(created(b).cmp(&created(a)))
            .then(b.id.cmp(&a.id))
    });
    let mut prev = String::new();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let name = slot_name(t);
        let shown = if name == prev {
            format!(" \\_ {name}")
        } else {
            name.clone()
        };
        prev = name;
        let status = t.status.clone().unwrap_or_default();
        let since = if status.timestamp_ms > 0 {
            status.timestamp_ms
        } else {
            t.meta.as_ref().map_or(now_ms, |m| m.updated_at_ms)
        };
        let current = format!(
            "{} {} ago{}",
            shoal_api::state::task_state_title(state(status.state)),
            human_duration(age(now_ms, since)).to_lowercase(),
            health_suffix(&status.health)
        );
        let err = if status.err.is_empty() {
            String::new()
        } else if o.no_trunc {
            format!("\"{}\"", status.err)
        } else {
            format!("\"{}\"", ellipsis(&status.err, MAX_ERR))
        };
        let node = if o.no_resolve {
            t.node_id.clone()
        } else {
            hosts
                .get(&t.node_id)
                .filter(|h| !h.is_empty())
                .cloned()
                .unwrap_or_else(|| t.node_id.clone())
        };
        let ports = t
            .endpoint
            .as_ref()
            .map(|e| {
                e.ports
                    .iter()
                    .filter(|p| p.publish_mode == "host")
                    .map(port)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        out.push(vec![
            if o.no_trunc {
                t.id.clone()
            } else {
                shoal_api::id::short(&t.id).to_string()
            },
            shown,
            t.spec.as_ref().map_or(String::new(), |s| s.image.clone()),
            node,
            shoal_api::state::task_state_title(state(t.desired_state)),
            current,
            err,
            ports,
        ]);
    }
    out
}

#[cfg(test)]
mod tests;
