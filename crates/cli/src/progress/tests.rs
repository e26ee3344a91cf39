use std::time::Duration;

use shoal_api::pb::{self, TaskState, UpdateState};

use super::plain::PlainLog;
use super::snapshot::*;
use super::tracker::*;

fn service(replicas: u64, global: bool) -> pb::Service {
    pb::Service {
        id: "svc".into(),
        spec: Some(pb::ServiceSpec {
            name: "web".into(),
            replicas,
            mode: if global { 1 } else { 0 },
            ..Default::default()
        }),
        spec_version: 2,
        ..Default::default()
    }
}

fn task(slot: u64, node: &str, state: TaskState, created: i64) -> pb::Task {
    pb::Task {
        id: format!("t{slot}{node}{created}"),
        meta: Some(pb::Meta {
            version: 1,
            created_at_ms: created,
            updated_at_ms: created,
        }),
        service_id: "svc".into(),
        service_name: "web".into(),
        slot,
        node_id: node.into(),
        spec_version: 2,
        desired_state: TaskState::Running as i32,
        status: Some(pb::TaskStatus {
            state: state as i32,
            timestamp_ms: created,
            ..Default::default()
        }),
        ..Default::default()
    }
}

const FULL: &str = "[==================================================>]";

#[test]
fn bars() {
    let t = task(1, "n1", TaskState::Running, 1);
    assert_eq!(task_line("1/3", Some(&t)), format!("1/3: running   {FULL}"));
    let t = task(1, "n1", TaskState::Starting, 1);
    assert_eq!(
        task_line("1/3", Some(&t)),
        format!("1/3: starting  [{}>{}]", "=".repeat(44), " ".repeat(6))
    );
    let t = task(1, "n1", TaskState::New, 1);
    assert_eq!(
        task_line("1/3", Some(&t)),
        format!("1/3: new       [{}>{}]", "=".repeat(5), " ".repeat(45))
    );
    let mut t = task(1, "n1", TaskState::Failed, 1);
    t.status.as_mut().unwrap().err = "task: non-zero exit (1)".into();
    assert_eq!(task_line("1/3", Some(&t)), "1/3: task: non-zero exit (1)");
    assert_eq!(task_line("2/3", None), "2/3: ");
}

#[test]
fn replicated_converges_when_every_slot_runs_the_current_spec() {
    let svc = service(3, false);
    let mut tasks = vec![
        task(1, "n1", TaskState::Running, 10),
        task(2, "n1", TaskState::Running, 10),
        task(3, "n2", TaskState::Starting, 10),
    ];
    let snap = evaluate(&svc, &tasks, &[], false);
    assert_eq!((snap.running, snap.desired), (2, Some(3)));
    assert!(!snap.converged());
    assert_eq!(snap.lines[0], "overall progress: 2 out of 3 tasks");

    tasks[2] = task(3, "n2", TaskState::Running, 10);
    let snap = evaluate(&svc, &tasks, &[], false);
    assert!(snap.converged());
    assert_eq!(
        snap.lines,
        [
            "overall progress: 3 out of 3 tasks".to_string(),
            format!("1/3: running   {FULL}"),
            format!("2/3: running   {FULL}"),
            format!("3/3: running   {FULL}"),
        ]
    );
}

#[test]
fn old_spec_versions_and_stopping_tasks_do_not_count() {
    let svc = service(1, false);
    let mut old = task(1, "n1", TaskState::Running, 5);
    old.spec_version = 1;
    let snap = evaluate(&svc, &[old.clone()], &[], false);
    assert_eq!(snap.running, 0);

    // A failed task being replaced: its error is remembered, the new one shown.
    let mut failed = task(1, "n1", TaskState::Failed, 5);
    failed.desired_state = TaskState::Shutdown as i32;
    failed.status.as_mut().unwrap().err = "task: non-zero exit (137)".into();
    let fresh = task(1, "n1", TaskState::Ready, 6);
    let snap = evaluate(&svc, &[failed, fresh], &[], false);
    assert_eq!(snap.running, 0);
    assert_eq!(
        snap.last_error.as_deref(),
        Some("task: non-zero exit (137)")
    );
    assert!(snap.lines[1].starts_with("1/1: ready "));
}

#[test]
fn global_counts_nodes_with_tasks() {
    let svc = service(0, true);
    let snap = evaluate(&svc, &[], &[], false);
    assert!(!snap.converged());
    assert_eq!(snap.lines, ["overall progress: waiting for new tasks"]);

    let tasks = [
        task(0, "aaaaaaaaaaaaaaaaaaaaaaaaa", TaskState::Running, 1),
        task(0, "bbbbbbbbbbbbbbbbbbbbbbbbb", TaskState::Running, 1),
    ];
    let snap = evaluate(&svc, &tasks, &[], false);
    assert!(snap.converged());
    assert_eq!(snap.lines[0], "overall progress: 2 out of 2 tasks");
    assert_eq!(snap.lines[1], format!("aaaaaaaaaaaa: running   {FULL}"));
}

#[test]
fn zero_replicas_converge_at_once() {
    let snap = evaluate(&service(0, false), &[], &[], false);
    assert!(snap.converged());
    assert_eq!(snap.lines, ["overall progress: 0 out of 0 tasks"]);
}

#[test]
fn rollbacks_say_so_in_the_overall_line() {
    let svc = service(2, false);
    let tasks = [task(1, "n1", TaskState::Running, 1)];
    let snap = evaluate(&svc, &tasks, &[], true);
    assert_eq!(
        snap.lines[0],
        "overall progress: rolling back update: 1 out of 2 tasks"
    );
}

fn status(state: UpdateState, message: &str, started_at_ms: i64) -> pb::UpdateStatus {
    pb::UpdateStatus {
        state: state as i32,
        started_at_ms,
        completed_at_ms: 0,
        message: message.into(),
    }
}

#[test]
fn deploys_ignore_the_update_status() {
    let mut t = Tracker::new(Kind::Deploy, 0);
    let paused = status(UpdateState::Paused, "x", 0);
    assert!(t.observe(Some(&paused)).unwrap());
    assert!(t.finish().is_ok());
}

#[test]
fn an_update_settles_when_no_longer_updating() {
    let mut t = Tracker::new(Kind::Update, 1_000);
    assert!(t.observe(None).unwrap());
    let s = status(UpdateState::Updating, "update in progress", 1_000);
    assert!(!t.observe(Some(&s)).unwrap());
    let s = status(UpdateState::Completed, "update completed", 1_000);
    assert!(t.observe(Some(&s)).unwrap());
    assert!(!t.rolling_back());
    assert_eq!(t.rollback_line(), None);
    assert!(t.finish().is_ok());
}

#[test]
fn a_paused_update_fails_with_its_message() {
    let mut t = Tracker::new(Kind::Update, 0);
    let s = status(
        UpdateState::Paused,
        "update paused due to failure or early termination of task abc",
        0,
    );
    assert_eq!(
        t.observe(Some(&s)).unwrap_err().to_string(),
        "service update paused: update paused due to failure or early termination of task abc"
    );
    let mut t = Tracker::new(Kind::Rollback, 0);
    let s = status(UpdateState::RollbackPaused, "rollback paused", 0);
    assert_eq!(
        t.observe(Some(&s)).unwrap_err().to_string(),
        "service rollback paused: rollback paused"
    );
}

#[test]
fn an_automatic_rollback_is_shown_then_fails_the_update() {
    let mut t = Tracker::new(Kind::Update, 0);
    let msg = "update rolled back due to failure or early termination of task abc";
    let s = status(UpdateState::RollbackStarted, msg, 0);
    assert!(!t.observe(Some(&s)).unwrap());
    assert!(t.rolling_back());
    assert_eq!(t.rollback_line(), Some(format!("rollback: {msg}").as_str()));
    let s = status(UpdateState::RollbackCompleted, "rollback completed", 0);
    assert!(t.observe(Some(&s)).unwrap());
    // The first message is kept.
    assert_eq!(t.rollback_line(), Some(format!("rollback: {msg}").as_str()));
    assert_eq!(
        t.finish().unwrap_err().to_string(),
        format!("service update rolled back: {msg}")
    );
}

#[test]
fn an_old_completed_rollback_does_not_fail_a_new_update() {
    let mut t = Tracker::new(Kind::Update, 100_000);
    let s = status(UpdateState::RollbackCompleted, "rollback completed", 50_000);
    assert!(t.observe(Some(&s)).unwrap());
    assert!(!t.rolling_back());
    assert!(t.finish().is_ok());
    // One that started with this update does.
    let s = status(
        UpdateState::RollbackCompleted,
        "rollback completed",
        100_500,
    );
    assert!(t.observe(Some(&s)).unwrap());
    assert!(t.finish().is_err());
}

#[test]
fn a_requested_rollback() {
    let mut t = Tracker::new(Kind::Rollback, 0);
    assert!(t.rolling_back());
    let s = status(
        UpdateState::RollbackStarted,
        "manually requested rollback",
        0,
    );
    assert!(!t.observe(Some(&s)).unwrap());
    assert_eq!(
        t.rollback_line(),
        Some("rollback: manually requested rollback")
    );
    let s = status(UpdateState::RollbackCompleted, "rollback completed", 0);
    assert!(t.observe(Some(&s)).unwrap());
    assert!(t.finish().is_ok());

    // Already completed at the first poll: the line still says why.
    let mut t = Tracker::new(Kind::Rollback, 0);
    let s = status(UpdateState::RollbackCompleted, "", 0);
    assert!(t.observe(Some(&s)).unwrap());
    assert_eq!(
        t.rollback_line(),
        Some("rollback: manually requested rollback")
    );
}

#[test]
fn the_monitor_period_comes_from_the_spec() {
    assert_eq!(monitor_period(None, false), MONITOR);
    let mut spec = pb::ServiceSpec {
        update_config: Some(pb::UpdateConfig {
            monitor_ms: 1_500,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        monitor_period(Some(&spec), false),
        Duration::from_millis(1_500)
    );
    assert_eq!(monitor_period(Some(&spec), true), MONITOR);
    spec.rollback_config = Some(pb::UpdateConfig {
        monitor_ms: 200,
        ..Default::default()
    });
    assert_eq!(
        monitor_period(Some(&spec), true),
        Duration::from_millis(200)
    );
}

fn job(mode: pb::ServiceMode, replicas: u64, max_concurrent: u64, iteration: u64) -> pb::Service {
    pb::Service {
        id: "svc".into(),
        spec: Some(pb::ServiceSpec {
            name: "batch".into(),
            replicas,
            max_concurrent,
            mode: mode as i32,
            ..Default::default()
        }),
        spec_version: 1,
        job_status: Some(pb::JobStatus {
            iteration,
            last_execution_ms: 0,
        }),
        ..Default::default()
    }
}

fn job_task(slot: u64, node: &str, state: TaskState, iteration: u64) -> pb::Task {
    pb::Task {
        desired_state: TaskState::Complete as i32,
        job_iteration: iteration,
        ..task(slot, node, state, slot as i64)
    }
}

#[test]
fn replicated_job_progress_counts_completions_of_the_current_iteration() {
    let svc = job(pb::ServiceMode::ReplicatedJob, 3, 2, 1);
    let mut failed = job_task(2, "n1", TaskState::Failed, 1);
    failed.status.as_mut().unwrap().err = "task: non-zero exit (1)".into();
    let tasks = vec![
        job_task(1, "n1", TaskState::Complete, 1),
        failed,
        job_task(2, "n1", TaskState::Running, 1),
        // An earlier iteration's completion does not count.
        job_task(3, "n1", TaskState::Complete, 0),
    ];
    let snap = evaluate(&svc, &tasks, &[], false);
    assert_eq!(
        snap.lines,
        [
            format!(
                "job progress: 1 out of 3 complete [{}>{}]",
                "=".repeat(16),
                " ".repeat(34)
            ),
            "active tasks: 1 out of 2 tasks".to_string(),
            format!("1/3: complete  {FULL}"),
            format!("2/3: running   [{}>{}]", "=".repeat(45), " ".repeat(5)),
            "3/3: ".to_string(),
        ]
    );
    assert!(!snap.converged());
    let done: Vec<pb::Task> = (1..=3)
        .map(|s| job_task(s, "n1", TaskState::Complete, 1))
        .collect();
    let snap = evaluate(&svc, &done, &[], false);
    assert!(snap.converged());
    assert_eq!(snap.lines[1], "active tasks: 0 out of 0 tasks");
}

#[test]
fn global_job_progress_has_a_line_per_node() {
    let svc = job(pb::ServiceMode::GlobalJob, 0, 0, 0);
    assert_eq!(
        evaluate(&svc, &[], &[], false).lines,
        ["job progress: waiting for tasks"]
    );
    let tasks = vec![
        job_task(0, "n1", TaskState::Complete, 0),
        job_task(0, "n2", TaskState::Starting, 0),
    ];
    let snap = evaluate(&svc, &tasks, &[], false);
    assert_eq!(
        snap.lines[0],
        format!(
            "job progress: 1 out of 2 complete [{}>{}]",
            "=".repeat(25),
            " ".repeat(25)
        )
    );
    assert_eq!(snap.lines[1], format!("n1: complete  {FULL}"));
    assert!(!snap.converged());
}

// === output that is not a terminal ===

fn failed(slot: u64, err: &str) -> pb::Task {
    let mut t = task(slot, "n1", TaskState::Failed, 9);
    t.status.as_mut().unwrap().err = err.into();
    t
}

/// Feeds `polls` (each a set of tasks) through a [`PlainLog`].
fn plain_polls(svc: &pb::Service, polls: &[Vec<pb::Task>]) -> Vec<Vec<String>> {
    let mut log = PlainLog::default();
    polls
        .iter()
        .map(|tasks| log.poll(None, &evaluate(svc, tasks, &[], false)))
        .collect()
}

#[test]
fn a_pipe_gets_every_refresh_without_bars_as_docker_prints_it() {
    let svc = service(3, false);
    let running = |slots: &[u64]| -> Vec<pb::Task> {
        slots
            .iter()
            .map(|&s| task(s, "n1", TaskState::Running, 1))
            .collect()
    };
    let polls = plain_polls(
        &svc,
        &[
            vec![task(1, "n1", TaskState::Preparing, 1)],
            running(&[1, 2]),
            running(&[1, 2, 3]),
            running(&[1, 2, 3]),
            vec![
                task(1, "n1", TaskState::Running, 1),
                failed(2, "task: non-zero exit (1)"),
            ],
            vec![
                task(1, "n1", TaskState::Running, 1),
                failed(2, "task: non-zero exit (1)"),
            ],
        ],
    );
    assert_eq!(
        polls[0],
        [
            "overall progress: 0 out of 3 tasks",
            "1/3:  ",
            "2/3:  ",
            "3/3:  ",
            "overall progress: 0 out of 3 tasks",
        ]
    );
    assert_eq!(polls[1], ["overall progress: 2 out of 3 tasks"]);
    assert_eq!(polls[2], ["overall progress: 3 out of 3 tasks"]);
    assert!(polls[3].is_empty(), "converged: nothing new");
    // A crash loop is not silent: its error at every poll.
    for poll in &polls[4..] {
        assert_eq!(
            poll,
            &[
                "2/3: task: non-zero exit (1)",
                "overall progress: 1 out of 3 tasks"
            ]
        );
    }
}

#[test]
fn a_pipe_gets_the_rollback_line_once_and_the_waiting_lines() {
    let mut log = PlainLog::default();
    let svc = service(0, true);
    let snap = evaluate(&svc, &[], &[], false);
    assert_eq!(
        log.poll(Some("rollback: manually requested rollback"), &snap),
        [
            "rollback: manually requested rollback",
            "overall progress: waiting for new tasks"
        ]
    );
    let snap = evaluate(&svc, &[task(0, "n1", TaskState::Running, 1)], &[], true);
    assert_eq!(
        log.poll(Some("rollback: manually requested rollback"), &snap),
        [
            "overall progress: rolling back update: 0 out of 1 tasks",
            "overall progress: rolling back update: 1 out of 1 tasks"
        ]
    );
}

#[test]
fn a_pipe_shows_a_jobs_errors_and_active_tasks_but_not_its_bars() {
    let svc = job(pb::ServiceMode::ReplicatedJob, 2, 1, 1);
    let mut broken = job_task(2, "n1", TaskState::Failed, 1);
    broken.status.as_mut().unwrap().err = "task: non-zero exit (2)".into();
    let polls: Vec<Vec<String>> = {
        let mut log = PlainLog::default();
        [
            vec![job_task(1, "n1", TaskState::Running, 1)],
            vec![job_task(1, "n1", TaskState::Complete, 1), broken],
        ]
        .iter()
        .map(|tasks| log.poll(None, &evaluate(&svc, tasks, &[], false)))
        .collect()
    };
    assert_eq!(
        polls[0],
        ["1/2:  ", "2/2:  ", "active tasks: 1 out of 1 tasks"]
    );
    assert_eq!(
        polls[1],
        [
            "2/2: task: non-zero exit (2)",
            "active tasks: 0 out of 1 tasks"
        ]
    );
    let svc = job(pb::ServiceMode::GlobalJob, 0, 0, 0);
    let mut log = PlainLog::default();
    let snap = evaluate(&svc, &[], &[], false);
    assert_eq!(log.poll(None, &snap), ["job progress: waiting for tasks"]);
}
