use super::*;
use crate::format::Table;

const NOW: i64 = 1_700_000_000_000;

fn task(id: &str, slot: u64, created_ago_s: i64, state: TaskState, desired: TaskState) -> pb::Task {
    pb::Task {
        id: id.into(),
        meta: Some(pb::Meta {
            version: 1,
            created_at_ms: NOW - created_ago_s * 1000,
            updated_at_ms: NOW - created_ago_s * 1000,
        }),
        service_id: "svc".into(),
        service_name: "timecheck".into(),
        slot,
        node_id: "node1".into(),
        spec: Some(pb::ServiceSpec {
            image: "diamol/ch12-timecheck:1.0".into(),
            ..Default::default()
        }),
        desired_state: desired as i32,
        status: Some(pb::TaskStatus {
            state: state as i32,
            timestamp_ms: NOW - created_ago_s * 1000,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn hosts() -> HashMap<String, String> {
    [("node1".to_string(), "orbstack".to_string())].into()
}

#[test]
fn history_rows_follow_the_newest_task_of_their_slot() {
    let mut failed = task(
        "qlazk5o5r0y8f82qtoanaxv9d",
        1,
        6,
        TaskState::Failed,
        TaskState::Shutdown,
    );
    failed.status.as_mut().unwrap().err = "task: non-zero exit (137)".into();
    let tasks = vec![
        failed,
        task("x2", 2, 60, TaskState::Running, TaskState::Running),
        task(
            "u5d8gatt116jabcdefghijklm",
            1,
            0,
            TaskState::Running,
            TaskState::Running,
        ),
        task("x10", 10, 60, TaskState::Running, TaskState::Running),
    ];
    let rows = rows(
        &tasks,
        &hosts(),
        &TaskFilters::default(),
        RowOptions::default(),
        NOW,
    );
    let names: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(
        names,
        [
            "timecheck.1",
            " \\_ timecheck.1",
            "timecheck.2",
            "timecheck.10"
        ]
    );
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
        "PORTS",
    ]);
    for r in rows.into_iter().take(2) {
        t.row(r);
    }
    let out = t.render();
    let lines: Vec<&str> = out.lines().collect();
    // The seed's output, with `docker` replaced by `shoal`.
    assert_eq!(
        lines[0],
        "ID             NAME              IMAGE                       NODE       DESIRED STATE   CURRENT STATE                    ERROR                         PORTS"
    );
    assert_eq!(
        lines[1].trim_end(),
        "u5d8gatt116j   timecheck.1       diamol/ch12-timecheck:1.0   orbstack   Running         Running less than a second ago"
    );
    assert_eq!(
        lines[2].trim_end(),
        "qlazk5o5r0y8    \\_ timecheck.1   diamol/ch12-timecheck:1.0   orbstack   Shutdown        Failed 6 seconds ago             \"task: non-zero exit (137)\""
    );
}

#[test]
fn filters_and_no_trunc() {
    let mut failed = task(
        "aaaaaaaaaaaaaaaaaaaaaaaaa",
        1,
        120,
        TaskState::Failed,
        TaskState::Shutdown,
    );
    failed.status.as_mut().unwrap().err = "No such container: helloworld.1.abcdef".into();
    let tasks = vec![
        failed,
        task(
            "bbbbbbbbbbbbbbbbbbbbbbbbb",
            1,
            5,
            TaskState::Running,
            TaskState::Running,
        ),
    ];
    let running = TaskFilters {
        desired_states: vec!["running".into()],
        ..Default::default()
    };
    let rows_running = rows(&tasks, &hosts(), &running, RowOptions::default(), NOW);
    assert_eq!(rows_running.len(), 1);
    assert_eq!(rows_running[0][5], "Running 5 seconds ago");

    let all = rows(
        &tasks,
        &hosts(),
        &TaskFilters::default(),
        RowOptions::default(),
        NOW,
    );
    assert_eq!(all[1][6], "\"No such container: helloworld…\"");
    assert_eq!(all[1][5], "Failed 2 minutes ago");

    let full = rows(
        &tasks,
        &hosts(),
        &TaskFilters::default(),
        RowOptions {
            no_trunc: true,
            no_resolve: true,
        },
        NOW,
    );
    assert_eq!(full[1][0], "aaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(full[1][3], "node1");
    assert_eq!(full[1][6], "\"No such container: helloworld.1.abcdef\"");

    let by_node = TaskFilters {
        nodes: vec!["orbstack".into()],
        ..Default::default()
    };
    assert_eq!(
        rows(&tasks, &hosts(), &by_node, RowOptions::default(), NOW).len(),
        2
    );
    let other = TaskFilters {
        nodes: vec!["elsewhere".into()],
        ..Default::default()
    };
    assert!(rows(&tasks, &hosts(), &other, RowOptions::default(), NOW).is_empty());
}

#[test]
fn global_tasks_are_named_by_node() {
    let mut t = task("g1", 0, 5, TaskState::Running, TaskState::Running);
    t.node_id = "abcdefabcdefabcdefabcdefa".into();
    assert_eq!(slot_name(&t), "timecheck.abcdefabcdefabcdefabcdefa");
}

#[test]
fn current_state_shows_health_unless_healthy() {
    assert_eq!(health_suffix(""), "");
    assert_eq!(health_suffix("healthy"), "");
    assert_eq!(health_suffix("starting"), " (health: starting)");
    assert_eq!(health_suffix("unhealthy"), " (unhealthy)");
    let mut starting = task("a1", 1, 5, TaskState::Running, TaskState::Running);
    starting.status.as_mut().unwrap().health = "starting".into();
    let mut healthy = task("b2", 2, 5, TaskState::Running, TaskState::Running);
    healthy.status.as_mut().unwrap().health = "healthy".into();
    let rows = rows(
        &[starting, healthy],
        &hosts(),
        &TaskFilters::default(),
        RowOptions::default(),
        NOW,
    );
    assert_eq!(rows[0][5], "Running 5 seconds ago (health: starting)");
    assert_eq!(rows[1][5], "Running 5 seconds ago");
}

#[test]
fn dockers_default_task_format_gives_the_table() {
    let tasks = [
        task(
            "aaaaaaaaaaaaaaaaaaaaaaaaa",
            1,
            10,
            TaskState::Running,
            TaskState::Running,
        ),
        task(
            "bbbbbbbbbbbbbbbbbbbbbbbbb",
            1,
            60,
            TaskState::Failed,
            TaskState::Shutdown,
        ),
    ];
    let rows = rows(
        &tasks,
        &hosts(),
        &TaskFilters::default(),
        RowOptions::default(),
        NOW,
    );
    let docker_default = "table {{.ID}}\\t{{.Name}}\\t{{.Image}}\\t{{.Node}}\\t{{.DesiredState}}\\t{{.CurrentState}}\\t{{.Error}}\\t{{.Ports}}";
    assert_eq!(
        formatted(&rows, docker_default).unwrap(),
        table(&rows).render()
    );
    // Outside a table, history is not indented.
    assert_eq!(
        formatted(&rows, "{{.Name}}").unwrap(),
        "timecheck.1\ntimecheck.1\n"
    );
}

#[test]
fn ports_shows_host_mode_ports_of_tasks_that_run() {
    let port = |published: u32, mode: &str| pb::PortConfig {
        protocol: "tcp".into(),
        target_port: 80,
        published_port: published,
        publish_mode: mode.into(),
        ..Default::default()
    };
    let with_ports = |mut t: pb::Task| {
        t.endpoint = Some(pb::ServiceEndpoint {
            ports: vec![port(8080, "host"), port(9090, "ingress")],
        });
        t
    };
    let tasks = vec![
        with_ports(task("a", 1, 0, TaskState::Running, TaskState::Running)),
        with_ports(task("b", 2, 0, TaskState::Pending, TaskState::Running)),
    ];
    let rows = rows(
        &tasks,
        &hosts(),
        &TaskFilters::default(),
        RowOptions::default(),
        NOW,
    );
    let ports: Vec<&str> = rows.iter().map(|r| r[7].as_str()).collect();
    // Ingress ports are the service's (`service ls`); a pending task has
    // bound nothing yet.
    assert_eq!(ports, ["*:8080->80/tcp", ""]);
}
