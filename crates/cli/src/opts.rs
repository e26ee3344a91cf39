//! Client-side parsing and validation of flag values. Every error names the
//! flag and the fix, in Docker's `invalid argument "V" for "F" flag: WHY` shape.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail};
use shoal_api::pb::{
    FailureAction, NodeAvailability, NodeRole, PortConfig, RestartCondition, Runtime, ServiceMode,
    TaskState, UpdateOrder,
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

const PUBLISH: &str = "-p, --publish";

/// Parses one `-p/--publish` value into one or more port configs.
///
/// Short form: `[PUBLISHED:]TARGET[/PROTOCOL]`, either side may be a range
/// (`8080-8081:80-81`); long form: `published=8081,target=80,protocol=tcp,mode=ingress`.
/// A missing published port is 0: the manager allocates one.
pub fn parse_publish(value: &str) -> anyhow::Result<Vec<PortConfig>> {
    parse_publish_flag(value, PUBLISH)
}

/// [`parse_publish`] for another flag (`--publish-add`), named in errors.
pub fn parse_publish_flag(value: &str, flag: &str) -> anyhow::Result<Vec<PortConfig>> {
    let bad = |why: String| invalid(value, flag, why);
    if value.contains('=') {
        return parse_publish_long(value).map(|p| vec![p]).map_err(bad);
    }
    let (ports, proto) = match value.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (value, "tcp"),
    };
    let proto = parse_protocol(proto).map_err(&bad)?;
    let parts: Vec<&str> = ports.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [target] => (None, *target),
        [published, target] => (Some(*published), *target),
        [_ip, ..] => {
            return Err(bad(
                "binding to a host IP is not supported; use PUBLISHED:TARGET".into(),
            ))
        }
        [] => unreachable!("split yields at least one part"),
    };
    let targets = parse_range(target, "target").map_err(&bad)?;
    let published = match published {
        Some(p) if !p.is_empty() => Some(parse_range(p, "published").map_err(&bad)?),
        _ => None,
    };
    if let Some(published) = &published {
        let last = published[0] as usize + targets.len() - 1;
        if published.len() == 1 && last > 65535 {
            return Err(bad(format!(
                "published ports {}-{last} for target range {target} go past 65535",
                published[0]
            )));
        }
        if published.len() != targets.len() && published.len() != 1 {
            return Err(bad(format!(
                "published range {} and target range {} differ in size",
                ports.split(':').next().unwrap_or_default(),
                target
            )));
        }
    }
    Ok(targets
        .iter()
        .enumerate()
        .map(|(i, &t)| PortConfig {
            name: String::new(),
            protocol: proto.to_string(),
            target_port: t,
            published_port: match &published {
                Some(p) if p.len() == 1 && targets.len() > 1 => p[0] + i as u32,
                Some(p) => p[i],
                None => 0,
            },
            publish_mode: "ingress".into(),
        })
        .collect())
}

fn parse_publish_long(value: &str) -> Result<PortConfig, String> {
    let mut port = PortConfig {
        name: String::new(),
        protocol: "tcp".into(),
        target_port: 0,
        published_port: 0,
        publish_mode: "ingress".into(),
    };
    let mut have_target = false;
    for field in value.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("invalid field {field:?}: expected KEY=VALUE"))?;
        match k.trim().to_ascii_lowercase().as_str() {
            "published" => port.published_port = parse_port(v, "published")?,
            "target" => {
                port.target_port = parse_port(v, "target")?;
                have_target = true;
            }
            "protocol" => port.protocol = parse_protocol(v)?.to_string(),
            "mode" => match v {
                "ingress" | "host" => port.publish_mode = v.to_string(),
                _ => {
                    return Err(format!(
                        "invalid publish mode {v:?}: must be ingress or host"
                    ))
                }
            },
            "name" => port.name = v.to_string(),
            other => {
                return Err(format!(
                "invalid field key {other:?}: expected published, target, protocol, mode or name"
            ))
            }
        }
    }
    if !have_target {
        return Err("missing mandatory field \"target\"".into());
    }
    Ok(port)
}

fn parse_protocol(p: &str) -> Result<&'static str, String> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok("tcp"),
        "udp" => Ok("udp"),
        _ => Err(format!("invalid protocol {p:?}: must be tcp or udp")),
    }
}

fn parse_port(s: &str, what: &str) -> Result<u32, String> {
    match s.trim().parse::<u64>() {
        Ok(n @ 1..=65535) => Ok(n as u32),
        _ => Err(format!(
            "{what} port {s:?} must be a number from 1 to 65535"
        )),
    }
}

fn parse_range(s: &str, what: &str) -> Result<Vec<u32>, String> {
    match s.split_once('-') {
        // `-1` is a (negative) port, not a range with no start.
        Some((a, b)) if !a.trim().is_empty() => {
            let (a, b) = (parse_port(a, what)?, parse_port(b, what)?);
            if b < a {
                return Err(format!("{what} port range {s} ends before it starts"));
            }
            Ok((a..=b).collect())
        }
        _ => Ok(vec![parse_port(s, what)?]),
    }
}

/// `--replicas`: a non-negative integer.
pub fn parse_replicas(value: &str) -> anyhow::Result<u64> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(value, "--replicas", "must be a non-negative integer"))
}

/// `--mode replicated|global|replicated-job|global-job`.
pub fn parse_mode(value: &str) -> anyhow::Result<ServiceMode> {
    match value {
        "replicated" => Ok(ServiceMode::Replicated),
        "global" => Ok(ServiceMode::Global),
        "replicated-job" => Ok(ServiceMode::ReplicatedJob),
        "global-job" => Ok(ServiceMode::GlobalJob),
        _ => Err(invalid(
            value,
            "--mode",
            "must be replicated, global, replicated-job or global-job",
        )),
    }
}

/// Whether a spec's mode runs tasks to completion (replicated-job, global-job).
pub fn is_job(mode: i32) -> bool {
    mode == ServiceMode::ReplicatedJob as i32 || mode == ServiceMode::GlobalJob as i32
}

/// Whether a spec's mode runs one task per node (global, global-job).
pub fn is_per_node(mode: i32) -> bool {
    mode == ServiceMode::Global as i32 || mode == ServiceMode::GlobalJob as i32
}

/// Docker's text for `--replicas` (and `scale`) on a per-node mode.
pub const REPLICAS_MODES: &str = "replicated or replicated-job mode";

/// `--restart-condition any|on-failure|none`.
pub fn parse_restart_condition(value: &str) -> anyhow::Result<RestartCondition> {
    match value {
        "any" => Ok(RestartCondition::Any),
        "on-failure" => Ok(RestartCondition::OnFailure),
        "none" => Ok(RestartCondition::None),
        _ => Err(invalid(
            value,
            "--restart-condition",
            "must be any, on-failure or none",
        )),
    }
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

/// `--runtime`, defaulting by image: builtin workloads need no runtime flag,
/// anything else needs `--runtime process` and a command.
pub fn resolve_runtime(
    runtime: Option<&str>,
    image: &str,
    command: &[String],
) -> anyhow::Result<Runtime> {
    let builtin = shoal_api::builtin_image(image).is_some();
    let runtime = match runtime {
        None if builtin => Runtime::Builtin,
        None => bail!(
            "image {image:?} needs a container runtime, which this node does not have yet; \
             run a command with --runtime process"
        ),
        Some("builtin") if builtin => Runtime::Builtin,
        Some("builtin") => bail!(
            "image {image:?} is not a builtin workload (shoal/echo, shoal/timecheck); \
             run a command with --runtime process"
        ),
        Some("process") => Runtime::Process,
        Some(other) => return Err(invalid(other, "--runtime", "must be builtin or process")),
    };
    if runtime == Runtime::Process && command.is_empty() {
        bail!(
            "--runtime process needs a command: \
             shoal service create --runtime process IMAGE COMMAND [ARG...]"
        );
    }
    Ok(runtime)
}

/// `-l/--label KEY[=VALUE]` values as a map.
pub fn parse_labels(values: &[String]) -> anyhow::Result<HashMap<String, String>> {
    values
        .iter()
        .map(|v| {
            let (k, val) = v.split_once('=').unwrap_or((v.as_str(), ""));
            if k.trim().is_empty() {
                return Err(invalid(v, "-l, --label", "the key must not be empty"));
            }
            Ok((k.to_string(), val.to_string()))
        })
        .collect()
}

/// `-e/--env KEY=VALUE`; a bare `KEY` takes the value from this environment
/// when set, as Docker does.
pub fn parse_env(values: &[String]) -> anyhow::Result<Vec<String>> {
    parse_env_flag(values, "-e, --env")
}

/// [`parse_env`] for another flag (`--env-add`), named in errors.
pub fn parse_env_flag(values: &[String], flag: &str) -> anyhow::Result<Vec<String>> {
    values
        .iter()
        .map(|v| {
            let key = env_key(v);
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(invalid(v, flag, "expected KEY=VALUE"));
            }
            if v.contains('=') {
                Ok(v.clone())
            } else {
                Ok(match std::env::var(v) {
                    Ok(val) => format!("{v}={val}"),
                    Err(_) => v.clone(),
                })
            }
        })
        .collect()
}

/// The `KEY` of a `KEY=VALUE` environment entry (the whole entry when bare).
pub fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// `--update-failure-action pause|continue|rollback`, or for
/// `--rollback-failure-action` (`allow_rollback` false) `pause|continue`.
pub fn parse_failure_action(
    value: &str,
    flag: &str,
    allow_rollback: bool,
) -> anyhow::Result<FailureAction> {
    match value {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" if allow_rollback => Ok(FailureAction::Rollback),
        _ if allow_rollback => Err(invalid(value, flag, "must be pause, continue or rollback")),
        _ => Err(invalid(value, flag, "must be pause or continue")),
    }
}

/// `--update-order` / `--rollback-order`: `stop-first|start-first`.
pub fn parse_update_order(value: &str, flag: &str) -> anyhow::Result<UpdateOrder> {
    match value {
        "stop-first" => Ok(UpdateOrder::StopFirst),
        "start-first" => Ok(UpdateOrder::StartFirst),
        _ => Err(invalid(value, flag, "must be stop-first or start-first")),
    }
}

/// `--update-max-failure-ratio` / `--rollback-max-failure-ratio`: a fraction in 0..=1.
pub fn parse_failure_ratio(value: &str, flag: &str) -> anyhow::Result<f32> {
    let ratio: f32 = value
        .trim()
        .parse()
        .map_err(|_| invalid(value, flag, "must be a number between 0 and 1"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(invalid(value, flag, "must be between 0 and 1"));
    }
    Ok(ratio)
}

/// `service update --args "..."`: splits as a POSIX shell would, without
/// expansions: whitespace separates words, single quotes keep everything,
/// double quotes keep all but `\"` and `\\`, a backslash outside quotes escapes.
pub fn split_args(value: &str, flag: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(invalid(value, flag, "unterminated single quote")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(invalid(value, flag, "unterminated double quote")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(invalid(value, flag, "unterminated double quote")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(invalid(value, flag, "trailing backslash")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Constraint keys accepted by `--constraint` (labels take a `.KEY` suffix).
const CONSTRAINT_KEYS: &str = "node.id, node.hostname, node.role, node.platform.os, \
                               node.platform.arch, node.labels.KEY or engine.labels.KEY";

/// `--constraint KEY==VALUE` / `KEY!=VALUE` (also `--constraint-add`).
pub fn parse_constraint(value: &str, flag: &str) -> anyhow::Result<String> {
    let Some((key, val)) = value.split_once("==").or_else(|| value.split_once("!=")) else {
        return Err(invalid(
            value,
            flag,
            "constraint has no operator (use == or !=)",
        ));
    };
    let key = key.trim();
    let known = matches!(
        key,
        "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch"
    ) || key
        .strip_prefix("node.labels.")
        .or_else(|| key.strip_prefix("engine.labels."))
        .is_some_and(|k| !k.is_empty());
    if !known {
        return Err(invalid(
            value,
            flag,
            format!("unknown constraint key {key:?} (use {CONSTRAINT_KEYS})"),
        ));
    }
    if val.trim().is_empty() {
        return Err(invalid(
            value,
            flag,
            "constraint has no value after the operator",
        ));
    }
    Ok(value.to_string())
}

/// `--placement-pref spread=node.labels.KEY` (also `--placement-pref-add`).
pub fn parse_placement_pref(value: &str, flag: &str) -> anyhow::Result<String> {
    let Some((strategy, descriptor)) = value.split_once('=') else {
        return Err(invalid(value, flag, "expected spread=node.labels.KEY"));
    };
    if strategy != "spread" {
        return Err(invalid(
            value,
            flag,
            format!("unsupported strategy {strategy:?}: spread is the only one"),
        ));
    }
    if descriptor
        .strip_prefix("node.labels.")
        .is_none_or(str::is_empty)
    {
        return Err(invalid(
            value,
            flag,
            "spread takes a node label: spread=node.labels.KEY",
        ));
    }
    Ok(value.to_string())
}

/// `--reserve-cpu 0.5` / `--limit-cpu`: CPUs as nano CPUs (Docker's NanoCPUs).
pub fn parse_cpus(value: &str, flag: &str) -> anyhow::Result<i64> {
    let bad = || invalid(value, flag, "expected a number of CPUs such as 0.5 or 2");
    let v = value.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    if frac.len() > 9 && frac[9..].chars().any(|c| c != '0') {
        return Err(invalid(
            value,
            flag,
            "value is too precise (at most 9 decimals)",
        ));
    }
    let int: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac: i64 = format!("{:0<9}", &frac[..frac.len().min(9)])
        .parse()
        .map_err(|_| bad())?;
    int.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac))
        .ok_or_else(bad)
}

/// `--reserve-memory 64MiB` / `--limit-memory`: Docker's RAM sizes, binary
/// units (`b`, `k`, `m`, `g`, `t`, `p`, optionally followed by `i` and/or `b`).
pub fn parse_ram(value: &str, flag: &str) -> anyhow::Result<i64> {
    let bad = || invalid(value, flag, "expected a size such as 64MiB, 128M or 1G");
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let bytes = num * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// `service scale SERVICE=REPLICAS`.
pub fn parse_scale(arg: &str) -> anyhow::Result<(String, u64)> {
    let Some((name, n)) = arg.split_once('=') else {
        bail!("invalid scale specifier {arg:?}: expected SERVICE=REPLICAS");
    };
    if name.is_empty() {
        bail!("invalid scale specifier {arg:?}: expected SERVICE=REPLICAS");
    }
    let n = n
        .parse()
        .map_err(|_| anyhow!("invalid replicas value {arg}: must be a non-negative integer"))?;
    Ok((name.to_string(), n))
}

/// `service logs --tail N|all`: -1 means all.
pub fn parse_tail(value: &str) -> anyhow::Result<i64> {
    if value.eq_ignore_ascii_case("all") {
        return Ok(-1);
    }
    let n: i64 = value
        .parse()
        .map_err(|_| invalid(value, "-n, --tail", "must be a number or \"all\""))?;
    Ok(if n < 0 { -1 } else { n })
}

/// `service logs --since`: a duration back from `now_ms` (`10s`, `5m`), an
/// RFC 3339 timestamp or Unix seconds; returns Unix ms.
pub fn parse_since(value: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(d) = humantime::parse_duration(value) {
        // Further back than i64 reaches is the beginning of time.
        return Ok(i64::try_from(d.as_millis())
            .ok()
            .and_then(|back| now_ms.checked_sub(back))
            .unwrap_or(i64::MIN)
            .max(0));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return Ok(crate::format::unix_ms(t));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs >= 0.0 {
            return Ok((secs * 1000.0) as i64);
        }
    }
    Err(invalid(
        value,
        "--since",
        "expected a duration (10s, 5m), an RFC 3339 timestamp or Unix seconds",
    ))
}

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

/// The positional `worker|manager` of `swarm join-token`.
pub fn parse_join_role(value: &str) -> anyhow::Result<NodeRole> {
    match value {
        "worker" => Ok(NodeRole::Worker),
        "manager" => Ok(NodeRole::Manager),
        _ => bail!("invalid argument {value:?}: role must be \"worker\" or \"manager\""),
    }
}

/// `node update --role worker|manager`.
pub fn parse_node_role(value: &str) -> anyhow::Result<NodeRole> {
    match value.to_ascii_lowercase().as_str() {
        "worker" => Ok(NodeRole::Worker),
        "manager" => Ok(NodeRole::Manager),
        _ => Err(invalid(value, "--role", "must be worker or manager")),
    }
}

/// `node update --availability active|pause|drain`.
pub fn parse_availability(value: &str) -> anyhow::Result<NodeAvailability> {
    match value.to_ascii_lowercase().as_str() {
        "active" => Ok(NodeAvailability::Active),
        "pause" => Ok(NodeAvailability::Pause),
        "drain" => Ok(NodeAvailability::Drain),
        _ => Err(invalid(
            value,
            "--availability",
            "must be active, pause or drain",
        )),
    }
}

/// `node update --label-add KEY=VALUE`.
pub fn parse_label_add(value: &str) -> anyhow::Result<(String, String)> {
    match value.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(invalid(value, "--label-add", "expected KEY=VALUE")),
    }
}

/// The port `swarm join` dials when `HOST:PORT` has no port.
pub const DEFAULT_SWARM_PORT: u16 = 2377;

/// `swarm join HOST[:PORT]`: `host:port`, with port 2377 when omitted
/// (IPv6 literals in brackets, or bare without a port).
pub fn parse_remote_addr(value: &str) -> anyhow::Result<String> {
    let bad = |why: &str| anyhow!("invalid remote address {value:?}: {why}");
    let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|p| p > 0);
    if value.is_empty() {
        return Err(bad("expected HOST:PORT"));
    }
    let ipv6 = |h: &str| h.parse::<std::net::Ipv6Addr>().is_ok();
    if let Some(rest) = value.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, "")) if ipv6(h) => Ok(format!("[{h}]:{DEFAULT_SWARM_PORT}")),
            Some((h, p)) if ipv6(h) && p.strip_prefix(':').is_some_and(port_ok) => {
                Ok(value.to_string())
            }
            _ => Err(bad("expected [IPv6]:PORT")),
        };
    }
    match value.matches(':').count() {
        0 => Ok(format!("{value}:{DEFAULT_SWARM_PORT}")),
        1 => match value.split_once(':') {
            Some((h, p)) if !h.is_empty() && port_ok(p) => Ok(value.to_string()),
            _ => Err(bad("the port must be a number from 1 to 65535")),
        },
        _ if ipv6(value) => Ok(format!("[{value}]:{DEFAULT_SWARM_PORT}")),
        _ => Err(bad(
            "expected HOST:PORT, or [IPv6]:PORT for an IPv6 address",
        )),
    }
}

/// A Docker-like random service name (`blissful_kirch`) for `create` without `--name`.
pub fn random_name() -> String {
    const LEFT: &[&str] = &[
        "admiring", "blissful", "brave", "busy", "clever", "eager", "elastic", "focused",
        "gallant", "happy", "jolly", "keen", "lucid", "modest", "nifty", "quirky", "serene",
        "sharp", "stoic", "vibrant", "wizardly", "zen",
    ];
    const RIGHT: &[&str] = &[
        "albattani",
        "bell",
        "curie",
        "darwin",
        "euler",
        "fermi",
        "goodall",
        "hopper",
        "kirch",
        "lovelace",
        "meitner",
        "noether",
        "pasteur",
        "ritchie",
        "shannon",
        "tesla",
        "thompson",
        "turing",
        "wozniak",
        "yalow",
    ];
    let id = shoal_api::id::new_id();
    let seed = id.bytes().fold(0usize, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(b as usize)
    });
    format!(
        "{}_{}",
        LEFT[seed % LEFT.len()],
        RIGHT[(seed / LEFT.len()) % RIGHT.len()]
    )
}
