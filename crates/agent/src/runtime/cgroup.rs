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
//! The parsing and formatting are sans-IO and unit tested (`limits`: the
//! values; `layout`: where the groups go); the filesystem work is here, in
//! [`Cgroups`] and [`TaskCgroup`].

mod layout;
mod limits;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

pub use layout::{
    choose_layout, own_group, parse_mountinfo, private_mounts, CgroupMount, Layout, GROUP_DIR,
};
use limits::optional;
pub use limits::{
    cfs_quota_us, oom_kills, v1_settings, v2_settings, Controller, Limits, CFS_PERIOD_US,
    MIN_CFS_QUOTA_US, MIN_MEMORY_BYTES,
};

/// How long removing a group waits for its killed processes to go.
const REMOVE_WITHIN: Duration = Duration::from_secs(2);

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
    /// the `shoal` parents once empty). Blocking: up to `REMOVE_WITHIN` (2 s).
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
