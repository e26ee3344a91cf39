use shoal_api::pb::{
    Node, NodeDescription, PortBinding, PortConfig, Service, ServiceEndpoint, ServiceSpec, Task,
    TaskState, TaskStatus,
};

use super::*;

fn port(published: u32, target: u32, mode: &str) -> PortConfig {
    PortConfig {
        protocol: "tcp".into(),
        target_port: target,
        published_port: published,
        publish_mode: mode.into(),
        ..Default::default()
    }
}

fn spec(ports: Vec<PortConfig>) -> ServiceSpec {
    ServiceSpec {
        name: "new".into(),
        ports,
        ..Default::default()
    }
}

/// A cluster of two nodes where service `web` publishes 8080 and a task of
/// `db` on node-2 holds host port 9000 and loopback port 40123.
fn cluster() -> ClusterView {
    let mut view = ClusterView::default();
    for (id, host) in [("n1", "node-1"), ("n2", "node-2")] {
        view.nodes.insert(
            id.into(),
            Node {
                id: id.into(),
                description: Some(NodeDescription {
                    hostname: host.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into(),
        );
    }
    view.services.insert(
        "web".into(),
        Service {
            id: "web".into(),
            spec: Some(ServiceSpec {
                name: "web".into(),
                ..Default::default()
            }),
            endpoint: Some(ServiceEndpoint {
                ports: vec![port(8080, 80, "ingress")],
            }),
            ..Default::default()
        }
        .into(),
    );
    view.insert_task(Task {
        id: "t1".into(),
        service_id: "db".into(),
        service_name: "db".into(),
        node_id: "n2".into(),
        endpoint: Some(ServiceEndpoint {
            ports: vec![port(9000, 5432, "host")],
        }),
        status: Some(TaskStatus {
            state: TaskState::Running as i32,
            ports: vec![PortBinding {
                target_port: 5432,
                address: "127.0.0.1:40123".into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    view
}

const NOTHING_LOCAL: fn(u32, &str) -> bool = |_, _| false;

#[test]
fn dynamic_ports_skip_taken() {
    let mut ports = vec![port(0, 80, "ingress"), port(0, 81, "ingress")];
    allocate_ports(&mut ports, |p| p != 30000).unwrap();
    assert_eq!(ports[0].published_port, 30001);
    assert_eq!(ports[1].published_port, 30002);
}

#[test]
fn a_port_of_another_service_is_refused() {
    let err = allocate_endpoint(
        &cluster(),
        "new",
        &spec(vec![port(8080, 80, "ingress")]),
        None,
        NOTHING_LOCAL,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PortError::UsedByService {
            port: 8080,
            protocol: "tcp".into(),
            service: "web".into()
        }
    );
}

#[test]
fn host_ports_held_on_any_node_are_refused_before_the_local_probe() {
    let view = cluster();
    for held in [9000, 40123] {
        // The local probe would say "free": the store decides first.
        let err = allocate_endpoint(
            &view,
            "new",
            &spec(vec![port(held, 80, "ingress")]),
            None,
            NOTHING_LOCAL,
        )
        .unwrap_err();
        assert_eq!(
            err,
            PortError::UsedOnNode {
                port: held,
                node: "node-2".into(),
                task: "t1".into(),
                service: "db".into(),
            }
        );
    }
    // A task that ended frees its ports.
    let mut view = view;
    let mut task = Task::clone(&view.tasks["t1"]);
    task.status.as_mut().unwrap().state = TaskState::Shutdown as i32;
    view.insert_task(task);
    assert!(allocate_endpoint(
        &view,
        "new",
        &spec(vec![port(9000, 80, "ingress")]),
        None,
        NOTHING_LOCAL
    )
    .is_ok());
}

#[test]
fn the_local_probe_still_refuses_ports_bound_on_this_host() {
    let err = allocate_endpoint(
        &cluster(),
        "new",
        &spec(vec![port(8099, 80, "ingress")]),
        None,
        |p, _| p == 8099,
    )
    .unwrap_err();
    assert_eq!(err, PortError::UsedOnThisHost { port: 8099 });
}

#[test]
fn dynamic_allocation_skips_ports_held_anywhere() {
    let mut view = cluster();
    let mut task = Task::clone(&view.tasks["t1"]);
    task.status.as_mut().unwrap().ports[0].address = "127.0.0.1:30000".into();
    view.insert_task(task);
    let endpoint = allocate_endpoint(
        &view,
        "new",
        &spec(vec![port(0, 80, "ingress")]),
        None,
        |p, _| p == 30001,
    )
    .unwrap();
    assert_eq!(endpoint.ports[0].published_port, 30002);
}

#[test]
fn a_service_keeps_its_own_ports() {
    let view = cluster();
    let current = view.services["web"].endpoint.clone();
    let endpoint = allocate_endpoint(
        &view,
        "web",
        &spec(vec![port(8080, 80, "ingress")]),
        current.as_ref(),
        |_, _| true,
    )
    .unwrap();
    assert_eq!(endpoint.ports[0].published_port, 8080);
}

/// `cluster()` plus service `cache` publishing 7000 in host mode.
fn cluster_with_host_port() -> ClusterView {
    let mut view = cluster();
    view.services.insert(
        "cache".into(),
        Service {
            id: "cache".into(),
            spec: Some(ServiceSpec {
                name: "cache".into(),
                ..Default::default()
            }),
            endpoint: Some(ServiceEndpoint {
                ports: vec![port(7000, 6379, "host")],
            }),
            ..Default::default()
        }
        .into(),
    );
    view
}

#[test]
fn a_host_mode_port_may_not_be_an_ingress_port_and_the_reverse() {
    let view = cluster_with_host_port();
    let err = allocate_endpoint(
        &view,
        "new",
        &spec(vec![port(8080, 80, "host")]),
        None,
        NOTHING_LOCAL,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PortError::HostPortIsIngress {
            port: 8080,
            protocol: "tcp".into(),
            service: "web".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "ports: published port 8080/tcp is an ingress port of service web, served on every node, \
         so it cannot be a host-mode port; pick another published port"
    );
    let err = allocate_endpoint(
        &view,
        "new",
        &spec(vec![port(7000, 80, "ingress")]),
        None,
        NOTHING_LOCAL,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PortError::IngressPortIsHost {
            port: 7000,
            protocol: "tcp".into(),
            service: "cache".into()
        }
    );
}

#[test]
fn a_host_mode_port_held_by_a_task_on_some_node_is_left_to_the_scheduler() {
    let view = cluster_with_host_port();
    // 9000: held by a host-mode task on node-2; this host says "in use".
    let endpoint = allocate_endpoint(
        &view,
        "new",
        &spec(vec![port(9000, 81, "host")]),
        None,
        |_, _| true,
    )
    .unwrap();
    assert_eq!(endpoint.ports[0].published_port, 9000);
    // Another service's host-mode port stays its own.
    let err = allocate_endpoint(
        &view,
        "new",
        &spec(vec![port(7000, 80, "host")]),
        None,
        NOTHING_LOCAL,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PortError::UsedByService {
            port: 7000,
            protocol: "tcp".into(),
            service: "cache".into()
        }
    );
}

#[test]
fn a_service_may_move_its_own_port_between_modes() {
    let view = cluster();
    let current = view.services["web"].endpoint.clone();
    let endpoint = allocate_endpoint(
        &view,
        "web",
        &spec(vec![port(8080, 80, "host")]),
        current.as_ref(),
        |_, _| true,
    )
    .unwrap();
    assert_eq!(endpoint.ports[0].publish_mode, "host");
}

fn udp(published: u32, target: u32) -> PortConfig {
    PortConfig {
        protocol: "udp".into(),
        ..port(published, target, "ingress")
    }
}

#[test]
fn a_udp_and_a_tcp_port_of_one_number_do_not_clash() {
    // `web` publishes 8080/tcp: 8080/udp is free, for one port or beside tcp.
    for ports in [
        vec![udp(8080, 80)],
        vec![port(5353, 53, "ingress"), udp(5353, 53)],
    ] {
        let endpoint =
            allocate_endpoint(&cluster(), "new", &spec(ports.clone()), None, NOTHING_LOCAL)
                .unwrap();
        assert_eq!(endpoint.ports, ports);
    }
}

#[test]
fn two_udp_ports_of_one_number_clash() {
    let mut view = cluster();
    view.services.insert(
        "dns".into(),
        Service {
            id: "dns".into(),
            spec: Some(ServiceSpec {
                name: "dns".into(),
                ..Default::default()
            }),
            endpoint: Some(ServiceEndpoint {
                ports: vec![udp(5353, 53)],
            }),
            ..Default::default()
        }
        .into(),
    );
    let err = allocate_endpoint(
        &view,
        "new",
        &spec(vec![udp(5353, 53)]),
        None,
        NOTHING_LOCAL,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PortError::UsedByService {
            port: 5353,
            protocol: "udp".into(),
            service: "dns".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "ports: published port 5353/udp is already used by service dns; pick another published port"
    );
}

#[test]
fn the_local_probe_is_asked_about_the_port_s_own_protocol() {
    // Something on this host holds 5353/tcp only.
    let tcp_only = |p: u32, protocol: &str| p == 5353 && protocol == "tcp";
    assert!(allocate_endpoint(
        &cluster(),
        "new",
        &spec(vec![udp(5353, 53)]),
        None,
        tcp_only
    )
    .is_ok());
    assert_eq!(
        allocate_endpoint(
            &cluster(),
            "new",
            &spec(vec![port(5353, 53, "ingress")]),
            None,
            tcp_only
        )
        .unwrap_err(),
        PortError::UsedOnThisHost { port: 5353 }
    );
}
