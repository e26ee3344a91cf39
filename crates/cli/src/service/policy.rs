//! The `--update-*` and `--rollback-*` flags shared by `service create` and
//! `service update`, applied to a spec's `UpdateConfig`/`RollbackConfig`.

use shoal_api::pb;

use crate::opts;

/// Docker's default monitoring period after each task update.
pub const DEFAULT_MONITOR_MS: u64 = 5_000;

/// Docker's defaults: one task at a time, no delay, pause on failure, watch
/// each new task for 5s, tolerate no failure, stop the old task first.
pub fn default_config() -> pb::UpdateConfig {
    pb::UpdateConfig {
        parallelism: 1,
        delay_ms: 0,
        failure_action: pb::FailureAction::Pause as i32,
        monitor_ms: DEFAULT_MONITOR_MS,
        max_failure_ratio: 0.0,
        order: pb::UpdateOrder::StopFirst as i32,
    }
}

/// Rolling-update and rollback policy flags. Each is optional: `create`
/// applies them over [`default_config`], `update` over the current spec.
#[derive(Debug, Default, clap::Args)]
pub struct PolicyArgs {
    /// Maximum number of tasks updated simultaneously (0 to update all at once) (default 1).
    #[arg(long, value_name = "uint", allow_hyphen_values = true)]
    pub update_parallelism: Option<String>,
    /// Delay between updates (ns|us|ms|s|m|h) (default 0s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub update_delay: Option<String>,
    /// Action on update failure ("pause", "continue", "rollback") (default "pause").
    #[arg(long, value_name = "string")]
    pub update_failure_action: Option<String>,
    /// Duration after each task update to monitor for failure (ns|us|ms|s|m|h) (default 5s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub update_monitor: Option<String>,
    /// Failure rate to tolerate during an update (default 0).
    #[arg(long, value_name = "float", allow_hyphen_values = true)]
    pub update_max_failure_ratio: Option<String>,
    /// Update order ("start-first", "stop-first") (default "stop-first").
    #[arg(long, value_name = "string")]
    pub update_order: Option<String>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once) (default 1).
    #[arg(long, value_name = "uint", allow_hyphen_values = true)]
    pub rollback_parallelism: Option<String>,
    /// Delay between task rollbacks (ns|us|ms|s|m|h) (default 0s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub rollback_delay: Option<String>,
    /// Action on rollback failure ("pause", "continue") (default "pause").
    #[arg(long, value_name = "string")]
    pub rollback_failure_action: Option<String>,
    /// Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h) (default 5s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub rollback_monitor: Option<String>,
    /// Failure rate to tolerate during a rollback (default 0).
    #[arg(long, value_name = "float", allow_hyphen_values = true)]
    pub rollback_max_failure_ratio: Option<String>,
    /// Rollback order ("start-first", "stop-first") (default "stop-first").
    #[arg(long, value_name = "string")]
    pub rollback_order: Option<String>,
}

/// The six flags of one config, by prefix.
struct Six<'a> {
    prefix: &'static str,
    parallelism: &'a Option<String>,
    delay: &'a Option<String>,
    failure_action: &'a Option<String>,
    monitor: &'a Option<String>,
    max_failure_ratio: &'a Option<String>,
    order: &'a Option<String>,
}

// === impl Six ===

impl Six<'_> {
    fn apply(&self, c: &mut pb::UpdateConfig) -> anyhow::Result<()> {
        let flag = |name: &str| format!("--{}-{name}", self.prefix);
        if let Some(v) = self.parallelism {
            c.parallelism = opts::parse_count(v, &flag("parallelism"))?;
        }
        if let Some(v) = self.delay {
            c.delay_ms = opts::parse_duration(v, &flag("delay"))?.as_millis() as u64;
        }
        if let Some(v) = self.failure_action {
            let allow_rollback = self.prefix == "update";
            c.failure_action =
                opts::parse_failure_action(v, &flag("failure-action"), allow_rollback)? as i32;
        }
        if let Some(v) = self.monitor {
            c.monitor_ms = opts::parse_duration(v, &flag("monitor"))?.as_millis() as u64;
        }
        if let Some(v) = self.max_failure_ratio {
            c.max_failure_ratio = opts::parse_failure_ratio(v, &flag("max-failure-ratio"))?;
        }
        if let Some(v) = self.order {
            c.order = opts::parse_update_order(v, &flag("order"))? as i32;
        }
        Ok(())
    }
}

// === impl PolicyArgs ===

impl PolicyArgs {
    fn update(&self) -> Six<'_> {
        Six {
            prefix: "update",
            parallelism: &self.update_parallelism,
            delay: &self.update_delay,
            failure_action: &self.update_failure_action,
            monitor: &self.update_monitor,
            max_failure_ratio: &self.update_max_failure_ratio,
            order: &self.update_order,
        }
    }

    fn rollback(&self) -> Six<'_> {
        Six {
            prefix: "rollback",
            parallelism: &self.rollback_parallelism,
            delay: &self.rollback_delay,
            failure_action: &self.rollback_failure_action,
            monitor: &self.rollback_monitor,
            max_failure_ratio: &self.rollback_max_failure_ratio,
            order: &self.rollback_order,
        }
    }

    /// The first flag given, as `--update-parallelism`, if any.
    fn first_given(&self) -> Option<String> {
        [self.update(), self.rollback()]
            .into_iter()
            .find_map(|six| {
                [
                    ("parallelism", six.parallelism),
                    ("delay", six.delay),
                    ("failure-action", six.failure_action),
                    ("monitor", six.monitor),
                    ("max-failure-ratio", six.max_failure_ratio),
                    ("order", six.order),
                ]
                .into_iter()
                .find(|(_, v)| v.is_some())
                .map(|(name, _)| format!("--{}-{name}", six.prefix))
            })
    }

    /// Applies the given flags to the spec's two configs; a config the spec
    /// lacks starts from [`default_config`]. Jobs have neither config: any
    /// flag is refused, as Docker does.
    pub fn apply(&self, spec: &mut pb::ServiceSpec) -> anyhow::Result<()> {
        if opts::is_job(spec.mode) {
            if let Some(flag) = self.first_given() {
                anyhow::bail!(
                    "update and rollback configuration is not supported for jobs: remove {flag}"
                );
            }
            return Ok(());
        }
        self.update()
            .apply(spec.update_config.get_or_insert_with(default_config))?;
        self.rollback()
            .apply(spec.rollback_config.get_or_insert_with(default_config))
    }
}

#[cfg(test)]
mod tests;
