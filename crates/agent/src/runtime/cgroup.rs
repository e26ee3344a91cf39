//! Resource limits of task processes (`--limit-cpu`, `--limit-memory`),
//! enforced with cgroups.
//!
//! A task with a limit gets a group of its own, `shoal/<task id>`, created
//! before its process starts; the process joins it in the forked child
//! before `exec` (it writes `0` to the group's `cgroup.procs`), so no code of
//! the task ever runs outside it. The group is removed when the task ends,
//! and a restarted agent removes the groups its node's previous run left.
//!
//! Which cgroups are used is decided once, when the runner starts
//! ([`Cgroups::detect`]):
//! - cgroup v2 with the `cpu` and `memory` controllers: `cpu.max`,
//!   `memory.max` and `memory.swap.max` of `<v2 root>/shoal/<task id>` (the
//!   controllers are enabled in `cgroup.subtree_control` on the way down; v2
//!   forbids processes in inner groups, so the groups hang off the root, as
//!   with Docker's cgroupfs driver);
//! - else cgroup v1: `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`
//!   when swap accounting is on) and `cpu.cfs_quota_us` / `cpu.cfs_period_us`
//!   in `<hierarchy>/<shoald's own group>/shoal/<task id>`, plus the `cpuacct`
//!   hierarchy for accounting;
//! - else none: limits are logged once as not enforced.
//!
//! A mount namespace without cgroup filesystems (`ip netns exec` remounts
//! `/sys`, which takes `/sys/fs/cgroup` away) gets the hierarchies shoald
//! itself is in mounted under `<data root>/cgroup/`, in that namespace.
//!
//! The values are Docker's: a CFS period of 100 ms and a quota of
//! `NanoCPUs * period / 1e9` (at least the kernel's 1 ms); memory in bytes,
//! with no swap on top (a task is OOM-killed at its limit).
//!
//! The parsing and formatting below are sans-IO and unit tested; the
//! filesystem work is in [`Cgroups`] and [`TaskCgroup`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_api::pb::Task;
use thiserror::Error;

/// Docker's smallest `--limit-memory` ("Minimum memory limit allowed is 6MB").
pub const MIN_MEMORY_BYTES: i64 = 6 * 1024 * 1024;
/// Docker's CFS period for `--cpus` / NanoCPUs, in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;
/// The kernel refuses CFS quotas below 1 ms.
pub const MIN_CFS_QUOTA_US: u64 = 1_000;
/// The directory every task group lives in.
pub const GROUP_DIR: &str = "shoal";

/// How long removing a group waits for its killed processes to go.
const REMOVE_WITHIN: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests;

/// A task's limits, as the spec gives them (0 = none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPUs in units of 1e-9 (Docker's NanoCPUs).
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

impl Limits {
    /// The limits in the task's spec.
    pub fn of(task: &Task) -> Limits {
        let r = task
            .spec
            .as_ref()
            .and_then(|s| s.resources)
            .unwrap_or_default();
        Limits {
            nano_cpus: r.limit_nano_cpus.max(0),
            memory_bytes: r.limit_memory_bytes.max(0),
        }
    }

    /// No limit at all: the task needs no group.
    pub fn is_none(&self) -> bool {
        self.nano_cpus <= 0 && self.memory_bytes <= 0
    }
}

// === sans-IO: values ===

/// The CFS quota for `nano_cpus` over `period_us` (`None`: no CPU limit).
pub fn cfs_quota_us(nano_cpus: i64, period_us: u64) -> Option<u64> {
    if nano_cpus <= 0 {
        return None;
    }
    let quota = (nano_cpus as u128 * period_us as u128 / 1_000_000_000) as u64;
    Some(quota.max(MIN_CFS_QUOTA_US))
}

/// The v1 hierarchies a task group may live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Cpu,
}

/// What a v1 group's files get, in write order (the memory limit before the
/// memory+swap one, which must not be lower).
pub fn v1_settings(limits: Limits) -> Vec<(Controller, &'static str, String)> {
    let mut out = Vec::new();
    if let Some(quota) = cfs_quota_us(limits.nano_cpus, CFS_PERIOD_US) {
        out.push((
            Controller::Cpu,
            "cpu.cfs_period_us",
            CFS_PERIOD_US.to_string(),
        ));
        out.push((Controller::Cpu, "cpu.cfs_quota_us", quota.to_string()));
    }
    if limits.memory_bytes > 0 {
        let bytes = limits.memory_bytes.to_string();
        out.push((Controller::Memory, "memory.limit_in_bytes", bytes.clone()));
        out.push((Controller::Memory, "memory.memsw.limit_in_bytes", bytes));
    }
    out
}

/// What a v2 group's files get.
pub fn v2_settings(limits: Limits) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(quota) = cfs_quota_us(limits.nano_cpus, CFS_PERIOD_US) {
        out.push(("cpu.max", format!("{quota} {CFS_PERIOD_US}")));
    }
    if limits.memory_bytes > 0 {
        out.push(("memory.max", limits.memory_bytes.to_string()));
        out.push(("memory.swap.max", "0".to_string()));
    }
    out
}

/// Files that may be missing without the limit being lost (swap accounting
/// off, no swap controller).
fn optional(file: &str) -> bool {
    matches!(file, "memory.memsw.limit_in_bytes" | "memory.swap.max")
}

// === sans-IO: where the groups go ===

/// A cgroup filesystem from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub path: PathBuf,
    /// The group shown at `path` (`/` unless the mount is of a subtree).
    pub root: String,
    /// cgroup2 (unified) rather than a v1 hierarchy.
    pub v2: bool,
    /// v1: the controllers of the hierarchy (from the super options).
    pub controllers: Vec<String>,
}

/// The cgroup mounts in a `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        let (Some(root), Some(path), Some(fstype)) = (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        let v2 = match *fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            right
                .get(2)
                .map(|opts| {
                    opts.split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        out.push(CgroupMount {
            path: PathBuf::from(unescape_octal(path)),
            root: unescape_octal(root),
            v2,
            controllers,
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's group in a hierarchy, from `/proc/self/cgroup`: the v2
/// line (`0::/path`) when `controller` is `None`, else the v1 line that
/// lists it.
pub fn own_group(self_cgroup: &str, controller: Option<&str>) -> Option<String> {
    self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            None => id == "0" && ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_string())
    })
}

/// Where the task groups of this node go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2 with cpu and memory: `<dir>/<task id>`.
    V2 { dir: PathBuf },
    /// cgroup v1: `<dir>/<task id>` in each hierarchy found.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        /// Accounting only (`cpuacct.usage`).
        cpuacct: Option<PathBuf>,
    },
    /// Limits cannot be enforced, and why.
    Unavailable { reason: String },
}

/// Picks the layout: v2 when its root offers both `cpu` and `memory`
/// (`v2_root_controllers` is the root's `cgroup.controllers`), else the v1
/// `memory` / `cpu` hierarchies, under this process's own group there.
pub fn choose_layout(
    mounts: &[CgroupMount],
    self_cgroup: &str,
    v2_root_controllers: Option<&str>,
) -> Layout {
    if let (Some(v2), Some(ctrls)) = (mounts.iter().find(|m| m.v2), v2_root_controllers) {
        let has = |c: &str| ctrls.split_whitespace().any(|x| x == c);
        if has("cpu") && has("memory") {
            return Layout::V2 {
                dir: v2.path.join(GROUP_DIR),
            };
        }
    }
    let v1 = |controller: &str| -> Option<PathBuf> {
        let m = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))?;
        let own = own_group(self_cgroup, Some(controller)).unwrap_or_else(|| "/".into());
        // A mount of a subtree shows `root` at its mount point.
        let rel = own
            .strip_prefix(m.root.trim_end_matches('/'))
            .unwrap_or(&own)
            .trim_start_matches('/');
        Some(m.path.join(rel).join(GROUP_DIR))
    };
    let (memory, cpu) = (v1("memory"), v1("cpu"));
    if memory.is_none() && cpu.is_none() {
        let reason = if mounts.iter().any(|m| m.v2) {
            "cgroup v2 has no cpu and memory controllers and no cgroup v1 memory or cpu hierarchy is mounted"
        } else {
            "no cgroup filesystem is mounted"
        };
        return Layout::Unavailable {
            reason: reason.into(),
        };
    }
    // cpu and cpuacct are often one hierarchy ("cpu,cpuacct").
    let cpuacct = v1("cpuacct").filter(|a| Some(a) != cpu.as_ref());
    Layout::V1 {
        memory,
        cpu,
        cpuacct,
    }
}

// === IO ===

/// A cgroup file could not be written or a group not made.
#[derive(Debug, Error)]
#[error("cgroup {action} {path}: {source}")]
pub struct CgroupError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// This node's task groups. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
}

impl Cgroups {
    /// Looks at this machine's cgroups (needs root to write them). When
    /// none is mounted here, mounts shoald's own hierarchies under
    /// `private_root` first.
    pub fn detect(private_root: &Path) -> Cgroups {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Cgroups::unavailable("shoald is not running as root");
        }
        let read_mounts =
            || parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        let self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut mounts = read_mounts();
        if mounts.is_empty() && !self_cgroup.trim().is_empty() {
            mount_private(private_root, &self_cgroup);
            mounts = read_mounts();
        }
        let v2_controllers = mounts
            .iter()
            .find(|m| m.v2)
            .and_then(|m| fs::read_to_string(m.path.join("cgroup.controllers")).ok());
        Cgroups {
            layout: choose_layout(&mounts, &self_cgroup, v2_controllers.as_deref()),
        }
    }

    /// No enforcement, for `reason`.
    pub fn unavailable(reason: &str) -> Cgroups {
        Cgroups {
            layout: Layout::Unavailable {
                reason: reason.into(),
            },
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The directories that hold task groups.
    fn parents(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V2 { dir } => vec![dir.as_path()],
            Layout::V1 {
                memory,
                cpu,
                cpuacct,
            } => [memory, cpu, cpuacct]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path)
                .collect(),
            Layout::Unavailable { .. } => Vec::new(),
        }
    }

    /// Makes the group of a task with `limits` and writes them. `Ok(None)`
    /// when there is nothing to limit or no cgroups to do it with.
    pub fn create(&self, task_id: &str, limits: Limits) -> Result<Option<TaskCgroup>, CgroupError> {
        if limits.is_none() {
            return Ok(None);
        }
        let mut group = TaskCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        // On error the dropped group is not removed: remove it here.
        let made = match &self.layout {
            Layout::Unavailable { .. } => return Ok(None),
            Layout::V2 { dir } => create_v2(dir, task_id, limits, &mut group),
            Layout::V1 {
                memory,
                cpu,
                cpuacct,
            } => create_v1(
                [
                    (Some(Controller::Memory), memory),
                    (Some(Controller::Cpu), cpu),
                    (None, cpuacct),
                ],
                task_id,
                limits,
                &mut group,
            ),
        };
        match made {
            Ok(()) => Ok(Some(group)),
            Err(e) => {
                group.remove();
                Err(e)
            }
        }
    }

    /// Removes the groups a previous run left for tasks `ran_here` says
    /// belonged to this node (killing what is left in them). Returns how
    /// many went.
    pub fn remove_stale(&self, ran_here: impl Fn(&str) -> bool) -> usize {
        let mut stale: Vec<PathBuf> = Vec::new();
        for parent in self.parents() {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && ran_here(&name) {
                    stale.push(e.path());
                }
            }
        }
        let n = stale.len();
        TaskCgroup {
            dirs: stale,
            procs: Vec::new(),
        }
        .remove();
        n
    }
}

/// The hierarchies to mount where none is: `(directory name, fstype,
/// options)` for cgroup2 and the v1 hierarchies holding memory, cpu or
/// cpuacct, from `/proc/self/cgroup`.
pub fn private_mounts(self_cgroup: &str) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls)) = (parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            out.push(("unified".to_string(), "cgroup2", String::new()));
        } else if ctrls
            .split(',')
            .any(|c| matches!(c, "memory" | "cpu" | "cpuacct"))
        {
            out.push((ctrls.to_string(), "cgroup", ctrls.to_string()));
        }
    }
    out
}

/// Mounts [`private_mounts`] under `root`; failures leave a hierarchy out.
fn mount_private(root: &Path, self_cgroup: &str) {
    for (name, fstype, options) in private_mounts(self_cgroup) {
        let dir = root.join(&name);
        let mounted = fs::create_dir_all(&dir).and_then(|()| {
            nix::mount::mount(
                Some(fstype),
                &dir,
                Some(fstype),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                (!options.is_empty()).then_some(options.as_str()),
            )
            .map_err(io::Error::from)
        });
        match mounted {
            Ok(()) => {
                tracing::info!(hierarchy = %name, at = %dir.display(), "mounted a cgroup hierarchy for task limits")
            }
            Err(e) => {
                tracing::debug!(hierarchy = %name, error = %e, "could not mount a cgroup hierarchy")
            }
        }
    }
}

fn create_v2(
    parent: &Path,
    task_id: &str,
    limits: Limits,
    group: &mut TaskCgroup,
) -> Result<(), CgroupError> {
    let root = parent.parent().unwrap_or(parent);
    enable_controllers(root)?;
    make_dir(parent)?;
    enable_controllers(parent)?;
    let dir = parent.join(task_id);
    make_dir(&dir)?;
    group.dirs.push(dir.clone());
    for (file, value) in v2_settings(limits) {
        write_setting(&dir, file, &value)?;
    }
    group.open_procs(&dir)
}

fn create_v1(
    hierarchies: [(Option<Controller>, &Option<PathBuf>); 3],
    task_id: &str,
    limits: Limits,
    group: &mut TaskCgroup,
) -> Result<(), CgroupError> {
    let settings = v1_settings(limits);
    for (controller, parent) in hierarchies {
        let Some(parent) = parent else { continue };
        let dir = parent.join(task_id);
        make_dir(parent)?;
        make_dir(&dir)?;
        group.dirs.push(dir.clone());
        for (_, file, value) in settings.iter().filter(|(c, _, _)| Some(*c) == controller) {
            write_setting(&dir, file, value)?;
        }
        group.open_procs(&dir)?;
    }
    Ok(())
}

/// `+cpu +memory` in `dir`'s `cgroup.subtree_control`, unless there already.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&path).unwrap_or_default();
    let missing: Vec<String> = ["cpu", "memory"]
        .into_iter()
        .filter(|c| !current.split_whitespace().any(|x| x == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::write(&path, missing.join(" ")).map_err(err("enable controllers in", &path))
}

/// `mkdir -p`; a concurrent removal of the (empty) parent is retried.
fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    let mut last = None;
    for _ in 0..3 {
        match fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
            Err(e) => return Err(err("create", dir)(e)),
        }
    }
    Err(err("create", dir)(last.expect("a failed attempt")))
}

fn write_setting(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    match fs::write(&path, value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && optional(file) => Ok(()),
        r => r.map_err(err("write", &path)),
    }
}

/// A task's group (one directory per hierarchy), alive until [`TaskCgroup::remove`].
#[derive(Debug)]
pub struct TaskCgroup {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each directory, open for the child to join.
    procs: Vec<File>,
}

impl TaskCgroup {
    fn open_procs(&mut self, dir: &Path) -> Result<(), CgroupError> {
        let path = dir.join("cgroup.procs");
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(err("open", &path))?;
        self.procs.push(f);
        Ok(())
    }

    /// The group's directories (one per hierarchy).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Descriptors the child writes to in [`join_current`] (they close on exec).
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Whether the kernel's OOM killer killed a process of the group.
    pub fn oom_killed(&self) -> bool {
        self.dirs.iter().any(|d| {
            let read = |f: &str| fs::read_to_string(d.join(f)).unwrap_or_default();
            // v1: memory.oom_control; v2: memory.events.
            [read("memory.oom_control"), read("memory.events")]
                .iter()
                .any(|text| oom_kills(text) > 0)
        })
    }

    /// Kills whatever is left in the group and removes its directories (and
    /// the `shoal` parents once empty). Blocking: up to [`REMOVE_WITHIN`].
    pub fn remove(self) {
        let TaskCgroup { dirs, procs } = self;
        drop(procs);
        for dir in &dirs {
            let deadline = std::time::Instant::now() + REMOVE_WITHIN;
            loop {
                kill_all(dir);
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if std::time::Instant::now() >= deadline => {
                        tracing::warn!(group = %dir.display(), error = %e, "could not remove a task cgroup");
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            // Fails while other tasks' groups are there, as it should.
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

/// SIGKILL to every process in the group.
fn kill_all(dir: &Path) {
    let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The `oom_kill N` count in a v1 `memory.oom_control` or v2 `memory.events`.
pub fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Moves the calling process into the groups behind `fds` (each an open
/// `cgroup.procs`; `0` means "the writer").
///
/// # Safety
/// Meant for a `pre_exec` hook: it only calls write(2), which is
/// async-signal-safe, and allocates nothing. Each fd must be open.
pub unsafe fn join_current(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: the buffer is a static byte string of length 1; the fd is
        // open (the caller's contract).
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
