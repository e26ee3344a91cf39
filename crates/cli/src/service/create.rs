//! `shoal service create`: Docker's flags turned into a `ServiceSpec`.

use std::io::Write;

use anyhow::{bail, Context};
use shoal_api::pb::{self, ServiceMode};

use crate::client::{DaemonExt, Host};
use crate::opts;
use crate::progress;

use super::policy::PolicyArgs;
use super::template::{CreatePlacementArgs, TemplateArgs};

/// `shoal service create [OPTIONS] IMAGE [COMMAND] [ARG...]`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Service name.
    #[arg(long)]
    pub name: Option<String>,
    /// Number of tasks (default 1 in replicated mode).
    #[arg(long, allow_hyphen_values = true)]
    pub replicas: Option<String>,
    /// Service mode ("replicated", "global", "replicated-job" or "global-job").
    #[arg(long, default_value = "replicated")]
    pub mode: String,
    /// Number of job tasks to run concurrently (default equal to --replicas).
    #[arg(long = "max-concurrent", allow_hyphen_values = true)]
    pub max_concurrent: Option<String>,
    /// Publish a port as a node port: 8080:80, 80, or published=8080,target=80.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the task.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Service labels.
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Restart when condition is met ("none", "on-failure", or "any").
    #[arg(long = "restart-condition", default_value = "any")]
    pub restart_condition: String,
    /// Delay between restart attempts (ns|us|ms|s|m|h).
    #[arg(long = "restart-delay", default_value = "5s")]
    pub restart_delay: String,
    /// Maximum number of restarts before giving up (0 = unlimited).
    #[arg(long = "restart-max-attempts", default_value = "0")]
    pub restart_max_attempts: String,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h).
    #[arg(long = "restart-window")]
    pub restart_window: Option<String>,
    /// How tasks run: "builtin" (shoal/echo, shoal/timecheck) or "process".
    #[arg(long)]
    pub runtime: Option<String>,
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// `--update-*` and `--rollback-*`.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// `--constraint`, `--placement-pref`.
    #[command(flatten)]
    pub placement: CreatePlacementArgs,
    /// `--replicas-max-per-node`, `--reserve-*`, `--limit-*`, `--health-*`.
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Image reference (shoal/echo, shoal/timecheck, or a label for a process).
    pub image: String,
    /// Command and arguments (everything after IMAGE).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Validates the flags and builds the spec the manager receives.
pub fn build(a: &CreateArgs) -> anyhow::Result<pb::ServiceSpec> {
    let mode = opts::parse_mode(&a.mode)?;
    let per_node = opts::is_per_node(mode as i32);
    let replicas = match &a.replicas {
        Some(_) if per_node => bail!("--replicas can only be used with {}", opts::REPLICAS_MODES),
        Some(r) => opts::parse_replicas(r)?,
        None if per_node => 0,
        None => 1,
    };
    let max_concurrent = match &a.max_concurrent {
        Some(_) if mode != ServiceMode::ReplicatedJob => {
            bail!("--max-concurrent can only be used with replicated-job mode")
        }
        Some(v) => opts::parse_count(v, "--max-concurrent")?,
        None if mode == ServiceMode::ReplicatedJob => replicas,
        None => 0,
    };
    let mut ports = Vec::new();
    for p in &a.publish {
        ports.extend(opts::parse_publish(p)?);
    }
    let runtime = opts::resolve_runtime(a.runtime.as_deref(), &a.image, &a.command)?;
    let restart = pb::RestartPolicy {
        condition: opts::parse_restart_condition(&a.restart_condition)? as i32,
        delay_ms: opts::parse_duration(&a.restart_delay, "--restart-delay")?.as_millis() as u64,
        max_attempts: opts::parse_count(&a.restart_max_attempts, "--restart-max-attempts")?,
        window_ms: match &a.restart_window {
            Some(w) => opts::parse_duration(w, "--restart-window")?.as_millis() as u64,
            None => 0,
        },
    };
    let name = match &a.name {
        Some(n) if n.is_empty() => return Err(opts::invalid(n, "--name", "must not be empty")),
        Some(n) => n.clone(),
        None => opts::random_name(),
    };
    let mut spec = pb::ServiceSpec {
        name,
        labels: opts::parse_labels(&a.label)?,
        image: a.image.clone(),
        runtime: runtime as i32,
        command: a.command.clone(),
        env: opts::parse_env(&a.env)?,
        workdir: a.workdir.clone().unwrap_or_default(),
        mode: mode as i32,
        replicas,
        ports,
        restart: Some(restart),
        update_config: None,
        rollback_config: None,
        force_update: 0,
        placement: None,
        resources: None,
        health: None,
        stop_grace_period_ms: 0,
        stop_signal: String::new(),
        max_concurrent,
    };
    a.policy.apply(&mut spec)?;
    a.placement.apply(&mut spec)?;
    a.template.apply(&mut spec)?;
    Ok(spec)
}

/// Creates the service, prints its ID, then waits for it unless `-d`.
pub async fn run(host: &Host, a: &CreateArgs) -> anyhow::Result<()> {
    let spec = build(a)?;
    let mut c = super::connect(host).await?;
    let service = c
        .create_service(pb::CreateServiceRequest { spec: Some(spec) })
        .await
        .daemon()?
        .service
        .context("the daemon returned no service")?;
    writeln!(std::io::stdout(), "{}", service.id)?;
    if a.detach {
        return Ok(());
    }
    let name = service
        .spec
        .as_ref()
        .map_or(service.id.clone(), |s| s.name.clone());
    let display = progress::Display::pick(a.quiet);
    progress::wait(&mut c, &service.id, &name, progress::Kind::Deploy, display).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn parse(argv: &[&str]) -> CreateArgs {
        Cmd::try_parse_from(std::iter::once("create").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn defaults_follow_docker() {
        let spec = build(&parse(&["--name", "web", "shoal/echo"])).unwrap();
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.mode, ServiceMode::Replicated as i32);
        assert_eq!(spec.runtime, pb::Runtime::Builtin as i32);
        let r = spec.restart.unwrap();
        assert_eq!(r.condition, pb::RestartCondition::Any as i32);
        assert_eq!((r.delay_ms, r.max_attempts, r.window_ms), (5000, 0, 0));
        assert_eq!(
            spec.update_config,
            Some(super::super::policy::default_config())
        );
        assert_eq!(
            spec.rollback_config,
            Some(super::super::policy::default_config())
        );
        assert_eq!(spec.force_update, 0);
    }

    #[test]
    fn update_flags_reach_the_spec() {
        let spec = build(&parse(&[
            "--update-parallelism",
            "2",
            "--update-order",
            "start-first",
            "--rollback-monitor",
            "1s",
            "shoal/echo",
        ]))
        .unwrap();
        let u = spec.update_config.unwrap();
        assert_eq!(u.parallelism, 2);
        assert_eq!(u.order, pb::UpdateOrder::StartFirst as i32);
        assert_eq!(u.monitor_ms, 5000);
        assert_eq!(spec.rollback_config.unwrap().monitor_ms, 1000);
        let err = build(&parse(&["--update-order", "sideways", "shoal/echo"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument \"sideways\" for \"--update-order\" flag: must be stop-first or start-first"
        );
    }

    #[test]
    fn everything_after_the_image_is_the_command() {
        let a = parse(&[
            "--runtime",
            "process",
            "-p",
            "8080:80",
            "x",
            "sh",
            "-c",
            "echo hi",
            "-d",
        ]);
        assert_eq!(a.image, "x");
        assert_eq!(a.command, ["sh", "-c", "echo hi", "-d"]);
        assert!(!a.detach);
        let spec = build(&a).unwrap();
        assert_eq!(spec.runtime, pb::Runtime::Process as i32);
        assert_eq!(spec.ports[0].published_port, 8080);
    }

    #[test]
    fn replicas_rules() {
        let err = build(&parse(&[
            "--mode",
            "global",
            "--replicas",
            "2",
            "shoal/echo",
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--replicas can only be used with replicated or replicated-job mode"
        );
        let err = build(&parse(&["--replicas", "-1", "shoal/echo"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument \"-1\" for \"--replicas\" flag: must be a non-negative integer"
        );
        let spec = build(&parse(&["--mode", "global", "shoal/echo"])).unwrap();
        assert_eq!(spec.mode, ServiceMode::Global as i32);
        let spec = build(&parse(&["--replicas=0", "shoal/echo"])).unwrap();
        assert_eq!(spec.replicas, 0);
    }

    #[test]
    fn placement_resources_and_health_flags_reach_the_spec() {
        let spec = build(&parse(&[
            "--constraint",
            "node.role==manager",
            "--placement-pref",
            "spread=node.labels.zone",
            "--replicas-max-per-node",
            "1",
            "--reserve-memory",
            "64MiB",
            "--health-cmd",
            "true",
            "shoal/echo",
        ]))
        .unwrap();
        assert_eq!(spec.placement.unwrap().constraints, ["node.role==manager"]);
        assert_eq!(spec.resources.unwrap().reserve_memory_bytes, 64 << 20);
        assert_eq!(spec.health.unwrap().test, ["CMD-SHELL", "true"]);
        let err = build(&parse(&["--constraint", "node.role", "shoal/echo"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument \"node.role\" for \"--constraint\" flag: constraint has no operator (use == or !=)"
        );
        let err = build(&parse(&[
            "--mode",
            "global",
            "--replicas-max-per-node",
            "1",
            "shoal/echo",
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--replicas-max-per-node can only be used with replicated or replicated-job mode"
        );
    }

    #[test]
    fn job_modes() {
        let spec = build(&parse(&[
            "--mode",
            "replicated-job",
            "--replicas",
            "6",
            "--max-concurrent",
            "2",
            "shoal/echo",
        ]))
        .unwrap();
        assert_eq!(spec.mode, ServiceMode::ReplicatedJob as i32);
        assert_eq!((spec.replicas, spec.max_concurrent), (6, 2));
        assert_eq!((spec.update_config, spec.rollback_config), (None, None));
        // --max-concurrent defaults to --replicas, which defaults to 1.
        let spec = build(&parse(&["--mode", "replicated-job", "shoal/echo"])).unwrap();
        assert_eq!((spec.replicas, spec.max_concurrent), (1, 1));
        let spec = build(&parse(&["--mode", "global-job", "shoal/echo"])).unwrap();
        assert_eq!((spec.replicas, spec.max_concurrent), (0, 0));
        let err = |argv: &[&str]| build(&parse(argv)).unwrap_err().to_string();
        assert_eq!(
            err(&["--max-concurrent", "2", "shoal/echo"]),
            "--max-concurrent can only be used with replicated-job mode"
        );
        assert_eq!(
            err(&["--mode", "global-job", "--replicas", "2", "shoal/echo"]),
            "--replicas can only be used with replicated or replicated-job mode"
        );
        assert_eq!(
            err(&[
                "--mode",
                "replicated-job",
                "--update-parallelism",
                "2",
                "shoal/echo"
            ]),
            "update and rollback configuration is not supported for jobs: remove --update-parallelism"
        );
        assert_eq!(
            err(&[
                "--mode",
                "replicated-job",
                "--max-concurrent",
                "-1",
                "shoal/echo"
            ]),
            "invalid argument \"-1\" for \"--max-concurrent\" flag: must be a non-negative integer"
        );
    }

    #[test]
    fn non_builtin_images_need_a_runtime() {
        let err = build(&parse(&["nginx"])).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("image \"nginx\" needs a container runtime"));
    }
}
