use shoal_api::pb::Task;

use super::*;

#[test]
fn nano_cpus_become_a_cfs_quota() {
    assert_eq!(cfs_quota_us(0, CFS_PERIOD_US), None);
    assert_eq!(cfs_quota_us(-1, CFS_PERIOD_US), None);
    // --limit-cpu 0.2 → 20 ms of every 100 ms.
    assert_eq!(cfs_quota_us(200_000_000, CFS_PERIOD_US), Some(20_000));
    assert_eq!(cfs_quota_us(1_500_000_000, CFS_PERIOD_US), Some(150_000));
    assert_eq!(cfs_quota_us(4_000_000_000, CFS_PERIOD_US), Some(400_000));
    // Below the kernel's 1 ms minimum, the minimum.
    assert_eq!(cfs_quota_us(1, CFS_PERIOD_US), Some(MIN_CFS_QUOTA_US));
    assert_eq!(
        cfs_quota_us(10_000_000, CFS_PERIOD_US),
        Some(MIN_CFS_QUOTA_US)
    );
    // No overflow for large values.
    assert_eq!(
        cfs_quota_us(i64::MAX, CFS_PERIOD_US),
        Some((i64::MAX as u128 * 100_000 / 1_000_000_000) as u64)
    );
}

#[test]
fn v1_settings_in_write_order() {
    let limits = Limits {
        nano_cpus: 500_000_000,
        memory_bytes: 32 << 20,
    };
    assert_eq!(
        v1_settings(limits),
        vec![
            (Controller::Cpu, "cpu.cfs_period_us", "100000".to_string()),
            (Controller::Cpu, "cpu.cfs_quota_us", "50000".to_string()),
            (
                Controller::Memory,
                "memory.limit_in_bytes",
                "33554432".to_string()
            ),
            (
                Controller::Memory,
                "memory.memsw.limit_in_bytes",
                "33554432".to_string()
            ),
        ]
    );
    let only_memory = Limits {
        nano_cpus: 0,
        memory_bytes: MIN_MEMORY_BYTES,
    };
    assert!(v1_settings(only_memory)
        .iter()
        .all(|(c, _, _)| *c == Controller::Memory));
    assert!(v1_settings(Limits::default()).is_empty());
}

#[test]
fn v2_settings_are_cpu_max_and_memory_max() {
    let limits = Limits {
        nano_cpus: 200_000_000,
        memory_bytes: 64 << 20,
    };
    assert_eq!(
        v2_settings(limits),
        vec![
            ("cpu.max", "20000 100000".to_string()),
            ("memory.max", "67108864".to_string()),
            ("memory.swap.max", "0".to_string()),
        ]
    );
    assert!(v2_settings(Limits::default()).is_empty());
}

#[test]
fn limits_of_a_task() {
    let mut task = Task::default();
    assert!(Limits::of(&task).is_none());
    task.spec = Some(shoal_api::pb::ServiceSpec {
        resources: Some(shoal_api::pb::Resources {
            reserve_nano_cpus: 1_000_000_000,
            reserve_memory_bytes: 1 << 30,
            limit_nano_cpus: 200_000_000,
            limit_memory_bytes: 0,
        }),
        ..Default::default()
    });
    let l = Limits::of(&task);
    assert_eq!(
        l,
        Limits {
            nano_cpus: 200_000_000,
            memory_bytes: 0
        }
    );
    assert!(!l.is_none());
}

const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const HYBRID_SELF: &str = "\
9:name=systemd:/
4:memory:/sandbox/abc
2:cpuacct:/
1:cpu:/
0::/
";

#[test]
fn mountinfo_lists_cgroup_filesystems() {
    let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
    assert_eq!(mounts.len(), 5);
    assert_eq!(
        mounts[0],
        CgroupMount {
            path: "/sys/fs/cgroup/cpu".into(),
            root: "/".into(),
            v2: false,
            controllers: vec!["cpu".into()],
        }
    );
    assert_eq!(mounts[3].controllers, Vec::<String>::new());
    assert!(mounts[4].v2);
    let escaped =
        parse_mountinfo("50 31 0:40 /a\\040b /mnt/c\\134g rw - cgroup cgroup rw,cpu,cpuacct\n");
    assert_eq!(escaped[0].path, PathBuf::from("/mnt/c\\g"));
    assert_eq!(escaped[0].root, "/a b");
    assert_eq!(escaped[0].controllers, ["cpu", "cpuacct"]);
}

#[test]
fn own_group_per_hierarchy() {
    assert_eq!(
        own_group(HYBRID_SELF, Some("memory")).as_deref(),
        Some("/sandbox/abc")
    );
    assert_eq!(own_group(HYBRID_SELF, Some("cpu")).as_deref(), Some("/"));
    assert_eq!(own_group(HYBRID_SELF, None).as_deref(), Some("/"));
    assert_eq!(own_group(HYBRID_SELF, Some("pids")), None);
}

#[test]
fn hybrid_without_v2_controllers_uses_v1_under_our_own_group() {
    let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
    assert_eq!(
        choose_layout(&mounts, HYBRID_SELF, Some("\n")),
        Layout::V1 {
            memory: Some("/sys/fs/cgroup/memory/sandbox/abc/shoal".into()),
            cpu: Some("/sys/fs/cgroup/cpu/shoal".into()),
            cpuacct: Some("/sys/fs/cgroup/cpuacct/shoal".into()),
        }
    );
}

#[test]
fn v2_with_cpu_and_memory_wins() {
    let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
    assert_eq!(
        choose_layout(&mounts, HYBRID_SELF, Some("cpuset cpu io memory pids\n")),
        Layout::V2 {
            dir: "/sys/fs/cgroup/unified/shoal".into()
        }
    );
    let pure_v2 = parse_mountinfo("25 21 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    assert_eq!(
        choose_layout(
            &pure_v2,
            "0::/system.slice/shoald.service\n",
            Some("cpu memory")
        ),
        Layout::V2 {
            dir: "/sys/fs/cgroup/shoal".into()
        }
    );
    // Without memory it is not usable.
    assert!(matches!(
        choose_layout(&pure_v2, "0::/\n", Some("cpu io")),
        Layout::Unavailable { .. }
    ));
}

#[test]
fn cpu_and_cpuacct_in_one_hierarchy_and_subtree_mounts() {
    let mounts = parse_mountinfo(
        "30 25 0:26 /docker/x /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
         31 25 0:27 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    );
    let own = "3:memory:/docker/x\n2:cpu,cpuacct:/docker/x/inner\n";
    assert_eq!(
        choose_layout(&mounts, own, None),
        Layout::V1 {
            memory: Some("/sys/fs/cgroup/memory/shoal".into()),
            cpu: Some("/sys/fs/cgroup/cpu,cpuacct/inner/shoal".into()),
            cpuacct: None,
        }
    );
}

#[test]
fn hierarchies_to_mount_where_none_is() {
    let own = "9:name=systemd:/\n8:pids:/\n4:memory:/sandbox/abc\n2:cpu,cpuacct:/\n0::/\n";
    assert_eq!(
        private_mounts(own),
        vec![
            ("memory".to_string(), "cgroup", "memory".to_string()),
            (
                "cpu,cpuacct".to_string(),
                "cgroup",
                "cpu,cpuacct".to_string()
            ),
            ("unified".to_string(), "cgroup2", String::new()),
        ]
    );
    assert!(private_mounts("").is_empty());
}

#[test]
fn nothing_mounted_is_unavailable() {
    assert!(matches!(
        choose_layout(&[], "", None),
        Layout::Unavailable { .. }
    ));
    assert!(Cgroups::unavailable("test")
        .create(
            "t1",
            Limits {
                nano_cpus: 1,
                memory_bytes: 0
            }
        )
        .unwrap()
        .is_none());
}

#[test]
fn oom_kill_counts() {
    assert_eq!(
        oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
        2
    );
    assert_eq!(
        oom_kills("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"),
        1
    );
    assert_eq!(oom_kills(""), 0);
}

proptest::proptest! {
    /// Any mountinfo text (escapes cut short, missing fields) parses without panic.
    #[test]
    fn any_mountinfo_parses(text in "([0-9a-z/\\\\ ,=-]{0,30}( - )?[a-z0-9 ,=/\\\\-]{0,30}\n){0,4}|.{0,80}") {
        let _ = parse_mountinfo(&text);
    }
}
