//! A bad flag value is one line naming the flag and the fix, with Docker's
//! exit status for flag errors (125), and is refused before the daemon is
//! asked anything (these run with no daemon at all).

use std::process::Command;

/// Where no daemon listens: a flag error must come before connecting.
const NO_DAEMON: &str = "unix:///nonexistent/shoal.sock";

struct Refusal {
    code: Option<i32>,
    stderr: String,
}

fn shoal(args: &[&str]) -> Refusal {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env("SHOAL_HOST", NO_DAEMON)
        .output()
        .expect("run shoal");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    Refusal {
        code: out.status.code(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs `args` and checks the refusal: status 125, and stderr exactly
/// `invalid argument "VALUE" for "FLAG" flag: ...` on one line.
fn refused(args: &[&str], value: &str, flag: &str) -> String {
    let r = shoal(args);
    let prefix = format!("invalid argument {value:?} for {flag:?} flag: ");
    assert_eq!(r.code, Some(125), "{args:?}: {}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
    assert!(r.stderr.starts_with(&prefix), "{args:?}: {}", r.stderr);
    r.stderr
}

#[test]
fn negative_values_name_the_flag_and_the_fix() {
    let err = refused(
        &["service", "create", "-p", "-1:80", "shoal/echo"],
        "-1:80",
        "-p, --publish",
    );
    assert_eq!(
        err,
        "invalid argument \"-1:80\" for \"-p, --publish\" flag: \
         published port \"-1\" must be a number from 1 to 65535\n"
    );
    let err = refused(
        &["service", "create", "--restart-delay", "-5s", "shoal/echo"],
        "-5s",
        "--restart-delay",
    );
    assert!(err.ends_with("duration cannot be negative\n"), "{err}");
    let err = refused(
        &[
            "service",
            "create",
            "--restart-max-attempts",
            "-1",
            "shoal/echo",
        ],
        "-1",
        "--restart-max-attempts",
    );
    assert!(err.ends_with("must be a non-negative integer\n"), "{err}");
}

/// Every numeric, size and duration flag of `service create|update`,
/// `swarm init|update`, given a negative value.
#[test]
fn every_numeric_flag_takes_a_negative_value_and_refuses_it() {
    let service_flags: &[(&str, &str)] = &[
        ("--replicas", "-1"),
        ("-p, --publish", "-1"),
        ("--restart-delay", "-5s"),
        ("--restart-max-attempts", "-1"),
        ("--restart-window", "-1s"),
        ("--update-parallelism", "-1"),
        ("--update-delay", "-1s"),
        ("--update-monitor", "-1s"),
        ("--update-max-failure-ratio", "-0.5"),
        ("--rollback-parallelism", "-1"),
        ("--rollback-delay", "-1s"),
        ("--rollback-monitor", "-1s"),
        ("--rollback-max-failure-ratio", "-0.5"),
        ("--replicas-max-per-node", "-1"),
        ("--reserve-cpu", "-1"),
        ("--reserve-memory", "-1"),
        ("--limit-cpu", "-1"),
        ("--limit-memory", "-1"),
        ("--health-interval", "-1s"),
        ("--health-timeout", "-1s"),
        ("--health-retries", "-1"),
        ("--health-start-period", "-1s"),
        ("--stop-grace-period", "-1s"),
    ];
    for &(flag, value) in service_flags {
        let long = flag.rsplit(' ').next().unwrap();
        let health = ["--health-cmd", "true"];
        refused(
            &[
                &["service", "create"],
                &health[..],
                &[long, value, "shoal/echo"],
            ]
            .concat(),
            value,
            flag,
        );
        let update_flag = if long == "--publish" {
            "--publish-add"
        } else {
            flag
        };
        refused(
            &["service", "update", update_flag, value, "web"],
            value,
            update_flag,
        );
    }
    refused(
        &[
            "service",
            "create",
            "--mode",
            "replicated-job",
            "--max-concurrent",
            "-1",
            "shoal/echo",
        ],
        "-1",
        "--max-concurrent",
    );
    refused(
        &["service", "update", "--max-concurrent", "-1", "web"],
        "-1",
        "--max-concurrent",
    );
    for verb in ["init", "update"] {
        refused(
            &["swarm", verb, "--task-history-limit", "-1"],
            "-1",
            "--task-history-limit",
        );
        refused(
            &["swarm", verb, "--dispatcher-heartbeat", "-1s"],
            "-1s",
            "--dispatcher-heartbeat",
        );
    }
    refused(
        &["node", "update", "--availability", "-1", "host1"],
        "-1",
        "--availability",
    );
}

#[test]
fn usage_errors_are_one_line_with_status_125() {
    for args in [
        &["service", "create", "--no-such-flag", "shoal/echo"][..],
        &["service", "create"],
        &["service", "update", "--replicas"],
        &["service"],
    ] {
        let r = shoal(args);
        assert_eq!(r.code, Some(125), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("--help'"), "{args:?}: {}", r.stderr);
    }
    let r = shoal(&["service", "create", "--no-such-flag", "shoal/echo"]);
    assert_eq!(
        r.stderr,
        "unexpected argument '--no-such-flag' found; see 'shoal service create --help'\n"
    );
    // Help is not an error.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["service", "create", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn errors_from_the_daemon_keep_status_1() {
    let r = shoal(&["service", "ls"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
}
