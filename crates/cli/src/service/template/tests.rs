use super::*;
use clap::Parser;

#[derive(Debug, Parser)]
struct Create {
    #[command(flatten)]
    placement: CreatePlacementArgs,
    #[command(flatten)]
    template: TemplateArgs,
}

#[derive(Debug, Parser)]
struct Update {
    #[command(flatten)]
    placement: UpdatePlacementArgs,
    #[command(flatten)]
    template: TemplateArgs,
}

fn create(argv: &[&str]) -> anyhow::Result<pb::ServiceSpec> {
    let a = Create::try_parse_from(std::iter::once("x").chain(argv.iter().copied())).unwrap();
    let mut spec = pb::ServiceSpec::default();
    a.placement.apply(&mut spec)?;
    a.template.apply(&mut spec)?;
    Ok(spec)
}

fn update(mut spec: pb::ServiceSpec, argv: &[&str]) -> anyhow::Result<pb::ServiceSpec> {
    let a = Update::try_parse_from(std::iter::once("x").chain(argv.iter().copied())).unwrap();
    a.placement.apply(&mut spec)?;
    a.template.apply(&mut spec)?;
    Ok(spec)
}

fn err(argv: &[&str]) -> String {
    create(argv).unwrap_err().to_string()
}

#[test]
fn no_flags_leave_the_template_empty() {
    let spec = create(&[]).unwrap();
    assert_eq!(spec.placement, None);
    assert_eq!(spec.resources, None);
    assert_eq!(spec.health, None);
}

#[test]
fn placement_flags_reach_the_spec() {
    let spec = create(&[
        "--constraint",
        "node.role==manager",
        "--constraint",
        "node.labels.zone!=a",
        "--placement-pref",
        "spread=node.labels.zone",
        "--replicas-max-per-node",
        "2",
    ])
    .unwrap();
    let p = spec.placement.unwrap();
    assert_eq!(p.constraints, ["node.role==manager", "node.labels.zone!=a"]);
    assert_eq!(p.preferences, ["spread=node.labels.zone"]);
    assert_eq!(p.max_replicas_per_node, 2);
}

#[test]
fn bad_placement_values_name_the_flag() {
    assert_eq!(
        err(&["--constraint", "node.role"]),
        r#"invalid argument "node.role" for "--constraint" flag: constraint has no operator (use == or !=)"#
    );
    assert!(err(&["--constraint", "node.colour==red"])
        .starts_with(r#"invalid argument "node.colour==red" for "--constraint" flag: unknown constraint key "node.colour""#));
    assert!(err(&["--constraint", "node.role=="]).contains("no value"));
    assert!(err(&["--placement-pref", "binpack=node.labels.zone"])
        .starts_with(r#"invalid argument "binpack=node.labels.zone" for "--placement-pref" flag"#));
    assert!(err(&["--placement-pref", "spread=node.hostname"]).contains("spread=node.labels.KEY"));
    assert!(err(&["--replicas-max-per-node", "-1"]).contains("\"--replicas-max-per-node\""));
    let mut global = pb::ServiceSpec {
        mode: pb::ServiceMode::Global as i32,
        ..Default::default()
    };
    let a = Create::try_parse_from(["x", "--replicas-max-per-node", "1"]).unwrap();
    assert_eq!(
        a.template.apply(&mut global).unwrap_err().to_string(),
        "--replicas-max-per-node can only be used with replicated or replicated-job mode"
    );
}

#[test]
fn resources_use_nano_cpus_and_dockers_ram_units() {
    let spec = create(&[
        "--reserve-cpu",
        "0.5",
        "--reserve-memory",
        "64MiB",
        "--limit-cpu",
        "2",
        "--limit-memory",
        "1G",
    ])
    .unwrap();
    let r = spec.resources.unwrap();
    assert_eq!(r.reserve_nano_cpus, 500_000_000);
    assert_eq!(r.reserve_memory_bytes, 64 << 20);
    assert_eq!(r.limit_nano_cpus, 2_000_000_000);
    assert_eq!(r.limit_memory_bytes, 1 << 30);
    assert!(err(&["--reserve-cpu", "half"])
        .starts_with(r#"invalid argument "half" for "--reserve-cpu" flag"#));
    assert!(err(&["--limit-memory", "12XB"])
        .starts_with(r#"invalid argument "12XB" for "--limit-memory" flag"#));
    assert_eq!(
        err(&["--limit-memory", "1k"]),
        r#"invalid argument "1k" for "--limit-memory" flag: Minimum memory limit allowed is 6MB"#
    );
    assert!(create(&["--limit-memory", "6M"]).is_ok());
    assert!(create(&["--limit-memory", "0"]).is_ok(), "0 is no limit");
    assert!(
        err(&["--limit-cpu", "-1"]).starts_with(r#"invalid argument "-1" for "--limit-cpu" flag"#)
    );
    assert!(err(&["--limit-cpu", "abc"])
        .starts_with(r#"invalid argument "abc" for "--limit-cpu" flag"#));
}

#[test]
fn health_cmd_gets_dockers_defaults() {
    let h = create(&["--health-cmd", "curl -f localhost"])
        .unwrap()
        .health
        .unwrap();
    assert_eq!(h.test, ["CMD-SHELL", "curl -f localhost"]);
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms),
        (30_000, 30_000, 3, 0)
    );
    let h = create(&[
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
        "--health-timeout",
        "500ms",
        "--health-retries",
        "5",
        "--health-start-period",
        "2s",
    ])
    .unwrap()
    .health
    .unwrap();
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms),
        (1000, 500, 5, 2000)
    );
    let h = create(&["--no-healthcheck"]).unwrap().health.unwrap();
    assert_eq!(h.test, ["NONE"]);
}

#[test]
fn health_flag_conflicts_are_one_line_errors_naming_both_flags() {
    assert_eq!(
        err(&["--no-healthcheck", "--health-cmd", "true"]),
        "--no-healthcheck conflicts with --health-cmd: drop one of them"
    );
    assert_eq!(
        err(&["--no-healthcheck", "--health-interval", "1s"]),
        "--no-healthcheck conflicts with --health-interval: drop one of them"
    );
    assert_eq!(
        err(&["--health-interval", "1s"]),
        "--health-interval needs --health-cmd: the service has no health check command"
    );
    assert!(err(&["--health-cmd", "true", "--health-timeout", "-1s"])
        .starts_with(r#"invalid argument "-1s" for "--health-timeout" flag"#));
    assert!(err(&["--health-cmd", " "]).contains("\"--health-cmd\""));
}

#[test]
fn update_edits_placement_like_docker() {
    let spec = create(&[
        "--constraint",
        "node.role==worker",
        "--placement-pref",
        "spread=node.labels.zone",
    ])
    .unwrap();
    let spec = update(
        spec,
        &[
            "--constraint-add",
            "node.labels.zone==a",
            "--constraint-rm",
            "node.role==worker",
            "--placement-pref-rm",
            "spread=node.labels.zone",
            "--placement-pref-add",
            "spread=node.labels.rack",
            "--replicas-max-per-node",
            "3",
        ],
    )
    .unwrap();
    let p = spec.placement.unwrap();
    assert_eq!(p.constraints, ["node.labels.zone==a"]);
    assert_eq!(p.preferences, ["spread=node.labels.rack"]);
    assert_eq!(p.max_replicas_per_node, 3);
    let e = update(pb::ServiceSpec::default(), &["--constraint-add", "zone"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"invalid argument "zone" for "--constraint-add" flag: constraint has no operator (use == or !=)"#
    );
}

#[test]
fn update_adjusts_resources_and_health() {
    let spec = create(&["--reserve-cpu", "1", "--health-cmd", "true"]).unwrap();
    let spec = update(
        spec,
        &["--reserve-memory", "128M", "--health-interval", "2s"],
    )
    .unwrap();
    let r = spec.resources.unwrap();
    assert_eq!(
        (r.reserve_nano_cpus, r.reserve_memory_bytes),
        (1_000_000_000, 128 << 20)
    );
    let h = spec.health.clone().unwrap();
    assert_eq!(h.test, ["CMD-SHELL", "true"]);
    assert_eq!((h.interval_ms, h.timeout_ms), (2000, 30_000));
    // --no-healthcheck clears the timings too (the manager refuses NONE with timings).
    let off = update(spec.clone(), &["--no-healthcheck"])
        .unwrap()
        .health
        .unwrap();
    assert_eq!(
        off,
        pb::HealthCheck {
            test: vec!["NONE".into()],
            ..Default::default()
        }
    );
    // From NONE, a command starts over from the defaults.
    let mut none = spec;
    none.health = Some(off);
    let h = update(none.clone(), &["--health-cmd", "exit 0"])
        .unwrap()
        .health
        .unwrap();
    assert_eq!(h.test, ["CMD-SHELL", "exit 0"]);
    assert_eq!(h.interval_ms, 30_000);
    assert!(update(none, &["--health-retries", "1"]).is_err());
}
