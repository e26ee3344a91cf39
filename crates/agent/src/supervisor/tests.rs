use super::*;

fn task(id: &str, desired: TaskState, status: TaskState) -> Task {
    Task {
        id: id.into(),
        service_name: "web".into(),
        slot: 1,
        desired_state: desired as i32,
        status: Some(TaskStatus {
            state: status as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ids(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Start(t) => format!("start {}", t.id),
            Action::Stop { task_id } => format!("stop {task_id}"),
            Action::Report { task_id, status } => format!(
                "report {task_id} {}",
                shoal_api::state::task_state_name(status.state())
            ),
            Action::Forget { task_id } => format!("forget {task_id}"),
        })
        .collect()
}

#[test]
fn starts_assigned_tasks_once() {
    let mut sup = TaskSupervisor::new();
    let set = vec![task("a", TaskState::Running, TaskState::Assigned)];
    assert_eq!(ids(&sup.reconcile(&set)), ["start a"]);
    // The same set again (e.g. after a reconnect) starts nothing.
    assert!(sup.reconcile(&set).is_empty());
    // The manager has seen our ACCEPTED: still nothing.
    let set = vec![task("a", TaskState::Running, TaskState::Accepted)];
    assert!(sup.reconcile(&set).is_empty());
    assert_eq!(sup.state("a"), Some(LocalState::Active));
}

#[test]
fn desired_shutdown_stops_running_task() {
    let mut sup = TaskSupervisor::new();
    sup.reconcile(&[task("a", TaskState::Running, TaskState::Assigned)]);
    let set = vec![task("a", TaskState::Shutdown, TaskState::Running)];
    assert_eq!(ids(&sup.reconcile(&set)), ["stop a"]);
    // Stopping is asked once.
    assert!(sup.reconcile(&set).is_empty());
    assert!(sup.runner_finished("a").is_empty());
    assert_eq!(sup.state("a"), Some(LocalState::Finished));
    // Removed from the set: forgotten.
    assert_eq!(ids(&sup.reconcile(&[])), ["forget a"]);
    assert_eq!(sup.state("a"), None);
}

#[test]
fn unassigned_task_is_stopped_then_forgotten() {
    let mut sup = TaskSupervisor::new();
    sup.reconcile(&[task("a", TaskState::Running, TaskState::Assigned)]);
    assert_eq!(ids(&sup.reconcile(&[])), ["stop a"]);
    assert!(sup.reconcile(&[]).is_empty());
    assert_eq!(ids(&sup.runner_finished("a")), ["forget a"]);
    assert_eq!(sup.live(), 0);
}

#[test]
fn restarted_agent_fails_orphaned_tasks() {
    let mut sup = TaskSupervisor::new();
    let set = vec![
        task("a", TaskState::Running, TaskState::Running),
        task("b", TaskState::Running, TaskState::Preparing),
        task("c", TaskState::Running, TaskState::Complete),
        task("d", TaskState::Running, TaskState::Assigned),
    ];
    let actions = sup.reconcile(&set);
    assert_eq!(
        ids(&actions),
        ["report a failed", "report b failed", "start d"]
    );
    match &actions[0] {
        Action::Report { status, .. } => assert_eq!(status.err, ERR_RESTARTED),
        other => panic!("unexpected {other:?}"),
    }
    // Reported once only, even while the manager still shows RUNNING.
    assert!(sup.reconcile(&set).is_empty());
}

#[test]
fn shutdown_before_start_reports_without_running() {
    let mut sup = TaskSupervisor::new();
    let set = vec![
        task("a", TaskState::Shutdown, TaskState::Assigned),
        task("b", TaskState::Shutdown, TaskState::Shutdown),
        task("c", TaskState::Shutdown, TaskState::Running),
    ];
    assert_eq!(
        ids(&sup.reconcile(&set)),
        ["report a shutdown", "report c failed"]
    );
    assert!(sup.reconcile(&set).is_empty());
}

#[test]
fn stop_all_stops_active_tasks() {
    let mut sup = TaskSupervisor::new();
    sup.reconcile(&[
        task("a", TaskState::Running, TaskState::Assigned),
        task("b", TaskState::Running, TaskState::Assigned),
    ]);
    assert_eq!(ids(&sup.stop_all()), ["stop a", "stop b"]);
    assert!(sup.stop_all().is_empty());
}

#[test]
fn job_tasks_wanted_complete_run_and_finish() {
    let mut sup = TaskSupervisor::new();
    let set = vec![task("j", TaskState::Complete, TaskState::Assigned)];
    assert_eq!(ids(&sup.reconcile(&set)), ["start j"]);
    // It exits 0: nothing is stopped, the runner is simply done.
    assert!(sup.runner_finished("j").is_empty());
    let set = vec![task("j", TaskState::Complete, TaskState::Complete)];
    assert!(sup.reconcile(&set).is_empty());
    assert_eq!(sup.state("j"), Some(LocalState::Finished));
    // A new iteration stops an unfinished job task like any other.
    sup.reconcile(&[task("k", TaskState::Complete, TaskState::Assigned)]);
    let set = vec![task("k", TaskState::Shutdown, TaskState::Running)];
    assert_eq!(ids(&sup.reconcile(&set)), ["stop k"]);
}
