//! Placement: constraints, spread preferences, per-node caps and resource
//! reservations. Pure functions the scheduler and the orchestrators share.
//!
//! A constraint is `key==value` or `key!=value`; a service's constraints are
//! ANDed. Values compare case-insensitively, as in Swarm. A label the node
//! does not have never equals anything, so `node.labels.zone!=a` holds on a
//! node without a `zone` label.

use shoal_api::pb::{Node, NodeRole, ServiceSpec, Task};

/// Keys a constraint may test, as written after `--constraint`.
const KEYS_HELP: &str = "node.id, node.hostname, node.role, node.platform.os, \
                         node.platform.arch, node.labels.<key>, engine.labels.<key>";

/// What a constraint reads from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Id,
    Hostname,
    Role,
    Os,
    Arch,
    /// `node.labels.K` and `engine.labels.K` (engine labels are node labels here).
    Label(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
}

/// One parsed `--constraint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub key: Key,
    pub op: Op,
    pub value: String,
}

/// Parses one constraint; the error is a sentence about `text` without a
/// field prefix.
pub fn parse_constraint(text: &str) -> Result<Constraint, String> {
    let (key, op, value) = if let Some((k, v)) = text.split_once("==") {
        (k, Op::Eq, v)
    } else if let Some((k, v)) = text.split_once("!=") {
        (k, Op::Ne, v)
    } else {
        return Err(format!(
            "constraint {text:?} has no operator: use ==, != (e.g. node.role==manager)"
        ));
    };
    let (key, value) = (key.trim(), value.trim());
    let parsed = match key {
        "node.id" => Key::Id,
        "node.hostname" => Key::Hostname,
        "node.role" => Key::Role,
        "node.platform.os" => Key::Os,
        "node.platform.arch" => Key::Arch,
        _ => match key
            .strip_prefix("node.labels.")
            .or_else(|| key.strip_prefix("engine.labels."))
        {
            Some(label) if !label.is_empty() => Key::Label(label.to_string()),
            _ => {
                return Err(format!(
                    "constraint {text:?} has unknown key {key:?}: use {KEYS_HELP}"
                ))
            }
        },
    };
    if value.is_empty() {
        return Err(format!(
            "constraint {text:?} has no value after the operator"
        ));
    }
    if parsed == Key::Role && !["manager", "worker"].contains(&value.to_lowercase().as_str()) {
        return Err(format!(
            "constraint {text:?}: node.role is manager or worker, not {value:?}"
        ));
    }
    Ok(Constraint {
        key: parsed,
        op,
        value: value.to_string(),
    })
}

/// Parses every constraint, stopping at the first bad one.
pub fn parse_constraints(texts: &[String]) -> Result<Vec<Constraint>, String> {
    texts.iter().map(|t| parse_constraint(t)).collect()
}

/// The label key of a `spread=node.labels.K` preference.
pub fn parse_preference(text: &str) -> Result<String, String> {
    match text
        .trim()
        .strip_prefix("spread=")
        .and_then(|d| d.strip_prefix("node.labels."))
    {
        Some(label) if !label.is_empty() => Ok(label.to_string()),
        _ => Err(format!(
            "preference {text:?} is not spread=node.labels.<key> (spread is the only strategy)"
        )),
    }
}

/// The smallest `--limit-memory` (Docker's "Minimum memory limit allowed is 6MB").
pub const MIN_LIMIT_MEMORY_BYTES: i64 = 6 * 1024 * 1024;

/// Checks the placement part of a spec.
pub fn validate(spec: &ServiceSpec) -> Result<(), String> {
    if let Some(p) = &spec.placement {
        for c in &p.constraints {
            parse_constraint(c).map_err(|e| format!("placement: {e}"))?;
        }
        for pref in &p.preferences {
            parse_preference(pref).map_err(|e| format!("placement: {e}"))?;
        }
    }
    if let Some(r) = &spec.resources {
        for (name, v) in [
            ("reserve_nano_cpus", r.reserve_nano_cpus),
            ("reserve_memory_bytes", r.reserve_memory_bytes),
            ("limit_nano_cpus", r.limit_nano_cpus),
            ("limit_memory_bytes", r.limit_memory_bytes),
        ] {
            if v < 0 {
                return Err(format!("resources: {name} {v} is negative"));
            }
        }
        // Docker's daemon minimum; a smaller cgroup limit kills any process.
        if r.limit_memory_bytes > 0 && r.limit_memory_bytes < MIN_LIMIT_MEMORY_BYTES {
            return Err(format!(
                "resources: limit_memory_bytes {}: Minimum memory limit allowed is 6MB",
                r.limit_memory_bytes
            ));
        }
    }
    Ok(())
}

fn same_arch(a: &str, b: &str) -> bool {
    let norm = |s: &str| match s.to_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_string(),
    };
    norm(a) == norm(b)
}

/// Whether `node` satisfies every constraint.
pub fn node_matches(node: &Node, constraints: &[Constraint]) -> bool {
    let desc = node.description.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    constraints.iter().all(|c| {
        let equal = match &c.key {
            Key::Id => node.id.eq_ignore_ascii_case(&c.value),
            Key::Hostname => desc.hostname.eq_ignore_ascii_case(&c.value),
            Key::Role => {
                let role = match spec.role() {
                    NodeRole::Manager => "manager",
                    NodeRole::Worker => "worker",
                };
                role.eq_ignore_ascii_case(&c.value)
            }
            Key::Os => desc.os.eq_ignore_ascii_case(&c.value),
            Key::Arch => same_arch(&desc.arch, &c.value),
            Key::Label(k) => spec
                .labels
                .get(k)
                .is_some_and(|v| v.eq_ignore_ascii_case(&c.value)),
        };
        match c.op {
            Op::Eq => equal,
            Op::Ne => !equal,
        }
    })
}

/// Whether `node` satisfies the constraints of `spec`. A constraint that no
/// longer parses (the spec predates validation) matches no node.
pub fn spec_matches(node: &Node, spec: &ServiceSpec) -> bool {
    let texts = spec
        .placement
        .as_ref()
        .map(|p| p.constraints.as_slice())
        .unwrap_or_default();
    match parse_constraints(texts) {
        Ok(cs) => node_matches(node, &cs),
        Err(_) => false,
    }
}

/// Whether a task may stay on `node` (the constraint enforcer's test).
pub fn task_allowed_on(node: &Node, task: &Task) -> bool {
    task.spec.as_ref().is_none_or(|s| spec_matches(node, s))
}

/// The spread label keys of `spec`, outermost first; bad ones are skipped.
pub fn spread_labels(spec: &ServiceSpec) -> Vec<String> {
    spec.placement
        .as_ref()
        .map(|p| {
            p.preferences
                .iter()
                .filter_map(|p| parse_preference(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What a task reserves: (nano cpus, memory bytes).
pub fn reservation(spec: &ServiceSpec) -> (i64, i64) {
    spec.resources
        .as_ref()
        .map(|r| (r.reserve_nano_cpus.max(0), r.reserve_memory_bytes.max(0)))
        .unwrap_or((0, 0))
}

/// Whether `want` fits next to `used` on `node`. A capacity of 0 is unknown
/// and does not limit.
pub fn fits(node: &Node, used: (i64, i64), want: (i64, i64)) -> bool {
    let desc = node.description.clone().unwrap_or_default();
    let ok = |cap: i64, used: i64, want: i64| cap <= 0 || want == 0 || used + want <= cap;
    ok(desc.nano_cpus, used.0, want.0) && ok(desc.memory_bytes, used.1, want.1)
}

#[cfg(test)]
mod tests;
