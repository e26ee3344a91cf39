//! One `shoald` in its own network namespace, with its own data root and
//! socket, driven through the CLI. Killed (SIGKILL) and cleaned on drop.
//!
//! Failure injection, each simulating something a real node goes through:
//!
//! | call                 | signal / action          | simulates                                  |
//! |----------------------|--------------------------|--------------------------------------------|
//! | [`Node::stop`]       | SIGTERM, wait for exit   | an orderly shutdown (`systemctl stop`)     |
//! | [`Node::kill`]       | SIGKILL                  | a daemon crash / OOM kill; data survives   |
//! | [`Node::pause`]      | SIGSTOP                  | a hung daemon or a frozen VM               |
//! | [`Node::resume`]     | SIGCONT                  | the hang ending                            |
//! | [`Node::cut`]        | switch-side link down    | a pulled cable / network partition         |
//! | [`Node::heal`]       | switch-side link up      | the cable plugged back in                  |
//! | [`Node::start_again`]| spawn on the same data   | the daemon coming back after stop or kill  |
//! | [`Node::restart`]    | stop + start_again       | a daemon restart                           |

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::eventually::assert_eventually;
use crate::netns::NetNs;
use crate::underlay::{Port, Underlay};
use crate::{bin, text};

/// Metrics/admin port inside the node's namespace.
pub const ADMIN_PORT: u16 = 9323;

/// The swarm port: managers serve node-to-node traffic on `<ip>:2377`.
pub const SWARM_PORT: u16 = 2377;

/// One `shoald` and everything it owns. Field order is drop order after
/// [`Drop::drop`] has killed the processes: the namespace, then the data.
pub struct Node {
    /// The `--hostname` shown in `node ls`.
    pub name: String,
    /// The node's network namespace; deleted after the processes die.
    pub ns: NetNs,
    /// Data root, socket and log; removed last.
    pub dir: tempfile::TempDir,
    /// The node's underlay address (`eth0`), when attached to an [`Underlay`].
    pub ip: Option<Ipv4Addr>,
    /// The node's cable into the underlay switch, for [`Node::cut`].
    port: Option<Port>,
    /// Flags after the fixed ones, reused by [`Node::start_again`].
    args: Vec<String>,
    /// A command `shoald` runs under (e.g. `prlimit --nofile=256:256`), one
    /// that execs it so its pid stays shoald's; empty for none.
    wrapper: Vec<String>,
    /// The running daemon (`ip netns exec` execs it: same pid).
    child: Option<Child>,
    /// Whether the daemon is SIGSTOPped, so stop can SIGCONT it.
    paused: bool,
}

// === impl Node: start ===

impl Node {
    /// Starts `shoald` in a fresh namespace (no underlay, loopback only) and
    /// waits until its socket answers.
    pub fn start(test: &str, name: &str) -> Node {
        Node::start_with(test, name, None, None, &[])
    }

    /// Like [`Node::start`], but when `underlay` is given the namespace is
    /// plugged into it as `eth0` with `ip`, and `shoald` gets
    /// `--advertise-addr <ip> --listen-addr <ip>:2377`. `extra_args` follow
    /// the fixed flags; [`Node::start_again`] reuses all of them.
    ///
    /// Panics when only one of `underlay` and `ip` is given.
    pub fn start_with(
        test: &str,
        name: &str,
        underlay: Option<&Underlay>,
        ip: Option<Ipv4Addr>,
        extra_args: &[&str],
    ) -> Node {
        Node::start_full(test, name, underlay, ip, &[], extra_args)
    }

    /// Like [`Node::start`], but `shoald` runs under `wrapper`, a command
    /// that execs its arguments (so the pid stays shoald's), e.g.
    /// `["prlimit", "--nofile=256:256"]`; [`Node::start_again`] reuses it.
    pub fn start_under(test: &str, name: &str, wrapper: &[&str], extra_args: &[&str]) -> Node {
        Node::start_full(test, name, None, None, wrapper, extra_args)
    }

    fn start_full(
        test: &str,
        name: &str,
        underlay: Option<&Underlay>,
        ip: Option<Ipv4Addr>,
        wrapper: &[&str],
        extra_args: &[&str],
    ) -> Node {
        let ns = NetNs::new(test);
        let dir = tempfile::Builder::new()
            .prefix("shoal-e2e-")
            .tempdir()
            .expect("tempdir");
        let port = match (underlay, ip) {
            (Some(u), Some(ip)) => Some(u.attach(&ns, ip)),
            (None, None) => None,
            _ => panic!("Node::start_with({name}): give both an underlay and an ip, or neither"),
        };
        let mut args = Vec::new();
        if let Some(ip) = ip {
            args.extend([
                "--advertise-addr".to_string(),
                ip.to_string(),
                "--listen-addr".to_string(),
                format!("{ip}:{SWARM_PORT}"),
            ]);
        }
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let mut node = Node {
            name: name.into(),
            ns,
            dir,
            ip,
            port,
            args,
            wrapper: wrapper.iter().map(|a| a.to_string()).collect(),
            child: None,
            paused: false,
        };
        node.spawn();
        node
    }

    /// The daemon's API socket (`--host`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("shoal.sock")
    }

    /// `unix://<socket>`, what `shoal -H` takes.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// `--data-root`: store, identity, task logs; kept across restarts.
    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the daemon's stdout and stderr go (appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("shoald.log")
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let shoald = bin("shoald");
        let mut command = match self.wrapper.split_first() {
            None => self.ns.command(shoald.to_str().expect("utf-8 path")),
            Some((program, args)) => {
                let mut command = self.ns.command(program);
                command.args(args).arg(&shoald);
                command
            }
        };
        let child = command
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
            .args(&self.args)
            // SHOAL_TEST_LOG overrides the daemons' filter (e.g. "debug").
            .env(
                "SHOAL_LOG",
                std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn shoald");
        self.child = Some(child);
        self.paused = false;
        assert_eventually(
            "shoald answers on its socket",
            Duration::from_secs(20),
            || {
                let out = self.shoal(&["node", "ls"]);
                let (_, err) = text(&out);
                // Up, and past start-up (a restarted manager resumes its role).
                if err.contains("cannot connect") || err.contains("shoald is starting") {
                    Err(err)
                } else {
                    Ok(())
                }
            },
        );
    }

    /// The flags `shoald` runs with after the fixed ones (advertise/listen
    /// addresses, then the extra args).
    pub fn args(&self) -> &[String] {
        &self.args
    }
}

// === impl Node: CLI and probes ===

impl Node {
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

    /// `curl http://ip:port/` from inside this node's namespace, e.g. to
    /// another node's underlay address (5 s limit).
    pub fn curl_to(&self, ip: Ipv4Addr, port: u16) -> Result<String, String> {
        self.ns
            .curl_url(&format!("http://{ip}:{port}/"), Duration::from_secs(5))
    }

    /// `n` curls to `port`: how many replies each task gave (the first word
    /// of a `shoal/echo` reply is the task's name). The first failure ends it.
    pub fn distribution(
        &self,
        port: u16,
        n: usize,
    ) -> Result<std::collections::BTreeMap<String, usize>, String> {
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..n {
            let body = self
                .curl(port)
                .map_err(|e| format!("curl #{i} on {}: {e}", self.name))?;
            let task = body.split_whitespace().next().unwrap_or("").to_string();
            *seen.entry(task).or_default() += 1;
        }
        Ok(seen)
    }

    /// Running tasks of `svc` per node hostname, from `service ps` (history
    /// rows left out).
    pub fn running_per_node(&self, svc: &str) -> BTreeMap<String, usize> {
        let ps = self.shoal_ok(&["service", "ps", "-f", "desired-state=running", svc]);
        let mut per = BTreeMap::new();
        for line in ps.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if line.contains("Running") && cols.len() > 3 && !line.contains(r"\_") {
                *per.entry(cols[3].to_string()).or_default() += 1;
            }
        }
        per
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
}

// === impl Node: failure injection ===

impl Node {
    /// An orderly shutdown: SIGTERM (and SIGCONT if paused, so the signal is
    /// acted on), then waits up to 30 s for exit. No-op when not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The child is `ip netns exec`, which execs shoald: same pid.
            signal(&child, libc::SIGTERM);
            if self.paused {
                signal(&child, libc::SIGCONT);
                self.paused = false;
            }
            let status = wait_timeout(&mut child, Duration::from_secs(30));
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("shoald did not exit within 30s of SIGTERM\n{}", self.log());
            }
        }
    }

    /// A crash: SIGKILL, and reap. The namespace, address and data root stay,
    /// so [`Node::start_again`] brings the same node back. Its tasks die with
    /// it (they have PDEATHSIG set). No-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.paused = false;
        }
    }

    /// A hung daemon (or frozen VM): SIGSTOP. It answers nothing (not even
    /// its socket) until [`Node::resume`]; its task processes keep running.
    /// The CLI against a paused node blocks, so address it through another
    /// node meanwhile.
    pub fn pause(&mut self) {
        let child = self.child.as_ref().expect("pause: shoald is not running");
        signal(child, libc::SIGSTOP);
        self.paused = true;
    }

    /// Ends a [`Node::pause`]: SIGCONT.
    pub fn resume(&mut self) {
        let child = self.child.as_ref().expect("resume: shoald is not running");
        signal(child, libc::SIGCONT);
        self.paused = false;
    }

    /// Whether the daemon is SIGSTOPped by [`Node::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// A network partition: pulls the node's cable out of the underlay
    /// switch (see [`Port::cut`]). The daemon keeps running and its socket
    /// still answers the CLI. Panics when the node has no underlay.
    pub fn cut(&self) {
        self.underlay_port("cut").cut();
    }

    /// Ends a [`Node::cut`]: the cable goes back in.
    pub fn heal(&self) {
        self.underlay_port("heal").heal();
    }

    fn underlay_port(&self, op: &str) -> &Port {
        self.port
            .as_ref()
            .unwrap_or_else(|| panic!("{op} {}: node has no underlay", self.name))
    }

    /// Brings a stopped or killed daemon back on the same data root, with
    /// the same flags, and waits until its socket answers. Panics when the
    /// daemon is still running (use [`Node::restart`]).
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again {}: shoald is still running",
            self.name
        );
        self.spawn();
    }

    /// An orderly restart: [`Node::stop`] then [`Node::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Whether a daemon started by this harness is running (or paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Pid of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("pid fits in i32");
    // SAFETY: kill(2) on a child we have not reaped (so the pid is still
    // ours); no memory is involved.
    unsafe { libc::kill(pid, sig) };
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

// === impl Node: cleanup ===

/// Kills the processes; the fields then drop in order: the namespace (which
/// takes `eth0` and its veth peer with it), then the data directory.
impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL works on a SIGSTOPped process too.
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

#[cfg(test)]
mod tests;
