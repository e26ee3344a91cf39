use std::sync::Arc;

use shoal_api::pb::{
    Cluster, Node, NodeAvailability, NodeSpec, NodeState, NodeStatus, RestartCondition,
    RestartPolicy, Service, ServiceMode, ServiceSpec, Task, TaskState,
};

use super::*;
use crate::state::ClusterView;
use crate::{allocator, reaper, scheduler};

pub(crate) const NOW: i64 = 1_000_000;

pub(crate) fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn service(id: &str, mode: ServiceMode, replicas: u64) -> Service {
    Service {
        id: id.into(),
        spec: Some(ServiceSpec {
            name: id.into(),
            image: "shoal/echo".into(),
            mode: mode as i32,
            replicas,
            restart: Some(RestartPolicy {
                delay_ms: 5000,
                ..Default::default()
            }),
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

pub(crate) fn view(nodes: &[&str], services: Vec<Service>) -> ClusterView {
    ClusterView {
        cluster: Arc::new(Cluster {
            ingress_subnet: "10.255.0.0/16".into(),
            task_history_limit: 5,
            ..Default::default()
        }),
        services: services
            .into_iter()
            .map(|s| (s.id.clone(), Arc::new(s)))
            .collect(),
        nodes: nodes
            .iter()
            .map(|n| (n.to_string(), Arc::new(node(n))))
            .collect(),
        ..Default::default()
    }
}

/// One full pass as the reconcile loop runs it; "commits" by giving every
/// dirty task a version.
pub(crate) fn pass(v: &mut ClusterView, now: i64) -> Changes {
    let mut c = Changes::default();
    reconcile(v, &mut c, now);
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

pub(crate) fn set_state(v: &mut ClusterView, id: &str, state: TaskState) {
    let t = v.tasks.get_mut(id).map(Arc::make_mut).unwrap();
    let s = t.status.get_or_insert_with(Default::default);
    s.state = state as i32;
    s.timestamp_ms = NOW;
}

fn live_in_slot(v: &ClusterView, slot: u64) -> Vec<&Arc<Task>> {
    v.tasks
        .values()
        .filter(|t| t.slot == slot && is_live(t))
        .collect()
}

#[test]
fn replicated_creates_one_task_per_slot_then_settles() {
    let mut v = view(&["n1"], vec![service("web", ServiceMode::Replicated, 3)]);
    pass(&mut v, NOW);
    assert_eq!(v.tasks.len(), 3);
    let mut slots: Vec<u64> = v.tasks.values().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, vec![1, 2, 3]);
    let mut addrs: Vec<&str> = v
        .tasks
        .values()
        .map(|t| t.ingress_address.as_str())
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3, "distinct addresses");
    assert!(v
        .tasks
        .values()
        .all(|t| task_state(t) == TaskState::Assigned && t.node_id == "n1"));
    assert!(
        pass(&mut v, NOW).is_empty(),
        "a converged view changes nothing"
    );
}

#[test]
fn scale_down_removes_highest_slots_and_reaps_them() {
    let mut v = view(&["n1"], vec![service("web", ServiceMode::Replicated, 3)]);
    pass(&mut v, NOW);
    v.services
        .get_mut("web")
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .replicas = 1;
    pass(&mut v, NOW);
    let removing: Vec<u64> = v
        .tasks
        .values()
        .filter(|t| t.desired_state == TaskState::Remove as i32)
        .map(|t| t.slot)
        .collect();
    assert_eq!(removing.len(), 2);
    assert!(removing.iter().all(|s| *s > 1));
    let ids: Vec<String> = v
        .tasks
        .values()
        .filter(|t| t.slot > 1)
        .map(|t| t.id.clone())
        .collect();
    for id in &ids {
        set_state(&mut v, id, TaskState::Shutdown);
    }
    let c = pass(&mut v, NOW);
    assert_eq!(c.deleted.len(), 2);
    assert_eq!(v.tasks.len(), 1);
}

#[test]
fn failed_task_is_replaced_after_the_restart_delay() {
    let mut v = view(&["n1"], vec![service("web", ServiceMode::Replicated, 1)]);
    pass(&mut v, NOW);
    let first = v.tasks.keys().next().unwrap().clone();
    set_state(&mut v, &first, TaskState::Failed);
    pass(&mut v, NOW);
    assert_eq!(v.tasks[&first].desired_state, TaskState::Shutdown as i32);
    let live = live_in_slot(&v, 1);
    assert_eq!(live.len(), 1);
    assert_ne!(live[0].id, first);
    assert_eq!(live[0].not_before_ms, NOW + 5000);
}

#[test]
fn restart_conditions_are_honoured() {
    for (cond, end, restarts) in [
        (RestartCondition::None, TaskState::Failed, false),
        (RestartCondition::OnFailure, TaskState::Complete, false),
        (RestartCondition::OnFailure, TaskState::Failed, true),
        (RestartCondition::Any, TaskState::Complete, true),
    ] {
        let mut s = service("web", ServiceMode::Replicated, 1);
        s.spec.as_mut().unwrap().restart.as_mut().unwrap().condition = cond as i32;
        let mut v = view(&["n1"], vec![s]);
        pass(&mut v, NOW);
        let first = v.tasks.keys().next().unwrap().clone();
        set_state(&mut v, &first, end);
        pass(&mut v, NOW);
        assert_eq!(v.tasks.len() == 2, restarts, "{cond:?} after {end:?}");
    }
}

#[test]
fn max_attempts_stops_restarting() {
    let mut s = service("web", ServiceMode::Replicated, 1);
    s.spec
        .as_mut()
        .unwrap()
        .restart
        .as_mut()
        .unwrap()
        .max_attempts = 2;
    let mut v = view(&["n1"], vec![s]);
    pass(&mut v, NOW);
    for _ in 0..5 {
        let live: Vec<String> = live_in_slot(&v, 1).iter().map(|t| t.id.clone()).collect();
        for id in live {
            set_state(&mut v, &id, TaskState::Failed);
        }
        pass(&mut v, NOW);
    }
    assert_eq!(v.tasks.len(), 3, "the first run plus two restarts");
}

#[test]
fn history_is_capped_per_slot() {
    let mut v = view(&["n1"], vec![service("web", ServiceMode::Replicated, 1)]);
    for i in 0..8 {
        pass(&mut v, NOW + i);
        let live: Vec<String> = live_in_slot(&v, 1).iter().map(|t| t.id.clone()).collect();
        for id in live {
            set_state(&mut v, &id, TaskState::Failed);
        }
    }
    pass(&mut v, NOW + 100);
    assert!(v.tasks.len() <= 5, "{} tasks kept", v.tasks.len());
    assert_eq!(live_in_slot(&v, 1).len(), 1);
}

#[test]
fn global_runs_one_task_per_active_node() {
    let mut v = view(&["n1", "n2"], vec![service("mon", ServiceMode::Global, 0)]);
    pass(&mut v, NOW);
    let mut nodes: Vec<&str> = v.tasks.values().map(|t| t.node_id.as_str()).collect();
    nodes.sort();
    assert_eq!(nodes, vec!["n1", "n2"]);
    v.nodes
        .get_mut("n2")
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .availability = NodeAvailability::Drain as i32;
    pass(&mut v, NOW);
    let on_n2: Vec<&Arc<Task>> = v.tasks.values().filter(|t| t.node_id == "n2").collect();
    assert!(on_n2
        .iter()
        .all(|t| t.desired_state == TaskState::Shutdown as i32));
}

#[test]
fn removed_service_tasks_are_removed() {
    let mut v = view(&["n1"], vec![service("web", ServiceMode::Replicated, 2)]);
    pass(&mut v, NOW);
    v.services.clear();
    pass(&mut v, NOW);
    assert!(v
        .tasks
        .values()
        .all(|t| t.desired_state == TaskState::Remove as i32));
}

#[test]
fn no_ready_node_leaves_tasks_pending_with_a_reason() {
    let mut v = view(&["n1"], vec![service("web", ServiceMode::Replicated, 1)]);
    v.nodes
        .get_mut("n1")
        .map(Arc::make_mut)
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .state = NodeState::Down as i32;
    pass(&mut v, NOW);
    let t = v.tasks.values().next().unwrap();
    assert_eq!(task_state(t), TaskState::Pending);
    assert!(t
        .status
        .as_ref()
        .unwrap()
        .err
        .starts_with("no suitable node"));
}

#[test]
fn tasks_on_a_down_or_drained_node_move_elsewhere() {
    let mut v = view(
        &["n1", "n2"],
        vec![service("web", ServiceMode::Replicated, 4)],
    );
    pass(&mut v, NOW);
    let on_n2 = |v: &ClusterView| {
        v.tasks
            .values()
            .filter(|t| t.node_id == "n2" && is_live(t))
            .count()
    };
    assert_eq!(on_n2(&v), 2, "spread over both nodes");
    v.nodes
        .get_mut("n2")
        .map(Arc::make_mut)
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .state = NodeState::Down as i32;
    pass(&mut v, NOW);
    assert_eq!(on_n2(&v), 0);
    let live: Vec<&Arc<Task>> = v.tasks.values().filter(|t| is_live(t)).collect();
    assert_eq!(live.len(), 4, "never more live tasks than replicas");
    assert!(live.iter().all(|t| t.node_id == "n1"));
    // The node comes back: nothing moves back by itself (no rebalancing), as in Swarm.
    v.nodes
        .get_mut("n2")
        .map(Arc::make_mut)
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .state = NodeState::Ready as i32;
    assert!(pass(&mut v, NOW).is_empty());

    let mut v = view(
        &["n1", "n2"],
        vec![service("web", ServiceMode::Replicated, 2)],
    );
    pass(&mut v, NOW);
    v.nodes
        .get_mut("n1")
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .availability = NodeAvailability::Drain as i32;
    pass(&mut v, NOW);
    assert!(v
        .tasks
        .values()
        .filter(|t| is_live(t))
        .all(|t| t.node_id == "n2"));
}

#[test]
fn paused_nodes_keep_their_tasks_but_get_no_new_ones() {
    let mut v = view(
        &["n1", "n2"],
        vec![service("web", ServiceMode::Replicated, 2)],
    );
    pass(&mut v, NOW);
    v.nodes
        .get_mut("n1")
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .availability = NodeAvailability::Pause as i32;
    assert!(pass(&mut v, NOW).is_empty(), "pause moves nothing");
    v.services
        .get_mut("web")
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .replicas = 4;
    pass(&mut v, NOW);
    let on_n1 = v
        .tasks
        .values()
        .filter(|t| t.node_id == "n1" && is_live(t))
        .count();
    assert_eq!(on_n1, 1, "new tasks avoid the paused node");
}
