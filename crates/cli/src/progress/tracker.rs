//! Following a service's update status across polls: whether an update is
//! still in progress, paused or rolled back, and how long converged tasks
//! must stay running.

use std::time::Duration;

use anyhow::bail;
use shoal_api::pb::{self, UpdateState};

/// How long the tasks must stay running before the service counts as
/// converged, when the spec has no update monitoring period.
pub const MONITOR: Duration = Duration::from_secs(5);

/// What the wait follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `create` and `scale`: tasks only; the update status is not consulted.
    Deploy,
    /// `service update`: also waits for the rolling update to finish, fails
    /// when it pauses or is rolled back.
    Update,
    /// `service rollback` / `update --rollback`: waits for the rollback.
    Rollback,
}

/// Follows a service's `update_status` across polls.
#[derive(Debug)]
pub struct Tracker {
    kind: Kind,
    /// When the update was requested (Unix ms): a rollback that started
    /// before it belongs to an earlier update.
    since_ms: i64,
    /// The service is being (or was) rolled back.
    rolling_back: bool,
    /// `rollback: <message>`, shown above the overall progress.
    rollback_line: Option<String>,
    /// The message of the rollback an update ran into.
    rolled_back: Option<String>,
}

// === impl Tracker ===

impl Tracker {
    /// A tracker for a request sent at `since_ms`.
    pub fn new(kind: Kind, since_ms: i64) -> Tracker {
        Tracker {
            kind,
            since_ms,
            rolling_back: kind == Kind::Rollback,
            rollback_line: None,
            rolled_back: None,
        }
    }

    /// Whether the overall line reads `rolling back update: ...`.
    pub fn rolling_back(&self) -> bool {
        self.rolling_back
    }

    /// The `rollback: ...` line, once a rollback was seen.
    pub fn rollback_line(&self) -> Option<&str> {
        self.rollback_line.as_deref()
    }

    /// Takes one poll's status. `Ok(true)` when the update (if any) is no
    /// longer in progress, so converged tasks mean done; an error when it paused.
    pub fn observe(&mut self, status: Option<&pb::UpdateStatus>) -> anyhow::Result<bool> {
        if self.kind == Kind::Deploy {
            return Ok(true);
        }
        let Some(status) = status else {
            return Ok(true);
        };
        let msg = status.message.as_str();
        match UpdateState::try_from(status.state).unwrap_or(UpdateState::Unknown) {
            UpdateState::Updating => Ok(false),
            UpdateState::Paused => bail!("service update paused: {msg}"),
            UpdateState::RollbackPaused => bail!("service rollback paused: {msg}"),
            UpdateState::RollbackStarted => {
                self.saw_rollback(msg);
                Ok(false)
            }
            UpdateState::RollbackCompleted => {
                let ours = self.kind == Kind::Rollback
                    || self.rollback_line.is_some()
                    || status.started_at_ms >= self.since_ms - 1_000;
                if ours {
                    // A requested rollback is explained by why it started.
                    let msg = if self.kind == Kind::Rollback { "" } else { msg };
                    self.saw_rollback(msg);
                }
                Ok(true)
            }
            UpdateState::Completed | UpdateState::Unknown => Ok(true),
        }
    }

    fn saw_rollback(&mut self, msg: &str) {
        self.rolling_back = true;
        if self.rollback_line.is_none() {
            let msg = match msg {
                "" if self.kind == Kind::Rollback => "manually requested rollback",
                "" => "update rolled back",
                m => m,
            };
            self.rollback_line = Some(format!("rollback: {msg}"));
            if self.kind == Kind::Update {
                self.rolled_back = Some(msg.to_string());
            }
        }
    }

    /// The outcome once the tasks converged: an update that was rolled back failed.
    pub fn finish(&self) -> anyhow::Result<()> {
        match &self.rolled_back {
            Some(msg) => bail!("service update rolled back: {msg}"),
            None => Ok(()),
        }
    }
}

/// How long converged tasks must stay running: the spec's update (or, while
/// rolling back, rollback) monitoring period, [`MONITOR`] when unset.
pub fn monitor_period(spec: Option<&pb::ServiceSpec>, rolling_back: bool) -> Duration {
    let config = spec.and_then(|s| {
        if rolling_back {
            s.rollback_config.as_ref()
        } else {
            s.update_config.as_ref()
        }
    });
    match config.map_or(0, |c| c.monitor_ms) {
        0 => MONITOR,
        ms => Duration::from_millis(ms),
    }
}
