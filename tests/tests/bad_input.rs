//! Bad input: one clear line naming the field, a non-zero exit, and nothing
//! already stored is lost.

use shoal_testkit::{bin, require_root, text, Cluster};

#[test]
fn cli_without_a_daemon_says_so() {
    let out = std::process::Command::new(bin("shoal"))
        .args(["-H", "unix:///nonexistent/shoal.sock", "service", "ls"])
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        err.trim(),
        "cannot connect to shoald at unix:///nonexistent/shoal.sock: is it running?"
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    if !require_root("bad_input_is_refused_and_changes_nothing") {
        return;
    }
    let c = Cluster::single("bad");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "web",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    n.shoal_ok(&[
        "service",
        "create",
        "-q",
        "--name",
        "glob",
        "--mode",
        "global",
        "shoal/echo",
    ]);
    let before = n.shoal_ok(&["service", "ls"]);

    let cases: &[(&[&str], &str)] = &[
        (
            &["service", "create", "--name", "web", "shoal/echo"],
            "service web already exists",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "other",
                "-p",
                "8080:80",
                "shoal/echo",
            ],
            "published port 8080 is already used by service web",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "x",
                "-p",
                "70000:80",
                "shoal/echo",
            ],
            "70000",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "x",
                "-p",
                "abc",
                "shoal/echo",
            ],
            "-p, --publish",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "x",
                "--replicas",
                "-1",
                "shoal/echo",
            ],
            "--replicas",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "x",
                "--mode",
                "global",
                "--replicas",
                "2",
                "shoal/echo",
            ],
            "replicated or replicated-job mode",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "x",
                "--runtime",
                "process",
                "img",
            ],
            "needs a command",
        ),
        (&["service", "ps", "nosuch"], "no such service: nosuch"),
        (&["service", "inspect", "nosuch"], "no such service: nosuch"),
        (&["service", "rm", "nosuch"], "no such service: nosuch"),
        (&["service", "scale", "nosuch=2"], "no such service: nosuch"),
        (&["service", "scale", "web=abc"], "web=abc"),
        (
            &["service", "scale", "glob=3"],
            "scale can only be used with replicated",
        ),
        (
            &["service", "logs", "nosuch"],
            "no such task or service: nosuch",
        ),
        (&["inspect", "nosuchtask"], "nosuchtask"),
        (
            &["node", "inspect", "nosuchnode"],
            "no such node: nosuchnode",
        ),
        (&["swarm", "init"], "already part of a swarm"),
    ];
    for (args, expect) in cases {
        let err = n.shoal_err(args);
        assert!(
            err.contains(expect),
            "shoal {args:?}: expected {expect:?} in {err:?}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one line for {args:?}: {err:?}"
        );
    }

    // A port some other program holds on the host.
    let holder = n.ns.command("python3")
        .args(["-c", "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 8099)); s.listen(); print('ok', flush=True); time.sleep(60)"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder = KillOnDrop(holder);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let err = n.shoal_err(&[
        "service",
        "create",
        "--name",
        "x",
        "-p",
        "8099:80",
        "shoal/echo",
    ]);
    assert!(
        err.contains("port 8099 is already in use on this host"),
        "{err}"
    );

    assert_eq!(n.shoal_ok(&["service", "ls"]), before, "nothing changed");
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cluster_commands_before_init_say_how_to_fix() {
    if !require_root("cluster_commands_before_init_say_how_to_fix") {
        return;
    }
    let node = shoal_testkit::Node::start("noinit", "node-1");
    let err = node.shoal_err(&["service", "ls"]);
    assert!(
        err.contains("This node is not a swarm manager") && err.contains("shoal swarm init"),
        "{err}"
    );
}
