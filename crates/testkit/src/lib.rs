//! Test harness for end-to-end scenarios: real `shoald` processes, each in a
//! network namespace of its own, driven through the real `shoal` CLI.
//!
//! A [`Cluster`] (one node) or a [`MultiCluster`] (N nodes on a shared
//! [`Underlay`] switch) owns its namespaces, links, data directories and
//! processes and removes them on drop, also when a test panics. Everything
//! a test sends goes to loopback or to addresses inside its own namespaces;
//! the root namespace is never touched. Nodes can be stopped, killed,
//! paused, cut off the network and brought back (see [`node`]). Root is
//! needed; [`require_root`] skips a test when not root, except under
//! `CI=true`, where a skip is a failure.
//!
//! # Layout
//! - [`eventually`](mod@eventually): `assert_eventually`, polling with a deadline.
//! - [`netns`]: named network namespaces created and deleted with `ip`.
//! - [`underlay`]: a bridge in a namespace of its own; veth cables to nodes.
//! - [`node`]: one `shoald` in its namespace: start, stop, kill, pause, cut.
//! - [`multi`]: [`MultiCluster`], N nodes joined into one swarm.
//! - this module: [`Cluster`], binaries, CLI and curl helpers.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod eventually;
pub mod multi;
pub mod netns;
pub mod node;
pub mod underlay;

use std::path::PathBuf;
use std::process::Output;

pub use eventually::{assert_eventually, eventually};
pub use multi::MultiCluster;
pub use netns::NetNs;
pub use node::Node;
pub use underlay::{Port, Underlay};

/// Whether a root-only test may run. Not root: returns false (the test
/// returns early), except under `CI=true`, where it panics.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test} needs root, and CI=true forbids skipping it");
        }
        eprintln!("skipping {test}: needs root");
    }
    root
}

/// Where `cargo build --bins` put `shoald` and `shoal`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// Output as text, for assertions and failure messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A one-node cluster: a namespace, a `shoald` in it, after `swarm init`.
pub struct Cluster {
    pub node: Node,
}

impl Cluster {
    /// Starts one node and runs `shoal swarm init` through the CLI.
    pub fn single(test: &str) -> Cluster {
        let node = Node::start(test, "node-1");
        let out = node.shoal(&["swarm", "init"]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "swarm init failed: {stdout}{stderr}");
        Cluster { node }
    }
}
