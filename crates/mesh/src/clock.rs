//! [`Clock`], the time base of the mesh's lock-free deadlines.

use tokio::time::Instant;

/// The mesh's monotonic clock, in nanoseconds since the mesh started: what
/// ejection deadlines and episodes of failing accepts are measured on, kept
/// in atomics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: Instant,
}

// === impl Clock ===

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
