//! Where `shoald` and `shoal` come from. `shoal-testkit` looks for them two
//! directories above the running executable (a test runs as
//! `target/<profile>/deps/<test>`), but the bench runs as
//! `target/<profile>/shoal-bench`. So the bench builds the two binaries
//! (when started by `cargo run`), then re-executes a copy of itself from
//! `<tmp>/bin/shoal-bench` beside symlinks `<tmp>/shoald` and `<tmp>/shoal`,
//! waits for it and removes the directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Set in the re-executed copy.
const REEXEC_ENV: &str = "SHOAL_BENCH_CONTROL_CHILD";

/// In the copy: `None`, go on. Otherwise the copy ran; its exit code.
pub fn reexec_for_testkit() -> anyhow::Result<Option<i32>> {
    if std::env::var_os(REEXEC_ENV).is_some() {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("find the running executable")?;
    let dir = exe
        .parent()
        .context("the executable has no directory")?
        .to_path_buf();
    build_daemon_and_cli(&dir)?;
    for name in ["shoald", "shoal"] {
        anyhow::ensure!(
            dir.join(name).exists(),
            "{} not found: run `cargo build --release --bins` first",
            dir.join(name).display()
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("shoal-bench-bin-")
        .tempdir()
        .context("create a directory for the binaries")?;
    for name in ["shoald", "shoal"] {
        std::os::unix::fs::symlink(dir.join(name), tmp.path().join(name))
            .with_context(|| format!("link {name}"))?;
    }
    let copy = tmp.path().join("bin").join("shoal-bench");
    std::fs::create_dir_all(copy.parent().expect("has a parent"))?;
    std::fs::copy(&exe, &copy).with_context(|| format!("copy {}", exe.display()))?;
    let mut child = Command::new(&copy)
        .args(std::env::args_os().skip(1))
        .env(REEXEC_ENV, "1")
        .spawn()
        .with_context(|| format!("run {}", copy.display()))?;
    forward_signals(child.id())?;
    let status = child.wait().context("wait for the bench")?;
    drop(tmp);
    Ok(Some(status.code().unwrap_or(130)))
}

/// `cargo build` of `shoald` and `shoal` in the profile of this executable,
/// when cargo started us (`CARGO` is set); otherwise they must exist.
fn build_daemon_and_cli(dir: &Path) -> anyhow::Result<()> {
    let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Ok(());
    };
    let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(PathBuf::from(manifest))
        .args(["build", "--quiet", "-p", "shoald", "-p", "shoal", "--bins"]);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    eprintln!("building shoald and shoal ({profile})");
    let status = cmd.status().context("run cargo build")?;
    anyhow::ensure!(status.success(), "cargo build of shoald and shoal failed");
    Ok(())
}

/// The copy gets Ctrl-C from the terminal itself; SIGTERM is passed on.
/// Either way this process stays to remove the directory.
fn forward_signals(child: u32) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the signal runtime")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {
                            let _ = kill(Pid::from_raw(child as i32), Signal::SIGTERM);
                        }
                    }
                }
            });
        })
        .context("spawn the signal thread")?;
    Ok(())
}
