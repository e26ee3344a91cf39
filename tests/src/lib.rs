//! End-to-end scenarios live in `tests/*.rs`; this library holds the few
//! helpers several of them share.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use shoal_testkit::Node;

/// Curls `port` in a loop from inside the namespace `ns` until `stop`;
/// returns every reply's tag (`shoal/echo` ends its reply with `tag T)`)
/// and every failure.
pub fn curl_load(
    ns: String,
    port: u16,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(BTreeSet<String>, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut tags, mut failures) = (BTreeSet::new(), Vec::new());
        while !stop.load(Ordering::SeqCst) {
            let out = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "curl",
                    "-s",
                    "-S",
                    "-m",
                    "5",
                    &format!("http://127.0.0.1:{port}/"),
                ])
                .output()
                .unwrap();
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            match body.rsplit_once(" tag ") {
                Some((_, tag)) if out.status.success() => {
                    tags.insert(tag.trim_end_matches([')', '\n']).to_string());
                }
                _ => failures.push(format!("{}{}", body, String::from_utf8_lossy(&out.stderr))),
            }
        }
        (tags, failures)
    })
}

/// Twelve curls from `node` to `port` all answered by `shoal/echo` tag `tag`.
pub fn only_tag(node: &Node, port: u16, tag: &str) -> Result<(), String> {
    for _ in 0..12 {
        let body = node.curl(port)?;
        if !body.contains(&format!("tag {tag})")) {
            return Err(body);
        }
    }
    Ok(())
}
