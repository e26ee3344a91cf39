//! `service ps -f KEY=VALUE` filters.

use shoal_api::pb::TaskState;

use super::invalid;

/// `service ps -f KEY=VALUE` filters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TaskFilters {
    /// Lower-case desired states (`running`, `shutdown`, `accepted`).
    pub desired_states: Vec<String>,
    /// Node IDs, ID prefixes or hostnames.
    pub nodes: Vec<String>,
    /// Task names (`web.1`) or prefixes of them.
    pub names: Vec<String>,
    /// Task ID prefixes.
    pub ids: Vec<String>,
}

/// Parses every `-f/--filter` value.
pub fn parse_task_filters(values: &[String]) -> anyhow::Result<TaskFilters> {
    let mut f = TaskFilters::default();
    for v in values {
        let bad = |why: &str| invalid(v, "-f, --filter", why);
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE (desired-state, node, name or id)"))?;
        match k {
            "desired-state" => {
                let state = shoal_api::state::parse_task_state(val)
                    .filter(|s| {
                        matches!(
                            s,
                            TaskState::Running | TaskState::Shutdown | TaskState::Accepted
                        )
                    })
                    .ok_or_else(|| bad("desired-state must be running, shutdown or accepted"))?;
                f.desired_states
                    .push(shoal_api::state::task_state_name(state).to_string());
            }
            "node" => f.nodes.push(val.to_string()),
            "name" => f.names.push(val.to_string()),
            "id" => f.ids.push(val.to_string()),
            _ => {
                return Err(bad(
                    "unknown filter (expected desired-state, node, name or id)",
                ))
            }
        }
    }
    Ok(f)
}
