//! The task table `service ps` and `node ps` share: one row per task, the
//! newest of each slot first and older ones indented with ` \_ `, printed as
//! Docker's table, as IDs (`-q`) or through `--format`.

use std::collections::HashMap;
use std::io::Write;

use shoal_api::pb::{self, TaskState};

use crate::client::{Control, DaemonExt};
use crate::format::{age, ellipsis, human_duration, natural_cmp, port, Table};
use crate::opts::TaskFilters;
use crate::template::listing;

#[cfg(test)]
mod tests;

/// Docker's ERROR column width when truncating.
const MAX_ERR: usize = 30;

/// The placeholders of a task row, in column order, with their titles.
const COLUMNS: [(&str, &str); 8] = [
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Image", "IMAGE"),
    ("Node", "NODE"),
    ("DesiredState", "DESIRED STATE"),
    ("CurrentState", "CURRENT STATE"),
    ("Error", "ERROR"),
    ("Ports", "PORTS"),
];

/// What marks an older task of the same slot in the table.
const HISTORY_INDENT: &str = " \\_ ";

/// How rows are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowOptions {
    /// Full IDs and errors.
    pub no_trunc: bool,
    /// Node IDs instead of hostnames.
    pub no_resolve: bool,
}

/// Prints `rows` as the `service ps` / `node ps` table, only their IDs, or
/// through a `--format` (which wins over `-q`, as Docker's).
pub fn print(rows: &[Vec<String>], quiet: bool, format: Option<&str>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(format) = format.filter(|f| !listing::is_default(Some(f))) {
        write!(out, "{}", formatted(rows, format)?)?;
        return Ok(());
    }
    if quiet {
        for r in rows {
            writeln!(out, "{}", r[0])?;
        }
        return Ok(());
    }
    write!(out, "{}", table(rows).render())?;
    Ok(())
}

/// `rows` through a user's `--format`; history rows are indented only in a
/// table, as Docker's.
pub fn formatted(rows: &[Vec<String>], format: &str) -> anyhow::Result<String> {
    let table = format.starts_with("table");
    let rows: Vec<listing::Row> = rows
        .iter()
        .map(|r| {
            COLUMNS
                .iter()
                .zip(r)
                .map(|((key, _), cell)| {
                    let cell = match cell.strip_prefix(HISTORY_INDENT) {
                        Some(name) if !table && *key == "Name" => name,
                        _ => cell.as_str(),
                    };
                    (*key, gtmpl::Value::from(cell))
                })
                .collect()
        })
        .collect();
    listing::render(format, &COLUMNS, &rows)
}

/// The task table with Docker's header.
pub fn table(rows: &[Vec<String>]) -> Table {
    let titles: Vec<&str> = COLUMNS.iter().map(|(_, title)| *title).collect();
    let mut t = Table::new(&titles);
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
            format!("{HISTORY_INDENT}{name}")
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
        // A task binds its host-mode ports once it runs (Docker shows them
        // from the task's port status, which a task gets when it starts).
        let ports = t
            .endpoint
            .as_ref()
            .filter(|_| status.state >= TaskState::Running as i32)
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

/// A node's hostname, empty if it has not reported one.
pub fn hostname(n: &pb::Node) -> &str {
    n.description.as_ref().map_or("", |d| d.hostname.as_str())
}

/// Node ID → hostname, for `service ps` and `service logs`.
pub async fn hostnames(c: &mut Control) -> anyhow::Result<HashMap<String, String>> {
    let nodes = c.list_nodes(pb::ListNodesRequest {}).await.daemon()?.nodes;
    Ok(nodes
        .into_iter()
        .map(|n| {
            let h = hostname(&n).to_string();
            (n.id, h)
        })
        .collect())
}
