//! When a task counts as running and healthy: readiness (every target port
//! accepts connections) and its `--health-cmd` probe.

use std::path::PathBuf;
use std::time::Duration;

use shoal_api::pb::{PortBinding, Task};

use super::exec::{spawn_with, ProcessPlan};

/// How long a task may take to listen on its target ports before it is
/// reported running regardless.
pub(crate) const READINESS_LIMIT: Duration = Duration::from_secs(30);

/// Polls every port binding with a TCP connect until all accept; false if
/// `READINESS_LIMIT` passes first.
pub(crate) async fn wait_listening(ports: &[PortBinding]) -> bool {
    let deadline = tokio::time::Instant::now() + READINESS_LIMIT;
    for port in ports {
        let Ok(addr) = port.address.parse::<std::net::SocketAddr>() else {
            continue;
        };
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            if matches!(attempt, Ok(Ok(_))) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    true
}

/// A task's health check (`--health-cmd`), with Docker's defaults.
pub(crate) struct HealthProbe {
    argv: Vec<String>,
    interval: Duration,
    timeout: Duration,
    retries: u64,
    start_period: Duration,
}

impl HealthProbe {
    pub(crate) fn for_task(task: &Task) -> Option<HealthProbe> {
        let h = task.spec.as_ref()?.health.as_ref()?;
        let argv = match h.test.first().map(String::as_str) {
            Some("CMD-SHELL") => vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                h.test.get(1)?.clone(),
            ],
            Some("CMD") if h.test.len() > 1 => h.test[1..].to_vec(),
            _ => return None,
        };
        let or = |ms: u64, default: u64| Duration::from_millis(if ms == 0 { default } else { ms });
        Some(HealthProbe {
            argv,
            interval: or(h.interval_ms, 30_000),
            timeout: or(h.timeout_ms, 30_000),
            retries: if h.retries == 0 { 3 } else { h.retries },
            start_period: Duration::from_millis(h.start_period_ms),
        })
    }

    /// Probes every `interval`; reports "healthy" on the first success and
    /// whenever it recovers; returns once `retries` consecutive probes failed
    /// (failures inside the start period do not count), after reporting
    /// "unhealthy".
    pub(crate) async fn watch(
        &self,
        plan: &ProcessPlan,
        netns_fd: Option<std::os::fd::RawFd>,
        report: impl Fn(&str),
    ) {
        let started = tokio::time::Instant::now();
        let mut failures = 0;
        let mut healthy = false;
        loop {
            tokio::time::sleep(self.interval).await;
            if self.probe(plan, netns_fd).await {
                failures = 0;
                if !healthy {
                    healthy = true;
                    report("healthy");
                }
            } else if started.elapsed() >= self.start_period {
                failures += 1;
                if failures >= self.retries {
                    report("unhealthy");
                    return;
                }
            }
        }
    }

    /// One probe, in the task's network namespace, with its env and workdir.
    async fn probe(&self, plan: &ProcessPlan, netns_fd: Option<std::os::fd::RawFd>) -> bool {
        let health_plan = ProcessPlan {
            program: PathBuf::from(&self.argv[0]),
            args: self.argv[1..].to_vec(),
            env: plan.env.clone(),
            workdir: plan.workdir.clone(),
            ports: Vec::new(),
        };
        let Ok(mut child) = spawn_with(&health_plan, netns_fd, &[], false) else {
            return false;
        };
        match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                false
            }
        }
    }
}
