use std::sync::Arc;

use shoal_api::pb::{NodeAvailability, RestartCondition, ServiceMode, TaskState};

use super::*;
use crate::orchestrator::tests::{node, pass, service, set_state, view, NOW};

fn job(id: &str, mode: ServiceMode, replicas: u64, max_concurrent: u64) -> Service {
    let mut s = service(id, mode, replicas);
    s.spec.as_mut().unwrap().max_concurrent = max_concurrent;
    start_iteration(&mut s, NOW);
    s
}

/// Live tasks of the job that have not completed (running or about to).
fn unfinished(v: &ClusterView) -> Vec<Task> {
    let mut t: Vec<Task> = v
        .tasks
        .values()
        .filter(|t| is_live(t) && task_state(t) != TaskState::Complete)
        .map(|t| Task::clone(t))
        .collect();
    t.sort_by_key(|t| t.slot);
    t
}

fn complete(v: &ClusterView) -> usize {
    v.tasks
        .values()
        .filter(|t| task_state(t) == TaskState::Complete)
        .count()
}

#[test]
fn replicated_job_runs_exactly_its_completions_max_concurrent_at_a_time() {
    let mut v = view(
        &["n1", "n2"],
        vec![job("batch", ServiceMode::ReplicatedJob, 6, 2)],
    );
    pass(&mut v, NOW);
    let first = unfinished(&v);
    assert_eq!(first.iter().map(|t| t.slot).collect::<Vec<_>>(), [1, 2]);
    assert!(first
        .iter()
        .all(|t| t.desired_state == TaskState::Complete as i32 && t.job_iteration == 0));
    // Complete one task at a time: a new one takes its place, never more
    // than two unfinished, and once six completed nothing more starts.
    let mut done = 0;
    while let Some(t) = unfinished(&v).first().cloned() {
        set_state(&mut v, &t.id, TaskState::Complete);
        done += 1;
        pass(&mut v, NOW);
        assert!(unfinished(&v).len() <= 2, "at most max-concurrent at once");
        assert!(done <= 6);
    }
    assert_eq!(done, 6);
    assert_eq!(complete(&v), 6);
    assert_eq!(v.tasks.len(), 6, "one task per completion");
    let mut slots: Vec<u64> = v.tasks.values().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, [1, 2, 3, 4, 5, 6]);
    assert!(
        pass(&mut v, NOW + 60_000).is_empty(),
        "a finished job stays done"
    );
    let svc = v.services["batch"].clone();
    assert_eq!(counts(&v, &svc), (0, 2, 6));
}

#[test]
fn failed_job_task_is_retried_per_restart_policy_completed_never() {
    let mut s = job("batch", ServiceMode::ReplicatedJob, 2, 2);
    s.spec
        .as_mut()
        .unwrap()
        .restart
        .as_mut()
        .unwrap()
        .max_attempts = 1;
    let mut v = view(&["n1"], vec![s]);
    pass(&mut v, NOW);
    let [a, b] = <[Task; 2]>::try_from(unfinished(&v)).unwrap();
    // Slot 1 completes with restart condition "any": it is not run again.
    set_state(&mut v, &a.id, TaskState::Complete);
    // Slot 2 fails: replaced in its slot after the restart delay.
    set_state(&mut v, &b.id, TaskState::Failed);
    pass(&mut v, NOW);
    assert_eq!(v.tasks[&b.id].desired_state, TaskState::Shutdown as i32);
    let retry = unfinished(&v);
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].slot, 2);
    assert_eq!(retry[0].not_before_ms, NOW + 5000);
    assert_eq!(v.tasks[&a.id].desired_state, TaskState::Complete as i32);
    // The retry fails too: max attempts (1) reached, the slot stays failed.
    set_state(&mut v, &retry[0].id, TaskState::Failed);
    pass(&mut v, NOW + 10_000);
    assert_eq!(v.tasks.len(), 3);
    assert_eq!(
        v.tasks[&retry[0].id].desired_state,
        TaskState::Complete as i32
    );
    let svc = v.services["batch"].clone();
    assert_eq!(counts(&v, &svc), (0, 2, 1));
}

#[test]
fn restart_condition_none_leaves_a_failed_job_task() {
    let mut s = job("batch", ServiceMode::ReplicatedJob, 1, 0);
    s.spec.as_mut().unwrap().restart.as_mut().unwrap().condition = RestartCondition::None as i32;
    let mut v = view(&["n1"], vec![s]);
    pass(&mut v, NOW);
    let t = unfinished(&v).remove(0);
    set_state(&mut v, &t.id, TaskState::Failed);
    pass(&mut v, NOW);
    assert_eq!(v.tasks.len(), 1, "no retry, no new slot");
}

#[test]
fn replicated_job_task_on_a_lost_node_runs_again_elsewhere() {
    let mut v = view(
        &["n1", "n2"],
        vec![job("batch", ServiceMode::ReplicatedJob, 1, 1)],
    );
    pass(&mut v, NOW);
    let t = unfinished(&v).remove(0);
    set_state(&mut v, &t.id, TaskState::Running);
    let lost = t.node_id.clone();
    v.nodes
        .get_mut(&lost)
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .availability = NodeAvailability::Drain as i32;
    pass(&mut v, NOW);
    assert_eq!(v.tasks[&t.id].desired_state, TaskState::Shutdown as i32);
    let again = unfinished(&v);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].slot, 1);
    assert_ne!(again[0].node_id, lost);
}

#[test]
fn global_job_runs_once_per_eligible_node() {
    let mut v = view(
        &["n1", "n2", "n3"],
        vec![job("once", ServiceMode::GlobalJob, 0, 0)],
    );
    pass(&mut v, NOW);
    let tasks = unfinished(&v);
    let mut nodes: Vec<&str> = tasks.iter().map(|t| t.node_id.as_str()).collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    let svc = v.services["once"].clone();
    assert_eq!(counts(&v, &svc), (0, 3, 0));
    // n1 completes, n2 fails (retried on n2), n3 is drained before it ran.
    set_state(&mut v, &tasks[0].id, TaskState::Complete);
    let (n2, n3) = (tasks[1].clone(), tasks[2].clone());
    set_state(&mut v, &n2.id, TaskState::Failed);
    v.nodes
        .get_mut(&n3.node_id)
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .availability = NodeAvailability::Drain as i32;
    pass(&mut v, NOW);
    assert_eq!(v.tasks[&n3.id].desired_state, TaskState::Shutdown as i32);
    let left = unfinished(&v);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].node_id, n2.node_id);
    set_state(&mut v, &left[0].id, TaskState::Complete);
    pass(&mut v, NOW);
    assert!(unfinished(&v).is_empty());
    assert_eq!(counts(&v, &v.services["once"].clone()), (0, 0, 2));
    // A node that joins later runs the job too.
    v.nodes.insert("n4".into(), Arc::new(node("n4")));
    pass(&mut v, NOW);
    let new = unfinished(&v);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].node_id, "n4");
    assert!(pass(&mut v, NOW).is_empty());
}

#[test]
fn a_new_iteration_runs_the_job_again_and_retires_the_old_tasks() {
    let mut v = view(
        &["n1"],
        vec![job("batch", ServiceMode::ReplicatedJob, 2, 1)],
    );
    pass(&mut v, NOW);
    let first = unfinished(&v).remove(0);
    set_state(&mut v, &first.id, TaskState::Complete);
    pass(&mut v, NOW);
    let second = unfinished(&v).remove(0);
    set_state(&mut v, &second.id, TaskState::Running);
    // `service update --force`: a new iteration.
    let svc = v.services.get_mut("batch").map(Arc::make_mut).unwrap();
    spec_changed(svc, NOW + 1);
    assert_eq!(iteration(svc), 1);
    assert!(svc.update_status.is_none());
    pass(&mut v, NOW + 1);
    // The running task of iteration 0 stops, the completed one is history.
    assert_eq!(
        v.tasks[&second.id].desired_state,
        TaskState::Shutdown as i32
    );
    assert_eq!(v.tasks[&first.id].desired_state, TaskState::Shutdown as i32);
    let now_running: Vec<Task> = unfinished(&v);
    assert_eq!(now_running.len(), 1);
    assert_eq!(now_running[0].job_iteration, 1);
    assert_eq!(now_running[0].slot, 1);
    assert_eq!(
        counts(&v, &v.services["batch"].clone()),
        (0, 1, 0),
        "earlier completions do not count"
    );
}

#[test]
fn only_jobs_get_a_job_status() {
    let mut s = service("web", ServiceMode::Replicated, 1);
    start_iteration(&mut s, NOW);
    spec_changed(&mut s, NOW);
    assert!(s.job_status.is_none());
    let s = job("batch", ServiceMode::GlobalJob, 0, 0);
    assert_eq!(
        s.job_status,
        Some(JobStatus {
            iteration: 0,
            last_execution_ms: NOW
        })
    );
}
