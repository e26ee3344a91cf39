//! Task states: Docker's names and the predicates the reconcilers use.

use crate::pb::TaskState;

/// Lower-case name as `service ps` shows it ("running", "failed", ...).
pub fn task_state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::New => "new",
        TaskState::Pending => "pending",
        TaskState::Assigned => "assigned",
        TaskState::Accepted => "accepted",
        TaskState::Preparing => "preparing",
        TaskState::Ready => "ready",
        TaskState::Starting => "starting",
        TaskState::Running => "running",
        TaskState::Complete => "complete",
        TaskState::Shutdown => "shutdown",
        TaskState::Failed => "failed",
        TaskState::Rejected => "rejected",
        TaskState::Remove => "remove",
        TaskState::Orphaned => "orphaned",
    }
}

/// Parses a name as accepted by `-f desired-state=...`.
pub fn parse_task_state(name: &str) -> Option<TaskState> {
    let all = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Remove,
        TaskState::Orphaned,
    ];
    all.into_iter()
        .find(|s| task_state_name(*s).eq_ignore_ascii_case(name))
}

/// The task's process is gone for good (states only increase).
pub fn is_terminal(state: TaskState) -> bool {
    state as i32 >= TaskState::Complete as i32
}

/// Capitalised, as in "Running 5 minutes ago".
pub fn task_state_title(state: TaskState) -> String {
    let n = task_state_name(state);
    let mut c = n.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [TaskState::Running, TaskState::Shutdown, TaskState::Failed] {
            assert_eq!(parse_task_state(task_state_name(s)), Some(s));
        }
        assert_eq!(task_state_title(TaskState::Running), "Running");
        assert!(is_terminal(TaskState::Failed));
        assert!(!is_terminal(TaskState::Running));
    }

    proptest::proptest! {
        /// Any `-f desired-state=` text is a state or none, and every
        /// state's name reads back as that state.
        #[test]
        fn any_state_name_parses_or_is_refused(name in "[a-zA-Z]{0,12}|.{0,16}", n in 0i32..32) {
            if let Some(state) = parse_task_state(&name) {
                proptest::prop_assert_eq!(parse_task_state(task_state_name(state)), Some(state));
            }
            if let Ok(state) = TaskState::try_from(n) {
                proptest::prop_assert_eq!(parse_task_state(task_state_name(state)), Some(state));
            }
        }
    }
}
