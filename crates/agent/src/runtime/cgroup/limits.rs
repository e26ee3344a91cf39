//! What a task's limits are in cgroup files (sans-IO): the settings a v1 or
//! v2 group gets, and the OOM-kill count read back from one.

use shoal_api::pb::Task;

/// Docker's smallest `--limit-memory` ("Minimum memory limit allowed is 6MB").
pub const MIN_MEMORY_BYTES: i64 = 6 * 1024 * 1024;
/// Docker's CFS period for `--cpus` / NanoCPUs, in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;
/// The kernel refuses CFS quotas below 1 ms.
pub const MIN_CFS_QUOTA_US: u64 = 1_000;

/// A task's limits, as the spec gives them (0 = none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPUs in units of 1e-9 (Docker's NanoCPUs).
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

impl Limits {
    /// The limits in the task's spec.
    pub fn of(task: &Task) -> Limits {
        let r = task
            .spec
            .as_ref()
            .and_then(|s| s.resources)
            .unwrap_or_default();
        Limits {
            nano_cpus: r.limit_nano_cpus.max(0),
            memory_bytes: r.limit_memory_bytes.max(0),
        }
    }

    /// No limit at all: the task needs no group.
    pub fn is_none(&self) -> bool {
        self.nano_cpus <= 0 && self.memory_bytes <= 0
    }
}

/// The CFS quota for `nano_cpus` over `period_us` (`None`: no CPU limit).
pub fn cfs_quota_us(nano_cpus: i64, period_us: u64) -> Option<u64> {
    if nano_cpus <= 0 {
        return None;
    }
    let quota = (nano_cpus as u128 * period_us as u128 / 1_000_000_000) as u64;
    Some(quota.max(MIN_CFS_QUOTA_US))
}

/// The v1 hierarchies a task group may live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Cpu,
}

/// What a v1 group's files get, in write order (the memory limit before the
/// memory+swap one, which must not be lower).
pub fn v1_settings(limits: Limits) -> Vec<(Controller, &'static str, String)> {
    let mut out = Vec::new();
    if let Some(quota) = cfs_quota_us(limits.nano_cpus, CFS_PERIOD_US) {
        out.push((
            Controller::Cpu,
            "cpu.cfs_period_us",
            CFS_PERIOD_US.to_string(),
        ));
        out.push((Controller::Cpu, "cpu.cfs_quota_us", quota.to_string()));
    }
    if limits.memory_bytes > 0 {
        let bytes = limits.memory_bytes.to_string();
        out.push((Controller::Memory, "memory.limit_in_bytes", bytes.clone()));
        out.push((Controller::Memory, "memory.memsw.limit_in_bytes", bytes));
    }
    out
}

/// What a v2 group's files get.
pub fn v2_settings(limits: Limits) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(quota) = cfs_quota_us(limits.nano_cpus, CFS_PERIOD_US) {
        out.push(("cpu.max", format!("{quota} {CFS_PERIOD_US}")));
    }
    if limits.memory_bytes > 0 {
        out.push(("memory.max", limits.memory_bytes.to_string()));
        out.push(("memory.swap.max", "0".to_string()));
    }
    out
}

/// Files that may be missing without the limit being lost (swap accounting
/// off, no swap controller).
pub(crate) fn optional(file: &str) -> bool {
    matches!(file, "memory.memsw.limit_in_bytes" | "memory.swap.max")
}

/// The `oom_kill N` count in a v1 `memory.oom_control` or v2 `memory.events`.
pub fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
