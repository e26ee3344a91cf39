use shoal_api::pb::{Meta, Task, TaskState, TaskStatus};

use super::*;

fn task(id: &str, node: &str, version: u64) -> Task {
    Task {
        id: id.into(),
        node_id: node.into(),
        meta: Some(Meta {
            version,
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn view(tasks: &[Task]) -> ClusterView {
    ClusterView {
        tasks: tasks.iter().map(|t| (t.id.clone(), t.clone())).collect(),
        ..Default::default()
    }
}

#[test]
fn only_sessions_whose_message_changed_are_woken() {
    let mut index = AssignmentIndex::default();
    let mut n1 = index.subscribe("n1");
    let mut n2 = index.subscribe("n2");
    let v1 = view(&[task("a", "n1", 1), task("b", "n2", 1)]);
    index.update(1, &v1);
    assert!(n1.has_changed().unwrap() && n2.has_changed().unwrap());
    n1.borrow_and_update();
    n2.borrow_and_update();
    let ids = |v: &ClusterView, n: &str| -> Vec<String> {
        index.tasks_of(v, n).into_iter().map(|t| t.id).collect()
    };
    assert_eq!(ids(&v1, "n1"), ["a"]);

    // A change elsewhere in the store wakes nobody.
    index.update(2, &v1);
    assert!(!n1.has_changed().unwrap() && !n2.has_changed().unwrap());

    // A task of n1 changed and one was added: only n1 is woken.
    let v3 = view(&[task("a", "n1", 3), task("b", "n2", 1), task("c", "n1", 3)]);
    index.update(3, &v3);
    assert!(n1.has_changed().unwrap());
    assert!(!n2.has_changed().unwrap());
    let ids = |v: &ClusterView, n: &str| -> Vec<String> {
        index.tasks_of(v, n).into_iter().map(|t| t.id).collect()
    };
    assert_eq!(ids(&v3, "n1"), ["a", "c"]);
    assert_eq!(ids(&v3, "n2"), ["b"]);
}
