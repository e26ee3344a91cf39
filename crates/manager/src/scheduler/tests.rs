use std::sync::Arc;

use shoal_api::pb::{
    Cluster, Node, NodeDescription, NodeRole, NodeSpec, NodeState, NodeStatus, Placement,
    PortConfig, Resources, Service, ServiceEndpoint, ServiceMode, ServiceSpec, Task, TaskState,
    TaskStatus,
};

use super::*;
use crate::orchestrator::{self, is_live, task_state, Changes};
use crate::state::ClusterView;
use crate::{allocator, reaper};

const NOW: i64 = 1_000_000;

fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        id: id.into(),
        spec: Some(NodeSpec {
            role: if id == "n1" {
                NodeRole::Manager as i32
            } else {
                NodeRole::Worker as i32
            },
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: format!("host-{id}"),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(mode: ServiceMode, replicas: u64, placement: Placement) -> Service {
    Service {
        id: "web".into(),
        spec: Some(ServiceSpec {
            name: "web".into(),
            image: "shoal/echo".into(),
            mode: mode as i32,
            replicas,
            placement: Some(placement),
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

fn constraints(cs: &[&str]) -> Placement {
    Placement {
        constraints: cs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn view(nodes: Vec<Node>, service: Service) -> ClusterView {
    ClusterView {
        cluster: Arc::new(Cluster {
            ingress_subnet: "10.255.0.0/16".into(),
            task_history_limit: 5,
            ..Default::default()
        }),
        services: [(service.id.clone(), Arc::new(service))].into(),
        nodes: nodes
            .into_iter()
            .map(|n| (n.id.clone(), Arc::new(n)))
            .collect(),
        ..Default::default()
    }
}

/// One reconcile pass as the loop runs it; "commits" dirty tasks.
fn pass(v: &mut ClusterView) -> Changes {
    let mut c = Changes::default();
    orchestrator::reconcile(v, &mut c, NOW);
    allocator::allocate_tasks(v, &mut c, NOW);
    schedule(v, &mut c, NOW);
    reaper::reap(v, &mut c);
    for id in &c.dirty {
        if let Some(t) = v.tasks.get_mut(id).map(Arc::make_mut) {
            t.meta.get_or_insert_with(Default::default).version += 1;
        }
    }
    c
}

fn live(v: &ClusterView) -> Vec<&Arc<Task>> {
    v.tasks.values().filter(|t| is_live(t)).collect()
}

fn on(v: &ClusterView, node: &str) -> usize {
    live(v).iter().filter(|t| t.node_id == node).count()
}

fn pending_errs(v: &ClusterView) -> Vec<String> {
    live(v)
        .iter()
        .filter(|t| task_state(t) == TaskState::Pending)
        .map(|t| t.status.as_ref().unwrap().err.clone())
        .collect()
}

fn label_node(v: &mut ClusterView, id: &str, key: &str, value: Option<&str>) {
    let labels = &mut v
        .nodes
        .get_mut(id)
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .labels;
    match value {
        Some(val) => labels.insert(key.into(), val.into()),
        None => labels.remove(key),
    };
}

#[test]
fn constraints_filter_nodes() {
    let nodes = || {
        vec![
            node("n1", &[]),
            node("n2", &[("zone", "a")]),
            node("n3", &[]),
        ]
    };
    let mut v = view(
        nodes(),
        service(
            ServiceMode::Replicated,
            3,
            constraints(&["node.role==manager"]),
        ),
    );
    pass(&mut v);
    assert_eq!(on(&v, "n1"), 3);

    let mut v = view(
        nodes(),
        service(
            ServiceMode::Replicated,
            2,
            constraints(&["node.labels.zone==a", "node.role!=manager"]),
        ),
    );
    pass(&mut v);
    assert_eq!(on(&v, "n2"), 2);
}

#[test]
fn unsatisfiable_constraints_leave_tasks_pending_with_swarms_text() {
    let mut v = view(
        vec![node("n1", &[]), node("n2", &[])],
        service(
            ServiceMode::Replicated,
            1,
            constraints(&["node.labels.zone==nowhere"]),
        ),
    );
    pass(&mut v);
    assert_eq!(
        pending_errs(&v),
        vec!["no suitable node (scheduling constraints not satisfied on 2 nodes)"]
    );
    // Another pass over a copy of the view (as the reconcile loop runs one)
    // neither rewrites nor copies the still-pending task.
    let before = v.clone();
    assert!(pass(&mut v).is_empty(), "the same reason is not rewritten");
    assert!(v
        .tasks
        .iter()
        .all(|(id, t)| Arc::ptr_eq(t, &before.tasks[id])));
    // A label appears: the pending task is placed.
    label_node(&mut v, "n2", "zone", Some("nowhere"));
    pass(&mut v);
    assert_eq!(on(&v, "n2"), 1);
    assert!(pending_errs(&v).is_empty());
}

#[test]
fn max_replicas_per_node_caps_each_node() {
    let mut v = view(
        vec![node("n1", &[]), node("n2", &[]), node("n3", &[])],
        service(
            ServiceMode::Replicated,
            4,
            Placement {
                max_replicas_per_node: 1,
                ..Default::default()
            },
        ),
    );
    pass(&mut v);
    for n in ["n1", "n2", "n3"] {
        assert_eq!(on(&v, n), 1, "{n}");
    }
    assert_eq!(
        pending_errs(&v),
        vec!["no suitable node (max replicas per node limit exceed)"]
    );
}

#[test]
fn reservations_must_fit_known_capacity() {
    let mut nodes = vec![node("n1", &[]), node("n2", &[]), node("n3", &[])];
    // n1: 1 CPU; n2: 256 MiB; n3: unknown capacity but drained out by a constraint.
    nodes[0].description.as_mut().unwrap().nano_cpus = 1_000_000_000;
    nodes[1].description.as_mut().unwrap().memory_bytes = 256 << 20;
    let mut svc = service(
        ServiceMode::Replicated,
        5,
        constraints(&["node.hostname!=host-n3"]),
    );
    svc.spec.as_mut().unwrap().resources = Some(Resources {
        reserve_nano_cpus: 500_000_000,
        reserve_memory_bytes: 128 << 20,
        ..Default::default()
    });
    let mut v = view(nodes, svc);
    pass(&mut v);
    assert_eq!(on(&v, "n1"), 2, "two halves of a CPU");
    assert_eq!(on(&v, "n2"), 2, "two times 128 MiB");
    assert_eq!(
        pending_errs(&v),
        vec!["no suitable node (scheduling constraints not satisfied on 1 node; insufficient resources on 2 nodes)"]
    );
}

#[test]
fn spread_preference_balances_label_values_not_nodes() {
    let mut v = view(
        vec![
            node("n1", &[("zone", "a")]),
            node("n2", &[("zone", "b")]),
            node("n3", &[("zone", "b")]),
        ],
        service(
            ServiceMode::Replicated,
            4,
            Placement {
                preferences: vec!["spread=node.labels.zone".into()],
                ..Default::default()
            },
        ),
    );
    pass(&mut v);
    assert_eq!((on(&v, "n1"), on(&v, "n2"), on(&v, "n3")), (2, 1, 1));

    // Nodes without the label are a group of their own.
    let mut v = view(
        vec![
            node("n1", &[("zone", "a")]),
            node("n2", &[("zone", "a")]),
            node("n3", &[]),
        ],
        service(
            ServiceMode::Replicated,
            4,
            Placement {
                preferences: vec!["spread=node.labels.zone".into()],
                ..Default::default()
            },
        ),
    );
    pass(&mut v);
    assert_eq!((on(&v, "n1"), on(&v, "n2"), on(&v, "n3")), (1, 1, 2));
}

#[test]
fn enforcer_moves_tasks_when_a_label_changes() {
    let mut v = view(
        vec![
            node("n1", &[]),
            node("n2", &[("zone", "a")]),
            node("n3", &[]),
        ],
        service(
            ServiceMode::Replicated,
            2,
            constraints(&["node.labels.zone==a"]),
        ),
    );
    pass(&mut v);
    assert_eq!(on(&v, "n2"), 2);
    label_node(&mut v, "n2", "zone", None);
    label_node(&mut v, "n3", "zone", Some("a"));
    pass(&mut v);
    assert_eq!(live(&v).len(), 2, "never more live tasks than replicas");
    assert_eq!(on(&v, "n3"), 2);
    assert!(v
        .tasks
        .values()
        .filter(|t| t.node_id == "n2")
        .all(|t| t.desired_state == TaskState::Shutdown as i32));
    assert!(pass(&mut v).is_empty(), "settled");

    // A role change moves tasks too.
    let mut v = view(
        vec![node("n1", &[]), node("n2", &[])],
        service(
            ServiceMode::Replicated,
            1,
            constraints(&["node.role==worker"]),
        ),
    );
    pass(&mut v);
    assert_eq!(on(&v, "n2"), 1);
    v.nodes
        .get_mut("n2")
        .map(Arc::make_mut)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .role = NodeRole::Manager as i32;
    pass(&mut v);
    assert_eq!(
        pending_errs(&v),
        vec!["no suitable node (scheduling constraints not satisfied on 2 nodes)"]
    );
}

#[test]
fn global_services_run_only_on_matching_nodes() {
    let mut v = view(
        vec![
            node("n1", &[]),
            node("n2", &[("zone", "a")]),
            node("n3", &[("zone", "a")]),
        ],
        service(
            ServiceMode::Global,
            0,
            constraints(&["node.labels.zone==a"]),
        ),
    );
    pass(&mut v);
    assert_eq!((on(&v, "n1"), on(&v, "n2"), on(&v, "n3")), (0, 1, 1));
    assert!(pending_errs(&v).is_empty());
    label_node(&mut v, "n3", "zone", Some("b"));
    label_node(&mut v, "n1", "zone", Some("a"));
    pass(&mut v);
    assert_eq!((on(&v, "n1"), on(&v, "n2"), on(&v, "n3")), (1, 1, 0));
}

#[test]
fn global_tasks_wait_for_resources_on_their_node() {
    let mut nodes = vec![node("n1", &[])];
    nodes[0].description.as_mut().unwrap().memory_bytes = 64 << 20;
    let mut svc = service(ServiceMode::Global, 0, Placement::default());
    svc.spec.as_mut().unwrap().resources = Some(Resources {
        reserve_memory_bytes: 128 << 20,
        ..Default::default()
    });
    let mut v = view(nodes, svc);
    pass(&mut v);
    assert_eq!(
        pending_errs(&v),
        vec!["no suitable node (insufficient resources on 1 node)"]
    );
}

/// `web` with `replicas` publishing `ports` (published, protocol, mode).
fn publishing(replicas: u64, ports: &[(u32, &str, &str)]) -> Service {
    let mut svc = service(ServiceMode::Replicated, replicas, Placement::default());
    svc.endpoint = Some(ServiceEndpoint {
        ports: ports
            .iter()
            .map(|&(published, protocol, mode)| PortConfig {
                protocol: protocol.into(),
                target_port: 80,
                published_port: published,
                publish_mode: mode.into(),
                ..Default::default()
            })
            .collect(),
    });
    svc
}

#[test]
fn a_host_mode_port_takes_one_task_per_node_and_the_rest_wait_with_swarms_text() {
    let mut v = view(
        vec![node("n1", &[]), node("n2", &[])],
        publishing(3, &[(8080, "tcp", "host")]),
    );
    pass(&mut v);
    assert_eq!((on(&v, "n1"), on(&v, "n2")), (1, 1));
    assert_eq!(
        pending_errs(&v),
        vec!["no suitable node (host-mode port already in use on 2 nodes)"]
    );
    // A third node takes the waiting task.
    v.nodes.insert("n3".into(), Arc::new(node("n3", &[])));
    pass(&mut v);
    assert_eq!(on(&v, "n3"), 1);
    assert!(pending_errs(&v).is_empty());
}

#[test]
fn ingress_ports_and_other_host_ports_do_not_limit_placement() {
    // Ingress: no host port is bound by the task.
    let mut v = view(
        vec![node("n1", &[])],
        publishing(2, &[(8080, "tcp", "ingress")]),
    );
    pass(&mut v);
    assert_eq!(on(&v, "n1"), 2);
    // The same number over another protocol is another port.
    let mut v = view(vec![node("n1", &[])], publishing(1, &[(53, "udp", "host")]));
    let mut tcp = publishing(1, &[(53, "tcp", "host")]);
    tcp.id = "dns-tcp".into();
    tcp.spec.as_mut().unwrap().name = "dns-tcp".into();
    v.services.insert(tcp.id.clone(), Arc::new(tcp));
    pass(&mut v);
    assert_eq!(on(&v, "n1"), 2);
    assert!(pending_errs(&v).is_empty());
}

#[test]
fn a_stopping_task_holds_its_host_port_until_it_has_stopped() {
    let mut v = view(
        vec![node("n1", &[])],
        publishing(1, &[(8080, "tcp", "host")]),
    );
    // A task of another service, told to stop, still running on n1.
    v.insert_task(Task {
        id: "old".into(),
        service_id: "old-web".into(),
        node_id: "n1".into(),
        desired_state: TaskState::Shutdown as i32,
        endpoint: publishing(1, &[(8080, "tcp", "host")]).endpoint,
        status: Some(TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    pass(&mut v);
    assert_eq!(
        pending_errs(&v),
        vec!["no suitable node (host-mode port already in use on 1 node)"]
    );
    let mut old = Task::clone(&v.tasks["old"]);
    old.status.as_mut().unwrap().state = TaskState::Shutdown as i32;
    v.insert_task(old);
    pass(&mut v);
    assert!(pending_errs(&v).is_empty());
    assert_eq!(
        live(&v)
            .iter()
            .filter(|t| t.service_id == "web" && t.node_id == "n1")
            .count(),
        1
    );
}
