//! `shoal service logs`: the `ServiceLogs` stream with Docker's line prefix,
//! `web.1.<task id>@<node>    | <line>`. Nodes the manager could not reach
//! are named in swarmkit's "incomplete log stream" warning on stderr; every
//! line that did arrive is printed, and the exit status stays 0.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context;
use shoal_api::pb;

use crate::client::{DaemonExt, Host};
use crate::opts;

/// `shoal service logs SERVICE`.
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
    /// Service name or ID.
    pub service: String,
}

/// How each line's context is written.
#[derive(Debug, Clone, Default)]
pub struct LineFormat {
    /// Full task IDs.
    pub no_trunc: bool,
    /// No context at all.
    pub raw: bool,
    /// Leave the task ID out of the context.
    pub no_task_ids: bool,
    /// Prefix each line with its RFC3339Nano timestamp.
    pub timestamps: bool,
    /// Digits of the highest slot, so `web.1` and `web.10` line up.
    pub slot_width: usize,
}

/// Streams the service's logs.
pub async fn run(host: &Host, a: &LogsArgs) -> anyhow::Result<()> {
    let tail = opts::parse_tail(&a.tail)?;
    let since_ms = match &a.since {
        Some(s) => opts::parse_since(s, shoal_api::now_ms())?,
        None => 0,
    };
    let mut c = super::connect(host).await?;
    let svc = c
        .get_service(pb::GetServiceRequest {
            service: a.service.clone(),
        })
        .await
        .daemon()?
        .service
        .with_context(|| format!("no such service: {}", a.service))?;
    let spec = svc.spec.clone().unwrap_or_default();
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
        slot_width: if opts::is_per_node(spec.mode) {
            0
        } else {
            spec.replicas.max(1).to_string().len()
        },
    };
    let mut stream = c
        .service_logs(pb::ServiceLogsRequest {
            service: svc.id.clone(),
            follow: a.follow,
            tail,
            since_ms,
        })
        .await
        .daemon()?;
    while let Some(msg) = stream.message().await.map_err(crate::client::DaemonError)? {
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
        let name = if msg.service_name.is_empty() {
            spec.name.as_str()
        } else {
            msg.service_name.as_str()
        };
        let lines = format_message(&msg, name, host, &fmt);
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
        let digits = msg.slot.to_string().len();
        ctx.extend(std::iter::repeat_n(
            ' ',
            f.slot_width.saturating_sub(digits),
        ));
    }
    ctx
}

/// Formats one message as output lines (a trailing newline does not make an
/// empty line; embedded newlines each get the context).
pub fn format_message(
    msg: &pb::LogMessage,
    service: &str,
    host: &str,
    f: &LineFormat,
) -> Vec<String> {
    let text = String::from_utf8_lossy(&msg.data);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let ts = if f.timestamps {
        format!("{} ", rfc3339_nano(msg.timestamp_ms))
    } else {
        String::new()
    };
    let prefix = if f.raw {
        String::new()
    } else {
        format!("{}    | ", context(msg, service, host, f))
    };
    text.split('\n')
        .map(|line| format!("{prefix}{ts}{line}"))
        .collect()
}

/// Go's RFC3339Nano for a Unix-ms instant.
fn rfc3339_nano(ms: i64) -> String {
    crate::format::rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(data: &str) -> pb::LogMessage {
        pb::LogMessage {
            task_id: "u5d8gatt116jabcdefghijklm".into(),
            service_id: "svc".into(),
            service_name: "timecheck".into(),
            slot: 1,
            node_id: "node1".into(),
            timestamp_ms: 1_700_000_000_120,
            stream: "stdout".into(),
            data: data.as_bytes().to_vec(),
            unavailable_nodes: Vec::new(),
        }
    }

    #[test]
    fn docker_line_prefix() {
        let f = LineFormat {
            slot_width: 1,
            ..Default::default()
        };
        assert_eq!(
            format_message(
                &msg("App version: 1.0; time check: 01:10.43\n"),
                "timecheck",
                "orbstack",
                &f
            ),
            ["timecheck.1.u5d8gatt116j@orbstack    | App version: 1.0; time check: 01:10.43"]
        );
    }

    #[test]
    fn flags_change_the_prefix() {
        let m = msg("hi\n");
        let f = LineFormat {
            timestamps: true,
            slot_width: 1,
            ..Default::default()
        };
        assert_eq!(
            format_message(&m, "timecheck", "n", &f),
            ["timecheck.1.u5d8gatt116j@n    | 2023-11-14T22:13:20.12Z hi"]
        );
        let f = LineFormat {
            no_trunc: true,
            slot_width: 2,
            ..Default::default()
        };
        assert_eq!(
            format_message(&m, "timecheck", "n", &f),
            ["timecheck.1.u5d8gatt116jabcdefghijklm@n     | hi"]
        );
        let f = LineFormat {
            no_task_ids: true,
            slot_width: 1,
            ..Default::default()
        };
        assert_eq!(
            format_message(&m, "timecheck", "n", &f),
            ["timecheck.1@n    | hi"]
        );
        let f = LineFormat {
            raw: true,
            ..Default::default()
        };
        assert_eq!(format_message(&m, "timecheck", "n", &f), ["hi"]);
        assert_eq!(
            format_message(&msg("a\nb"), "timecheck", "n", &f),
            ["a", "b"]
        );
        assert_eq!(format_message(&msg("a\r\n"), "timecheck", "n", &f), ["a"]);
    }

    #[test]
    fn unreachable_nodes_get_swarmkits_warning() {
        let hosts = HashMap::from([("n3".to_string(), "node-3".to_string())]);
        assert_eq!(
            incomplete_warning(&["n3".into(), "n9".into()], &hosts),
            "warning: incomplete log stream. some logs could not be retrieved for the following \
             reasons: node n3 (node-3) is not available, node n9 is not available"
        );
    }

    proptest::proptest! {
        /// Any bytes and timestamp render without panicking; raw output of a
        /// single line without CR/LF is the line itself.
        #[test]
        fn any_message_renders(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            timestamp_ms in proptest::prelude::any::<i64>(),
            slot in proptest::prelude::any::<u64>(),
            slot_width in 0usize..30,
            flags in proptest::prelude::any::<(bool, bool, bool, bool)>(),
        ) {
            let mut m = msg("");
            m.data = data;
            m.timestamp_ms = timestamp_ms;
            m.slot = slot;
            let (no_trunc, raw, no_task_ids, timestamps) = flags;
            let f = LineFormat { no_trunc, raw, no_task_ids, timestamps, slot_width };
            let lines = format_message(&m, "web", "host1", &f);
            proptest::prop_assert!(!lines.is_empty());
        }

        #[test]
        fn a_raw_line_is_itself(line in "[^\r\n]{0,40}") {
            let f = LineFormat { raw: true, ..Default::default() };
            proptest::prop_assert_eq!(
                format_message(&msg(&format!("{line}\n")), "web", "host1", &f),
                vec![line]
            );
        }
    }

    #[test]
    fn global_tasks_use_the_node_id() {
        let mut m = msg("x");
        m.slot = 0;
        let f = LineFormat::default();
        assert_eq!(
            format_message(&m, "mon", "host1", &f),
            ["mon.node1.u5d8gatt116j@host1    | x"]
        );
    }
}
