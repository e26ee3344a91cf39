//! `shoal service logs SERVICE|TASK`: the `ServiceLogs` stream with Docker's
//! line shape, `[TIMESTAMP ]web.1.<task id>@<node>    | [DETAILS ]<line>`.
//! The argument is a service, else a task (ID or prefix), whose lines alone
//! are shown, as Docker resolves it. Nodes the manager could not reach are
//! named in swarmkit's "incomplete log stream" warning on stderr; every line
//! that did arrive is printed, and the exit status stays 0.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context};
use shoal_api::pb;

use crate::client::{Control, DaemonError, DaemonExt, Host};
use crate::opts;

#[cfg(test)]
mod tests;

/// `shoal service logs SERVICE|TASK`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs.
    #[arg(short = 'n', long, default_value = "all", allow_hyphen_values = true)]
    pub tail: String,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m for 42 minutes).
    #[arg(long)]
    pub since: Option<String>,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show extra details provided to logs.
    #[arg(long)]
    pub details: bool,
    /// Do not truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Do not neatly format logs.
    #[arg(long)]
    pub raw: bool,
    /// Do not include task IDs in output.
    #[arg(long = "no-task-ids")]
    pub no_task_ids: bool,
    /// Do not map IDs to names in output.
    #[arg(long = "no-resolve")]
    pub no_resolve: bool,
    /// Service name or ID, or task ID (or prefix).
    #[arg(value_name = "SERVICE|TASK")]
    pub target: String,
}

/// How each line's context is written.
#[derive(Debug, Clone, Default)]
pub struct LineFormat {
    /// Full task IDs.
    pub no_trunc: bool,
    /// No context (with `details`, the context IDs are among the details).
    pub raw: bool,
    /// Leave the task ID out of the context.
    pub no_task_ids: bool,
    /// Start each line with its timestamp, RFC 3339 with nine fraction digits.
    pub timestamps: bool,
    /// Write the line's extra attributes, `k=v,...`, before it.
    pub details: bool,
    /// Digits of the highest slot, so `web.1` and `web.10` line up.
    pub slot_width: usize,
}

/// What `service logs` was asked for: Docker tries a service first.
#[derive(Debug)]
enum Target {
    Service(Box<pb::Service>),
    Task(Box<pb::Task>),
}

/// Resolves `target` as a service, else as a task; an error other than
/// "not found" is the daemon's.
async fn resolve(c: &mut Control, target: &str) -> anyhow::Result<Target> {
    let req = pb::GetServiceRequest {
        service: target.to_string(),
    };
    match c.get_service(req).await {
        Ok(r) => {
            let svc = r.into_inner().service;
            let svc = svc.context("the daemon returned no service")?;
            return Ok(Target::Service(Box::new(svc)));
        }
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => return Err(DaemonError(s).into()),
    }
    let req = pb::GetTaskRequest {
        task: target.to_string(),
    };
    match c.get_task(req).await {
        Ok(r) => {
            let task = r.into_inner().task;
            let task = task.context("the daemon returned no task")?;
            Ok(Target::Task(Box::new(task)))
        }
        Err(s) if s.code() == tonic::Code::NotFound => {
            bail!("no such task or service: {target}")
        }
        Err(s) => Err(DaemonError(s).into()),
    }
}

/// Streams the service's (or the task's) logs.
pub async fn run(host: &Host, a: &LogsArgs) -> anyhow::Result<()> {
    let tail = opts::parse_tail(&a.tail)?;
    let since_ns = match &a.since {
        Some(s) => opts::parse_since(s, now_ns())?,
        None => 0,
    };
    let mut c = super::connect(host).await?;
    let target = resolve(&mut c, &a.target).await?;
    let (req, name, slot_width) = match &target {
        Target::Service(svc) => {
            let spec = svc.spec.clone().unwrap_or_default();
            let width = if opts::is_per_node(spec.mode) {
                0
            } else {
                digits(spec.replicas.max(1))
            };
            let req = pb::ServiceLogsRequest {
                service: svc.id.clone(),
                ..Default::default()
            };
            (req, spec.name, width)
        }
        Target::Task(task) => {
            let req = pb::ServiceLogsRequest {
                task: task.id.clone(),
                ..Default::default()
            };
            (req, task.service_name.clone(), digits(task.slot))
        }
    };
    let hosts: HashMap<String, String> = if a.no_resolve {
        HashMap::new()
    } else {
        crate::node::hostnames(&mut c).await?
    };
    let fmt = LineFormat {
        no_trunc: a.no_trunc,
        raw: a.raw,
        no_task_ids: a.no_task_ids,
        timestamps: a.timestamps,
        details: a.details,
        slot_width,
    };
    let mut stream = c
        .service_logs(pb::ServiceLogsRequest {
            follow: a.follow,
            tail,
            since_ns,
            ..req
        })
        .await
        .daemon()?;
    while let Some(msg) = stream.message().await.map_err(DaemonError)? {
        if !msg.unavailable_nodes.is_empty() {
            let mut err = std::io::stderr().lock();
            writeln!(
                err,
                "{}",
                incomplete_warning(&msg.unavailable_nodes, &hosts)
            )?;
            continue;
        }
        let host = hosts
            .get(&msg.node_id)
            .filter(|h| !h.is_empty())
            .map_or(msg.node_id.as_str(), String::as_str);
        let service = if msg.service_name.is_empty() {
            name.as_str()
        } else {
            msg.service_name.as_str()
        };
        let lines = format_message(&msg, service, host, &fmt);
        if msg.stream == "stderr" {
            let mut err = std::io::stderr().lock();
            for l in lines {
                writeln!(err, "{l}")?;
            }
        } else {
            let mut out = std::io::stdout().lock();
            for l in lines {
                writeln!(out, "{l}")?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

/// Decimal digits of `n`: Docker pads slot numbers to the widest one.
fn digits(n: u64) -> usize {
    n.to_string().len()
}

/// The current Unix time in nanoseconds.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// swarmkit's warning for nodes whose logs could not be retrieved, each
/// with its hostname when known.
pub fn incomplete_warning(nodes: &[String], hosts: &HashMap<String, String>) -> String {
    let reasons: Vec<String> = nodes
        .iter()
        .map(|id| match hosts.get(id).filter(|h| !h.is_empty()) {
            Some(host) => format!("node {id} ({host}) is not available"),
            None => format!("node {id} is not available"),
        })
        .collect();
    format!(
        "warning: incomplete log stream. some logs could not be retrieved for the following reasons: {}",
        reasons.join(", ")
    )
}

/// The context before ` | `: `web.1.<task id>@<node>` padded for the slot width.
pub fn context(msg: &pb::LogMessage, service: &str, host: &str, f: &LineFormat) -> String {
    let mut ctx = if msg.slot > 0 {
        format!("{service}.{}", msg.slot)
    } else {
        format!("{service}.{}", msg.node_id)
    };
    if !f.no_task_ids {
        let id = if f.no_trunc {
            msg.task_id.as_str()
        } else {
            shoal_api::id::short(&msg.task_id)
        };
        ctx.push('.');
        ctx.push_str(id);
    }
    ctx.push('@');
    ctx.push_str(host);
    if msg.slot > 0 {
        ctx.extend(std::iter::repeat_n(
            ' ',
            f.slot_width.saturating_sub(digits(msg.slot)),
        ));
    }
    ctx
}

/// The keys under which Docker's daemon adds a line's context to its details.
const NODE_KEY: &str = "com.docker.swarm.node.id";
const SERVICE_KEY: &str = "com.docker.swarm.service.id";
const TASK_KEY: &str = "com.docker.swarm.task.id";

/// `--details`: the message's attributes sorted by key, `k=v` joined by
/// commas. Neat output shows the extra attributes as they are (Docker's CLI
/// takes the context out); `--raw` shows what Docker's daemon sends, the
/// context included and every key and value URL-query-escaped.
pub fn details(msg: &pb::LogMessage, raw: bool) -> String {
    let context = [
        (NODE_KEY, msg.node_id.as_str()),
        (SERVICE_KEY, msg.service_id.as_str()),
        (TASK_KEY, msg.task_id.as_str()),
    ];
    let mut attrs: Vec<(&str, &str)> = msg
        .attrs
        .iter()
        .map(|a| (a.key.as_str(), a.value.as_str()))
        .filter(|(k, _)| !context.iter().any(|(c, _)| c == k))
        .collect();
    if raw {
        attrs.extend(context);
    }
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    let pair = |(k, v): &(&str, &str)| {
        if raw {
            format!("{}={}", query_escape(k), query_escape(v))
        } else {
            format!("{k}={v}")
        }
    };
    attrs.iter().map(pair).collect::<Vec<_>>().join(",")
}

/// Go's `url.QueryEscape`: bytes other than `A-Za-z0-9-_.~` as `%XX`, a
/// space as `+`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Formats one message as output lines (a trailing newline does not make an
/// empty line; embedded newlines each get the prefix): Docker's order is
/// timestamp, context, details, line.
pub fn format_message(
    msg: &pb::LogMessage,
    service: &str,
    host: &str,
    f: &LineFormat,
) -> Vec<String> {
    let text = String::from_utf8_lossy(&msg.data);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut prefix = String::new();
    if f.timestamps {
        prefix.push_str(&rfc3339_nano_fixed(msg.timestamp_ns));
        prefix.push(' ');
    }
    if !f.raw {
        prefix.push_str(&context(msg, service, host, f));
        prefix.push_str("    | ");
    }
    if f.details {
        prefix.push_str(&details(msg, f.raw));
        prefix.push(' ');
    }
    text.split('\n')
        .map(|line| format!("{prefix}{line}"))
        .collect()
}

/// Go's `RFC3339NanoFixed` in UTC (`2026-12-07T16:52:55.123456789Z`, always
/// nine fraction digits) for Unix nanoseconds; Go's zero time when unset.
pub fn rfc3339_nano_fixed(ns: i64) -> String {
    match u64::try_from(ns) {
        Ok(ns) if ns > 0 => {
            humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
        }
        _ => "0001-01-01T00:00:00.000000000Z".into(),
    }
}
