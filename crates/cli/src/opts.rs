//! Client-side parsing and validation of flag values. Every error names the
//! flag and the fix, in Docker's `invalid argument "V" for "F" flag: WHY` shape.
//!
//! # Layout
//! - this file: [`InvalidFlag`] and the values shared by many flags
//!   (durations, counts);
//! - `ports`: `-p/--publish`;
//! - `service`: replicas, mode, runtime, `scale`, random names;
//! - `policy`: restart and update policies;
//! - `env`: environment, labels, `--args`;
//! - `placement`: constraints, preferences, CPU and memory;
//! - `logs`: `service logs --tail/--since`;
//! - `filters`: `service ps -f`;
//! - `swarm`: `swarm join` and `node update` values.

use std::time::Duration;

mod env;
mod filters;
mod logs;
mod placement;
mod policy;
mod ports;
mod service;
mod swarm;

pub use env::{env_key, parse_env, parse_env_flag, parse_labels, split_args};
pub use filters::{parse_task_filters, TaskFilters};
pub use logs::{parse_since, parse_tail};
pub use placement::{parse_constraint, parse_cpus, parse_placement_pref, parse_ram};
pub use policy::{
    parse_failure_action, parse_failure_ratio, parse_restart_condition, parse_update_order,
};
pub use ports::{parse_publish, parse_publish_flag};
pub use service::{
    is_job, is_per_node, parse_mode, parse_replicas, parse_scale, random_name, resolve_runtime,
    REPLICAS_MODES,
};
pub use swarm::{
    parse_availability, parse_join_role, parse_label_add, parse_node_role, parse_remote_addr,
};

#[cfg(test)]
mod tests;

/// A flag given a value it cannot take. The CLI exits with Docker's status for
/// flag errors ([`FLAG_ERROR_EXIT`]) when an error is one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFlag {
    /// The value as given.
    pub value: String,
    /// The flag as Docker names it in help: `-p, --publish`, `--replicas`.
    pub flag: String,
    /// What is wrong, and so what to give instead.
    pub why: String,
}

impl std::fmt::Display for InvalidFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let InvalidFlag { value, flag, why } = self;
        write!(f, "invalid argument {value:?} for {flag:?} flag: {why}")
    }
}

impl std::error::Error for InvalidFlag {}

/// Docker's exit status for a command line it cannot take (a bad flag value,
/// an unknown flag, a missing argument).
pub const FLAG_ERROR_EXIT: u8 = 125;

/// The standard wording for a bad flag value.
pub fn invalid(value: &str, flag: &str, why: impl std::fmt::Display) -> anyhow::Error {
    InvalidFlag {
        value: value.to_string(),
        flag: flag.to_string(),
        why: why.to_string(),
    }
    .into()
}

/// Whether an error (or one it wraps) is an [`InvalidFlag`].
pub fn is_flag_error(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<InvalidFlag>())
}

/// A Go-style duration flag (`5s`, `1m30s`, `500ms`); negative ones are refused.
pub fn parse_duration(value: &str, flag: &str) -> anyhow::Result<Duration> {
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    if value.trim_start().starts_with('-') {
        return Err(invalid(value, flag, "duration cannot be negative"));
    }
    humantime::parse_duration(value).map_err(|_| {
        invalid(
            value,
            flag,
            "expected a duration such as 5s, 1m30s or 500ms",
        )
    })
}

/// A non-negative integer flag such as `--restart-max-attempts`.
pub fn parse_count(value: &str, flag: &str) -> anyhow::Result<u64> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(value, flag, "must be a non-negative integer"))
}
