//! An N-node swarm: one [`Node`] per namespace, all plugged into one
//! [`Underlay`], joined through the real CLI (`swarm init`, `join-token`,
//! `join`).

use std::time::Duration;

use crate::eventually::{assert_eventually, eventually};
use crate::node::{Node, SWARM_PORT};
use crate::text;
use crate::underlay::{node_ip, Underlay};

/// How long [`MultiCluster::new`] waits for every node to be `Ready`.
pub const JOIN_WITHIN: Duration = Duration::from_secs(60);

/// `managers + workers` nodes named `node-1`..`node-N`, with addresses
/// `192.168.100.11`.. (see [`node_ip`]). `node-1`..`node-<managers>` are
/// managers, the rest workers; `node-1` ran `swarm init`.
///
/// Indexes are 0-based everywhere: `nodes[0]` / `node(0)` is `node-1`.
/// Dropping the cluster kills every process and deletes every namespace,
/// nodes first, then the switch.
pub struct MultiCluster {
    /// The nodes, in join order. Declared first so that they drop before
    /// the switch (and [`Drop`] empties it explicitly, too).
    pub nodes: Vec<Node>,
    /// The switch every node's `eth0` is plugged into.
    pub underlay: Underlay,
}

impl MultiCluster {
    /// Starts and joins `managers + workers` nodes (node-1: `swarm init
    /// --advertise-addr <ip>`; the others: `swarm join --token <T>
    /// --advertise-addr <ip> <node-1 ip>:2377`, with the token from
    /// `swarm join-token -q worker|manager` on node-1), then waits (up to
    /// [`JOIN_WITHIN`]) until `node ls` on `node-1` lists every node `Ready`.
    pub fn new(test: &str, managers: usize, workers: usize) -> MultiCluster {
        MultiCluster::with_args(test, managers, workers, &[])
    }

    /// Like [`MultiCluster::new`], with `extra_args` passed to every `shoald`.
    pub fn with_args(
        test: &str,
        managers: usize,
        workers: usize,
        extra_args: &[&str],
    ) -> MultiCluster {
        MultiCluster::build(test, managers, workers, extra_args, &[])
    }

    /// Like [`MultiCluster::with_args`], with `init_args` added to `swarm
    /// init` (e.g. `--dispatcher-heartbeat 500ms` for fast failure detection).
    pub fn build(
        test: &str,
        managers: usize,
        workers: usize,
        extra_args: &[&str],
        init_args: &[&str],
    ) -> MultiCluster {
        assert!(managers >= 1, "a swarm needs at least one manager");
        let mut cluster = MultiCluster {
            nodes: Vec::new(),
            underlay: Underlay::new(),
        };
        for k in 1..=managers + workers {
            let node = Node::start_with(
                test,
                &format!("node-{k}"),
                Some(&cluster.underlay),
                Some(node_ip(k)),
                extra_args,
            );
            cluster.nodes.push(node);
        }

        let leader = &cluster.nodes[0];
        let leader_ip = leader.ip.expect("node-1 has an ip").to_string();
        let mut init = vec!["swarm", "init", "--advertise-addr", &leader_ip];
        init.extend_from_slice(init_args);
        leader.shoal_ok(&init);
        let remote = format!("{leader_ip}:{SWARM_PORT}");
        for (i, node) in cluster.nodes.iter().enumerate().skip(1) {
            let role = if i < managers { "manager" } else { "worker" };
            let token = leader.shoal_ok(&["swarm", "join-token", "-q", role]);
            let token = token.trim();
            assert!(!token.is_empty(), "empty {role} join token");
            let ip = node.ip.expect("every node has an ip").to_string();
            let out = node.shoal(&[
                "swarm",
                "join",
                "--token",
                token,
                "--advertise-addr",
                &ip,
                &remote,
            ]);
            let (stdout, stderr) = text(&out);
            assert!(
                out.status.success(),
                "{} failed to join as {role}: {stderr}\nstdout: {stdout}\n\
                 --- {} log ---\n{}\n--- node-1 log ---\n{}",
                node.name,
                node.name,
                node.log(),
                leader.log()
            );
        }
        cluster.wait_ready(0, JOIN_WITHIN);
        cluster
    }

    /// The node at `i` (0-based: `node(0)` is `node-1`).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The node at `i`, mutably (to stop, kill, pause or restart it).
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// `shoal node ls` run against the node at `via`.
    pub fn node_ls(&self, via: usize) -> String {
        self.nodes[via].shoal_ok(&["node", "ls"])
    }

    /// Waits until `node ls` via the node at `via` lists every node of the
    /// cluster `Ready`; panics with the last listing and the logs otherwise.
    pub fn wait_ready(&self, via: usize, within: Duration) {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        let r = eventually(within, || {
            let out = self.nodes[via].shoal(&["node", "ls"]);
            let (stdout, stderr) = text(&out);
            if !out.status.success() {
                return Err(format!("node ls failed: {stderr}"));
            }
            let states = node_states(&stdout);
            let missing: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !states.iter().any(|(h, s)| h == n && s == "Ready"))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not Ready: {missing:?}\n{stdout}"))
            }
        });
        if let Err(last) = r {
            let logs: String = self
                .nodes
                .iter()
                .map(|n| format!("--- {} log ---\n{}\n", n.name, n.log()))
                .collect();
            panic!("nodes not all Ready within {within:?}; last: {last}\n{logs}");
        }
    }

    /// Waits until `node ls` via `via` shows `name` with `status` (e.g.
    /// `"Down"` after a kill or a cut).
    pub fn wait_node_status(&self, via: usize, name: &str, status: &str, within: Duration) {
        assert_eventually(
            &format!("{name} is {status} (seen from {})", self.nodes[via].name),
            within,
            || {
                let out = self.nodes[via].shoal(&["node", "ls"]);
                let (stdout, stderr) = text(&out);
                if !out.status.success() {
                    return Err(format!("node ls failed: {stderr}"));
                }
                match node_states(&stdout).into_iter().find(|(h, _)| h == name) {
                    Some((_, s)) if s == status => Ok(()),
                    _ => Err(stdout),
                }
            },
        );
    }
}

impl Drop for MultiCluster {
    /// Nodes first (their processes, then their namespaces, which also
    /// removes their cables), the switch namespace last.
    fn drop(&mut self) {
        // A failed test shows what every daemon said (the tail, DEBUG left out).
        if std::thread::panicking() {
            // SHOAL_TEST_KEEP_LOGS=DIR keeps every daemon's whole log there.
            let keep = std::env::var_os("SHOAL_TEST_KEEP_LOGS").map(std::path::PathBuf::from);
            for (i, node) in self.nodes.iter().enumerate() {
                let log = node.log();
                if let Some(dir) = &keep {
                    let _ = std::fs::create_dir_all(dir);
                    let _ = std::fs::write(dir.join(format!("node-{}.log", i + 1)), &log);
                }
                let lines: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
                let tail = &lines[lines.len().saturating_sub(150)..];
                eprintln!("==== node-{} log ====\n{}", i + 1, tail.join("\n"));
            }
        }
        self.nodes.clear();
    }
}

/// `(hostname, status)` for each row of a `shoal node ls` table.
pub fn node_states(node_ls: &str) -> Vec<(String, String)> {
    node_ls
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace().filter(|c| *c != "*");
            let _id = cols.next()?;
            let host = cols.next()?;
            let status = cols.next()?;
            Some((host.to_string(), status.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_states_reads_the_table() {
        let ls = "\
ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION
4ekbnwh2ayfy2qo9alcarsy5q     node-2     Ready     Active                          0.1.0
f4ag8t9kczcn0sg0wzexfac3x *   node-1     Ready     Active         Leader           0.1.0
js2iuhm3i5r7qpnsrxs15ojc1     node-3     Down      Active         Unreachable      0.1.0
";
        assert_eq!(
            node_states(ls),
            vec![
                ("node-2".to_string(), "Ready".to_string()),
                ("node-1".to_string(), "Ready".to_string()),
                ("node-3".to_string(), "Down".to_string()),
            ]
        );
    }
}
