use super::*;
use crate::names::update_state_name;

/// Renders a `--format` template over one inspect object (its JSON shape).
fn render_template(tmpl: &str, v: &serde_json::Value) -> anyhow::Result<String> {
    crate::template::Template::parse(tmpl)?.render(&crate::template::data::from_json(v))
}

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
        render_template("{{.Nope.Deeper}}", &v)
            .unwrap_err()
            .to_string(),
        r#"template: :1:2: executing "" at <.Nope.Deeper>: map has no entry for key "Nope""#
    );
    assert_eq!(
        render_template("{{.CreatedAt}}", &v).unwrap(),
        "2023-11-14 22:13:20 +0000 UTC"
    );
    assert_eq!(render_template("{{.Version}}", &v).unwrap(), "map[Index:7]");
    assert!(render_template("{{.ID", &v).is_err());
    assert!(render_template("{{range .X}}", &v).is_err());
}

fn service() -> pb::Service {
    let port = pb::PortConfig {
        name: String::new(),
        protocol: "tcp".into(),
        target_port: 80,
        published_port: 8080,
        publish_mode: "ingress".into(),
        proxy_protocol: String::new(),
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
        update_status: None,
        job_status: None,
    }
}

/// [`service`] after `update --update-delay 10s --update-max-failure-ratio 0.25
/// --rollback-order start-first --force`, mid-update.
fn updating_service() -> pb::Service {
    let mut s = service();
    let spec = s.spec.as_mut().unwrap();
    spec.update_config = Some(pb::UpdateConfig {
        parallelism: 1,
        delay_ms: 10_000,
        failure_action: pb::FailureAction::Pause as i32,
        monitor_ms: 5_000,
        max_failure_ratio: 0.25,
        order: pb::UpdateOrder::StopFirst as i32,
    });
    spec.rollback_config = Some(pb::UpdateConfig {
        parallelism: 0,
        delay_ms: 0,
        failure_action: pb::FailureAction::Continue as i32,
        monitor_ms: 0,
        max_failure_ratio: 0.0,
        order: pb::UpdateOrder::StartFirst as i32,
    });
    spec.force_update = 2;
    s.update_status = Some(pb::UpdateStatus {
        state: pb::UpdateState::Updating as i32,
        started_at_ms: 1_700_000_000_000,
        completed_at_ms: 0,
        message: "update in progress".into(),
    });
    s
}

#[test]
fn update_config_and_status_shape() {
    let v = serde_json::to_value(service_json(&updating_service())).unwrap();
    let u = &v["Spec"]["UpdateConfig"];
    let r = &v["Spec"]["RollbackConfig"];
    assert_eq!(u["Parallelism"], 1);
    assert_eq!(u["Delay"], 10_000_000_000u64);
    assert_eq!(u["FailureAction"], "pause");
    assert_eq!(u["Monitor"], 5_000_000_000u64);
    assert_eq!(u["MaxFailureRatio"], 0.25);
    assert_eq!(r["MaxFailureRatio"].to_string(), "0");
    assert_eq!(u["Order"], "stop-first");
    assert_eq!(r["Parallelism"], 0);
    assert_eq!(r["FailureAction"], "continue");
    assert_eq!(r["Order"], "start-first");
    assert_eq!(v["Spec"]["TaskTemplate"]["ForceUpdate"], 2);
    let st = &v["UpdateStatus"];
    assert_eq!(st["State"], "updating");
    assert_eq!(st["StartedAt"], "2023-11-14T22:13:20Z");
    assert!(st.get("CompletedAt").is_none());
    assert_eq!(st["Message"], "update in progress");

    let mut svc = updating_service();
    svc.spec
        .as_mut()
        .unwrap()
        .update_config
        .as_mut()
        .unwrap()
        .max_failure_ratio = 0.1;
    let v = serde_json::to_value(service_json(&svc)).unwrap();
    assert_eq!(
        v["Spec"]["UpdateConfig"]["MaxFailureRatio"].to_string(),
        "0.1"
    );

    // Nothing set: no UpdateConfig, no UpdateStatus, ForceUpdate 0.
    let v = serde_json::to_value(service_json(&service())).unwrap();
    assert!(v["Spec"].get("UpdateConfig").is_none());
    assert!(v.get("UpdateStatus").is_none());
    assert_eq!(v["Spec"]["TaskTemplate"]["ForceUpdate"], 0);

    // Every state has Docker's name.
    let names: Vec<_> = (1..=6).map(update_state_name).collect();
    assert_eq!(
        names,
        [
            "updating",
            "paused",
            "completed",
            "rollback_started",
            "rollback_paused",
            "rollback_completed"
        ]
    );
}

#[test]
fn service_pretty_update_sections() {
    let p = service_pretty(&updating_service());
    assert!(
        p.contains(
            "UpdateConfig:\n Parallelism:\t1\n Delay:\t\t10s\n On failure:\tpause\n \
             Monitoring Period: 5s\n Max failure ratio: 0.25\n Update order:      stop-first\n\
             RollbackConfig:\n Parallelism:\t0\n On failure:\tcontinue\n \
             Max failure ratio: 0\n Rollback order:    start-first\nContainerSpec:\n"
        ),
        "{p}"
    );
    assert!(
        p.contains("UpdateStatus:\n State:\t\tupdating\n Started:\t"),
        "{p}"
    );
    assert!(p.contains(" ago\n Message:\tupdate in progress\n"), "{p}");
    assert!(!p.contains("Completed:"), "{p}");
    let p = service_pretty(&service());
    assert!(
        !p.contains("UpdateConfig:") && !p.contains("UpdateStatus:"),
        "{p}"
    );
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

fn placed_service() -> pb::Service {
    let mut s = service();
    let spec = s.spec.as_mut().unwrap();
    spec.placement = Some(pb::Placement {
        constraints: vec!["node.role==manager".into(), "node.labels.zone!=a".into()],
        preferences: vec!["spread=node.labels.zone".into()],
        max_replicas_per_node: 2,
    });
    spec.resources = Some(pb::Resources {
        reserve_nano_cpus: 500_000_000,
        reserve_memory_bytes: 64 << 20,
        limit_nano_cpus: 0,
        limit_memory_bytes: 3 << 29,
    });
    spec.health = Some(pb::HealthCheck {
        test: vec!["CMD-SHELL".into(), "true".into()],
        interval_ms: 30_000,
        timeout_ms: 30_000,
        retries: 3,
        start_period_ms: 0,
    });
    s
}

#[test]
fn placement_resources_and_healthcheck_shape() {
    let v = serde_json::to_value(service_json(&placed_service())).unwrap();
    let tt = &v["Spec"]["TaskTemplate"];
    assert_eq!(
        tt["Placement"]["Constraints"],
        serde_json::json!(["node.role==manager", "node.labels.zone!=a"])
    );
    assert_eq!(
        tt["Placement"]["Preferences"],
        serde_json::json!([{"Spread": {"SpreadDescriptor": "node.labels.zone"}}])
    );
    assert_eq!(tt["Placement"]["MaxReplicas"], 2);
    assert_eq!(tt["Resources"]["Reservations"]["NanoCPUs"], 500_000_000);
    assert_eq!(tt["Resources"]["Reservations"]["MemoryBytes"], 64 << 20);
    assert_eq!(tt["Resources"]["Limits"]["MemoryBytes"], 3 << 29);
    assert!(tt["Resources"]["Limits"].get("NanoCPUs").is_none());
    let hc = &tt["ContainerSpec"]["Healthcheck"];
    assert_eq!(hc["Test"], serde_json::json!(["CMD-SHELL", "true"]));
    assert_eq!(hc["Interval"], 30_000_000_000u64);
    assert_eq!(hc["Timeout"], 30_000_000_000u64);
    assert_eq!(hc["Retries"], 3);
    assert!(hc.get("StartPeriod").is_none());
    assert_eq!(
        render_template("{{.Spec.TaskTemplate.Placement.Constraints}}", &v).unwrap(),
        "[node.role==manager node.labels.zone!=a]"
    );

    // Without any: Docker's empty objects, no Healthcheck.
    let v = serde_json::to_value(service_json(&service())).unwrap();
    let tt = &v["Spec"]["TaskTemplate"];
    assert_eq!(tt["Placement"], serde_json::json!({}));
    assert_eq!(
        tt["Resources"],
        serde_json::json!({"Limits": {}, "Reservations": {}})
    );
    assert!(tt["ContainerSpec"].get("Healthcheck").is_none());
}

#[test]
fn service_pretty_placement_and_resources() {
    let out = service_pretty(&placed_service());
    assert!(out.contains(
        "Placement:\n Constraints:\t[node.role==manager node.labels.zone!=a]\n Preferences:   [spread=node.labels.zone]\n Max Replicas Per Node:   2\n"
    ), "{out}");
    assert!(out.contains(
        "Resources:\n Reservations:\n  CPU:\t\t0.5\n  Memory:\t64MiB\n Limits:\n  Memory:\t1.5GiB\n"
    ), "{out}");
    assert!(!service_pretty(&service()).contains("Placement:"));
    assert_eq!(bytes_size(1000), "1000B");
    assert_eq!(bytes_size(1 << 30), "1GiB");
    assert_eq!(bytes_size(1_234_567), "1.177MiB");
}

#[test]
fn task_health_in_container_status() {
    let mut t = task();
    let v = serde_json::to_value(task_json(&t)).unwrap();
    assert!(v["Status"]["ContainerStatus"].get("Health").is_none());
    t.status.as_mut().unwrap().health = "starting".into();
    let v = serde_json::to_value(task_json(&t)).unwrap();
    assert_eq!(v["Status"]["ContainerStatus"]["Health"], "starting");
}

proptest::proptest! {
    /// `-f/--format` templates: any text is rendered or refused, never a panic.
    #[test]
    fn any_template_renders_or_is_refused(tmpl in "(\\{\\{|\\}\\}|json |\\.[A-Za-z]{0,6}|[ a-z.{}]){0,12}|.{0,40}") {
        let v = serde_json::json!({"Spec": {"Name": "web", "Labels": {"a": "b"}}, "ID": "x", "N": [1, 2]});
        let _ = render_template(&tmpl, &v);
    }
}
