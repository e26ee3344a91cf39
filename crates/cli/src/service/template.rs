//! The task-template flags `service create` and `service update` share:
//! placement (`--constraint`, `--placement-pref`, `--replicas-max-per-node`),
//! resources (`--reserve-*`, `--limit-*`) and the health check (`--health-*`,
//! `--no-healthcheck`). Values are checked here, before connecting.

use anyhow::bail;
use shoal_api::pb;

use crate::opts;

#[cfg(test)]
mod tests;

/// Docker's engine defaults for a health check given only a command.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_HEALTH_RETRIES: u64 = 3;
/// The smallest `--limit-memory`, as Docker's daemon has it.
pub const MIN_LIMIT_MEMORY_BYTES: i64 = 6 * 1024 * 1024;

/// Flags with the same name on `create` and `update`. Each is optional:
/// `create` applies them to an empty template, `update` over the current spec.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TemplateArgs {
    /// Maximum number of tasks per node (default 0 = unlimited).
    #[arg(long, value_name = "uint", allow_hyphen_values = true)]
    pub replicas_max_per_node: Option<String>,
    /// Reserve CPUs (scheduling only), e.g. 0.5.
    #[arg(long, value_name = "decimal", allow_hyphen_values = true)]
    pub reserve_cpu: Option<String>,
    /// Reserve memory (scheduling only), e.g. 64MiB.
    #[arg(long, value_name = "bytes", allow_hyphen_values = true)]
    pub reserve_memory: Option<String>,
    /// Limit CPUs.
    #[arg(long, value_name = "decimal", allow_hyphen_values = true)]
    pub limit_cpu: Option<String>,
    /// Limit memory.
    #[arg(long, value_name = "bytes", allow_hyphen_values = true)]
    pub limit_memory: Option<String>,
    /// Command to run to check health (run with /bin/sh -c).
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 30s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 30s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy (default 3).
    #[arg(long, value_name = "int", allow_hyphen_values = true)]
    pub health_retries: Option<String>,
    /// Start period for the container to initialize before counting retries
    /// towards unstable (ms|s|m|h) (default 0s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub health_start_period: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Time to wait before force killing a task (ns|us|ms|s|m|h) (default 10s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub stop_grace_period: Option<String>,
    /// Signal to stop the task (default SIGTERM).
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub stop_signal: Option<String>,
}

/// `service create --constraint` / `--placement-pref`.
#[derive(Debug, Default, clap::Args)]
pub struct CreatePlacementArgs {
    /// Placement constraints (node.role==manager, node.labels.zone!=a).
    #[arg(long = "constraint", value_name = "list")]
    pub constraint: Vec<String>,
    /// Add a placement preference (spread=node.labels.zone).
    #[arg(long = "placement-pref", value_name = "pref")]
    pub placement_pref: Vec<String>,
}

/// `service update --constraint-add/-rm` / `--placement-pref-add/-rm`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct UpdatePlacementArgs {
    /// Add or update a placement constraint.
    #[arg(long = "constraint-add", value_name = "list")]
    pub constraint_add: Vec<String>,
    /// Remove a constraint.
    #[arg(long = "constraint-rm", value_name = "list")]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference.
    #[arg(long = "placement-pref-add", value_name = "pref")]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference.
    #[arg(long = "placement-pref-rm", value_name = "pref")]
    pub placement_pref_rm: Vec<String>,
}

// === impl TemplateArgs ===

impl TemplateArgs {
    /// Whether any of these flags was given (for `--rollback` exclusivity).
    pub fn any(&self) -> bool {
        self.replicas_max_per_node.is_some()
            || self.stop_grace_period.is_some()
            || self.stop_signal.is_some()
            || self.reserve_cpu.is_some()
            || self.reserve_memory.is_some()
            || self.limit_cpu.is_some()
            || self.limit_memory.is_some()
            || self.health_flags().next().is_some()
            || self.no_healthcheck
    }

    /// The `--health-*` flags given, by name.
    fn health_flags(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("--health-cmd", &self.health_cmd),
            ("--health-interval", &self.health_interval),
            ("--health-timeout", &self.health_timeout),
            ("--health-retries", &self.health_retries),
            ("--health-start-period", &self.health_start_period),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(name, _)| name)
    }

    /// Applies the given flags over `spec` (an empty one for `create`).
    pub fn apply(&self, spec: &mut pb::ServiceSpec) -> anyhow::Result<()> {
        if let Some(v) = &self.replicas_max_per_node {
            let n = opts::parse_count(v, "--replicas-max-per-node")?;
            if opts::is_per_node(spec.mode) && n > 0 {
                bail!(
                    "--replicas-max-per-node can only be used with {}",
                    opts::REPLICAS_MODES
                );
            }
            spec.placement
                .get_or_insert_with(Default::default)
                .max_replicas_per_node = n;
        }
        if let Some(v) = &self.stop_grace_period {
            spec.stop_grace_period_ms =
                opts::parse_duration(v, "--stop-grace-period")?.as_millis() as u64;
        }
        if let Some(v) = &self.stop_signal {
            if v.trim().is_empty() {
                return Err(opts::invalid(
                    v,
                    "--stop-signal",
                    "name a signal, e.g. SIGINT",
                ));
            }
            spec.stop_signal = v.trim().to_string();
        }
        self.apply_resources(spec)?;
        self.apply_health(spec)
    }

    fn apply_resources(&self, spec: &mut pb::ServiceSpec) -> anyhow::Result<()> {
        let given = [
            &self.reserve_cpu,
            &self.reserve_memory,
            &self.limit_cpu,
            &self.limit_memory,
        ];
        if given.iter().all(|v| v.is_none()) {
            return Ok(());
        }
        let r = spec.resources.get_or_insert_with(Default::default);
        if let Some(v) = &self.reserve_cpu {
            r.reserve_nano_cpus = opts::parse_cpus(v, "--reserve-cpu")?;
        }
        if let Some(v) = &self.reserve_memory {
            r.reserve_memory_bytes = opts::parse_ram(v, "--reserve-memory")?;
        }
        if let Some(v) = &self.limit_cpu {
            r.limit_nano_cpus = opts::parse_cpus(v, "--limit-cpu")?;
        }
        if let Some(v) = &self.limit_memory {
            r.limit_memory_bytes = opts::parse_ram(v, "--limit-memory")?;
            // Docker's daemon minimum (0 = no limit).
            if r.limit_memory_bytes > 0 && r.limit_memory_bytes < MIN_LIMIT_MEMORY_BYTES {
                return Err(opts::invalid(
                    v,
                    "--limit-memory",
                    "Minimum memory limit allowed is 6MB",
                ));
            }
        }
        Ok(())
    }

    /// `--no-healthcheck` → `["NONE"]`; `--health-cmd` → `["CMD-SHELL", cmd]`
    /// with Docker's defaults for what is not given; the other flags adjust
    /// an existing command check.
    fn apply_health(&self, spec: &mut pb::ServiceSpec) -> anyhow::Result<()> {
        let given: Vec<&str> = self.health_flags().collect();
        if self.no_healthcheck {
            if !given.is_empty() {
                bail!(
                    "--no-healthcheck conflicts with {}: drop one of them",
                    given.join(", ")
                );
            }
            spec.health = Some(pb::HealthCheck {
                test: vec!["NONE".into()],
                ..Default::default()
            });
            return Ok(());
        }
        let Some(first) = given.first() else {
            return Ok(());
        };
        let has_command = |h: &pb::HealthCheck| {
            matches!(
                h.test.first().map(String::as_str),
                Some("CMD-SHELL" | "CMD")
            )
        };
        let mut h = spec.health.clone().unwrap_or_default();
        match &self.health_cmd {
            Some(cmd) if cmd.trim().is_empty() => {
                return Err(opts::invalid(cmd, "--health-cmd", "must not be empty"))
            }
            Some(cmd) => {
                if !has_command(&h) {
                    h = pb::HealthCheck {
                        test: Vec::new(),
                        interval_ms: DEFAULT_HEALTH_INTERVAL_MS,
                        timeout_ms: DEFAULT_HEALTH_TIMEOUT_MS,
                        retries: DEFAULT_HEALTH_RETRIES,
                        start_period_ms: 0,
                    };
                }
                h.test = vec!["CMD-SHELL".into(), cmd.clone()];
            }
            None if !has_command(&h) => {
                bail!("{first} needs --health-cmd: the service has no health check command")
            }
            None => {}
        }
        let ms = |v: &str, flag: &str| -> anyhow::Result<u64> {
            Ok(opts::parse_duration(v, flag)?.as_millis() as u64)
        };
        if let Some(v) = &self.health_interval {
            h.interval_ms = ms(v, "--health-interval")?;
        }
        if let Some(v) = &self.health_timeout {
            h.timeout_ms = ms(v, "--health-timeout")?;
        }
        if let Some(v) = &self.health_retries {
            h.retries = opts::parse_count(v, "--health-retries")?;
        }
        if let Some(v) = &self.health_start_period {
            h.start_period_ms = ms(v, "--health-start-period")?;
        }
        spec.health = Some(h);
        Ok(())
    }
}

// === impl CreatePlacementArgs ===

impl CreatePlacementArgs {
    pub fn apply(&self, spec: &mut pb::ServiceSpec) -> anyhow::Result<()> {
        let constraints = self
            .constraint
            .iter()
            .map(|c| opts::parse_constraint(c, "--constraint"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let preferences = self
            .placement_pref
            .iter()
            .map(|p| opts::parse_placement_pref(p, "--placement-pref"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if constraints.is_empty() && preferences.is_empty() {
            return Ok(());
        }
        let p = spec.placement.get_or_insert_with(Default::default);
        p.constraints = constraints;
        p.preferences = preferences;
        Ok(())
    }
}

// === impl UpdatePlacementArgs ===

impl UpdatePlacementArgs {
    pub fn any(&self) -> bool {
        !(self.constraint_add.is_empty()
            && self.constraint_rm.is_empty()
            && self.placement_pref_add.is_empty()
            && self.placement_pref_rm.is_empty())
    }

    /// Checks the added values (before connecting).
    pub fn check(&self) -> anyhow::Result<()> {
        for c in &self.constraint_add {
            opts::parse_constraint(c, "--constraint-add")?;
        }
        for p in &self.placement_pref_add {
            opts::parse_placement_pref(p, "--placement-pref-add")?;
        }
        Ok(())
    }

    /// As Docker: constraints are added, then removed by exact text, then
    /// sorted; preferences are removed, then added in order.
    pub fn apply(&self, spec: &mut pb::ServiceSpec) -> anyhow::Result<()> {
        self.check()?;
        if !self.any() {
            return Ok(());
        }
        let p = spec.placement.get_or_insert_with(Default::default);
        let mut constraints = p.constraints.clone();
        for c in &self.constraint_add {
            if !constraints.contains(c) {
                constraints.push(c.clone());
            }
        }
        constraints.retain(|c| !self.constraint_rm.contains(c));
        constraints.sort();
        p.constraints = constraints;
        p.preferences
            .retain(|pref| !self.placement_pref_rm.contains(pref));
        for pref in &self.placement_pref_add {
            if !p.preferences.contains(pref) {
                p.preferences.push(pref.clone());
            }
        }
        Ok(())
    }
}
