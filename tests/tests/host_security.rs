//! What another user of the host, or a flood of connections, can do to a
//! node: the data root and every file in it are closed to other users (task
//! processes still get umask 022), the API socket too (the CLI says so in
//! one line); an install with readable files is fixed at start; the
//! descriptor limit is raised to the hard limit; at descriptor exhaustion
//! the API socket still answers and shoald does not spin.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use shoal_testkit::{bin, require_root, text, Cluster, Node};

/// Runs `program args...` as `nobody` with no supplementary groups.
fn as_nobody(program: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(program)
        .args(args)
        .output()
        .expect("run setpriv")
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Every directory and regular file under `root` (root included).
fn tree(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
        dirs.push(dir);
    }
    (dirs, files)
}

/// Asserts the data root is 0700, every directory in it 0700 and every
/// file 0600; returns the files.
fn assert_private(root: &Path) -> Vec<PathBuf> {
    let (dirs, files) = tree(root);
    for dir in &dirs {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    files
}

#[test]
fn data_root_and_socket_are_closed_to_other_users() {
    if !require_root("data_root_and_socket_are_closed_to_other_users") {
        return;
    }
    let cluster = Cluster::single("hostsec");
    let n = &cluster.node;
    n.shoal_ok(&[
        "service",
        "create",
        "--name",
        "web",
        "-e",
        "SECRET=hunter2",
        "shoal/echo",
    ]);
    // Task processes get Docker's umask, not shoald's 077.
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "umask",
        "--runtime",
        "process",
        "sh-img",
        "sh",
        "-c",
        "echo umask=$(umask); sleep 600",
    ]);
    shoal_testkit::assert_eventually("the task logs its umask", Duration::from_secs(20), || {
        let logs = n.shoal_ok(&["service", "logs", "umask"]);
        if logs.contains("umask=0022") {
            Ok(())
        } else {
            Err(logs)
        }
    });
    // The test's directory is private to root; open it so that only the
    // modes shoald chose stand between `nobody` and the node.
    chmod(n.dir.path(), 0o755);

    let root = n.data_root();
    let files = assert_private(&root);
    for expected in [
        "node.json",
        "store/state.redb",
        "store/raft-log.redb",
        "certificates/node.key",
    ] {
        assert!(
            files.contains(&root.join(expected)),
            "{expected} missing: {files:?}"
        );
    }
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("log") && f.starts_with(root.join("tasks"))),
        "no task log: {files:?}"
    );
    let socket = std::fs::metadata(n.socket()).unwrap();
    assert_eq!(socket.uid(), 0);
    let docker = Command::new("getent")
        .args(["group", "docker"])
        .output()
        .unwrap();
    match String::from_utf8_lossy(&docker.stdout).split(':').nth(2) {
        Some(gid) if docker.status.success() => {
            assert_eq!(mode(&n.socket()), 0o660);
            assert_eq!(socket.gid().to_string(), gid);
        }
        _ => assert_eq!(mode(&n.socket()), 0o600),
    }

    for path in std::iter::once(&root).chain(&files) {
        let out = as_nobody(Path::new("/bin/cat"), &[path.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert!(
            !out.status.success() && stdout.is_empty() && stderr.contains("Permission denied"),
            "nobody read {}: {stdout}{stderr}",
            path.display()
        );
    }
    let out = as_nobody(&bin("shoal"), &["-H", &n.host(), "service", "ls"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "nobody ran service ls: {stdout}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "permission denied while trying to connect to shoald at {}",
            n.host()
        )),
        "{stderr}"
    );
    // Root still can.
    assert!(n.shoal_ok(&["service", "ls"]).contains("web"));
}

#[test]
fn an_install_with_readable_files_is_made_private_at_start() {
    if !require_root("an_install_with_readable_files_is_made_private_at_start") {
        return;
    }
    let mut cluster = Cluster::single("hostfix");
    let n = &mut cluster.node;
    n.stop();
    let root = n.data_root();
    for dir in [root.clone(), root.join("store"), root.join("certificates")] {
        chmod(&dir, 0o755);
    }
    for file in ["node.json", "store/state.redb", "certificates/node.key"] {
        chmod(&root.join(file), 0o644);
    }
    std::fs::write(root.join("left-over.txt"), b"from an older version").unwrap();
    chmod(&root.join("left-over.txt"), 0o644);
    n.start_again();
    assert_private(&root);
    let log = n.log();
    assert!(
        log.contains("data root: made 7 files and directories private"),
        "{log}"
    );
    n.shoal_ok(&["service", "ls"]);
}

/// shoald's (soft, hard) open file limits from `/proc/<pid>/limits`.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"));
    let mut figures = line["Max open files".len()..].split_whitespace();
    let mut next = || figures.next().unwrap().parse().unwrap();
    (next(), next())
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    if !require_root("the_open_file_limit_is_raised_to_the_hard_limit") {
        return;
    }
    let n = Node::start_under(
        "hostnofile",
        "node-1",
        &["prlimit", "--nofile=1024:8192"],
        &[],
    );
    assert_eq!(open_file_limits(n.pid().unwrap()), (8192, 8192));
    let log = n.log();
    let line = log
        .lines()
        .find(|l| l.contains("open file limit (RLIMIT_NOFILE) raised to the hard limit"))
        .unwrap_or_else(|| panic!("not logged: {log}"));
    assert!(line.contains("8192"), "{line}");
}

/// CPU time (user + system) of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Opens `n` connections to `addr` from inside network namespace `ns`
/// (on a thread that joins it; the sockets stay in it).
fn connect_many(ns: &str, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let netns = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on a namespace file we hold open; it moves only
        // this thread, which exits when done.
        let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        (0..n)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok())
            .collect()
    })
    .join()
    .unwrap()
}

#[test]
fn the_api_socket_answers_at_descriptor_exhaustion_and_shoald_does_not_spin() {
    if !require_root("the_api_socket_answers_at_descriptor_exhaustion_and_shoald_does_not_spin") {
        return;
    }
    let n = Node::start_under(
        "hostemfile",
        "node-1",
        &["prlimit", "--nofile=256:256"],
        &[],
    );
    let pid = n.pid().unwrap();
    assert_eq!(open_file_limits(pid), (256, 256));
    n.shoal_ok(&["swarm", "init"]);
    n.shoal_ok(&[
        "service",
        "create",
        "--name",
        "web",
        "-p",
        "8080:80",
        "shoal/echo",
    ]);
    n.wait_routed(8080, 1);

    let held = connect_many(&n.ns.name, "127.0.0.1:8080".parse().unwrap(), 300);
    assert!(held.len() >= 200, "only {} connections", held.len());
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    assert!(fds() >= 240, "not exhausted: {} descriptors", fds());

    // More CLI calls than descriptors held in reserve, each answered.
    for _ in 0..20 {
        let ls = n.shoal_ok(&["service", "ls"]);
        assert!(ls.contains("web"), "{ls}");
    }
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - before;
    // Clock ticks are 1/100 s: under 0.5 s of CPU in 2 s.
    assert!(
        spent < 50,
        "shoald used {spent} ticks of CPU in 2 s at exhaustion"
    );
    assert!(n.shoal_ok(&["service", "ls"]).contains("web"));

    drop(held);
    shoal_testkit::assert_eventually("the mesh answers again", Duration::from_secs(20), || {
        n.curl(8080).map(|_| ())
    });
    assert!(n.shoal_ok(&["service", "ls"]).contains("web"));
}
