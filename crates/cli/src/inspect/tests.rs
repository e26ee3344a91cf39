use super::*;

fn task() -> pb::Task {
    pb::Task {
        id: "qlazk5o5r0y8f82qtoanaxv9d".into(),
        meta: Some(pb::Meta {
            version: 7,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_500,
        }),
        service_id: "svc".into(),
        service_name: "web".into(),
        slot: 1,
        node_id: "node1".into(),
        spec: Some(pb::ServiceSpec {
            name: "web".into(),
            image: "shoal/echo".into(),
            ..Default::default()
        }),
        spec_version: 1,
        desired_state: pb::TaskState::Running as i32,
        status: Some(pb::TaskStatus {
            state: pb::TaskState::Running as i32,
            timestamp_ms: 1_700_000_000_400,
            message: "started".into(),
            pid: 4242,
            ..Default::default()
        }),
        ingress_address: "10.255.0.7/16".into(),
        ..Default::default()
    }
}

#[test]
fn task_shape() {
    let v = serde_json::to_value(task_json(&task())).unwrap();
    assert_eq!(v["ID"], "qlazk5o5r0y8f82qtoanaxv9d");
    assert_eq!(v["Version"]["Index"], 7);
    assert_eq!(v["Status"]["State"], "running");
    assert_eq!(v["DesiredState"], "running");
    assert_eq!(v["Status"]["ContainerStatus"]["PID"], 4242);
    assert_eq!(
        v["Status"]["ContainerStatus"]["ContainerID"],
        "qlazk5o5r0y8f82qtoanaxv9d"
    );
    assert_eq!(v["Spec"]["ContainerSpec"]["Image"], "shoal/echo");
    assert_eq!(
        v["NetworksAttachments"][0]["Network"]["Spec"]["Name"],
        "ingress"
    );
    assert_eq!(v["NetworksAttachments"][0]["Addresses"][0], "10.255.0.7/16");
    assert!(v["Status"].get("Err").is_none());
}

#[test]
fn format_paths() {
    let v = serde_json::to_value(task_json(&task())).unwrap();
    assert_eq!(
        render_template("{{.Status.ContainerStatus.PID}}", &v).unwrap(),
        "4242"
    );
    assert_eq!(
        render_template("{{ .Status.State }}", &v).unwrap(),
        "running"
    );
    assert_eq!(
        render_template("pid={{.Status.ContainerStatus.PID}} on {{.NodeID}}", &v).unwrap(),
        "pid=4242 on node1"
    );
    assert_eq!(
        render_template("{{json .Version}}", &v).unwrap(),
        "{\"Index\":7}"
    );
    assert_eq!(
        render_template("{{.Nope.Deeper}}", &v).unwrap(),
        "<no value>"
    );
    assert_eq!(render_template("{{.Version}}", &v).unwrap(), "map[Index:7]");
    assert!(render_template("{{.ID", &v).is_err());
    assert!(render_template("{{range .X}}", &v).is_err());
    assert_eq!(resolve_path(&v, "."), Some(&v));
}

fn service() -> pb::Service {
    let port = pb::PortConfig {
        name: String::new(),
        protocol: "tcp".into(),
        target_port: 80,
        published_port: 8080,
        publish_mode: "ingress".into(),
    };
    pb::Service {
        id: "vbrmfwap9empswux9licqj8jz".into(),
        meta: Some(pb::Meta {
            version: 11,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_000,
        }),
        spec: Some(pb::ServiceSpec {
            name: "web".into(),
            image: "shoal/echo".into(),
            replicas: 3,
            ports: vec![port.clone()],
            restart: Some(pb::RestartPolicy {
                condition: pb::RestartCondition::Any as i32,
                delay_ms: 5000,
                max_attempts: 0,
                window_ms: 0,
            }),
            ..Default::default()
        }),
        previous_spec: None,
        endpoint: Some(pb::ServiceEndpoint { ports: vec![port] }),
        spec_version: 1,
    }
}

#[test]
fn service_shape() {
    let typed = service_json(&service());
    let v = serde_json::to_value(&typed).unwrap();
    assert_eq!(v["ID"], "vbrmfwap9empswux9licqj8jz");
    assert_eq!(v["Version"]["Index"], 11);
    assert_eq!(v["CreatedAt"], "2023-11-14T22:13:20Z");
    assert_eq!(v["Spec"]["Name"], "web");
    assert_eq!(v["Spec"]["Mode"]["Replicated"]["Replicas"], 3);
    assert_eq!(
        v["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "shoal/echo"
    );
    assert_eq!(
        v["Spec"]["TaskTemplate"]["RestartPolicy"]["Delay"],
        5_000_000_000u64
    );
    assert_eq!(
        v["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"],
        "any"
    );
    assert_eq!(v["Spec"]["EndpointSpec"]["Ports"][0]["PublishedPort"], 8080);
    assert_eq!(v["Endpoint"]["Ports"][0]["TargetPort"], 80);
    assert!(v.get("PreviousSpec").is_none());
    // Key order follows Docker's struct order.
    let text = to_docker_json(&[Object::Service(typed)]);
    let id = text.find("\"ID\"").unwrap();
    let spec = text.find("\"Spec\"").unwrap();
    assert!(id < spec);
    assert!(
        text.contains("\n        \"ID\": \"vbrmfwap9empswux9licqj8jz\""),
        "{text}"
    );
}

#[test]
fn service_pretty_lists_ports() {
    let p = service_pretty(&service());
    assert!(p.contains("ID:\t\tvbrmfwap9empswux9licqj8jz\n"));
    assert!(p.contains("Service Mode:\tReplicated\n Replicas:\t3\n"));
    assert!(p.contains(
        "Ports:\n PublishedPort = 8080\n  Protocol = tcp\n  TargetPort = 80\n  PublishMode = ingress\n"
    ));
}
