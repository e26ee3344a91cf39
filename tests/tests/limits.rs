//! `--limit-memory` and `--limit-cpu` enforced with cgroups on process tasks:
//! a task over its memory limit is OOM-killed (exit 137), a busy loop with
//! `--limit-cpu 0.2` gets about a fifth of a core, groups go with the
//! service and with a restart, and bad values are refused in one line.
//!
//! The task's group is found through `/proc/<task pid>/cgroup`, so these
//! tests check the real membership, on cgroup v1 or v2.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_testkit::{assert_eventually, require_root, text, Cluster};
use shoal_tests::running_task;

/// Where a hierarchy is mounted: `controller` for v1, `None` for cgroup2.
fn mount_point(controller: Option<&str>) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let path = left.split_whitespace().nth(4)?;
        let mut r = right.split_whitespace();
        let (fstype, _, opts) = (r.next()?, r.next()?, r.next().unwrap_or(""));
        let hit = match controller {
            None => fstype == "cgroup2",
            Some(c) => fstype == "cgroup" && opts.split(',').any(|o| o == c),
        };
        hit.then(|| PathBuf::from(path))
    })
}

/// The directory of `pid`'s group in the hierarchy of `controller` (v1), or
/// its cgroup2 group when `controller` is `None`.
fn group_dir(pid: u32, controller: Option<&str>) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            None => id == "0" && ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        hit.then(|| path.trim_start_matches('/').to_string())
    })?;
    Some(mount_point(controller)?.join(rel))
}

/// The task's groups, v1 (memory, cpu, cpuacct) or v2 (one). Panics when the
/// process is in no `shoal/<task>` group.
fn task_groups(pid: u32, task: &str) -> Vec<PathBuf> {
    let suffix = format!("shoal/{task}");
    let v1: Vec<PathBuf> = ["memory", "cpu", "cpuacct"]
        .iter()
        .filter_map(|c| group_dir(pid, Some(c)))
        .filter(|d| d.ends_with(&suffix))
        .collect();
    if !v1.is_empty() {
        return v1;
    }
    let v2 = group_dir(pid, None).filter(|d| d.ends_with(&suffix));
    let groups: Vec<PathBuf> = v2.into_iter().collect();
    assert!(
        !groups.is_empty(),
        "task {task} (pid {pid}) is in no shoal cgroup:\n{}",
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
    );
    groups
}

/// CPU time used by the group of `pid`, in nanoseconds: cpuacct.usage (v1)
/// or cpu.stat usage_usec (v2).
fn cpu_usage_ns(pid: u32, task: &str) -> u64 {
    let suffix = format!("shoal/{task}");
    if let Some(dir) = group_dir(pid, Some("cpuacct")).filter(|d| d.ends_with(&suffix)) {
        let v = std::fs::read_to_string(dir.join("cpuacct.usage")).expect("cpuacct.usage");
        return v.trim().parse().expect("cpuacct.usage is a number");
    }
    let dir = group_dir(pid, None)
        .filter(|d| d.ends_with(&suffix))
        .expect("the task has a cpuacct (v1) or cgroup2 group");
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).expect("cpu.stat");
    let usec: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .expect("usage_usec in cpu.stat");
    usec * 1000
}

fn gone(dirs: &[PathBuf]) -> Result<(), String> {
    let left: Vec<&Path> = dirs
        .iter()
        .map(PathBuf::as_path)
        .filter(|d| d.exists())
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("still there: {left:?}"))
    }
}

#[test]
fn a_task_over_its_memory_limit_is_oom_killed() {
    if !require_root("a_task_over_its_memory_limit_is_oom_killed") {
        return;
    }
    let c = Cluster::single("limmem");
    let node = &c.node;
    // Holds 32 MiB for a while (well within its limit)...
    node.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "fits",
        "--runtime",
        "process",
        "--limit-memory",
        "64M",
        "py",
        "python3",
        "-c",
        "b = b'x' * (32 << 20); import time; time.sleep(600)",
    ]);
    // ...while this one writes 200 MB into a 32 MB limit.
    node.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "hog",
        "--runtime",
        "process",
        "--restart-condition",
        "none",
        "--limit-memory",
        "32M",
        "py",
        "python3",
        "-c",
        "b = b'x' * (200 << 20); import time; time.sleep(60)",
    ]);
    let row = assert_eventually(
        "hog is killed by the OOM killer",
        Duration::from_secs(30),
        || {
            let ps = node.shoal_ok(&["service", "ps", "--no-trunc", "hog"]);
            ps.lines()
                .find(|l| l.contains("Failed") && l.contains("task: non-zero exit (137)"))
                .map(str::to_string)
                .ok_or(ps)
        },
    );
    assert!(row.contains("hog.1"), "{row}");

    // The task within its limit runs, in a group with the limit.
    let (task, pid) = running_task(node, "fits", 0);
    let groups = task_groups(pid, &task);
    let limit = groups
        .iter()
        .find_map(|d| {
            std::fs::read_to_string(d.join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(d.join("memory.max")))
                .ok()
        })
        .expect("a memory group");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    assert!(
        node.shoal_ok(&["service", "ps", "fits"])
            .contains("Running"),
        "the task within its limit keeps running"
    );

    // The failed task's group is gone already, the other one with its service.
    let hog_id = node.shoal_ok(&["service", "ps", "-q", "--no-trunc", "hog"]);
    let hog_groups: Vec<PathBuf> = groups
        .iter()
        .map(|d| d.with_file_name(hog_id.trim()))
        .collect();
    assert_eventually("hog's group is removed", Duration::from_secs(10), || {
        gone(&hog_groups)
    });
    node.shoal_ok(&["service", "rm", "fits"]);
    assert_eventually(
        "the group goes with service rm",
        Duration::from_secs(30),
        || gone(&groups),
    );
}

#[test]
fn a_cpu_limit_holds_a_busy_loop_to_its_share() {
    if !require_root("a_cpu_limit_holds_a_busy_loop_to_its_share") {
        return;
    }
    let c = Cluster::single("limcpu");
    let node = &c.node;
    node.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "spin",
        "--runtime",
        "process",
        "--limit-cpu",
        "0.2",
        "busy",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let (task, pid) = running_task(node, "spin", 0);
    let groups = task_groups(pid, &task);
    // v1: the CFS quota is a fifth of the period; v2: cpu.max says so.
    let cpu_setting = groups.iter().find_map(|d| {
        let quota = std::fs::read_to_string(d.join("cpu.cfs_quota_us")).ok();
        let period = std::fs::read_to_string(d.join("cpu.cfs_period_us")).ok();
        match (quota, period) {
            (Some(q), Some(p)) => Some(format!("{} {}", q.trim(), p.trim())),
            _ => std::fs::read_to_string(d.join("cpu.max"))
                .ok()
                .map(|s| s.trim().to_string()),
        }
    });
    assert_eq!(cpu_setting.as_deref(), Some("20000 100000"));

    // Usage over at least 2 s of wall time.
    let (start, used0) = (Instant::now(), cpu_usage_ns(pid, &task));
    let share = assert_eventually("2 s of usage measured", Duration::from_secs(10), || {
        let elapsed = start.elapsed();
        if elapsed < Duration::from_secs(2) {
            return Err(format!("{elapsed:?} measured so far"));
        }
        let used = cpu_usage_ns(pid, &task) - used0;
        Ok(used as f64 / elapsed.as_nanos() as f64)
    });
    eprintln!(
        "busy loop with --limit-cpu 0.2 used {:.1}% of a core",
        share * 100.0
    );
    assert!(share < 0.40, "used {:.1}% of a core", share * 100.0);
    assert!(share > 0.05, "the loop hardly ran: {:.1}%", share * 100.0);

    node.shoal_ok(&["service", "rm", "spin"]);
    assert_eventually(
        "the group goes with service rm",
        Duration::from_secs(30),
        || gone(&groups),
    );
}

#[test]
fn groups_left_by_a_killed_daemon_are_removed_when_it_restarts() {
    if !require_root("groups_left_by_a_killed_daemon_are_removed_when_it_restarts") {
        return;
    }
    let mut c = Cluster::single("limstale");
    c.node.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "capped",
        "--runtime",
        "process",
        "--limit-memory",
        "16M",
        "--limit-cpu",
        "0.5",
        "sleeper",
        "sleep",
        "600",
    ]);
    let (task, pid) = running_task(&c.node, "capped", 0);
    let groups = task_groups(pid, &task);
    c.node.kill();
    // The task died with shoald (PDEATHSIG); its groups stay behind...
    assert_eventually("the task is gone", Duration::from_secs(10), || {
        if Path::new(&format!("/proc/{pid}")).exists() {
            Err(format!("pid {pid} still runs"))
        } else {
            Ok(())
        }
    });
    assert!(groups.iter().all(|d| d.exists()), "{groups:?}");
    // ...until shoald starts again.
    c.node.start_again();
    assert_eventually(
        "stale groups removed after a restart",
        Duration::from_secs(30),
        || gone(&groups),
    );
    // The replacement task's group goes with an orderly shutdown.
    let (task, pid) = running_task(&c.node, "capped", 0);
    let groups = task_groups(pid, &task);
    c.node.stop();
    gone(&groups).expect("groups removed on shutdown");
}

#[test]
fn bad_limits_are_refused_in_one_line() {
    if !require_root("bad_limits_are_refused_in_one_line") {
        return;
    }
    let c = Cluster::single("limbad");
    let node = &c.node;
    for (flag, value, says) in [
        (
            "--limit-memory",
            "1k",
            r#"invalid argument "1k" for "--limit-memory" flag: Minimum memory limit allowed is 6MB"#,
        ),
        (
            "--limit-cpu",
            "-1",
            r#"invalid argument "-1" for "--limit-cpu" flag"#,
        ),
        (
            "--limit-cpu",
            "abc",
            r#"invalid argument "abc" for "--limit-cpu" flag"#,
        ),
    ] {
        let out = node.shoal(&[
            "service",
            "create",
            "--name",
            "bad",
            flag,
            value,
            "shoal/echo",
        ]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{flag} {value} accepted: {stdout}");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    assert_eq!(node.shoal_ok(&["service", "ls", "-q"]).trim(), "");

    // Updating an existing service to a bad limit changes nothing.
    node.shoal_ok(&["service", "create", "-d", "--name", "ok", "shoal/echo"]);
    let spec = || {
        let v: serde_json::Value =
            serde_json::from_str(&node.shoal_ok(&["service", "inspect", "ok"])).unwrap();
        v[0]["Spec"].clone()
    };
    let before = spec();
    let err = node.shoal_err(&["service", "update", "--limit-memory", "1k", "ok"]);
    assert!(err.contains("Minimum memory limit allowed is 6MB"), "{err}");
    assert_eq!(spec(), before);
}
