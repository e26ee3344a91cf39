//! Swarm's restart policy: whether a finished task in a slot gets a
//! replacement, and when the replacement may start.

use shoal_api::pb::{RestartCondition, Task, TaskState};
use shoal_api::state::is_terminal;

use super::tasks::task_state;

/// Decides for `task`, which has finished while still desired running.
/// `history` are all tasks of the same slot (or node, for global services),
/// including `task`.
pub fn should_restart(task: &Task, history: &[&Task], now: i64) -> bool {
    let spec = task.spec.clone().unwrap_or_default();
    let policy = spec.restart.unwrap_or_default();
    let state = task_state(task);
    let by_condition = match policy.condition() {
        RestartCondition::Any => true,
        RestartCondition::OnFailure => state != TaskState::Complete,
        RestartCondition::None => false,
    };
    if !by_condition {
        return false;
    }
    if policy.max_attempts == 0 {
        return true;
    }
    let window_start = if policy.window_ms == 0 {
        i64::MIN
    } else {
        now - policy.window_ms as i64
    };
    let attempts = history
        .iter()
        .filter(|t| t.spec_version == task.spec_version && is_terminal(task_state(t)))
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.timestamp_ms >= window_start)
        })
        .count() as u64;
    attempts <= policy.max_attempts
}

/// When the replacement of `task` may start.
pub fn restart_not_before(task: &Task, now: i64) -> i64 {
    let delay = task
        .spec
        .as_ref()
        .and_then(|s| s.restart.as_ref())
        .map(|r| r.delay_ms)
        .unwrap_or(5000);
    now + delay as i64
}
