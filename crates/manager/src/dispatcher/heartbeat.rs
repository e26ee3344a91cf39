//! The dispatcher heartbeat period, following the cluster's setting
//! (`swarm init|update --dispatcher-heartbeat`), and how long a node may stay
//! silent before it is Down. Sans-IO: the dispatcher feeds it the configured
//! period and the time.

use std::time::{Duration, Instant};

/// Missed periods after which a node is Down.
pub const MISSED_BEATS: u32 = 3;

/// The period nodes are told, and the one before the last change.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatPeriod {
    current: Duration,
    /// Nodes learn a new period from their next session message or
    /// heartbeat answer; until then they may still beat at this one.
    previous: Duration,
    changed: Instant,
    /// The period is a default, not read from the cluster object yet (a
    /// manager whose replica is still empty): the first configured period
    /// seen replaces it without a learning window, as nodes already beat at it.
    provisional: bool,
}

impl HeartbeatPeriod {
    pub fn new(period: Duration, now: Instant) -> HeartbeatPeriod {
        HeartbeatPeriod {
            current: period,
            previous: period,
            changed: now,
            provisional: false,
        }
    }

    /// A default period until the cluster object is known.
    pub fn provisional(default: Duration, now: Instant) -> HeartbeatPeriod {
        HeartbeatPeriod {
            provisional: true,
            ..HeartbeatPeriod::new(default, now)
        }
    }

    /// The period nodes should beat at.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Takes the configured period (zero: keep the current one).
    pub fn observe(&mut self, configured: Duration, now: Instant) {
        if self.provisional && !configured.is_zero() {
            *self = HeartbeatPeriod::new(configured, now);
            return;
        }
        if !configured.is_zero() && configured != self.current {
            self.previous = self.current;
            self.current = configured;
            self.changed = now;
        }
    }

    /// How long a node may go without a heartbeat: [`MISSED_BEATS`] periods.
    /// Right after a change, a node may have beaten last at the old period
    /// and hear of the new one only with its next answer, so the old period
    /// is added until that has surely happened.
    pub fn limit(&self, now: Instant) -> Duration {
        let limit = self.current * MISSED_BEATS;
        let since = now.saturating_duration_since(self.changed);
        if self.previous != self.current && since < self.previous + limit {
            limit + self.previous
        } else {
            limit
        }
    }
}

#[cfg(test)]
mod tests;
