//! The update supervisor, fed events by hand and by a seeded simulation.
//! Replay one simulation seed with `SHOAL_SIM_SEED=<n> cargo test -p
//! shoal-manager update`.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_api::pb::{
    Cluster, FailureAction, Node, NodeSpec, NodeState, NodeStatus, RestartPolicy, Service,
    ServiceMode, ServiceSpec, Task, TaskState, UpdateConfig, UpdateOrder, UpdateState,
};

use super::super::{is_live, reconcile as orchestrate, task_state, Changes};
use crate::state::ClusterView;
use crate::{allocator, reaper, scheduler};

fn config(parallelism: u64, order: UpdateOrder, action: FailureAction) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        delay_ms: 0,
        failure_action: action as i32,
        monitor_ms: 1000,
        max_failure_ratio: 0.0,
        order: order as i32,
    }
}

fn view(replicas: u64, cfg: UpdateConfig) -> ClusterView {
    view_of(ServiceMode::Replicated, replicas, &["n1", "n2"], cfg)
}

/// A global service over `nodes`.
fn global_view(nodes: &[&str], cfg: UpdateConfig) -> ClusterView {
    view_of(ServiceMode::Global, 0, nodes, cfg)
}

fn view_of(mode: ServiceMode, replicas: u64, nodes: &[&str], cfg: UpdateConfig) -> ClusterView {
    let node = |id: &str| Node {
        id: id.into(),
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        id: "web".into(),
        spec: Some(ServiceSpec {
            name: "web".into(),
            image: "shoal/echo:1".into(),
            mode: mode as i32,
            replicas,
            restart: Some(RestartPolicy {
                delay_ms: 0,
                ..Default::default()
            }),
            update_config: Some(cfg),
            rollback_config: Some(UpdateConfig {
                failure_action: FailureAction::Pause as i32,
                ..cfg
            }),
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    };
    ClusterView {
        cluster: Arc::new(Cluster {
            ingress_subnet: "10.255.0.0/16".into(),
            task_history_limit: 5,
            ..Default::default()
        }),
        services: [("web".to_string(), Arc::new(service))].into(),
        nodes: nodes
            .iter()
            .map(|n| (n.to_string(), Arc::new(node(n))))
            .collect(),
        ..Default::default()
    }
}

fn pass(v: &mut ClusterView, now: i64) -> Changes {
    let mut c = Changes::default();
    orchestrate(v, &mut c, now);
    allocator::allocate_tasks(v, &mut c, now);
    scheduler::schedule(v, &mut c, now);
    reaper::reap(v, &mut c);
    for id in &c.dirty {
        if let Some(t) = v.tasks.get_mut(id).map(Arc::make_mut) {
            t.meta.get_or_insert_with(Default::default).version += 1;
        }
    }
    c
}

fn set_state(v: &mut ClusterView, id: &str, state: TaskState, now: i64) {
    let s = v
        .tasks
        .get_mut(id)
        .map(Arc::make_mut)
        .unwrap()
        .status
        .get_or_insert_with(Default::default);
    s.state = state as i32;
    s.timestamp_ms = now;
}

/// What agents do: assigned tasks start, stopped ones stop.
fn agents_act(v: &mut ClusterView, now: i64) {
    let ids: Vec<String> = v.tasks.keys().cloned().collect();
    for id in ids {
        let t = &v.tasks[&id];
        let state = task_state(t);
        if t.desired_state > TaskState::Running as i32 && !shoal_api::state::is_terminal(state) {
            set_state(v, &id, TaskState::Shutdown, now);
        } else if is_live(t) && state == TaskState::Assigned {
            set_state(v, &id, TaskState::Running, now);
        }
    }
}

fn new_spec(v: &mut ClusterView, image: &str) {
    let s = v.services.get_mut("web").map(Arc::make_mut).unwrap();
    s.previous_spec = s.spec.clone();
    s.spec.as_mut().unwrap().image = image.into();
    s.spec_version += 1;
}

fn running_of(v: &ClusterView, version: u64) -> usize {
    v.tasks
        .values()
        .filter(|t| is_live(t) && t.spec_version == version && task_state(t) == TaskState::Running)
        .count()
}

fn status(v: &ClusterView) -> UpdateState {
    v.services["web"]
        .update_status
        .as_ref()
        .map(|s| s.state())
        .unwrap_or(UpdateState::Unknown)
}

/// Steps the world until `done` or a bound.
fn converge(v: &mut ClusterView, now: &mut i64, done: impl Fn(&ClusterView) -> bool) {
    for _ in 0..200 {
        pass(v, *now);
        agents_act(v, *now);
        *now += 100;
        if done(v) {
            return;
        }
    }
    panic!(
        "did not converge: {:#?}",
        v.tasks
            .values()
            .map(|t| (t.slot, t.spec_version, task_state(t), t.desired_state))
            .collect::<Vec<_>>()
    );
}

#[test]
fn stop_first_updates_one_slot_at_a_time() {
    let mut v = view(3, config(1, UpdateOrder::StopFirst, FailureAction::Pause));
    let mut now = 1_000;
    converge(&mut v, &mut now, |v| running_of(v, 1) == 3);
    new_spec(&mut v, "shoal/echo:2");
    pass(&mut v, now);
    let withdrawn: Vec<&Arc<Task>> = v
        .tasks
        .values()
        .filter(|t| t.spec_version == 1 && !is_live(t))
        .collect();
    assert_eq!(withdrawn.len(), 1, "one old task stops");
    assert_eq!(
        v.tasks.values().filter(|t| t.spec_version == 2).count(),
        1,
        "one new task"
    );
    assert_eq!(status(&v), UpdateState::Updating);
    // Nothing more until the new one runs.
    assert!(pass(&mut v, now).dirty.is_empty());
    converge(&mut v, &mut now, |v| {
        running_of(v, 2) == 3 && status(v) == UpdateState::Completed
    });
    assert_eq!(running_of(&v, 1), 0);
}

#[test]
fn start_first_keeps_the_old_task_until_the_new_one_runs() {
    let mut v = view(2, config(1, UpdateOrder::StartFirst, FailureAction::Pause));
    let mut now = 1_000;
    converge(&mut v, &mut now, |v| running_of(v, 1) == 2);
    new_spec(&mut v, "shoal/echo:2");
    pass(&mut v, now);
    assert_eq!(
        running_of(&v, 1),
        2,
        "old tasks keep running while the new one starts"
    );
    assert_eq!(
        v.tasks.values().filter(|t| is_live(t)).count(),
        3,
        "replicas + parallelism live"
    );
    let new = v
        .tasks
        .values()
        .find(|t| t.spec_version == 2)
        .unwrap()
        .id
        .clone();
    set_state(&mut v, &new, TaskState::Running, now);
    pass(&mut v, now);
    assert_eq!(
        running_of(&v, 1),
        1,
        "the old task of that slot stops once the new runs"
    );
    converge(&mut v, &mut now, |v| {
        running_of(v, 2) == 2 && status(v) == UpdateState::Completed
    });
}

#[test]
fn delay_separates_batches() {
    let mut cfg = config(2, UpdateOrder::StopFirst, FailureAction::Pause);
    cfg.delay_ms = 2000;
    let mut v = view(4, cfg);
    let mut now = 1_000;
    converge(&mut v, &mut now, |v| running_of(v, 1) == 4);
    new_spec(&mut v, "shoal/echo:2");
    pass(&mut v, now);
    agents_act(&mut v, now);
    now += 100;
    pass(&mut v, now);
    assert_eq!(running_of(&v, 2), 2, "first batch of two");
    assert_eq!(
        v.tasks.values().filter(|t| t.spec_version == 2).count(),
        2,
        "second batch waits for the delay"
    );
    now += 2_000;
    pass(&mut v, now);
    assert_eq!(
        v.tasks.values().filter(|t| t.spec_version == 2).count(),
        4,
        "second batch after the delay"
    );
}

#[test]
fn a_failing_new_version_pauses_the_update() {
    let mut v = view(3, config(1, UpdateOrder::StopFirst, FailureAction::Pause));
    let mut now = 1_000;
    converge(&mut v, &mut now, |v| running_of(v, 1) == 3);
    new_spec(&mut v, "shoal/echo:broken");
    pass(&mut v, now);
    let new = v
        .tasks
        .values()
        .find(|t| t.spec_version == 2)
        .unwrap()
        .id
        .clone();
    set_state(&mut v, &new, TaskState::Failed, now + 10);
    now += 100;
    pass(&mut v, now);
    assert_eq!(status(&v), UpdateState::Paused);
    let msg = v.services["web"]
        .update_status
        .as_ref()
        .unwrap()
        .message
        .clone();
    assert!(
        msg.contains("update paused due to failure or early termination of task"),
        "{msg}"
    );
    for _ in 0..10 {
        pass(&mut v, now);
        agents_act(&mut v, now);
        now += 100;
    }
    assert_eq!(
        running_of(&v, 1),
        2,
        "a paused update touches no more old tasks"
    );
}

#[test]
fn failure_action_rollback_restores_the_previous_spec() {
    let mut v = view(
        3,
        config(1, UpdateOrder::StopFirst, FailureAction::Rollback),
    );
    let mut now = 1_000;
    converge(&mut v, &mut now, |v| running_of(v, 1) == 3);
    new_spec(&mut v, "shoal/echo:broken");
    pass(&mut v, now);
    let new = v
        .tasks
        .values()
        .find(|t| t.spec_version == 2)
        .unwrap()
        .id
        .clone();
    set_state(&mut v, &new, TaskState::Failed, now + 10);
    now += 100;
    pass(&mut v, now);
    assert_eq!(status(&v), UpdateState::RollbackStarted);
    assert_eq!(
        v.services["web"].spec.as_ref().unwrap().image,
        "shoal/echo:1"
    );
    converge(&mut v, &mut now, |v| {
        running_of(v, 3) == 3 && status(v) == UpdateState::RollbackCompleted
    });
    let images: Vec<String> = v
        .tasks
        .values()
        .filter(|t| is_live(t))
        .map(|t| t.spec.as_ref().unwrap().image.clone())
        .collect();
    assert!(images.iter().all(|i| i == "shoal/echo:1"), "{images:?}");
}

/// Live tasks by node: (old version, new version).
fn per_node(v: &ClusterView) -> std::collections::BTreeMap<String, (usize, usize)> {
    let mut out = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for t in v.tasks.values().filter(|t| is_live(t)) {
        let e = out.entry(t.node_id.clone()).or_default();
        if t.spec_version == 1 {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    out
}

#[test]
fn global_stop_first_updates_one_node_at_a_time() {
    let mut v = global_view(
        &["n1", "n2", "n3"],
        config(1, UpdateOrder::StopFirst, FailureAction::Pause),
    );
    let mut now = 1_000;
    converge(&mut v, &mut now, |v| running_of(v, 1) == 3);
    new_spec(&mut v, "shoal/echo:2");
    pass(&mut v, now);
    assert_eq!(status(&v), UpdateState::Updating);
    let nodes = per_node(&v);
    let moved: Vec<&String> = nodes
        .iter()
        .filter(|(_, c)| c.1 == 1)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(moved.len(), 1, "one node at a time: {nodes:?}");
    assert_eq!(
        nodes[moved[0]],
        (0, 1),
        "its old task stopped, the new one on the same node"
    );
    assert_eq!(
        nodes.values().filter(|c| **c == (1, 0)).count(),
        2,
        "the other nodes keep serving: {nodes:?}"
    );
    assert!(pass(&mut v, now).dirty.is_empty(), "waits for the new task");
    converge(&mut v, &mut now, |v| {
        running_of(v, 2) == 3 && status(v) == UpdateState::Completed
    });
    assert!(per_node(&v).values().all(|c| *c == (0, 1)));
}

#[test]
fn global_start_first_starts_the_new_task_beside_the_old_one() {
    let mut v = global_view(
        &["n1", "n2"],
        config(1, UpdateOrder::StartFirst, FailureAction::Pause),
    );
    let mut now = 1_000;
    converge(&mut v, &mut now, |v| running_of(v, 1) == 2);
    new_spec(&mut v, "shoal/echo:2");
    pass(&mut v, now);
    let nodes = per_node(&v);
    assert_eq!(
        nodes.values().filter(|c| **c == (1, 1)).count(),
        1,
        "old and new side by side on one node: {nodes:?}"
    );
    let new = v
        .tasks
        .values()
        .find(|t| t.spec_version == 2)
        .unwrap()
        .clone();
    set_state(&mut v, &new.id, TaskState::Running, now);
    pass(&mut v, now);
    assert_eq!(
        per_node(&v)[&new.node_id],
        (0, 1),
        "the old one stops once the new runs"
    );
    converge(&mut v, &mut now, |v| {
        running_of(v, 2) == 2 && status(v) == UpdateState::Completed
    });
}

#[test]
fn global_failure_pauses_or_rolls_back() {
    for action in [FailureAction::Pause, FailureAction::Rollback] {
        let mut v = global_view(
            &["n1", "n2", "n3"],
            config(1, UpdateOrder::StopFirst, action),
        );
        let mut now = 1_000;
        converge(&mut v, &mut now, |v| running_of(v, 1) == 3);
        new_spec(&mut v, "shoal/echo:broken");
        pass(&mut v, now);
        let new = v
            .tasks
            .values()
            .find(|t| t.spec_version == 2)
            .unwrap()
            .id
            .clone();
        set_state(&mut v, &new, TaskState::Failed, now + 10);
        now += 100;
        pass(&mut v, now);
        if action == FailureAction::Pause {
            assert_eq!(status(&v), UpdateState::Paused);
            for _ in 0..10 {
                pass(&mut v, now);
                agents_act(&mut v, now);
                now += 100;
            }
            assert_eq!(
                running_of(&v, 1),
                2,
                "a paused update touches no more nodes"
            );
        } else {
            assert_eq!(status(&v), UpdateState::RollbackStarted);
            converge(&mut v, &mut now, |v| {
                running_of(v, 3) == 3 && status(v) == UpdateState::RollbackCompleted
            });
            assert!(per_node(&v).values().all(|c| *c == (0, 1)));
        }
    }
}

/// Rolling update with random agent timing and random task failures
/// (`failure_action continue`, so it always finishes). Invariants checked
/// after every step:
/// - stop-first: never more than `parallelism` slots taken down by the
///   update at once (so at least replicas - parallelism stay routable,
///   failures aside);
/// - start-first: never more than replicas + parallelism live tasks;
/// - never more than one live new-version task per slot;
/// - eventually every slot runs the new version.
///
/// For a global service a slot is a node: the same invariants hold per node.
fn simulate(seed: u64, order: UpdateOrder, global: bool) {
    // The seed derives every choice.
    let mut rng = StdRng::seed_from_u64(seed);
    let replicas: u64 = rng.random_range(2..8);
    let parallelism: u64 = rng.random_range(1..4);
    let mut cfg = config(parallelism, order, FailureAction::Continue);
    cfg.max_failure_ratio = 1.0;
    let names: Vec<String> = (1..=replicas).map(|n| format!("n{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut v = if global {
        global_view(&names, cfg)
    } else {
        view(replicas, cfg)
    };
    let mut now = 1_000;
    converge(&mut v, &mut now, |v| running_of(v, 1) == replicas as usize);
    new_spec(&mut v, "shoal/echo:2");
    for step in 0..2_000 {
        pass(&mut v, now);
        // Agents act late and unreliably.
        let ids: Vec<String> = v.tasks.keys().cloned().collect();
        for id in ids {
            let t = &v.tasks[&id];
            let state = task_state(t);
            if t.desired_state > TaskState::Running as i32 && !shoal_api::state::is_terminal(state)
            {
                if rng.random_bool(0.50) {
                    set_state(&mut v, &id, TaskState::Shutdown, now);
                }
            } else if is_live(t) && state == TaskState::Assigned && rng.random_bool(0.40) {
                let fails = step < 300 && rng.random_bool(0.15);
                set_state(
                    &mut v,
                    &id,
                    if fails {
                        TaskState::Failed
                    } else {
                        TaskState::Running
                    },
                    now,
                );
            }
        }
        now += 100;
        let live: Vec<&Arc<Task>> = v.tasks.values().filter(|t| is_live(t)).collect();
        match order {
            UpdateOrder::StopFirst => {
                // New tasks still starting never exceed the batch size (plus
                // restarts of new tasks that failed).
                let new_in_flight = v
                    .tasks
                    .values()
                    .filter(|t| {
                        is_live(t) && t.spec_version == 2 && task_state(t) == TaskState::Assigned
                    })
                    .count();
                let restarts = v
                    .tasks
                    .values()
                    .filter(|t| t.spec_version == 2 && task_state(t) == TaskState::Failed)
                    .count();
                assert!(
                    new_in_flight <= parallelism as usize + restarts,
                    "seed {seed} step {step}: {new_in_flight} new tasks starting with parallelism {parallelism}"
                );
                assert!(
                    live.len() <= replicas as usize,
                    "seed {seed}: {} live > replicas {replicas}",
                    live.len()
                );
            }
            UpdateOrder::StartFirst => {
                assert!(
                    live.len() <= (replicas + parallelism) as usize,
                    "seed {seed} step {step}: {} live > replicas {replicas} + parallelism {parallelism}",
                    live.len()
                );
            }
        }
        for slot in 1..=replicas {
            let node = format!("n{slot}");
            let new_live = live
                .iter()
                .filter(|t| t.spec_version == 2)
                .filter(|t| {
                    if global {
                        t.node_id == node
                    } else {
                        t.slot == slot
                    }
                })
                .count();
            assert!(
                new_live <= 1,
                "seed {seed}: slot {slot} has {new_live} live new tasks"
            );
        }
        if running_of(&v, 2) == replicas as usize && status(&v) == UpdateState::Completed {
            return;
        }
    }
    panic!("seed {seed} ({order:?}, replicas {replicas}, parallelism {parallelism}): update did not finish");
}

#[test]
fn seeded_rolling_update_simulation() {
    let seeds: Vec<u64> = match std::env::var("SHOAL_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SHOAL_SIM_SEED is a number")],
        Err(_) => (1..=40).collect(),
    };
    for seed in seeds {
        for global in [false, true] {
            simulate(seed, UpdateOrder::StopFirst, global);
            simulate(seed, UpdateOrder::StartFirst, global);
        }
    }
}

/// Steps the world like [`converge`], failing if any pass writes the service
/// (its update status or spec): none of these passes is an update.
fn converge_without_service_writes(
    v: &mut ClusterView,
    now: &mut i64,
    done: impl Fn(&ClusterView) -> bool,
) {
    for _ in 0..200 {
        let c = pass(v, *now);
        assert!(c.services.is_empty(), "a pass wrote the service at {now}");
        agents_act(v, *now);
        *now += 100;
        if done(v) {
            return;
        }
    }
    panic!("did not converge");
}

fn kill_one(v: &mut ClusterView, version: u64, now: i64) -> String {
    let id = v
        .tasks
        .values()
        .find(|t| is_live(t) && t.spec_version == version && task_state(t) == TaskState::Running)
        .unwrap()
        .id
        .clone();
    set_state(v, &id, TaskState::Failed, now);
    id
}

#[test]
fn a_new_service_has_no_update_status() {
    let mut v = view(3, config(1, UpdateOrder::StopFirst, FailureAction::Pause));
    let mut now = 1_000;
    converge_without_service_writes(&mut v, &mut now, |v| running_of(v, 1) == 3);
    assert_eq!(v.services["web"].update_status, None);
}

#[test]
fn a_task_dying_before_the_first_update_pauses_nothing() {
    let mut v = view(3, config(1, UpdateOrder::StopFirst, FailureAction::Pause));
    let mut now = 1_000;
    // A task of a service just created fails while the others start.
    pass(&mut v, now);
    agents_act(&mut v, now);
    now += 100;
    kill_one(&mut v, 1, now);
    converge_without_service_writes(&mut v, &mut now, |v| running_of(v, 1) == 3);
    // Later again, once everything ran for a while.
    now += 10_000;
    kill_one(&mut v, 1, now);
    converge_without_service_writes(&mut v, &mut now, |v| running_of(v, 1) == 3);
    assert_eq!(v.services["web"].update_status, None);
}

#[test]
fn scaling_is_not_an_update() {
    let mut v = view(2, config(1, UpdateOrder::StopFirst, FailureAction::Pause));
    let mut now = 1_000;
    converge(&mut v, &mut now, |v| running_of(v, 1) == 2);
    v.services
        .get_mut("web")
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .replicas = 5;
    converge_without_service_writes(&mut v, &mut now, |v| running_of(v, 1) == 5);
    v.services
        .get_mut("web")
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .replicas = 1;
    converge_without_service_writes(&mut v, &mut now, |v| running_of(v, 1) == 1);
    assert_eq!(v.services["web"].update_status, None);
}

#[test]
fn a_task_killed_after_a_completed_update_records_nothing() {
    let mut v = view(3, config(1, UpdateOrder::StopFirst, FailureAction::Pause));
    let mut now = 1_000;
    converge(&mut v, &mut now, |v| running_of(v, 1) == 3);
    new_spec(&mut v, "shoal/echo:2");
    converge(&mut v, &mut now, |v| {
        running_of(v, 2) == 3 && status(v) == UpdateState::Completed
    });
    let completed = v.services["web"].update_status.clone();
    now += 10_000;
    kill_one(&mut v, 2, now);
    converge_without_service_writes(&mut v, &mut now, |v| running_of(v, 2) == 3);
    for _ in 0..20 {
        assert!(pass(&mut v, now).services.is_empty());
        now += 1_000;
    }
    assert_eq!(v.services["web"].update_status, completed);
}
