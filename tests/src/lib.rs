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

/// Updates `service` (published on `port`, `shoal/echo:1`) to `shoal/echo:2`
/// through `manager` while every node of `nodes` curls it in a loop, then
/// checks what the zero-drop promise says: no failed request from any node,
/// both versions served during the update, only the new one after, and
/// `UpdateStatus` completed. `label` names the case in failure messages.
pub fn update_under_load(manager: &Node, nodes: &[Node], service: &str, port: u16, label: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = nodes
        .iter()
        .map(|n| curl_load(n.ns.name.clone(), port, stop.clone()))
        .collect();
    let out = manager.shoal_ok(&["service", "update", "--image", "shoal/echo:2", service]);
    assert!(
        out.contains(&format!("verify: Service {service} converged")),
        "{out}"
    );
    for n in nodes {
        shoal_testkit::assert_eventually(
            &format!("only version 2 from {}", n.name),
            std::time::Duration::from_secs(20),
            || only_tag(n, port, "2"),
        );
    }
    stop.store(true, Ordering::SeqCst);
    for (n, l) in nodes.iter().zip(loaders) {
        let (tags, failures) = l.join().unwrap();
        assert!(
            failures.is_empty(),
            "{label}: {} failed requests from {}: {:?}",
            failures.len(),
            n.name,
            &failures[..failures.len().min(5)]
        );
        assert!(
            tags.contains("1") && tags.contains("2"),
            "{label}: both versions served during the update from {}: {tags:?}",
            n.name
        );
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&manager.shoal_ok(&["service", "inspect", service])).unwrap();
    assert_eq!(
        inspect[0]["UpdateStatus"]["State"], "completed",
        "{}",
        inspect[0]["UpdateStatus"]
    );
}

/// The ID and pid of a running task of `service` whose pid is not
/// `not_pid` (0: any), waiting up to 30 s for one.
pub fn running_task(node: &Node, service: &str, not_pid: u32) -> (String, u32) {
    shoal_testkit::assert_eventually(
        &format!("{service} has a running task"),
        std::time::Duration::from_secs(30),
        || {
            let ids = node.shoal_ok(&[
                "service",
                "ps",
                "-q",
                "--no-trunc",
                "-f",
                "desired-state=running",
                service,
            ]);
            for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let task: serde_json::Value =
                    serde_json::from_str(&node.shoal_ok(&["inspect", id]))
                        .map_err(|e| e.to_string())?;
                let pid = task[0]["Status"]["ContainerStatus"]["PID"]
                    .as_u64()
                    .unwrap_or(0) as u32;
                if task[0]["Status"]["State"] == "running" && pid > 0 && pid != not_pid {
                    return Ok((id.to_string(), pid));
                }
            }
            Err(format!("no new running task among {ids:?}"))
        },
    )
}
