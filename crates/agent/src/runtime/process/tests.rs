use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use shoal_api::pb::{PortBinding, PortConfig, ServiceEndpoint, ServiceSpec};

use super::*;

fn task() -> Task {
    Task {
        id: "k3j4abcdefghijklmnopqrstu".into(),
        service_id: "svc1".into(),
        service_name: "web".into(),
        slot: 2,
        node_id: "node1".into(),
        spec: Some(ServiceSpec {
            image: "shoal/echo:2".into(),
            env: vec!["A=1".into(), "B=x=y".into(), "bad".into()],
            ..Default::default()
        }),
        endpoint: Some(ServiceEndpoint {
            ports: vec![
                PortConfig {
                    target_port: 80,
                    published_port: 8080,
                    ..Default::default()
                },
                PortConfig {
                    target_port: 80,
                    published_port: 8081,
                    ..Default::default()
                },
                PortConfig {
                    target_port: 9000,
                    published_port: 9000,
                    ..Default::default()
                },
            ],
        }),
        ..Default::default()
    }
}

fn runner() -> TaskRunner {
    TaskRunner::new(Arc::new(AgentConfig {
        node_id: "node1".into(),
        hostname: "hostos1".into(),
        addr: "10.0.0.1".into(),
        data_root: PathBuf::from("/nonexistent"),
        workload_exe: PathBuf::from("/usr/bin/shoald"),
        network: NetworkMode::Loopback,
        stop_grace: Duration::from_secs(1),
    }))
}

#[test]
fn exit_status_to_error_text() {
    let ok = exit_outcome(ExitStatus::from_raw(0));
    assert_eq!(ok.state, TaskState::Complete);
    assert!(ok.err.is_empty());
    let code = exit_outcome(ExitStatus::from_raw(3 << 8));
    assert_eq!(code.state, TaskState::Failed);
    assert_eq!(code.exit_code, 3);
    assert_eq!(code.err, "task: non-zero exit (3)");
    let killed = exit_outcome(ExitStatus::from_raw(libc::SIGKILL));
    assert_eq!(killed.exit_code, 137);
    assert_eq!(killed.err, "task: non-zero exit (137)");
}

#[test]
fn target_ports_are_deduplicated() {
    assert_eq!(target_ports(&task()), [80, 9000]);
}

#[test]
fn env_has_spec_and_shoal_variables() {
    let env = build_env(
        &task(),
        "node1",
        "hostos1",
        Some(&[(80, 31000), (9000, 31001)]),
    );
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("A"), Some("1"));
    assert_eq!(get("B"), Some("x=y"));
    assert_eq!(get("bad"), None);
    assert_eq!(get("SHOAL_TASK_ID"), Some("k3j4abcdefghijklmnopqrstu"));
    assert_eq!(
        get("SHOAL_TASK_NAME"),
        Some("web.2.k3j4abcdefghijklmnopqrstu")
    );
    assert_eq!(get("SHOAL_TASK_SLOT"), Some("2"));
    assert_eq!(get("SHOAL_SERVICE_NAME"), Some("web"));
    assert_eq!(get("SHOAL_NODE_ID"), Some("node1"));
    assert_eq!(get("SHOAL_NODE_HOSTNAME"), Some("hostos1"));
    assert_eq!(get("SHOAL_IMAGE"), Some("shoal/echo:2"));
    assert_eq!(get("SHOAL_IMAGE_TAG"), Some("2"));
    assert_eq!(get("PORT"), Some("31000"));
    assert_eq!(get("SHOAL_PORT_80"), Some("31000"));
    assert_eq!(get("SHOAL_PORT_9000"), Some("31001"));
    let netns_env = build_env(&task(), "node1", "hostos1", None);
    assert!(!netns_env.iter().any(|(k, _)| k == "PORT"));
}

#[test]
fn builtin_plan_runs_the_workload_subcommand() {
    let plan = runner()
        .plan(&task(), Some("10.255.0.7".parse().unwrap()))
        .unwrap();
    assert_eq!(plan.program, PathBuf::from("/usr/bin/shoald"));
    assert_eq!(plan.args, ["workload", "echo"]);
    assert_eq!(
        plan.ports,
        [
            PortBinding {
                target_port: 80,
                address: "10.255.0.7:80".into()
            },
            PortBinding {
                target_port: 9000,
                address: "10.255.0.7:9000".into()
            },
        ]
    );
}

#[test]
fn process_plan_uses_command_and_loopback_ports() {
    let mut t = task();
    let spec = t.spec.as_mut().unwrap();
    spec.runtime = Runtime::Process as i32;
    spec.command = vec!["python3".into(), "-m".into(), "http.server".into()];
    spec.workdir = "/tmp".into();
    let plan = runner().plan(&t, None).unwrap();
    assert_eq!(plan.program, PathBuf::from("python3"));
    assert_eq!(plan.args, ["-m", "http.server"]);
    assert_eq!(plan.workdir, Some(PathBuf::from("/tmp")));
    assert_eq!(plan.ports.len(), 2);
    assert!(plan.ports[0].address.starts_with("127.0.0.1:"));

    t.spec.as_mut().unwrap().command.clear();
    assert_eq!(runner().plan(&t, None).unwrap_err(), "task: empty command");
}

#[test]
fn veth_names_fit_the_kernel_limit() {
    assert_eq!(crate::netns::veth_name("k3j4abcdefghijk"), "shk3j4abcdef");
    assert!(crate::netns::veth_name("k3j4abcdefghijk").len() <= 15);
}

#[test]
fn a_missing_workdir_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(workdir_error(dir.path()), None);
    let missing = dir.path().join("nope");
    assert_eq!(
        workdir_error(&missing).unwrap(),
        format!("task: workdir {}: no such directory", missing.display())
    );
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    assert_eq!(
        workdir_error(&file).unwrap(),
        format!("task: workdir {}: not a directory", file.display())
    );
}

proptest::proptest! {
    /// `--stop-signal` values: a name or number, anything else refused without panic.
    #[test]
    fn any_signal_name_parses_or_is_refused(name in "(SIG|sig)?[A-Za-z0-9+-]{0,8}|.{0,12}") {
        let _ = parse_signal(&name);
    }
}

#[test]
fn readiness_waits_only_for_target_ports_published_over_tcp() {
    let port = |target: u32, protocol: &str| PortConfig {
        protocol: protocol.into(),
        target_port: target,
        published_port: target + 1000,
        ..Default::default()
    };
    let task = Task {
        endpoint: Some(ServiceEndpoint {
            ports: vec![
                port(53, "udp"),
                port(80, "tcp"),
                port(81, ""),
                port(53, "udp"),
            ],
        }),
        ..Default::default()
    };
    let binding = |t: u32| PortBinding {
        target_port: t,
        address: format!("10.0.0.2:{t}"),
    };
    let all = [binding(53), binding(80), binding(81)];
    let ready_on: Vec<u32> = tcp_bindings(&task, &all)
        .iter()
        .map(|b| b.target_port)
        .collect();
    assert_eq!(ready_on, [80, 81]);
}
