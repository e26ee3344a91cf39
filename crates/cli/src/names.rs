//! Docker's names for Shoal's enums, printed and parsed here: each enum has
//! one table of (value, name) that its `*_name` (and `parse_*`, where the
//! CLI reads the name back) looks up.
//! A value the table lacks (an unknown number from a newer daemon) prints as
//! the enum's default, as Docker shows an unset field.

use shoal_api::pb;

/// Looks `value` up in `table`; the first entry is the default.
fn name_in<T: Copy + PartialEq>(table: &[(T, &'static str)], value: Option<T>) -> &'static str {
    table
        .iter()
        .find(|(v, _)| Some(*v) == value)
        .unwrap_or(&table[0])
        .1
}

/// The value whose name is `name` (ASCII case-insensitive).
fn parse_in<T: Copy>(table: &[(T, &'static str)], name: &str) -> Option<T> {
    table
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(v, _)| *v)
}

const RUNTIMES: [(pb::Runtime, &str); 2] = [
    (pb::Runtime::Builtin, "builtin"),
    (pb::Runtime::Process, "process"),
];

/// Docker's name for a runtime (`TaskTemplate.Runtime`).
pub fn runtime_name(r: i32) -> &'static str {
    name_in(&RUNTIMES, pb::Runtime::try_from(r).ok())
}

const RESTART_CONDITIONS: [(pb::RestartCondition, &str); 3] = [
    (pb::RestartCondition::Any, "any"),
    (pb::RestartCondition::OnFailure, "on-failure"),
    (pb::RestartCondition::None, "none"),
];

/// Docker's name for a restart condition.
pub fn restart_condition_name(c: i32) -> &'static str {
    name_in(&RESTART_CONDITIONS, pb::RestartCondition::try_from(c).ok())
}

const FAILURE_ACTIONS: [(pb::FailureAction, &str); 3] = [
    (pb::FailureAction::Pause, "pause"),
    (pb::FailureAction::Continue, "continue"),
    (pb::FailureAction::Rollback, "rollback"),
];

/// Docker's name for a failure action (`pause`, `continue`, `rollback`).
pub fn failure_action_name(a: i32) -> &'static str {
    name_in(&FAILURE_ACTIONS, pb::FailureAction::try_from(a).ok())
}

const UPDATE_ORDERS: [(pb::UpdateOrder, &str); 2] = [
    (pb::UpdateOrder::StopFirst, "stop-first"),
    (pb::UpdateOrder::StartFirst, "start-first"),
];

/// Docker's name for an update order (`stop-first`, `start-first`).
pub fn update_order_name(o: i32) -> &'static str {
    name_in(&UPDATE_ORDERS, pb::UpdateOrder::try_from(o).ok())
}

const UPDATE_STATES: [(pb::UpdateState, &str); 7] = [
    (pb::UpdateState::Unknown, ""),
    (pb::UpdateState::Updating, "updating"),
    (pb::UpdateState::Paused, "paused"),
    (pb::UpdateState::Completed, "completed"),
    (pb::UpdateState::RollbackStarted, "rollback_started"),
    (pb::UpdateState::RollbackPaused, "rollback_paused"),
    (pb::UpdateState::RollbackCompleted, "rollback_completed"),
];

/// Docker's name for an update state (`updating`, `rollback_started`, ...);
/// empty when there is none.
pub fn update_state_name(s: i32) -> &'static str {
    name_in(&UPDATE_STATES, pb::UpdateState::try_from(s).ok())
}

const AVAILABILITIES: [(pb::NodeAvailability, &str); 3] = [
    (pb::NodeAvailability::Active, "Active"),
    (pb::NodeAvailability::Pause, "Pause"),
    (pb::NodeAvailability::Drain, "Drain"),
];

/// `Active` / `Pause` / `Drain`.
pub fn availability_name(a: i32) -> &'static str {
    name_in(&AVAILABILITIES, pb::NodeAvailability::try_from(a).ok())
}

/// `--availability active|pause|drain` (any case).
pub fn parse_availability(name: &str) -> Option<pb::NodeAvailability> {
    parse_in(&AVAILABILITIES, name)
}

const NODE_STATES: [(pb::NodeState, &str); 4] = [
    (pb::NodeState::Unknown, "Unknown"),
    (pb::NodeState::Ready, "Ready"),
    (pb::NodeState::Down, "Down"),
    (pb::NodeState::Disconnected, "Disconnected"),
];

/// `Ready` / `Down` / `Disconnected` / `Unknown`.
pub fn node_state_name(s: i32) -> &'static str {
    name_in(&NODE_STATES, pb::NodeState::try_from(s).ok())
}

const ROLES: [(pb::NodeRole, &str); 2] = [
    (pb::NodeRole::Worker, "worker"),
    (pb::NodeRole::Manager, "manager"),
];

/// `worker` / `manager`.
pub fn role_name(r: i32) -> &'static str {
    name_in(&ROLES, pb::NodeRole::try_from(r).ok())
}

/// `--role worker|manager`.
pub fn parse_role(name: &str) -> Option<pb::NodeRole> {
    parse_in(&ROLES, name)
}

const MODES: [(pb::ServiceMode, &str); 4] = [
    (pb::ServiceMode::Replicated, "replicated"),
    (pb::ServiceMode::Global, "global"),
    (pb::ServiceMode::ReplicatedJob, "replicated-job"),
    (pb::ServiceMode::GlobalJob, "global-job"),
];

/// `--mode` and `-f mode=` spelling: `replicated`, `global-job`, ...
pub fn mode_flag_name(mode: i32) -> &'static str {
    name_in(&MODES, pb::ServiceMode::try_from(mode).ok())
}

/// `--mode replicated|global|replicated-job|global-job`.
pub fn parse_mode(name: &str) -> Option<pb::ServiceMode> {
    parse_in(&MODES, name)
}

/// The MODE column of `service ls`: `replicated`, `global job`, ...
pub fn mode_name(mode: i32) -> String {
    mode_flag_name(mode).replace('-', " ")
}

/// Docker's lower-case task state (`running`, `shutdown`, ...).
pub fn task_state_str(s: i32) -> &'static str {
    pb::TaskState::try_from(s)
        .map(shoal_api::state::task_state_name)
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name parses back to its value.
    #[test]
    fn names_round_trip() {
        for (v, n) in RUNTIMES {
            assert_eq!(runtime_name(v as i32), n);
        }
        for (v, n) in ROLES {
            assert_eq!(parse_role(n), Some(v));
            assert_eq!(role_name(v as i32), n);
        }
        for (v, n) in MODES {
            assert_eq!(parse_mode(n), Some(v));
        }
        assert_eq!(mode_name(pb::ServiceMode::GlobalJob as i32), "global job");
        assert_eq!(update_state_name(pb::UpdateState::Unknown as i32), "");
        assert_eq!(availability_name(99), "Active");
    }

    proptest::proptest! {
        /// Any text parses to a value or to nothing, never a panic.
        #[test]
        fn any_name_parses_or_not(s in ".{0,20}") {
            let _ = (parse_role(&s), parse_mode(&s));
        }
    }
}
