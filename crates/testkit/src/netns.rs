//! Named network namespaces for tests, made and removed with `ip netns`.

use std::process::{Command, Output};
use std::time::Duration;

/// A network namespace that is deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates `shoalt-<tag>-<pid>-<n>` with loopback up.
    pub fn new(tag: &str) -> NetNs {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        let name = format!(
            "shoalt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// `curl -s` to `127.0.0.1:port` from inside the namespace.
    pub fn curl(&self, port: u16, path: &str) -> Result<String, String> {
        self.curl_url(
            &format!("http://127.0.0.1:{port}{path}"),
            Duration::from_secs(5),
        )
    }

    /// `curl -s url` from inside the namespace, giving up after `within`
    /// (connecting included). The body on success, curl's error otherwise.
    pub fn curl_url(&self, url: &str, within: Duration) -> Result<String, String> {
        let secs = format!("{:.3}", within.as_secs_f64());
        let out = self
            .command("curl")
            .args(["-s", "-S", "--connect-timeout", &secs, "-m", &secs, url])
            .output()
            .map_err(|e| format!("run curl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "curl {url} in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs `ip -n <this namespace> args...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a program to completion, panicking with its stderr on failure.
pub(crate) fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
