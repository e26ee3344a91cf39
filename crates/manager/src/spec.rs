//! Service spec validation and comparison, shared by the control API and the
//! orchestrators. Error texts name the field and the fix: they reach users
//! verbatim as `Error response from daemon: ...`.

pub mod bounds;
pub mod proxy;

use shoal_api::pb::{
    FailureAction, PortConfig, Runtime, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder,
};

/// First port handed out when a spec publishes a port without a number.
pub const DYNAMIC_PORT_START: u32 = 30000;
/// Last port of the dynamic range (inclusive), as in Swarm.
pub const DYNAMIC_PORT_END: u32 = 32767;

/// Whether the spec describes a job (replicated-job or global-job).
pub fn is_job(spec: &ServiceSpec) -> bool {
    matches!(
        spec.mode(),
        ServiceMode::ReplicatedJob | ServiceMode::GlobalJob
    )
}

/// Docker's default update and rollback configuration.
pub fn default_update_config() -> UpdateConfig {
    UpdateConfig {
        parallelism: 1,
        delay_ms: 0,
        failure_action: FailureAction::Pause as i32,
        monitor_ms: 5000,
        max_failure_ratio: 0.0,
        order: UpdateOrder::StopFirst as i32,
    }
}

/// Checks everything that does not need the store.
pub fn validate(spec: &ServiceSpec) -> Result<(), String> {
    bounds::check(spec)?;
    validate_name(&spec.name)?;
    if spec.image.trim().is_empty() {
        return Err("image: an image is required (e.g. shoal/echo)".into());
    }
    match spec.runtime() {
        Runtime::Builtin => {
            if shoal_api::builtin_image(&spec.image).is_none() {
                return Err(format!(
                    "image {:?} is not a built-in workload (shoal/echo, shoal/timecheck); run a command with --runtime process",
                    spec.image
                ));
            }
        }
        Runtime::Process => {
            if spec.command.first().is_none_or(|c| c.trim().is_empty()) {
                return Err(
                    "command: --runtime process needs a command (shoal service create --runtime process IMAGE COMMAND [ARG...])"
                        .into(),
                );
            }
        }
    }
    validate_mode(spec)?;
    for env in &spec.env {
        if env.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(format!("env: {env:?} is not KEY=VALUE"));
        }
    }
    for (flag, cfg) in [
        ("update", &spec.update_config),
        ("rollback", &spec.rollback_config),
    ] {
        if let Some(cfg) = cfg {
            if !(0.0..=1.0).contains(&cfg.max_failure_ratio) {
                return Err(format!(
                    "{flag}_config: --{flag}-max-failure-ratio {} must be between 0 and 1",
                    cfg.max_failure_ratio
                ));
            }
            if flag == "rollback" && cfg.failure_action() == shoal_api::pb::FailureAction::Rollback
            {
                return Err(
                    "rollback_config: --rollback-failure-action must be pause or continue".into(),
                );
            }
        }
    }
    crate::placement::validate(spec)?;
    validate_stop_signal(&spec.stop_signal)?;
    validate_health(spec)?;
    proxy::validate(spec)?;
    let mut seen = Vec::new();
    for p in &spec.ports {
        validate_port(p)?;
        if p.published_port != 0 {
            // 53/tcp and 53/udp are two ports.
            let udp = p.protocol == "udp";
            if seen.contains(&(p.published_port, udp)) {
                return Err(format!(
                    "ports: published port {}{} is listed twice",
                    p.published_port,
                    if udp { "/udp" } else { "" }
                ));
            }
            seen.push((p.published_port, udp));
        }
    }
    Ok(())
}

/// Mode-specific fields: replicas, `--max-concurrent`, and no update or
/// rollback configuration for jobs (their tasks are never rolled).
fn validate_mode(spec: &ServiceSpec) -> Result<(), String> {
    let mode = spec.mode();
    if matches!(mode, ServiceMode::Global | ServiceMode::GlobalJob) && spec.replicas != 0 {
        return Err(
            "replicas: --replicas can only be used with replicated or replicated-job mode".into(),
        );
    }
    if mode != ServiceMode::ReplicatedJob && spec.max_concurrent != 0 {
        return Err(
            "max_concurrent: --max-concurrent can only be used with replicated-job mode".into(),
        );
    }
    if is_job(spec) && (spec.update_config.is_some() || spec.rollback_config.is_some()) {
        return Err(
            "update_config: update and rollback configuration is not supported for jobs; drop the --update-* and --rollback-* flags"
                .into(),
        );
    }
    Ok(())
}

/// Signal names Linux knows (`SIGTERM`, `TERM`) or numbers 1-64.
fn validate_stop_signal(signal: &str) -> Result<(), String> {
    const NAMES: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    let s = signal.trim().to_ascii_uppercase();
    let name = s.strip_prefix("SIG").unwrap_or(&s);
    let ok = s.is_empty()
        || NAMES.contains(&name)
        || s.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "stop_signal: {signal:?} is not a signal (use e.g. SIGTERM, SIGINT or a number)"
        ))
    }
}

fn validate_health(spec: &ServiceSpec) -> Result<(), String> {
    let Some(h) = &spec.health else { return Ok(()) };
    match h.test.first().map(String::as_str) {
        None | Some("NONE") => {
            if h.test.len() > 1
                || h.interval_ms != 0
                || h.timeout_ms != 0
                || h.retries != 0
                || h.start_period_ms != 0
            {
                return Err("health: --no-healthcheck conflicts with --health-* options".into());
            }
            Ok(())
        }
        Some("CMD-SHELL") if h.test.len() == 2 && !h.test[1].trim().is_empty() => Ok(()),
        Some("CMD") if h.test.len() >= 2 => Ok(()),
        _ => Err(
            "health: --health-cmd needs a command, e.g. --health-cmd 'curl -f localhost'".into(),
        ),
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() {
        return Err("name: a service name is required (--name web)".into());
    }
    // Swarmkit's rule: a DNS-friendly name, `[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*`.
    let ok_last = name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok_first || !ok_rest || !ok_last || name.len() > 63 {
        return Err(format!(
            "name: invalid service name {:?}: use 1-63 letters, digits, '-' or '_', starting and ending with a letter or digit",
            bounds::shorten(name)
        ));
    }
    Ok(())
}

fn validate_port(p: &PortConfig) -> Result<(), String> {
    if p.target_port == 0 || p.target_port > 65535 {
        return Err(format!(
            "ports: target port {} out of range (1-65535)",
            p.target_port
        ));
    }
    if p.published_port > 65535 {
        return Err(format!(
            "ports: published port {} out of range (1-65535)",
            p.published_port
        ));
    }
    match p.protocol.as_str() {
        "" | "tcp" | "udp" => {}
        "sctp" => {
            return Err(
                "ports: protocol sctp is not supported by the routing mesh; use tcp or udp".into(),
            )
        }
        other => {
            return Err(format!(
                "ports: unknown protocol {other:?} (use tcp or udp)"
            ))
        }
    }
    match p.publish_mode.as_str() {
        "" | "ingress" | "host" => Ok(()),
        other => Err(format!(
            "ports: unknown publish mode {other:?} (use ingress or host)"
        )),
    }
}

/// Fills defaults (protocol tcp, mode ingress) so stored specs are explicit.
pub fn normalize(spec: &mut ServiceSpec) {
    for p in &mut spec.ports {
        if p.protocol.is_empty() {
            p.protocol = "tcp".into();
        }
        if p.publish_mode.is_empty() {
            p.publish_mode = "ingress".into();
        }
    }
    if is_job(spec) {
        // Jobs have no rolling updates: the defaults mean "none given".
        let default = Some(default_update_config());
        if spec.update_config == default {
            spec.update_config = None;
        }
        if spec.rollback_config == default {
            spec.rollback_config = None;
        }
        if spec.mode() == ServiceMode::ReplicatedJob && spec.max_concurrent == 0 {
            spec.max_concurrent = spec.replicas;
        }
    } else {
        if spec.update_config.is_none() {
            spec.update_config = Some(default_update_config());
        }
        if spec.rollback_config.is_none() {
            spec.rollback_config = Some(default_update_config());
        }
    }
    if spec.restart.is_none() {
        spec.restart = Some(shoal_api::pb::RestartPolicy {
            delay_ms: 5000,
            ..Default::default()
        });
    }
}

/// Whether two specs run different tasks (anything but replicas, name and
/// labels). Only such a change bumps `Service.spec_version`.
pub fn task_template_changed(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    let strip = |s: &ServiceSpec| ServiceSpec {
        replicas: 0,
        labels: Default::default(),
        name: String::new(),
        ..s.clone()
    };
    strip(a) != strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            image: "shoal/echo".into(),
            replicas: 3,
            ports: vec![PortConfig {
                target_port: 80,
                published_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_plain_spec() {
        assert_eq!(validate(&spec()), Ok(()));
    }

    #[test]
    fn udp_is_accepted_beside_tcp_and_sctp_is_refused() {
        let port = |protocol: &str| PortConfig {
            protocol: protocol.into(),
            target_port: 53,
            published_port: 5353,
            ..Default::default()
        };
        let mut s = spec();
        s.ports = vec![port("tcp"), port("udp")];
        assert_eq!(validate(&s), Ok(()));
        s.ports = vec![port("udp"), port("udp")];
        assert_eq!(
            validate(&s),
            Err("ports: published port 5353/udp is listed twice".into())
        );
        s.ports = vec![port("sctp")];
        assert_eq!(
            validate(&s),
            Err("ports: protocol sctp is not supported by the routing mesh; use tcp or udp".into())
        );
    }

    #[test]
    fn rejects_bad_input_naming_the_field() {
        let mut s = spec();
        s.ports[0].published_port = 70000;
        assert!(validate(&s)
            .unwrap_err()
            .starts_with("ports: published port 70000"));

        let mut s = spec();
        s.mode = ServiceMode::Global as i32;
        assert!(validate(&s).unwrap_err().starts_with("replicas:"));

        let mut s = spec();
        s.max_concurrent = 2;
        assert!(validate(&s).unwrap_err().starts_with("max_concurrent:"));

        let mut s = spec();
        s.mode = ServiceMode::GlobalJob as i32;
        assert!(validate(&s).unwrap_err().starts_with("replicas:"));

        let mut s = spec();
        s.mode = ServiceMode::ReplicatedJob as i32;
        s.update_config = Some(default_update_config());
        s.update_config.as_mut().unwrap().parallelism = 2;
        normalize(&mut s);
        assert!(validate(&s).unwrap_err().starts_with("update_config:"));

        let mut s = spec();
        s.runtime = Runtime::Process as i32;
        assert!(validate(&s).unwrap_err().starts_with("command:"));

        let mut s = spec();
        s.name = "bad name".into();
        assert!(validate(&s).unwrap_err().starts_with("name:"));

        let mut s = spec();
        s.stop_signal = "SIGNOPE".into();
        assert!(validate(&s).unwrap_err().starts_with("stop_signal:"));
        s.stop_signal = "sigint".into();
        assert_eq!(validate(&s), Ok(()));

        let mut s = spec();
        s.image = "nginx".into();
        assert!(validate(&s).unwrap_err().contains("--runtime process"));
    }

    #[test]
    fn jobs_get_max_concurrent_and_no_update_config() {
        let mut s = spec();
        s.ports.clear();
        s.mode = ServiceMode::ReplicatedJob as i32;
        s.replicas = 6;
        s.update_config = Some(default_update_config());
        normalize(&mut s);
        assert_eq!(s.max_concurrent, 6);
        assert_eq!((s.update_config, s.rollback_config), (None, None));
        assert_eq!(validate(&s), Ok(()));
    }

    #[test]
    fn scaling_is_not_a_template_change() {
        let a = spec();
        let mut b = spec();
        b.replicas = 6;
        assert!(!task_template_changed(&a, &b));
        b.env.push("A=1".into());
        assert!(task_template_changed(&a, &b));
    }
}
