use std::sync::Arc;

use shoal_api::pb::{TaskState, TaskStatus};

use super::*;

fn task(id: &str, node: &str, state: TaskState) -> Task {
    Task {
        id: id.into(),
        node_id: node.into(),
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn update(id: &str, state: TaskState, message: &str) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: id.into(),
        status: Some(TaskStatus {
            state: state as i32,
            message: message.into(),
            ..Default::default()
        }),
    }
}

fn view(tasks: Vec<Task>) -> ClusterView {
    ClusterView {
        tasks: tasks
            .into_iter()
            .map(|t| (t.id.clone(), Arc::new(t)))
            .collect(),
        ..Default::default()
    }
}

fn state_of(t: &Task) -> TaskState {
    t.status.as_ref().unwrap().state()
}

#[test]
fn a_batch_keeps_the_furthest_state_per_task_from_its_own_node() {
    let v = view(vec![
        task("a", "n1", TaskState::Assigned),
        task("b", "n2", TaskState::Assigned),
        task("c", "n1", TaskState::Running),
    ]);
    let reports = [
        ("n1", update("a", TaskState::Accepted, "accepted")),
        ("n1", update("a", TaskState::Starting, "starting")),
        ("n1", update("a", TaskState::Running, "started")),
        // Reordered or repeated reports never move a task back.
        ("n1", update("a", TaskState::Preparing, "late")),
        // Only the node a task is assigned to speaks for it.
        ("n1", update("b", TaskState::Running, "not mine")),
        ("n2", update("b", TaskState::Accepted, "accepted")),
        // Unknown tasks are skipped.
        ("n1", update("gone", TaskState::Running, "?")),
        // Below the stored state: nothing to write.
        ("n1", update("c", TaskState::Starting, "old")),
    ];
    let changed = merge(&v, reports.iter().map(|(n, u)| (*n, u)));
    assert_eq!(changed.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(state_of(&changed["a"]), TaskState::Running);
    assert_eq!(changed["a"].status.as_ref().unwrap().message, "started");
    assert_eq!(state_of(&changed["b"]), TaskState::Accepted);
}

#[test]
fn same_state_with_news_is_written_and_exact_repeats_are_not() {
    let mut running = task("a", "n1", TaskState::Running);
    running.status.as_mut().unwrap().health = "starting".into();
    let v = view(vec![running.clone()]);
    let mut healthy = update("a", TaskState::Running, "");
    healthy.status.as_mut().unwrap().health = "healthy".into();
    let changed = merge(&v, [("n1", &healthy)]);
    assert_eq!(changed["a"].status.as_ref().unwrap().health, "healthy");
    let repeat = TaskStatusUpdate {
        task_id: "a".into(),
        status: running.status.clone(),
    };
    assert!(merge(&v, [("n1", &repeat)]).is_empty());
}
