//! `shoal service update` and `shoal service rollback`: edit the current spec
//! (or ask for the previous one back), then follow the rolling update.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Context};
use shoal_api::pb;

use crate::client::{retry_out_of_sequence, DaemonExt, Host};
use crate::{inspect, opts, progress};

use super::policy::PolicyArgs;
use super::template::{TemplateArgs, UpdatePlacementArgs};

#[cfg(test)]
mod tests;

/// `shoal service update [OPTIONS] SERVICE`.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// Service image tag.
    #[arg(long)]
    pub image: Option<String>,
    /// Add or update an environment variable.
    #[arg(long = "env-add", value_name = "list")]
    pub env_add: Vec<String>,
    /// Remove an environment variable.
    #[arg(long = "env-rm", value_name = "list")]
    pub env_rm: Vec<String>,
    /// Service command args.
    #[arg(long, value_name = "command", allow_hyphen_values = true)]
    pub args: Option<String>,
    /// Number of tasks.
    #[arg(long, allow_hyphen_values = true)]
    pub replicas: Option<String>,
    /// Number of job tasks to run concurrently (replicated-job mode).
    #[arg(long = "max-concurrent", allow_hyphen_values = true)]
    pub max_concurrent: Option<String>,
    /// Add or update a published port (same syntax as --publish).
    #[arg(long = "publish-add", value_name = "port")]
    pub publish_add: Vec<String>,
    /// Remove a published port by its published or target port (8080, 80/udp, 8080:80).
    #[arg(long = "publish-rm", value_name = "port")]
    pub publish_rm: Vec<String>,
    /// Add or update a service label.
    #[arg(long = "label-add", value_name = "list")]
    pub label_add: Vec<String>,
    /// Remove a label by its key.
    #[arg(long = "label-rm", value_name = "list")]
    pub label_rm: Vec<String>,
    /// Restart when condition is met ("none", "on-failure", or "any").
    #[arg(long = "restart-condition")]
    pub restart_condition: Option<String>,
    /// Delay between restart attempts (ns|us|ms|s|m|h).
    #[arg(long = "restart-delay", allow_hyphen_values = true)]
    pub restart_delay: Option<String>,
    /// Maximum number of restarts before giving up (0 = unlimited).
    #[arg(long = "restart-max-attempts", allow_hyphen_values = true)]
    pub restart_max_attempts: Option<String>,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h).
    #[arg(long = "restart-window", allow_hyphen_values = true)]
    pub restart_window: Option<String>,
    /// `--update-*` and `--rollback-*`.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// `--constraint-add/-rm`, `--placement-pref-add/-rm`.
    #[command(flatten)]
    pub placement: UpdatePlacementArgs,
    /// `--replicas-max-per-node`, `--reserve-*`, `--limit-*`, `--health-*`.
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Force update even if no changes require it.
    #[arg(long)]
    pub force: bool,
    /// Rollback to previous specification.
    #[arg(long)]
    pub rollback: bool,
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Service name or ID.
    pub service: String,
}

/// `shoal service rollback [OPTIONS] SERVICE`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Service name or ID.
    pub service: String,
}

/// Which ports a `--publish-rm` value removes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PortMatch {
    /// `8080` or `80/udp`: a port whose published or target port is this one.
    Either { port: u32, protocol: Option<String> },
    /// `8080:80`, `80` in long form: this target, and this published port if given.
    Spec(pb::PortConfig),
}

/// The validated flags of `service update`, ready to apply to a spec.
#[derive(Debug, Default)]
pub struct Edits {
    image: Option<String>,
    env_add: Vec<String>,
    env_rm: Vec<String>,
    args: Option<Vec<String>>,
    replicas: Option<u64>,
    max_concurrent: Option<u64>,
    publish_add: Vec<pb::PortConfig>,
    publish_rm: Vec<PortMatch>,
    label_add: Vec<(String, String)>,
    label_rm: Vec<String>,
    restart_condition: Option<pb::RestartCondition>,
    restart_delay_ms: Option<u64>,
    restart_max_attempts: Option<u64>,
    restart_window_ms: Option<u64>,
    placement: UpdatePlacementArgs,
    template: TemplateArgs,
    force: bool,
}

fn parse_publish_rm(value: &str) -> anyhow::Result<Vec<PortMatch>> {
    const FLAG: &str = "--publish-rm";
    if !value.contains(':') && !value.contains('=') {
        let (port, protocol) = match value.split_once('/') {
            Some((p, proto)) => (p, Some(proto)),
            None => (value, None),
        };
        if let Ok(port) = port.trim().parse::<u32>() {
            let protocol = match protocol {
                Some(p) => Some(
                    opts::parse_publish_flag(&format!("1/{p}"), FLAG)
                        .map_err(|_| opts::invalid(value, FLAG, "protocol must be tcp or udp"))?
                        .remove(0)
                        .protocol,
                ),
                None => None,
            };
            if !(1..=65535).contains(&port) {
                return Err(opts::invalid(value, FLAG, "port out of range (1-65535)"));
            }
            return Ok(vec![PortMatch::Either { port, protocol }]);
        }
    }
    Ok(opts::parse_publish_flag(value, FLAG)?
        .into_iter()
        .map(PortMatch::Spec)
        .collect())
}

fn protocol_of(p: &pb::PortConfig) -> &str {
    if p.protocol.is_empty() {
        "tcp"
    } else {
        &p.protocol
    }
}

// === impl PortMatch ===

impl PortMatch {
    /// Whether `port` (whose allocated published port is `published`) goes.
    fn matches(&self, port: &pb::PortConfig, published: u32) -> bool {
        match self {
            PortMatch::Either { port: n, protocol } => {
                (port.target_port == *n || published == *n)
                    && protocol.as_deref().is_none_or(|p| p == protocol_of(port))
            }
            PortMatch::Spec(rm) => {
                rm.target_port == port.target_port
                    && protocol_of(rm) == protocol_of(port)
                    && (rm.published_port == 0 || rm.published_port == published)
            }
        }
    }
}

// === impl Edits ===

impl Edits {
    /// Validates every flag (before connecting).
    pub fn parse(a: &UpdateArgs) -> anyhow::Result<Edits> {
        let spec_flags = a.image.is_some()
            || !a.env_add.is_empty()
            || !a.env_rm.is_empty()
            || a.args.is_some()
            || a.replicas.is_some()
            || a.max_concurrent.is_some()
            || !a.publish_add.is_empty()
            || !a.publish_rm.is_empty()
            || !a.label_add.is_empty()
            || !a.label_rm.is_empty()
            || a.restart_condition.is_some()
            || a.restart_delay.is_some()
            || a.restart_max_attempts.is_some()
            || a.restart_window.is_some()
            || a.placement.any()
            || a.template.any()
            || a.force;
        if a.rollback && spec_flags {
            bail!("other flags may not be combined with --rollback");
        }
        // The policy flags are applied to the real spec later; check them now.
        a.policy.apply(&mut pb::ServiceSpec::default())?;
        a.placement.check()?;
        // Checks the template flags' values against a spec that has a health command.
        let mut probe = pb::ServiceSpec {
            health: Some(pb::HealthCheck {
                test: vec!["CMD-SHELL".into(), "true".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        a.template.apply(&mut probe)?;
        if a.image.as_deref() == Some("") {
            return Err(opts::invalid("", "--image", "must not be empty"));
        }
        let mut publish_add = Vec::new();
        for p in &a.publish_add {
            publish_add.extend(opts::parse_publish_flag(p, "--publish-add")?);
        }
        let mut publish_rm = Vec::new();
        for p in &a.publish_rm {
            publish_rm.extend(parse_publish_rm(p)?);
        }
        let label_add = a
            .label_add
            .iter()
            .map(|v| {
                let (k, val) = v.split_once('=').unwrap_or((v.as_str(), ""));
                if k.trim().is_empty() {
                    return Err(opts::invalid(v, "--label-add", "the key must not be empty"));
                }
                Ok((k.to_string(), val.to_string()))
            })
            .collect::<anyhow::Result<_>>()?;
        let duration_ms = |v: &Option<String>, flag: &str| -> anyhow::Result<Option<u64>> {
            v.as_deref()
                .map(|v| Ok(opts::parse_duration(v, flag)?.as_millis() as u64))
                .transpose()
        };
        Ok(Edits {
            image: a.image.clone(),
            env_add: opts::parse_env_flag(&a.env_add, "--env-add")?,
            env_rm: a.env_rm.clone(),
            args: a
                .args
                .as_deref()
                .map(|v| opts::split_args(v, "--args"))
                .transpose()?,
            replicas: a
                .replicas
                .as_deref()
                .map(opts::parse_replicas)
                .transpose()?,
            max_concurrent: a
                .max_concurrent
                .as_deref()
                .map(|v| opts::parse_count(v, "--max-concurrent"))
                .transpose()?,
            publish_add,
            publish_rm,
            label_add,
            label_rm: a.label_rm.clone(),
            restart_condition: a
                .restart_condition
                .as_deref()
                .map(opts::parse_restart_condition)
                .transpose()?,
            restart_delay_ms: duration_ms(&a.restart_delay, "--restart-delay")?,
            restart_max_attempts: a
                .restart_max_attempts
                .as_deref()
                .map(|v| opts::parse_count(v, "--restart-max-attempts"))
                .transpose()?,
            restart_window_ms: duration_ms(&a.restart_window, "--restart-window")?,
            placement: a.placement.clone(),
            template: a.template.clone(),
            force: a.force,
        })
    }

    /// The service's current spec with the edits applied.
    pub fn apply(
        &self,
        service: &pb::Service,
        policy: &PolicyArgs,
    ) -> anyhow::Result<pb::ServiceSpec> {
        let mut spec = service.spec.clone().unwrap_or_default();
        if let Some(image) = &self.image {
            spec.image = image.clone();
        }
        // Environment: removals first, then additions replace in place.
        spec.env
            .retain(|e| !self.env_rm.iter().any(|k| k == opts::env_key(e)));
        for add in &self.env_add {
            let key = opts::env_key(add);
            match spec.env.iter_mut().find(|e| opts::env_key(e) == key) {
                Some(e) => *e = add.clone(),
                None => spec.env.push(add.clone()),
            }
        }
        if let Some(args) = &self.args {
            spec.command = match spec.command.first() {
                Some(cmd) if spec.runtime == pb::Runtime::Process as i32 => {
                    std::iter::once(cmd.clone())
                        .chain(args.iter().cloned())
                        .collect()
                }
                _ => args.clone(),
            };
        }
        if self.image.is_some() || self.args.is_some() {
            opts::resolve_runtime(
                Some(inspect::runtime_name(spec.runtime)),
                &spec.image,
                &spec.command,
            )?;
        }
        if let Some(replicas) = self.replicas {
            if opts::is_per_node(spec.mode) {
                bail!("--replicas can only be used with {}", opts::REPLICAS_MODES);
            }
            spec.replicas = replicas;
        }
        if let Some(n) = self.max_concurrent {
            if spec.mode != pb::ServiceMode::ReplicatedJob as i32 {
                bail!("--max-concurrent can only be used with replicated-job mode");
            }
            spec.max_concurrent = n;
        }
        self.apply_ports(service, &mut spec);
        for k in &self.label_rm {
            spec.labels.remove(k);
        }
        for (k, v) in &self.label_add {
            spec.labels.insert(k.clone(), v.clone());
        }
        let restart = spec.restart.get_or_insert(pb::RestartPolicy {
            condition: pb::RestartCondition::Any as i32,
            delay_ms: 5_000,
            max_attempts: 0,
            window_ms: 0,
        });
        if let Some(c) = self.restart_condition {
            restart.condition = c as i32;
        }
        if let Some(d) = self.restart_delay_ms {
            restart.delay_ms = d;
        }
        if let Some(n) = self.restart_max_attempts {
            restart.max_attempts = n;
        }
        if let Some(w) = self.restart_window_ms {
            restart.window_ms = w;
        }
        policy.apply(&mut spec)?;
        self.placement.apply(&mut spec)?;
        self.template.apply(&mut spec)?;
        if self.force {
            spec.force_update = spec.force_update.wrapping_add(1);
        }
        Ok(spec)
    }

    /// `--publish-rm` then `--publish-add`; an added port replaces one with
    /// the same published port (or, unpublished, the same target) and protocol.
    fn apply_ports(&self, service: &pb::Service, spec: &mut pb::ServiceSpec) {
        if self.publish_rm.is_empty() && self.publish_add.is_empty() {
            return;
        }
        // Published ports the manager allocated, by (target, protocol).
        let allocated: HashMap<(u32, String), u32> = service
            .endpoint
            .iter()
            .flat_map(|e| &e.ports)
            .map(|p| {
                (
                    (p.target_port, protocol_of(p).to_string()),
                    p.published_port,
                )
            })
            .collect();
        let published = |p: &pb::PortConfig| match p.published_port {
            0 => allocated
                .get(&(p.target_port, protocol_of(p).to_string()))
                .copied()
                .unwrap_or(0),
            n => n,
        };
        spec.ports.retain(|p| {
            let n = published(p);
            !self.publish_rm.iter().any(|m| m.matches(p, n))
        });
        for add in &self.publish_add {
            spec.ports.retain(|p| {
                let same = if add.published_port != 0 {
                    published(p) == add.published_port
                } else {
                    p.target_port == add.target_port && p.published_port == 0
                };
                !(same && protocol_of(p) == protocol_of(add))
            });
            spec.ports.push(add.clone());
        }
    }
}

/// Applies the flags to the service's spec and sends it (or asks for a
/// rollback), prints the service as given, then follows the update unless `-d`.
pub async fn run(host: &Host, a: &UpdateArgs) -> anyhow::Result<()> {
    let edits = Edits::parse(a)?;
    let mut c = super::connect(host).await?;
    let kind = if a.rollback {
        progress::Kind::Rollback
    } else {
        progress::Kind::Update
    };
    let service = retry_out_of_sequence(async || {
        let service = get(&mut c, &a.service).await?;
        let spec = edits.apply(&service, &a.policy)?;
        send(&mut c, &service, spec, a.rollback).await?;
        Ok(service)
    })
    .await?;
    follow(&mut c, &service, &a.service, kind, a.detach, a.quiet).await
}

/// `service rollback`: asks for the previous spec back and follows the rollback.
pub async fn rollback(host: &Host, a: &RollbackArgs) -> anyhow::Result<()> {
    let mut c = super::connect(host).await?;
    let service = retry_out_of_sequence(async || {
        let service = get(&mut c, &a.service).await?;
        let spec = service.spec.clone().unwrap_or_default();
        send(&mut c, &service, spec, true).await?;
        Ok(service)
    })
    .await?;
    follow(
        &mut c,
        &service,
        &a.service,
        progress::Kind::Rollback,
        a.detach,
        a.quiet,
    )
    .await
}

async fn get(c: &mut crate::client::Control, name: &str) -> anyhow::Result<pb::Service> {
    c.get_service(pb::GetServiceRequest {
        service: name.to_string(),
    })
    .await
    .daemon()?
    .service
    .with_context(|| format!("no such service: {name}"))
}

async fn send(
    c: &mut crate::client::Control,
    service: &pb::Service,
    spec: pb::ServiceSpec,
    rollback: bool,
) -> anyhow::Result<()> {
    c.update_service(pb::UpdateServiceRequest {
        service: service.id.clone(),
        version: service.meta.as_ref().map_or(0, |m| m.version),
        spec: Some(spec),
        rollback,
    })
    .await
    .daemon()?;
    Ok(())
}

/// Prints the service as the user named it (Docker's output), then waits.
async fn follow(
    c: &mut crate::client::Control,
    service: &pb::Service,
    given: &str,
    kind: progress::Kind,
    detach: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    writeln!(std::io::stdout(), "{given}")?;
    if detach {
        return Ok(());
    }
    let name = service
        .spec
        .as_ref()
        .map_or(service.id.clone(), |s| s.name.clone());
    progress::wait(c, &service.id, &name, kind, progress::Display::pick(quiet)).await
}
