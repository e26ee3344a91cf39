//! Watching every node's routing table: one thread per node, moved into the
//! node's network namespace with setns(2), fetches `GET /routes` from the
//! node's admin address (`127.0.0.1:9323` there) every few milliseconds and
//! records when the set of tasks routed on one published port changes. A
//! thread and a raw HTTP/1.0 request instead of a `curl` process per poll
//! keep one poll well under a millisecond, so a change is timed to about
//! the poll interval.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sched::CloneFlags;
use shoal_testkit::node::ADMIN_PORT;

/// One node's table for the watched port, as last seen.
#[derive(Clone, Debug)]
pub struct NodeTable {
    /// Tasks the mesh routes new connections to (not draining).
    pub routed: BTreeSet<String>,
    /// Every endpoint of the port, draining ones included.
    pub all: BTreeSet<String>,
    /// When the poll that first saw the current `routed` set answered.
    pub routed_at: Instant,
    /// The same instant as Unix milliseconds, to compare with task timestamps.
    pub routed_wall_ms: i64,
    /// When the poll that first saw the current `all` set answered.
    pub all_at: Instant,
    /// The last poll's error, if it failed.
    pub error: Option<String>,
}

struct Shared {
    tables: Mutex<Vec<NodeTable>>,
    changed: Condvar,
    stop: AtomicBool,
}

/// Polls every node's `/routes` until dropped.
pub struct TableWatch {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl TableWatch {
    /// Starts one poller per namespace, watching published `port`.
    pub fn start(netns: &[String], port: u16, every: Duration) -> anyhow::Result<TableWatch> {
        let now = Instant::now();
        let empty = NodeTable {
            routed: BTreeSet::new(),
            all: BTreeSet::new(),
            routed_at: now,
            routed_wall_ms: shoal_api::now_ms(),
            all_at: now,
            error: Some("not polled yet".into()),
        };
        let shared = Arc::new(Shared {
            tables: Mutex::new(vec![empty; netns.len()]),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for (i, ns) in netns.iter().enumerate() {
            let path = format!("/run/netns/{ns}");
            let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
            let shared = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("routes-{i}"))
                .spawn(move || {
                    if let Err(e) = nix::sched::setns(&file, CloneFlags::CLONE_NEWNET) {
                        set(&shared, i, Err(format!("setns {path}: {e}")));
                        return;
                    }
                    poll_loop(&shared, i, port, every);
                })
                .context("spawn a routes poller")?;
            threads.push(t);
        }
        Ok(TableWatch { shared, threads })
    }

    /// Every node's table now.
    pub fn tables(&self) -> Vec<NodeTable> {
        self.shared
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `done` holds for the tables; returns them, or the last
    /// ones as the error after `within`.
    pub fn wait(
        &self,
        within: Duration,
        done: impl Fn(&[NodeTable]) -> bool,
    ) -> Result<Vec<NodeTable>, Vec<NodeTable>> {
        let deadline = Instant::now() + within;
        let mut tables = self
            .shared
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if done(&tables) {
                return Ok(tables.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(tables.clone());
            }
            tables = self
                .shared
                .changed
                .wait_timeout(tables, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for TableWatch {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn poll_loop(shared: &Shared, i: usize, port: u16, every: Duration) {
    let addr = SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT));
    while !shared.stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let got = fetch_routes(addr).and_then(|body| endpoints(&body, port));
        set(shared, i, got);
        if let Some(rest) = every.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// Records a poll's outcome; a changed endpoint set gets a new timestamp.
fn set(shared: &Shared, i: usize, got: Result<(BTreeSet<String>, BTreeSet<String>), String>) {
    let mut tables = shared.tables.lock().unwrap_or_else(PoisonError::into_inner);
    let t = &mut tables[i];
    match got {
        Ok((routed, all)) => {
            let now = Instant::now();
            let changed = t.routed != routed || t.all != all;
            if t.routed != routed {
                t.routed = routed;
                t.routed_at = now;
                t.routed_wall_ms = shoal_api::now_ms();
            }
            if t.all != all {
                t.all = all;
                t.all_at = now;
            }
            let was_err = t.error.take().is_some();
            if changed || was_err {
                shared.changed.notify_all();
            }
        }
        Err(e) => t.error = Some(e),
    }
}

/// `GET /routes` over HTTP/1.0 (the server closes after the answer).
fn fetch_routes(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /routes HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "no HTTP header end".to_string())?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(format!(
            "answer: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_string())
}

/// (routed, all) task ids of the service publishing `port` in a `/routes` body.
pub fn endpoints(body: &str, port: u16) -> Result<(BTreeSet<String>, BTreeSet<String>), String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("json: {e}"))?;
    let mut routed = BTreeSet::new();
    let mut all = BTreeSet::new();
    let services = v["services"].as_array().into_iter().flatten();
    for s in services.filter(|s| {
        s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["published"] == port)
    }) {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let id = e["task_id"].as_str().unwrap_or_default().to_string();
            if e["draining"] == false {
                routed.insert(id.clone());
            }
            all.insert(id);
        }
    }
    Ok((routed, all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_one_port_split_by_draining() {
        let body = r#"{"revision":7,"listening":[8080,9000],"services":[
          {"service_id":"a","service":"web","ports":[{"published":8080,"target":80}],
           "endpoints":[{"task_id":"t1","draining":false},{"task_id":"t2","draining":true}]},
          {"service_id":"b","service":"api","ports":[{"published":9000,"target":80}],
           "endpoints":[{"task_id":"t3","draining":false}]}]}"#;
        let (routed, all) = endpoints(body, 8080).unwrap();
        assert_eq!(routed.into_iter().collect::<Vec<_>>(), ["t1"]);
        assert_eq!(all.into_iter().collect::<Vec<_>>(), ["t1", "t2"]);
        let (routed, all) = endpoints(body, 1234).unwrap();
        assert!(routed.is_empty() && all.is_empty());
        assert!(endpoints("nope", 8080).is_err());
    }
}
