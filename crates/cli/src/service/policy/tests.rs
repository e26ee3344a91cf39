use super::*;
use clap::Parser;

#[derive(Debug, Parser)]
struct Cmd {
    #[command(flatten)]
    args: PolicyArgs,
}

fn apply(argv: &[&str]) -> anyhow::Result<pb::ServiceSpec> {
    let args = Cmd::try_parse_from(std::iter::once("x").chain(argv.iter().copied()))
        .unwrap()
        .args;
    let mut spec = pb::ServiceSpec::default();
    args.apply(&mut spec)?;
    Ok(spec)
}

fn err(argv: &[&str]) -> String {
    apply(argv).unwrap_err().to_string()
}

#[test]
fn no_flags_gives_dockers_defaults() {
    let spec = apply(&[]).unwrap();
    assert_eq!(spec.update_config, Some(default_config()));
    assert_eq!(spec.rollback_config, Some(default_config()));
    let c = default_config();
    assert_eq!((c.parallelism, c.delay_ms, c.monitor_ms), (1, 0, 5000));
    assert_eq!(c.failure_action, pb::FailureAction::Pause as i32);
    assert_eq!(c.order, pb::UpdateOrder::StopFirst as i32);
    assert_eq!(c.max_failure_ratio, 0.0);
}

#[test]
fn every_flag_lands_in_its_config() {
    let spec = apply(&[
        "--update-parallelism",
        "0",
        "--update-delay",
        "10s",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "1m30s",
        "--update-max-failure-ratio",
        "0.25",
        "--update-order",
        "start-first",
        "--rollback-parallelism",
        "3",
        "--rollback-delay",
        "500ms",
        "--rollback-failure-action",
        "continue",
        "--rollback-monitor",
        "2s",
        "--rollback-max-failure-ratio",
        "1",
        "--rollback-order",
        "stop-first",
    ])
    .unwrap();
    assert_eq!(
        spec.update_config.unwrap(),
        pb::UpdateConfig {
            parallelism: 0,
            delay_ms: 10_000,
            failure_action: pb::FailureAction::Rollback as i32,
            monitor_ms: 90_000,
            max_failure_ratio: 0.25,
            order: pb::UpdateOrder::StartFirst as i32,
        }
    );
    assert_eq!(
        spec.rollback_config.unwrap(),
        pb::UpdateConfig {
            parallelism: 3,
            delay_ms: 500,
            failure_action: pb::FailureAction::Continue as i32,
            monitor_ms: 2_000,
            max_failure_ratio: 1.0,
            order: pb::UpdateOrder::StopFirst as i32,
        }
    );
}

#[test]
fn flags_change_only_what_they_name() {
    let args = Cmd::try_parse_from(["x", "--update-delay", "3s"])
        .unwrap()
        .args;
    let mut spec = pb::ServiceSpec {
        update_config: Some(pb::UpdateConfig {
            parallelism: 4,
            order: pb::UpdateOrder::StartFirst as i32,
            ..default_config()
        }),
        ..Default::default()
    };
    args.apply(&mut spec).unwrap();
    let c = spec.update_config.unwrap();
    assert_eq!((c.parallelism, c.delay_ms), (4, 3000));
    assert_eq!(c.order, pb::UpdateOrder::StartFirst as i32);
    assert_eq!(spec.rollback_config, Some(default_config()));
}

#[test]
fn bad_values_name_the_flag() {
    assert_eq!(
        err(&["--update-order", "sideways"]),
        "invalid argument \"sideways\" for \"--update-order\" flag: must be stop-first or start-first"
    );
    assert_eq!(
        err(&["--rollback-order", "x"]),
        "invalid argument \"x\" for \"--rollback-order\" flag: must be stop-first or start-first"
    );
    assert_eq!(
        err(&["--update-delay", "-1s"]),
        "invalid argument \"-1s\" for \"--update-delay\" flag: duration cannot be negative"
    );
    assert_eq!(
        err(&["--rollback-monitor", "-5s"]),
        "invalid argument \"-5s\" for \"--rollback-monitor\" flag: duration cannot be negative"
    );
    assert_eq!(
        err(&["--update-monitor", "soon"]),
        "invalid argument \"soon\" for \"--update-monitor\" flag: expected a duration such as 5s, 1m30s or 500ms"
    );
    assert_eq!(
        err(&["--update-max-failure-ratio", "1.5"]),
        "invalid argument \"1.5\" for \"--update-max-failure-ratio\" flag: must be between 0 and 1"
    );
    assert_eq!(
        err(&["--rollback-max-failure-ratio", "-0.1"]),
        "invalid argument \"-0.1\" for \"--rollback-max-failure-ratio\" flag: must be between 0 and 1"
    );
    assert_eq!(
        err(&["--update-max-failure-ratio", "half"]),
        "invalid argument \"half\" for \"--update-max-failure-ratio\" flag: must be a number between 0 and 1"
    );
    assert_eq!(
        err(&["--update-parallelism", "-1"]),
        "invalid argument \"-1\" for \"--update-parallelism\" flag: must be a non-negative integer"
    );
    assert_eq!(
        err(&["--update-failure-action", "panic"]),
        "invalid argument \"panic\" for \"--update-failure-action\" flag: must be pause, continue or rollback"
    );
    assert_eq!(
        err(&["--rollback-failure-action", "rollback"]),
        "invalid argument \"rollback\" for \"--rollback-failure-action\" flag: must be pause or continue"
    );
}

#[test]
fn jobs_take_no_policy_flags() {
    let parse = |argv: &[&str]| {
        Cmd::try_parse_from(std::iter::once("x").chain(argv.iter().copied()))
            .unwrap()
            .args
    };
    let mut job = pb::ServiceSpec {
        mode: pb::ServiceMode::ReplicatedJob as i32,
        ..Default::default()
    };
    parse(&[]).apply(&mut job).unwrap();
    assert_eq!((job.update_config, job.rollback_config), (None, None));
    job.mode = pb::ServiceMode::GlobalJob as i32;
    let err = parse(&["--rollback-delay", "1s"])
        .apply(&mut job)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "update and rollback configuration is not supported for jobs: remove --rollback-delay"
    );
}
