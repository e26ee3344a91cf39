//! Everything the control bench started, for Ctrl-C / SIGTERM: the guards
//! (`MultiCluster`, `NetNs`) clean up on drop, but a signal does not unwind
//! the main thread, so the handler kills the registered `shoald` PIDs and
//! deletes the registered namespaces and directories itself, then exits 130.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_testkit::MultiCluster;

#[derive(Default)]
struct Registry {
    pids: Vec<u32>,
    netns: Vec<String>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    netns: Vec::new(),
    dirs: Vec::new(),
});

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(&mut REGISTRY.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Registers a cluster's daemons, namespaces and data directories.
pub fn register_cluster(c: &MultiCluster) {
    with(|r| {
        r.netns.push(c.underlay.ns.name.clone());
        for n in &c.nodes {
            r.pids.extend(n.pid());
            r.netns.push(n.ns.name.clone());
            r.dirs.push(n.dir.path().to_path_buf());
        }
    });
}

/// Registers one more namespace (the simulated agents').
pub fn register_netns(name: &str) {
    with(|r| r.netns.push(name.to_string()));
}

/// Forgets everything registered (the guards have cleaned up).
pub fn clear() {
    with(|r| *r = Registry::default());
}

/// On SIGINT or SIGTERM: SIGKILL the daemons (their tasks die with them),
/// delete the namespaces and directories, exit 130.
pub fn on_signal() -> anyhow::Result<()> {
    crate::procs::on_termination(|| {
        let r = std::mem::take(&mut *REGISTRY.lock().unwrap_or_else(PoisonError::into_inner));
        eprintln!(
            "interrupted: stopping {} shoald, deleting {} namespaces",
            r.pids.len(),
            r.netns.len()
        );
        for pid in &r.pids {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        for ns in r.netns.iter().rev() {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
        for dir in &r.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    })
}
