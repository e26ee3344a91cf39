//! `swarm update`: checks and applies changes to the cluster-wide settings
//! (`--task-history-limit`, `--dispatcher-heartbeat`). Sans-IO: the control
//! API reads the cluster object, calls [`apply_update`], and writes it back;
//! the reaper and the dispatcher read the new values from the store.

use shoal_api::pb::{Cluster, UpdateSwarmRequest};

/// The shortest `--dispatcher-heartbeat` (as `swarm init` takes it).
pub const MIN_HEARTBEAT_MS: u64 = 100;

/// Refuses values the cluster cannot run with; the text names the flag.
pub fn validate_update(req: &UpdateSwarmRequest) -> Result<(), String> {
    if req.task_history_limit == Some(0) {
        return Err(
            "task-history-limit: 0 would not even keep the current task; use 1 (only the current task of each slot) or more"
                .into(),
        );
    }
    if let Some(ms) = req.dispatcher_heartbeat_ms {
        if ms < MIN_HEARTBEAT_MS {
            return Err(format!(
                "dispatcher-heartbeat: {ms}ms is too short; use at least {MIN_HEARTBEAT_MS}ms"
            ));
        }
    }
    Ok(())
}

/// Sets what the request sets; the rest stays.
pub fn apply_update(cluster: &mut Cluster, req: &UpdateSwarmRequest) {
    if let Some(n) = req.task_history_limit {
        cluster.task_history_limit = n;
    }
    if let Some(ms) = req.dispatcher_heartbeat_ms {
        cluster.dispatcher_heartbeat_ms = ms;
    }
}

#[cfg(test)]
mod tests;
