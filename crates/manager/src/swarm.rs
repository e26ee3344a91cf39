//! `swarm update`: checks and applies changes to the cluster-wide settings
//! (`--task-history-limit`, `--dispatcher-heartbeat`, `--cert-expiry`). Sans-IO: the control
//! API reads the cluster object, calls [`apply_update`], and writes it back;
//! the reaper and the dispatcher read the new values from the store.

use shoal_api::pb::{Cluster, UpdateSwarmRequest};

/// The shortest `--dispatcher-heartbeat` (as `swarm init` takes it).
pub const MIN_HEARTBEAT_MS: u64 = 100;
/// The shortest `--cert-expiry`: one minute (Docker's is one hour; a minute
/// lets a test watch several renewals).
pub const MIN_CERT_EXPIRY_MS: u64 = 60_000;
/// The longest `--cert-expiry`: the cluster CA's own validity, 20 years.
pub const MAX_CERT_EXPIRY_MS: u64 = 20 * 365 * 24 * 3600 * 1000;

/// The longest `--dispatcher-heartbeat`: 24h (a node is Down after three).
pub const MAX_HEARTBEAT_MS: u64 = 24 * 3600 * 1000;
/// The most tasks kept per slot (`--task-history-limit`).
pub const MAX_TASK_HISTORY_LIMIT: u64 = 1000;

/// Refuses values the cluster cannot run with; the text names the flag.
pub fn validate_update(req: &UpdateSwarmRequest) -> Result<(), String> {
    if req.task_history_limit == Some(0) {
        return Err(
            "task-history-limit: 0 would not even keep the current task; use 1 (only the current task of each slot) or more"
                .into(),
        );
    }
    if let Some(n) = req
        .task_history_limit
        .filter(|n| *n > MAX_TASK_HISTORY_LIMIT)
    {
        return Err(format!(
            "task-history-limit: {n} is more than the maximum {MAX_TASK_HISTORY_LIMIT}; use at most {MAX_TASK_HISTORY_LIMIT}"
        ));
    }
    if let Some(ms) = req.dispatcher_heartbeat_ms {
        if ms < MIN_HEARTBEAT_MS {
            return Err(format!(
                "dispatcher-heartbeat: {ms}ms is too short; use at least {MIN_HEARTBEAT_MS}ms"
            ));
        }
        if ms > MAX_HEARTBEAT_MS {
            return Err(format!(
                "dispatcher-heartbeat: {ms}ms is more than the maximum 24h; use at most 24h"
            ));
        }
    }
    if let Some(ms) = req.node_cert_expiry_ms {
        if !(MIN_CERT_EXPIRY_MS..=MAX_CERT_EXPIRY_MS).contains(&ms) {
            return Err(format!(
                "cert-expiry: {ms}ms is out of range; use at least 1m and at most 175200h (20 years)"
            ));
        }
    }
    Ok(())
}

/// `swarm init`'s settings within the bounds [`validate_update`] enforces
/// (0 keeps the default): the daemon checks before it initialises anything.
pub fn validate_init(
    task_history_limit: u64,
    dispatcher_heartbeat_ms: u64,
    node_cert_expiry_ms: u64,
) -> Result<(), String> {
    validate_update(&UpdateSwarmRequest {
        task_history_limit: Some(task_history_limit).filter(|n| *n != 0),
        dispatcher_heartbeat_ms: Some(dispatcher_heartbeat_ms).filter(|ms| *ms != 0),
        node_cert_expiry_ms: Some(node_cert_expiry_ms).filter(|ms| *ms != 0),
        ..Default::default()
    })
}

/// Sets what the request sets; the rest stays.
pub fn apply_update(cluster: &mut Cluster, req: &UpdateSwarmRequest) {
    if let Some(n) = req.task_history_limit {
        cluster.task_history_limit = n;
    }
    if let Some(ms) = req.dispatcher_heartbeat_ms {
        cluster.dispatcher_heartbeat_ms = ms;
    }
    if let Some(ms) = req.node_cert_expiry_ms {
        cluster.node_cert_expiry_ms = ms;
    }
}

/// `swarm ca --rotate`: `new_root` becomes the root CA (new certificates
/// and join tokens use it); the current one stays trusted, and signs the new
/// one (`cross_signed`, from [`shoal_ca::ClusterCa::cross_sign`]), until
/// every node holds a certificate of the new one. A rotation during a
/// rotation drops the oldest root.
pub fn rotate_root(cluster: &mut Cluster, new_root: &shoal_ca::ClusterCa, cross_signed: String) {
    cluster.previous_root_ca_pem = std::mem::take(&mut cluster.root_ca_pem);
    cluster.root_ca_pem = new_root.cert_pem().to_string();
    cluster.root_ca_key_pem = new_root.key_pem().to_string();
    cluster.root_ca_cross_signed_pem = cross_signed;
}

#[cfg(test)]
mod tests;
