//! Passive health of an endpoint: consecutive connect failures eject it for
//! a backoff that doubles from `eject_base` up to `eject_max`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::MeshConfig;

/// Passive health of one endpoint: consecutive connect failures and the time
/// until which it is ejected. Lock-free; races only blur the backoff slightly.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Consecutive connect failures; 0 when healthy.
    failures: AtomicU32,
    /// Ejected while `now < ejected_until`, in nanoseconds since the mesh's epoch.
    ejected_until: AtomicU64,
}

// === impl Health ===

impl Health {
    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Relaxed)
    }

    pub(crate) fn record_failure(&self, now: u64, config: &MeshConfig) -> Duration {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let backoff = config
            .eject_base
            .saturating_mul(1u32 << (failures - 1).min(20))
            .min(config.eject_max);
        let until = now.saturating_add(u64::try_from(backoff.as_nanos()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Ordering::Relaxed);
        backoff
    }

    pub(crate) fn record_success(&self) {
        // Read first so the healthy path does not write a shared cache line.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }
}
