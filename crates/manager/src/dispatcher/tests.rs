use std::sync::Arc;

use shoal_api::pb::{Meta, Task, TaskState, TaskStatus};

use super::*;
use crate::state::ClusterView;

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
        tasks: tasks
            .iter()
            .map(|t| (t.id.clone(), Arc::new(t.clone())))
            .collect(),
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

fn huge_task(id: &str, node: &str) -> Task {
    let mut t = task(id, node, 1);
    let spec = t.spec.get_or_insert_with(Default::default);
    for i in 0..15 {
        spec.labels.insert(format!("l{i}"), "x".repeat(100_000));
    }
    t
}

#[test]
fn an_oversized_task_is_left_out_of_its_nodes_assignments() {
    let v = view(&[huge_task("big", "n1"), task("ok", "n1", 1)]);
    let mut index = AssignmentIndex::default();
    index.update(1, &v);
    let ids: Vec<String> = index.tasks_of(&v, "n1").into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["ok"]);
}

#[test]
fn assignments_are_kept_under_the_message_budget() {
    let mut tasks: Vec<Task> = (0..40)
        .map(|i| {
            let mut t = task(&format!("t{i:02}"), "n1", 1);
            t.meta.as_mut().unwrap().created_at_ms = i;
            t.spec.get_or_insert_with(Default::default).image = "x".repeat(10_000);
            if i < 20 {
                t.status.as_mut().unwrap().state = TaskState::Shutdown as i32;
            }
            t
        })
        .collect();
    let budget = 150_000;
    let all = fit_assignments(tasks.clone(), "n1", usize::MAX);
    assert_eq!(all.len(), 40, "under the budget nothing is left out");
    tasks.reverse();
    let kept = fit_assignments(tasks, "n1", budget);
    let size: usize = kept.iter().map(shoal_api::codec::encoded_len).sum();
    assert!(size <= budget, "{size}");
    assert!(!kept.is_empty());
    assert!(
        kept.iter()
            .all(|t| t.status.as_ref().unwrap().state == TaskState::Running as i32),
        "finished tasks go first"
    );
}

proptest::proptest! {
    /// Any mix of task sizes and states: the kept set fits the budget, and
    /// everything is kept when it all fits.
    #[test]
    fn fit_assignments_always_fits_the_budget(
        sizes in proptest::collection::vec((0usize..20_000, proptest::bool::ANY), 0..40),
        budget in 0usize..400_000,
    ) {
        let tasks: Vec<Task> = sizes
            .iter()
            .enumerate()
            .map(|(i, (size, done))| {
                let mut t = task(&format!("t{i}"), "n1", 1);
                t.spec.get_or_insert_with(Default::default).image = "x".repeat(*size);
                if *done {
                    t.status.as_mut().unwrap().state = TaskState::Complete as i32;
                }
                t
            })
            .collect();
        let total: usize = tasks.iter().map(|t| shoal_api::codec::encoded_len(t) + 8).sum();
        let kept = fit_assignments(tasks.clone(), "n1", budget);
        let used: usize = kept.iter().map(|t| shoal_api::codec::encoded_len(t) + 8).sum();
        proptest::prop_assert!(used <= budget);
        if total <= budget {
            proptest::prop_assert_eq!(kept.len(), tasks.len());
        }
    }
}

#[tokio::test]
async fn a_feed_opened_before_node_rm_ends_with_the_refusal() {
    use futures::StreamExt;
    let removed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(4);
    let flag = removed.clone();
    let mut feed = Box::pin(until_removed(
        ReceiverStream::new(rx),
        move |node| node == "n1" && flag.load(std::sync::atomic::Ordering::SeqCst),
        "n1".into(),
    ));
    tx.send(Ok(FeedMessage::default())).await.unwrap();
    assert!(feed.next().await.unwrap().is_ok(), "served while a member");
    removed.store(true, std::sync::atomic::Ordering::SeqCst);
    tx.send(Ok(FeedMessage::default())).await.unwrap();
    tx.send(Ok(FeedMessage::default())).await.unwrap();
    let refusal = feed.next().await.unwrap().unwrap_err();
    assert!(crate::join::is_removed_status(&refusal), "{refusal:?}");
    assert!(feed.next().await.is_none(), "nothing after the refusal");
}
