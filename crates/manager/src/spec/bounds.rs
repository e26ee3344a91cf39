//! Upper bounds on every field of a service spec, so that no request can make
//! a node allocate without limit or push a message past the gRPC transport
//! limit. Checked by the control API on create, update and scale (any client
//! is covered); each error is one line naming the field and the fix.
//!
//! The maxima (documented in the README):
//! - replicas, `--max-concurrent`, `--replicas-max-per-node` and update/rollback
//!   parallelism: [`MAX_REPLICAS`];
//! - labels: [`MAX_LABELS`] per spec, keys non-empty, at most
//!   [`MAX_LABEL_KEY_BYTES`], without whitespace or control characters
//!   (Docker's rule), values at most [`MAX_LABEL_VALUE_BYTES`];
//! - env and command/args: [`MAX_LIST_ENTRIES`] entries of at most
//!   [`MAX_ENTRY_BYTES`] each, no NUL byte (a process cannot receive one);
//! - durations (restart delay and window, update/rollback delay and monitor,
//!   stop grace period, health interval, timeout and start period): at most
//!   [`MAX_DURATION_MS`] (365 days);
//! - the whole encoded spec: at most [`MAX_SPEC_BYTES`] (512 KiB), well under
//!   the 4 MiB a gRPC message may carry.

use shoal_api::codec;
use shoal_api::pb::ServiceSpec;

/// Replicas, `--max-concurrent`, `--replicas-max-per-node`, parallelism.
pub const MAX_REPLICAS: u64 = 100_000;
/// Labels on one service or node.
pub const MAX_LABELS: usize = 128;
pub const MAX_LABEL_KEY_BYTES: usize = 256;
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;
/// Entries of `--env` and of the command and its arguments; also constraints,
/// placement preferences, health-check arguments.
pub const MAX_LIST_ENTRIES: usize = 1000;
/// One env entry, argument, constraint, image, workdir, ...
pub const MAX_ENTRY_BYTES: usize = 32 * 1024;
/// Published ports of one service.
pub const MAX_PORTS: usize = 256;
/// Every duration in a spec: 365 days.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 3600 * 1000;
/// Health-check retries and restart attempts.
pub const MAX_RETRIES: u64 = 1_000_000;
/// CPUs (`--limit-cpu`, `--reserve-cpu`), in NanoCPUs: 100 000 CPUs.
pub const MAX_NANO_CPUS: i64 = 100_000 * 1_000_000_000;
/// Memory (`--limit-memory`, `--reserve-memory`): 1 PiB.
pub const MAX_MEMORY_BYTES: i64 = 1 << 50;
/// The encoded spec. A stored service holds two (spec and previous spec),
/// a task one, so a single object stays far under the transport limit.
pub const MAX_SPEC_BYTES: usize = 512 * 1024;

/// Checks every bound; the first field out of bounds is the error.
pub fn check(spec: &ServiceSpec) -> Result<(), String> {
    let size = codec::encoded_len(spec);
    if size > MAX_SPEC_BYTES {
        return Err(format!(
            "spec: the service spec is {size} bytes encoded, more than the maximum {MAX_SPEC_BYTES}; use fewer or smaller labels, env entries or arguments"
        ));
    }
    at_most("replicas", spec.replicas, MAX_REPLICAS)?;
    at_most("max_concurrent", spec.max_concurrent, MAX_REPLICAS)?;
    text("name", &spec.name, MAX_ENTRY_BYTES)?;
    text("image", &spec.image, MAX_ENTRY_BYTES)?;
    if spec
        .image
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "image: {:?} contains whitespace or control characters; use a reference like shoal/echo:2",
            spec.image
        ));
    }
    text("workdir", &spec.workdir, MAX_ENTRY_BYTES)?;
    labels("labels", spec.labels.iter())?;
    list("env", &spec.env)?;
    list("command", &spec.command)?;
    if spec.ports.len() > MAX_PORTS {
        return Err(format!(
            "ports: {} published ports is more than the maximum {MAX_PORTS}; use at most {MAX_PORTS}",
            spec.ports.len()
        ));
    }
    for p in &spec.ports {
        text("ports", &p.name, MAX_LABEL_KEY_BYTES)?;
    }
    if let Some(r) = &spec.restart {
        duration("restart_delay", r.delay_ms)?;
        duration("restart_window", r.window_ms)?;
        at_most("restart_max_attempts", r.max_attempts, MAX_RETRIES)?;
    }
    for (what, cfg) in [
        ("update", &spec.update_config),
        ("rollback", &spec.rollback_config),
    ] {
        if let Some(cfg) = cfg {
            at_most(
                &format!("{what}_parallelism"),
                cfg.parallelism,
                MAX_REPLICAS,
            )?;
            duration(&format!("{what}_delay"), cfg.delay_ms)?;
            duration(&format!("{what}_monitor"), cfg.monitor_ms)?;
        }
    }
    if let Some(p) = &spec.placement {
        list("constraints", &p.constraints)?;
        list("placement_preferences", &p.preferences)?;
        at_most(
            "replicas_max_per_node",
            p.max_replicas_per_node,
            MAX_REPLICAS,
        )?;
    }
    if let Some(r) = &spec.resources {
        for (name, v, max) in [
            ("reserve_nano_cpus", r.reserve_nano_cpus, MAX_NANO_CPUS),
            ("limit_nano_cpus", r.limit_nano_cpus, MAX_NANO_CPUS),
            (
                "reserve_memory_bytes",
                r.reserve_memory_bytes,
                MAX_MEMORY_BYTES,
            ),
            ("limit_memory_bytes", r.limit_memory_bytes, MAX_MEMORY_BYTES),
        ] {
            if v < 0 {
                return Err(format!("resources: {name} {v} is negative; use 0 or more"));
            }
            at_most(&format!("resources: {name}"), v as u64, max as u64)?;
        }
    }
    if let Some(h) = &spec.health {
        list("health_cmd", &h.test)?;
        duration("health_interval", h.interval_ms)?;
        duration("health_timeout", h.timeout_ms)?;
        duration("health_start_period", h.start_period_ms)?;
        at_most("health_retries", h.retries, MAX_RETRIES)?;
    }
    duration("stop_grace_period", spec.stop_grace_period_ms)?;
    text("stop_signal", &spec.stop_signal, MAX_LABEL_KEY_BYTES)?;
    Ok(())
}

/// Docker's label rules (keys non-empty, no whitespace or control
/// characters) and this crate's size bounds; for services and nodes alike.
pub fn labels<'a>(
    field: &str,
    labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{field}: {} labels is more than the maximum {MAX_LABELS}; use at most {MAX_LABELS}",
            labels.len()
        ));
    }
    for (key, value) in labels {
        if key.is_empty() {
            return Err(format!("{field}: a label key is empty; use key=value"));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{field}: label key {:?} contains whitespace or control characters; use letters, digits, '.', '-' or '_'",
                shorten(key)
            ));
        }
        if key.len() > MAX_LABEL_KEY_BYTES {
            return Err(format!(
                "{field}: label key {:?} is {} bytes, more than the maximum {MAX_LABEL_KEY_BYTES}; use a shorter key",
                shorten(key),
                key.len()
            ));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(format!(
                "{field}: the value of label {:?} is {} bytes, more than the maximum {MAX_LABEL_VALUE_BYTES}; use a shorter value",
                shorten(key),
                value.len()
            ));
        }
        if value.contains('\0') {
            return Err(format!(
                "{field}: the value of label {:?} contains a NUL byte; remove it",
                shorten(key)
            ));
        }
    }
    Ok(())
}

fn at_most(field: &str, value: u64, max: u64) -> Result<(), String> {
    if value > max {
        return Err(format!(
            "{field}: {value} is more than the maximum {max}; use at most {max}"
        ));
    }
    Ok(())
}

fn duration(field: &str, ms: u64) -> Result<(), String> {
    if ms > MAX_DURATION_MS {
        return Err(format!(
            "{field}: {} is more than the maximum 8760h (365 days); use at most 8760h",
            human_ms(ms)
        ));
    }
    Ok(())
}

fn list(field: &str, entries: &[String]) -> Result<(), String> {
    if entries.len() > MAX_LIST_ENTRIES {
        return Err(format!(
            "{field}: {} entries is more than the maximum {MAX_LIST_ENTRIES}; use at most {MAX_LIST_ENTRIES}",
            entries.len()
        ));
    }
    entries
        .iter()
        .try_for_each(|e| text(field, e, MAX_ENTRY_BYTES))
}

fn text(field: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!(
            "{field}: {:?} is {} bytes, more than the maximum {max}; use a shorter one",
            shorten(s),
            s.len()
        ));
    }
    if s.contains('\0') {
        return Err(format!(
            "{field}: {:?} contains a NUL byte; remove it",
            shorten(s)
        ));
    }
    Ok(())
}

/// The start of a long value, for an error line of sensible length.
pub(crate) fn shorten(s: &str) -> String {
    const SHOWN: usize = 40;
    match s.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// `1000y` arrives as milliseconds; print it back in hours, as Go would.
fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests;
