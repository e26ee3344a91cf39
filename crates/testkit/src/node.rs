//! One `shoald` in its own network namespace, with its own data root and
//! socket, driven through the CLI. Stopped (SIGKILL) and cleaned on drop.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::eventually::assert_eventually;
use crate::netns::NetNs;
use crate::{bin, text};

/// Metrics/admin port inside the node's namespace.
pub const ADMIN_PORT: u16 = 9323;

pub struct Node {
    pub name: String,
    pub ns: NetNs,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    /// Starts `shoald` in a fresh namespace and waits until its socket answers.
    pub fn start(test: &str, name: &str) -> Node {
        let ns = NetNs::new(test);
        let dir = tempfile::Builder::new()
            .prefix("shoal-e2e-")
            .tempdir()
            .expect("tempdir");
        let mut node = Node {
            name: name.into(),
            ns,
            dir,
            child: None,
        };
        node.spawn(&[]);
        node
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("shoal.sock")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("shoald.log")
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self, extra: &[&str]) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = self
            .ns
            .command(bin("shoald").to_str().expect("utf-8 path"))
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--host")
            .arg(self.host())
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{ADMIN_PORT}"),
                "--hostname",
                &self.name,
            ])
            .args(["--shutdown-grace", "2s"])
            .args(extra)
            .env("SHOAL_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn shoald");
        self.child = Some(child);
        assert_eventually(
            "shoald answers on its socket",
            Duration::from_secs(20),
            || {
                let out = self.shoal(&["node", "ls"]);
                let (_, err) = text(&out);
                if err.contains("cannot connect") {
                    Err(err)
                } else {
                    Ok(())
                }
            },
        );
    }

    /// Runs `shoal -H <socket> args...` and returns its output.
    pub fn shoal(&self, args: &[&str]) -> Output {
        Command::new(bin("shoal"))
            .arg("-H")
            .arg(self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    /// Runs the CLI and returns stdout, panicking (with the daemon log) on failure.
    pub fn shoal_ok(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "shoal {args:?} failed: {stderr}\nstdout: {stdout}\n--- shoald log ---\n{}",
            self.log()
        );
        stdout
    }

    /// Runs the CLI expecting failure; returns stderr.
    pub fn shoal_err(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        let (stdout, stderr) = text(&out);
        assert!(
            !out.status.success(),
            "shoal {args:?} should fail but printed: {stdout}"
        );
        stderr
    }

    /// `curl 127.0.0.1:port` inside the node's namespace.
    pub fn curl(&self, port: u16) -> Result<String, String> {
        self.ns.curl(port, "/")
    }

    /// The node's `/routes` JSON.
    pub fn routes(&self) -> serde_json::Value {
        let body = self
            .ns
            .curl(ADMIN_PORT, "/routes")
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&body).expect("routes json")
    }

    /// Number of non-draining endpoints the mesh routes to for `port`.
    pub fn routed_endpoints(&self, port: u16) -> usize {
        let routes = self.routes();
        routes["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                s["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["published"] == port)
            })
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["draining"] == false)
            .count()
    }

    /// Waits until the mesh routes `port` to exactly `n` endpoints.
    pub fn wait_routed(&self, port: u16, n: usize) {
        assert_eventually(
            &format!("port {port} routed to {n} endpoints"),
            Duration::from_secs(30),
            || match self.routed_endpoints(port) {
                got if got == n => Ok(()),
                got => Err(format!("{got} endpoints")),
            },
        );
    }

    /// Prometheus text from the node's metrics address.
    pub fn metrics(&self) -> String {
        self.ns
            .curl(ADMIN_PORT, "/metrics")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGTERM and wait for exit (bounded).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The child is `ip netns exec`, which execs shoald: same pid.
            // SAFETY: kill(2) on a pid we own; no memory is involved.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = wait_timeout(&mut child, Duration::from_secs(30));
            assert!(
                status.is_some(),
                "shoald did not exit within 30s of SIGTERM\n{}",
                self.log()
            );
        }
    }

    /// Starts the daemon again on the same data root.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(&[]);
    }

    /// Pid of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

fn wait_timeout(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Task processes die with shoald (PDEATHSIG); kill stragglers that
        // still live in this node's data root, to be sure.
        let root = self.data_root();
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(root.to_string_lossy().as_ref())
            .output();
    }
}

/// Runs a command, returning its output (helper for tests that run tools).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}
