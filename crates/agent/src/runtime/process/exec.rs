//! Launching and stopping a task's process: what to execute
//! ([`ProcessPlan`]), spawning it in its own process group, network namespace
//! and cgroup, asking it to stop ([`StopPolicy`]) and reading how it ended
//! ([`ExitOutcome`]).

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use shoal_api::pb::{PortBinding, Task, TaskState};
use tokio::process::{Child, Command};

use crate::runtime::cgroup;

/// What to execute for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<PathBuf>,
    pub ports: Vec<PortBinding>,
}

/// How the process ended, as the task status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitOutcome {
    pub state: TaskState,
    pub exit_code: i32,
    /// Empty on success.
    pub err: String,
}

/// Maps a wait status to COMPLETE or FAILED with Docker's error text;
/// a signal N counts as exit code 128+N.
pub fn exit_outcome(status: ExitStatus) -> ExitOutcome {
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    };
    if code == 0 {
        ExitOutcome {
            state: TaskState::Complete,
            exit_code: 0,
            err: String::new(),
        }
    } else {
        ExitOutcome {
            state: TaskState::Failed,
            exit_code: code,
            err: format!("task: non-zero exit ({code})"),
        }
    }
}

/// Sends `sig` to the process group `pid` leads (none for pid 0).
pub(crate) fn signal_group(pid: u32, sig: Signal) {
    if pid > 0 {
        let _ = killpg(Pid::from_raw(pid as i32), sig);
    }
}

/// How a task is asked to stop: its `--stop-signal` (SIGTERM by default) to
/// the process group, then SIGKILL after its `--stop-grace-period`.
#[derive(Clone, Copy, Debug)]
pub struct StopPolicy {
    pub signal: Signal,
    pub grace: Duration,
}

impl StopPolicy {
    /// The task's own settings, the node's grace period as the default.
    pub fn for_task(task: &Task, default_grace: Duration) -> StopPolicy {
        let spec = task.spec.clone().unwrap_or_default();
        StopPolicy {
            signal: parse_signal(&spec.stop_signal).unwrap_or(Signal::SIGTERM),
            grace: match spec.stop_grace_period_ms {
                0 => default_grace,
                ms => Duration::from_millis(ms),
            },
        }
    }
}

/// `SIGTERM`, `TERM`, `sigint` or a number, as Docker accepts them.
pub fn parse_signal(name: &str) -> Option<Signal> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>().ok()
}

/// Asks `child` to stop with `stop.signal` to its process group, then
/// SIGKILL after `stop.grace`; its exit status, if it could be read.
pub(crate) async fn terminate(child: &mut Child, pid: u32, stop: StopPolicy) -> Option<ExitStatus> {
    let grace = stop.grace;
    signal_group(pid, stop.signal);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(r) => r.ok(),
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}

/// Why the task cannot start in `dir` (`--workdir`), naming the field; `None`
/// when it is a directory. Without this check the failed `chdir` before exec
/// reads as if the program were missing (`start sleep: No such file or directory`).
pub fn workdir_error(dir: &Path) -> Option<String> {
    let why = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return None,
        Ok(_) => "not a directory".to_string(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => "no such directory".to_string(),
        Err(e) => e.to_string(),
    };
    Some(format!("task: workdir {}: {why}", dir.display()))
}

/// Spawns the process in its own session (process group), dying with
/// shoald, inside the netns `netns_fd` if given and the cgroup behind
/// `cgroup_fds` (see [`cgroup::join_current`]).
pub(crate) fn spawn(
    plan: &ProcessPlan,
    netns_fd: Option<std::os::fd::RawFd>,
    cgroup_fds: &[std::os::fd::RawFd],
) -> io::Result<Child> {
    spawn_with(plan, netns_fd, cgroup_fds, true)
}

/// Starts `plan` in its own process group (and netns, and cgroup), dying
/// with shoald; with `capture`, stdout and stderr are piped (tasks), else
/// discarded (probes).
pub(crate) fn spawn_with(
    plan: &ProcessPlan,
    netns_fd: Option<std::os::fd::RawFd>,
    cgroup_fds: &[std::os::fd::RawFd],
    capture: bool,
) -> io::Result<Child> {
    let output = || {
        if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    let mut cmd = Command::new(&plan.program);
    cmd.args(&plan.args)
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(output())
        .stderr(output())
        .kill_on_drop(false);
    if let Some(dir) = &plan.workdir {
        cmd.current_dir(dir);
    }
    let cgroup_fds = cgroup_fds.to_vec();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (write, setns, setsid, prctl, umask); it
    // allocates nothing (the fd list was made before the fork) and touches
    // no locks.
    unsafe {
        cmd.pre_exec(move || {
            // The cgroup first, so that nothing of the task runs outside it.
            cgroup::join_current(&cgroup_fds)?;
            if let Some(fd) = netns_fd {
                crate::netns::enter(fd)?;
            }
            // shoald runs with umask 077; a task gets Docker's 022.
            libc::umask(0o022);
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
