//! `--pretty`: Docker's human formats of `service inspect` and `node inspect`.

use std::collections::BTreeMap;

use shoal_api::pb;

use super::shapes::{ports_json, restart_json};
use crate::format::rfc3339;
use crate::names::{
    availability_name, failure_action_name, node_state_name, runtime_name, update_order_name,
    update_state_name,
};

/// `docker service inspect --pretty`.
pub fn service_pretty(s: &pb::Service) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let mut o = String::new();
    o.push('\n');
    o.push_str(&format!("ID:\t\t{}\n", s.id));
    o.push_str(&format!("Name:\t\t{}\n", spec.name));
    if !spec.labels.is_empty() {
        o.push_str("Labels:\n");
        let labels: BTreeMap<_, _> = spec.labels.iter().collect();
        for (k, v) in labels {
            if v.is_empty() {
                o.push_str(&format!(" {k}\n"));
            } else {
                o.push_str(&format!(" {k}={v}\n"));
            }
        }
    }
    match pb::ServiceMode::try_from(spec.mode).unwrap_or_default() {
        pb::ServiceMode::Global => o.push_str("Service Mode:\tGlobal\n"),
        pb::ServiceMode::Replicated => {
            o.push_str("Service Mode:\tReplicated\n");
            o.push_str(&format!(" Replicas:\t{}\n", spec.replicas));
        }
        pb::ServiceMode::ReplicatedJob => {
            o.push_str("Service Mode:\tReplicated Job\n");
            o.push_str(&format!(" Max Concurrent:\t{}\n", spec.max_concurrent));
            o.push_str(&format!(" Total Completions:\t{}\n", spec.replicas));
        }
        pb::ServiceMode::GlobalJob => o.push_str("Service Mode:\tGlobal Job\n"),
    }
    if let Some(st) = s.update_status.as_ref() {
        let state = update_state_name(st.state);
        if !state.is_empty() {
            let ago = |ms: i64| {
                let d = crate::format::age(shoal_api::now_ms(), ms);
                format!("{} ago", crate::format::human_duration(d))
            };
            o.push_str("UpdateStatus:\n");
            o.push_str(&format!(" State:\t\t{state}\n"));
            if st.started_at_ms > 0 {
                o.push_str(&format!(" Started:\t{}\n", ago(st.started_at_ms)));
            }
            if st.state == pb::UpdateState::Completed as i32 && st.completed_at_ms > 0 {
                o.push_str(&format!(" Completed:\t{}\n", ago(st.completed_at_ms)));
            }
            o.push_str(&format!(" Message:\t{}\n", st.message));
        }
    }
    pretty_placement(&mut o, &spec);
    let r = restart_json(&spec);
    o.push_str("RestartPolicy:\n");
    o.push_str(&format!(" Condition:\t{}\n", r.condition));
    o.push_str(&format!(
        " Delay:\t\t{}\n",
        humantime::format_duration(std::time::Duration::from_nanos(r.delay))
    ));
    o.push_str(&format!(" Max Attempts:\t{}\n", r.max_attempts));
    if let Some(c) = &spec.update_config {
        o.push_str("UpdateConfig:\n");
        pretty_update_config(&mut o, c, "Update order:      ");
    }
    if let Some(c) = &spec.rollback_config {
        o.push_str("RollbackConfig:\n");
        pretty_update_config(&mut o, c, "Rollback order:    ");
    }
    o.push_str("ContainerSpec:\n");
    o.push_str(&format!(" Image:\t\t{}\n", spec.image));
    if !spec.command.is_empty() {
        o.push_str(&format!(" Args:\t\t{} \n", spec.command.join(" ")));
    }
    if !spec.env.is_empty() {
        o.push_str(&format!(" Env:\t\t{} \n", spec.env.join(" ")));
    }
    if !spec.workdir.is_empty() {
        o.push_str(&format!(" Dir:\t\t{}\n", spec.workdir));
    }
    pretty_resources(&mut o, &spec);
    o.push_str(&format!("Runtime:\t{}\n", runtime_name(spec.runtime)));
    o.push_str("Endpoint Mode:\tvip\n");
    let ports = s
        .endpoint
        .as_ref()
        .filter(|e| !e.ports.is_empty())
        .map(|e| e.ports.clone())
        .unwrap_or(spec.ports);
    if !ports.is_empty() {
        o.push_str("Ports:\n");
        for p in ports_json(&ports) {
            o.push_str(&format!(" PublishedPort = {}\n", p.published_port));
            o.push_str(&format!("  Protocol = {}\n", p.protocol));
            o.push_str(&format!("  TargetPort = {}\n", p.target_port));
            o.push_str(&format!("  PublishMode = {}\n", p.publish_mode));
            if !p.proxy_protocol.is_empty() {
                o.push_str(&format!("  ProxyProtocol = {}\n", p.proxy_protocol));
            }
        }
    }
    o
}

/// Docker's `Placement:` section: Go-formatted lists (`[a b]`).
fn pretty_placement(o: &mut String, spec: &pb::ServiceSpec) {
    let p = spec.placement.clone().unwrap_or_default();
    if p.constraints.is_empty() && p.preferences.is_empty() && p.max_replicas_per_node == 0 {
        return;
    }
    o.push_str("Placement:\n");
    if !p.constraints.is_empty() {
        o.push_str(&format!(" Constraints:\t[{}]\n", p.constraints.join(" ")));
    }
    if !p.preferences.is_empty() {
        o.push_str(&format!(" Preferences:   [{}]\n", p.preferences.join(" ")));
    }
    if p.max_replicas_per_node > 0 {
        o.push_str(&format!(
            " Max Replicas Per Node:   {}\n",
            p.max_replicas_per_node
        ));
    }
}

/// Docker's `Resources:` section: CPUs as a decimal, memory in binary units.
fn pretty_resources(o: &mut String, spec: &pb::ServiceSpec) {
    let r = spec.resources.unwrap_or_default();
    let section = |o: &mut String, title: &str, cpu: i64, mem: i64| {
        if cpu == 0 && mem == 0 {
            return;
        }
        o.push_str(&format!(" {title}:\n"));
        if cpu > 0 {
            o.push_str(&format!("  CPU:\t\t{}\n", cpu as f64 / 1e9));
        }
        if mem > 0 {
            o.push_str(&format!("  Memory:\t{}\n", bytes_size(mem)));
        }
    };
    if r == pb::Resources::default() {
        return;
    }
    o.push_str("Resources:\n");
    section(
        o,
        "Reservations",
        r.reserve_nano_cpus,
        r.reserve_memory_bytes,
    );
    section(o, "Limits", r.limit_nano_cpus, r.limit_memory_bytes);
}

/// Docker's `units.BytesSize`: binary units, up to 4 significant digits
/// (`64MiB`, `1.5GiB`).
pub fn bytes_size(n: i64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    // Go's %.4g: four significant digits, trailing zeros dropped.
    let int_digits = (v.max(1.0).log10().floor() as usize) + 1;
    let s = format!("{v:.*}", 4usize.saturating_sub(int_digits));
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[i])
}

/// The body of Docker's `UpdateConfig:` / `RollbackConfig:` sections.
fn pretty_update_config(o: &mut String, c: &pb::UpdateConfig, order_label: &str) {
    o.push_str(&format!(" Parallelism:\t{}\n", c.parallelism));
    if c.delay_ms > 0 {
        o.push_str(&format!(
            " Delay:\t\t{}\n",
            crate::format::go_duration_ms(c.delay_ms)
        ));
    }
    o.push_str(&format!(
        " On failure:\t{}\n",
        failure_action_name(c.failure_action)
    ));
    if c.monitor_ms > 0 {
        o.push_str(&format!(
            " Monitoring Period: {}\n",
            crate::format::go_duration_ms(c.monitor_ms)
        ));
    }
    o.push_str(&format!(" Max failure ratio: {}\n", c.max_failure_ratio));
    o.push_str(&format!(" {order_label}{}\n", update_order_name(c.order)));
}

/// `docker node inspect --pretty`: Docker's `nodeInspectPrettyTemplate`
/// (without the Resources and Plugins sections, which Shoal does not track).
pub fn node_pretty(n: &pb::Node) -> String {
    let meta = n.meta.unwrap_or_default();
    let desc = n.description.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let mut o = String::new();
    o.push_str(&format!("ID:\t\t\t{}\n", n.id));
    if !spec.labels.is_empty() {
        o.push_str("Labels:\n");
        let labels: BTreeMap<_, _> = spec.labels.iter().collect();
        for (k, v) in labels {
            if v.is_empty() {
                o.push_str(&format!(" - {k}\n"));
            } else {
                o.push_str(&format!(" - {k}={v}\n"));
            }
        }
    }
    o.push_str(&format!("Hostname:              \t{}\n", desc.hostname));
    o.push_str(&format!(
        "Joined at:             \t{}\n",
        go_time_string(meta.created_at_ms)
    ));
    o.push_str("Status:\n");
    o.push_str(&format!(" State:\t\t\t{}\n", node_state_name(status.state)));
    if !status.message.is_empty() {
        o.push_str(&format!(
            " Message:              \t{}\n",
            pretty_print(&status.message)
        ));
    }
    o.push_str(&format!(
        " Availability:         \t{}\n",
        availability_name(spec.availability)
    ));
    if !status.addr.is_empty() {
        o.push_str(&format!(" Address:\t\t{}\n", status.addr));
    }
    if let Some(m) = n
        .manager_status
        .as_ref()
        .filter(|_| spec.role == pb::NodeRole::Manager as i32)
    {
        o.push_str("Manager Status:\n");
        o.push_str(&format!(" Address:\t\t{}\n", m.addr));
        o.push_str(&format!(
            " Raft Status:\t\t{}\n",
            pretty_print(&m.reachability)
        ));
        o.push_str(&format!(
            " Leader:\t\t{}\n",
            if m.leader { "Yes" } else { "No" }
        ));
    }
    o.push_str("Platform:\n");
    o.push_str(&format!(" Operating System:\t{}\n", desc.os));
    o.push_str(&format!(" Architecture:\t\t{}\n", desc.arch));
    o.push_str(&format!("Engine Version:\t\t{}\n", desc.engine_version));
    o
}

/// Docker's `command.PrettyPrint` of a string: first letter upper-cased, the
/// rest lower-cased.
fn pretty_print(s: &str) -> String {
    crate::format::title(&s.to_lowercase())
}

/// Docker's `PrettyPrint(time.Time)`: Go's `Time.String()` in UTC, lower-cased
/// (`2017-05-16 22:52:44.991 +0000 utc`).
pub fn go_time_string(ms: i64) -> String {
    let t = rfc3339(ms);
    let body = t.strip_suffix('Z').unwrap_or(&t).replacen('T', " ", 1);
    format!("{body} +0000 utc")
}
