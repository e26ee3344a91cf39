//! Child processes that are always stopped by PID: when their [`Procs`] guard is
//! dropped (also while unwinding from a panic) and on Ctrl-C / SIGTERM.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procfs;

/// PIDs of every running child, for the signal handler (which cannot reach the guards).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// How long a child has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One started child process and where its output goes.
pub struct Proc {
    pub name: String,
    child: Child,
    /// stdout and stderr of the child, shown when it fails to start.
    pub log: PathBuf,
}

/// Owns started processes; stops them all, newest first, when dropped.
#[derive(Default)]
pub struct Procs {
    procs: Vec<Proc>,
}

// === impl Proc ===

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has already exited (it should not have).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the child's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM to the process, SIGKILL to it and its descendants after the grace period.
    fn stop(&mut self) {
        let pid = self.child.id();
        let tree = procfs::tree(pid);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("{} (pid {pid}) ignored SIGTERM; killing", self.name);
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Workers of a master that died abruptly would be orphaned.
        for p in tree.into_iter().filter(|&p| p != pid) {
            if procfs::alive(p) {
                let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
            }
        }
        unregister(pid);
    }
}

// === impl Procs ===

impl Procs {
    /// Starts `cmd` with its output in `log_dir/<name>.log`.
    pub fn spawn(
        &mut self,
        name: &str,
        mut cmd: Command,
        log_dir: &Path,
    ) -> anyhow::Result<&mut Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        register(child.id());
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            log,
        });
        Ok(self.procs.last_mut().expect("just pushed"))
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.pid() == pid)
    }

    /// Stops one process by PID now.
    pub fn stop(&mut self, pid: u32) {
        if let Some(i) = self.procs.iter().position(|p| p.pid() == pid) {
            let mut p = self.procs.remove(i);
            p.stop();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            p.stop();
        }
    }
}

fn register(pid: u32) {
    RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(pid);
}

fn unregister(pid: u32) {
    RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|&p| p != pid);
}

/// On SIGINT or SIGTERM, stops every registered child (and its descendants)
/// by PID, then exits with status 130.
pub fn stop_children_on_signal() -> anyhow::Result<()> {
    on_termination(|| {
        let pids = RUNNING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        eprintln!("interrupted: stopping {} child processes", pids.len());
        let trees: Vec<_> = pids.iter().flat_map(|&p| procfs::tree(p)).collect();
        for &p in &pids {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && trees.iter().any(|&p| procfs::alive(p)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in trees {
            if procfs::alive(p) {
                let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
            }
        }
    })
}

/// Runs `stop` on a thread of its own once SIGINT or SIGTERM arrives, then
/// exits with status 130.
pub fn on_termination(stop: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the signal runtime")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            });
            stop();
            std::process::exit(130);
        })
        .context("spawn the signal thread")?;
    Ok(())
}
