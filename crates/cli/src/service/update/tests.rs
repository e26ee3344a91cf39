use super::*;
use clap::Parser;

#[derive(Debug, Parser)]
struct Cmd {
    #[command(flatten)]
    args: UpdateArgs,
}

fn parse(argv: &[&str]) -> UpdateArgs {
    Cmd::try_parse_from(std::iter::once("update").chain(argv.iter().copied()))
        .unwrap()
        .args
}

fn port(published: u32, target: u32, protocol: &str) -> pb::PortConfig {
    pb::PortConfig {
        name: String::new(),
        protocol: protocol.into(),
        target_port: target,
        published_port: published,
        publish_mode: "ingress".into(),
        proxy_protocol: String::new(),
    }
}

fn service() -> pb::Service {
    pb::Service {
        id: "svc".into(),
        spec: Some(pb::ServiceSpec {
            name: "web".into(),
            image: "shoal/echo".into(),
            command: vec!["--greeting".into(), "hi".into()],
            env: vec!["A=1".into(), "B=2".into()],
            replicas: 3,
            ports: vec![port(8080, 80, "tcp"), port(0, 9000, "tcp")],
            labels: [("tier".to_string(), "web".to_string())].into(),
            restart: Some(pb::RestartPolicy {
                condition: pb::RestartCondition::Any as i32,
                delay_ms: 5000,
                max_attempts: 0,
                window_ms: 0,
            }),
            ..Default::default()
        }),
        endpoint: Some(pb::ServiceEndpoint {
            ports: vec![port(8080, 80, "tcp"), port(30001, 9000, "tcp")],
        }),
        ..Default::default()
    }
}

fn process_service() -> pb::Service {
    let mut s = service();
    let spec = s.spec.as_mut().unwrap();
    spec.runtime = pb::Runtime::Process as i32;
    spec.image = "app".into();
    spec.command = vec!["sh".into(), "-c".into(), "sleep 1".into()];
    s
}

fn apply_to(svc: &pb::Service, argv: &[&str]) -> anyhow::Result<pb::ServiceSpec> {
    let mut full = argv.to_vec();
    full.push("web");
    let a = parse(&full);
    Edits::parse(&a)?.apply(svc, &a.policy)
}

fn apply(argv: &[&str]) -> anyhow::Result<pb::ServiceSpec> {
    apply_to(&service(), argv)
}

fn err(argv: &[&str]) -> String {
    apply(argv).unwrap_err().to_string()
}

#[test]
fn no_flags_keep_the_spec_and_fill_in_default_policies() {
    let spec = apply(&[]).unwrap();
    let mut want = service().spec.unwrap();
    want.update_config = Some(super::super::policy::default_config());
    want.rollback_config = Some(super::super::policy::default_config());
    assert_eq!(spec, want);
}

#[test]
fn image_env_and_force() {
    let spec = apply(&[
        "--image",
        "shoal/echo:2",
        "--env-add",
        "B=3",
        "--env-add",
        "C=4",
        "--env-rm",
        "A",
        "--force",
    ])
    .unwrap();
    assert_eq!(spec.image, "shoal/echo:2");
    assert_eq!(spec.env, ["B=3", "C=4"]);
    assert_eq!(spec.force_update, 1);
    let again = apply_to(
        &pb::Service {
            spec: Some(spec),
            ..service()
        },
        &["--force"],
    )
    .unwrap();
    assert_eq!(again.force_update, 2);
}

#[test]
fn args_replace_the_arguments() {
    // Builtin: the whole command.
    let spec = apply(&["--args", "--greeting 'hello there' \"a \\\"b\\\"\" c\\ d"]).unwrap();
    assert_eq!(
        spec.command,
        ["--greeting", "hello there", "a \"b\"", "c d"]
    );
    // Process: the arguments after the command.
    let spec = apply_to(&process_service(), &["--args", "-c 'sleep 5'"]).unwrap();
    assert_eq!(spec.command, ["sh", "-c", "sleep 5"]);
    assert_eq!(
        err(&["--args", "'open"]),
        "invalid argument \"'open\" for \"--args\" flag: unterminated single quote"
    );
}

#[test]
fn image_must_suit_the_runtime() {
    let e = err(&["--image", "nginx"]);
    assert!(
        e.starts_with("image \"nginx\" is not a builtin workload"),
        "{e}"
    );
    let spec = apply_to(&process_service(), &["--image", "app:2"]).unwrap();
    assert_eq!(spec.image, "app:2");
}

#[test]
fn replicas() {
    assert_eq!(apply(&["--replicas", "5"]).unwrap().replicas, 5);
    assert_eq!(
        err(&["--replicas", "-1"]),
        "invalid argument \"-1\" for \"--replicas\" flag: must be a non-negative integer"
    );
    let mut global = service();
    global.spec.as_mut().unwrap().mode = pb::ServiceMode::Global as i32;
    assert_eq!(
        apply_to(&global, &["--replicas", "2"])
            .unwrap_err()
            .to_string(),
        "--replicas can only be used with replicated or replicated-job mode"
    );
}

#[test]
fn jobs() {
    let mut job = service();
    {
        let spec = job.spec.as_mut().unwrap();
        spec.mode = pb::ServiceMode::ReplicatedJob as i32;
        spec.update_config = None;
        spec.rollback_config = None;
    }
    let spec = apply_to(&job, &["--max-concurrent", "3", "--force"]).unwrap();
    assert_eq!(spec.max_concurrent, 3);
    assert_eq!((spec.update_config, spec.rollback_config), (None, None));
    assert_eq!(
        apply_to(&job, &["--update-delay", "1s"])
            .unwrap_err()
            .to_string(),
        "update and rollback configuration is not supported for jobs: remove --update-delay"
    );
    assert_eq!(
        apply_to(&service(), &["--max-concurrent", "3"])
            .unwrap_err()
            .to_string(),
        "--max-concurrent can only be used with replicated-job mode"
    );
    job.spec.as_mut().unwrap().mode = pb::ServiceMode::GlobalJob as i32;
    assert_eq!(
        apply_to(&job, &["--replicas", "2"])
            .unwrap_err()
            .to_string(),
        "--replicas can only be used with replicated or replicated-job mode"
    );
}

fn pairs(spec: &pb::ServiceSpec) -> Vec<(u32, u32, String)> {
    spec.ports
        .iter()
        .map(|p| (p.published_port, p.target_port, p.protocol.clone()))
        .collect()
}

#[test]
fn publish_add_and_rm() {
    let spec = apply(&["--publish-add", "8081:81"]).unwrap();
    assert_eq!(
        pairs(&spec),
        [
            (8080, 80, "tcp".into()),
            (0, 9000, "tcp".into()),
            (8081, 81, "tcp".into())
        ]
    );
    // Same published port: replaced.
    let spec = apply(&["--publish-add", "8080:8000"]).unwrap();
    assert_eq!(
        pairs(&spec),
        [(0, 9000, "tcp".into()), (8080, 8000, "tcp".into())]
    );
    // By published port, by target port, by allocated published port.
    assert_eq!(
        pairs(&apply(&["--publish-rm", "8080"]).unwrap()),
        [(0, 9000, "tcp".into())]
    );
    assert_eq!(
        pairs(&apply(&["--publish-rm", "80"]).unwrap()),
        [(0, 9000, "tcp".into())]
    );
    assert_eq!(
        pairs(&apply(&["--publish-rm", "30001"]).unwrap()),
        [(8080, 80, "tcp".into())]
    );
    // A protocol or published port that does not match keeps the port.
    assert_eq!(pairs(&apply(&["--publish-rm", "80/udp"]).unwrap()).len(), 2);
    assert_eq!(
        pairs(&apply(&["--publish-rm", "9999:80"]).unwrap()).len(),
        2
    );
    assert_eq!(
        pairs(&apply(&["--publish-rm", "published=8080,target=80"]).unwrap()),
        [(0, 9000, "tcp".into())]
    );
    // Remove then add: move a port.
    assert_eq!(
        pairs(&apply(&["--publish-rm", "80", "--publish-add", "9090:80"]).unwrap()),
        [(0, 9000, "tcp".into()), (9090, 80, "tcp".into())]
    );
    assert_eq!(
        err(&["--publish-add", "x:80"]),
        "invalid argument \"x:80\" for \"--publish-add\" flag: published port \"x\" must be a number from 1 to 65535"
    );
    assert!(err(&["--publish-rm", "70000"])
        .starts_with("invalid argument \"70000\" for \"--publish-rm\" flag:"));
}

#[test]
fn labels_and_restart() {
    let spec = apply(&[
        "--label-add",
        "zone=east",
        "--label-rm",
        "tier",
        "--label-rm",
        "nope",
        "--restart-condition",
        "on-failure",
        "--restart-delay",
        "1s",
        "--restart-max-attempts",
        "3",
        "--restart-window",
        "1m",
    ])
    .unwrap();
    assert_eq!(
        spec.labels,
        [("zone".to_string(), "east".to_string())].into()
    );
    let r = spec.restart.unwrap();
    assert_eq!(r.condition, pb::RestartCondition::OnFailure as i32);
    assert_eq!((r.delay_ms, r.max_attempts, r.window_ms), (1000, 3, 60_000));
    assert_eq!(
        err(&["--label-add", "=x"]),
        "invalid argument \"=x\" for \"--label-add\" flag: the key must not be empty"
    );
    assert_eq!(
        err(&["--restart-delay", "-1s"]),
        "invalid argument \"-1s\" for \"--restart-delay\" flag: duration cannot be negative"
    );
    assert_eq!(
        err(&["--env-add", "=1"]),
        "invalid argument \"=1\" for \"--env-add\" flag: expected KEY=VALUE"
    );
}

#[test]
fn policy_flags_edit_the_current_policy() {
    let mut svc = service();
    svc.spec.as_mut().unwrap().update_config = Some(pb::UpdateConfig {
        parallelism: 4,
        ..super::super::policy::default_config()
    });
    let spec = apply_to(
        &svc,
        &["--update-delay", "2s", "--rollback-parallelism", "0"],
    )
    .unwrap();
    let u = spec.update_config.unwrap();
    assert_eq!((u.parallelism, u.delay_ms), (4, 2000));
    assert_eq!(spec.rollback_config.unwrap().parallelism, 0);
    assert_eq!(
        err(&["--update-order", "sideways"]),
        "invalid argument \"sideways\" for \"--update-order\" flag: must be stop-first or start-first"
    );
}

#[test]
fn rollback_takes_only_policy_flags() {
    let a = parse(&["--rollback", "--update-parallelism", "2", "-d", "-q", "web"]);
    assert!(a.rollback && a.detach && a.quiet);
    assert!(Edits::parse(&a).is_ok());
    for flag in [
        &["--image", "shoal/echo:2"][..],
        &["--force"],
        &["--env-add", "A=1"],
        &["--replicas", "2"],
    ] {
        let mut argv = vec!["--rollback"];
        argv.extend_from_slice(flag);
        argv.push("web");
        assert_eq!(
            Edits::parse(&parse(&argv)).unwrap_err().to_string(),
            "other flags may not be combined with --rollback",
            "{flag:?}"
        );
    }
}

#[test]
fn rollback_command_flags() {
    #[derive(Debug, Parser)]
    struct R {
        #[command(flatten)]
        args: RollbackArgs,
    }
    let r = R::try_parse_from(["rollback", "-d", "-q", "web"])
        .unwrap()
        .args;
    assert!(r.detach && r.quiet);
    assert_eq!(r.service, "web");
    assert!(R::try_parse_from(["rollback"]).is_err());
}

#[test]
fn placement_and_template_flags_edit_the_spec_and_exclude_rollback() {
    let spec = apply(&[
        "--constraint-add",
        "node.labels.zone==a",
        "--reserve-cpu",
        "0.25",
        "--no-healthcheck",
    ])
    .unwrap();
    assert_eq!(spec.placement.unwrap().constraints, ["node.labels.zone==a"]);
    assert_eq!(spec.resources.unwrap().reserve_nano_cpus, 250_000_000);
    assert_eq!(spec.health.unwrap().test, ["NONE"]);
    // Checked before connecting.
    let a = parse(&["--constraint-add", "zone", "web"]);
    assert!(Edits::parse(&a)
        .unwrap_err()
        .to_string()
        .contains("\"--constraint-add\" flag: constraint has no operator"));
    let a = parse(&["--no-healthcheck", "--health-retries", "2", "web"]);
    assert_eq!(
        Edits::parse(&a).unwrap_err().to_string(),
        "--no-healthcheck conflicts with --health-retries: drop one of them"
    );
    let a = parse(&["--rollback", "--constraint-rm", "x==y", "web"]);
    assert_eq!(
        Edits::parse(&a).unwrap_err().to_string(),
        "other flags may not be combined with --rollback"
    );
    // A health timing without a command check on the service is refused.
    assert!(err(&["--health-interval", "5s"]).contains("needs --health-cmd"));
}
