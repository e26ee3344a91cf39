//! TaskRunner with real processes in loopback mode (no dispatcher).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_agent::logs::{parse_lines, LogStream};
use shoal_agent::{AgentConfig, NetworkMode, TaskRunner};
use shoal_api::pb::{
    PortConfig, Runtime, ServiceEndpoint, ServiceSpec, Task, TaskState, TaskStatus,
    TaskStatusUpdate,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

fn config(root: &Path, grace: Duration) -> Arc<AgentConfig> {
    Arc::new(AgentConfig {
        node_id: "node1".into(),
        hostname: "hostos1".into(),
        addr: "127.0.0.1".into(),
        data_root: root.to_path_buf(),
        workload_exe: "/nonexistent/shoald".into(),
        network: NetworkMode::Loopback,
        stop_grace: grace,
    })
}

fn script_task(id: &str, script: &str, target_ports: &[u32]) -> Task {
    Task {
        id: id.into(),
        service_id: "svc1".into(),
        service_name: "web".into(),
        slot: 1,
        node_id: "node1".into(),
        spec: Some(ServiceSpec {
            image: "myapp:3".into(),
            runtime: Runtime::Process as i32,
            command: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        }),
        endpoint: Some(ServiceEndpoint {
            ports: target_ports
                .iter()
                .map(|&t| PortConfig {
                    target_port: t,
                    published_port: 30000 + t,
                    ..Default::default()
                })
                .collect(),
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

/// A started runner and the statuses it reported.
struct Run {
    stop: CancellationToken,
    updates: mpsc::UnboundedReceiver<TaskStatusUpdate>,
    seen: Vec<TaskStatus>,
    join: tokio::task::JoinHandle<()>,
}

impl Run {
    fn start(runner: &TaskRunner, task: Task) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let runner = runner.clone();
        let s = stop.clone();
        let join = tokio::spawn(async move { runner.run(task, s, tx).await });
        Run {
            stop,
            updates: rx,
            seen: Vec::new(),
            join,
        }
    }

    /// Waits for the first status at or above `state`.
    async fn until(&mut self, state: TaskState) -> TaskStatus {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let u = tokio::time::timeout_at(deadline, self.updates.recv())
                .await
                .unwrap_or_else(|_| panic!("no {state:?} within deadline; saw {:?}", self.seen))
                .unwrap_or_else(|| panic!("runner ended before {state:?}; saw {:?}", self.seen));
            let status = u.status.unwrap();
            self.seen.push(status.clone());
            if status.state >= state as i32 {
                return status;
            }
        }
    }

    fn states(&self) -> Vec<TaskState> {
        self.seen.iter().map(|s| s.state()).collect()
    }
}

async fn http_get(addr: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(out)
}

async fn poll<T, F: std::future::Future<Output = Option<T>>>(mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn http_server_runs_on_loopback_port_and_kill_9_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TaskRunner::new(config(dir.path(), Duration::from_secs(5)));
    let task = script_task(
        "httptask0000000000000001",
        r#"exec python3 -u -m http.server "$PORT" --bind 127.0.0.1"#,
        &[80, 80],
    );
    let mut run = Run::start(&runner, task);
    let running = run.until(TaskState::Running).await;
    assert_eq!(
        run.states(),
        [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Ready,
            TaskState::Starting,
            TaskState::Running
        ]
    );
    assert!(running.pid > 0);
    assert_eq!(running.ports.len(), 1, "target ports are deduplicated");
    assert_eq!(running.ports[0].target_port, 80);
    let addr = running.ports[0].address.clone();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let resp = poll(|| http_get(&addr)).await;
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let failed = run.until(TaskState::Complete).await;
    assert_eq!(failed.state(), TaskState::Failed);
    assert_eq!(failed.err, "task: non-zero exit (137)");
    assert_eq!(failed.exit_code, 137);
    run.join.await.unwrap();

    // The request python logged (stderr) is in the task log with a timestamp.
    let log = std::fs::read(dir.path().join("tasks/httptask0000000000000001/log")).unwrap();
    let (lines, _) = parse_lines(&log);
    assert!(
        lines.iter().any(|l| l.stream == LogStream::Stderr
            && String::from_utf8_lossy(&l.data).contains("GET /")
            && l.timestamp_ns > 1_600_000_000_000_000_000),
        "{}",
        String::from_utf8_lossy(&log)
    );
    assert!(dir
        .path()
        .join("tasks/httptask0000000000000001/meta.json")
        .exists());
}

#[tokio::test]
async fn stop_sends_sigterm_and_reports_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TaskRunner::new(config(dir.path(), Duration::from_secs(10)));
    let task = script_task(
        "termtask0000000000000001",
        r#"trap 'echo bye; exit 0' TERM; echo "hello $SHOAL_TASK_NAME"; while true; do sleep 0.1; done"#,
        &[],
    );
    let mut run = Run::start(&runner, task);
    run.until(TaskState::Running).await;
    let log = dir.path().join("tasks/termtask0000000000000001/log");
    poll(|| async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("hello"))
    })
    .await;
    let t0 = Instant::now();
    run.stop.cancel();
    let done = run.until(TaskState::Complete).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "SIGTERM was honoured"
    );
    assert_eq!(done.state(), TaskState::Shutdown);
    assert_eq!(done.message, "shutdown");
    run.join.await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(" o hello web.1.termtask0000000000000001\n"),
        "{text}"
    );
    assert!(text.contains(" o bye\n"), "{text}");
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TaskRunner::new(config(dir.path(), Duration::from_millis(300)));
    let task = script_task(
        "killtask0000000000000001",
        r#"trap '' TERM; echo ready; while true; do sleep 0.1; done"#,
        &[],
    );
    let mut run = Run::start(&runner, task);
    run.until(TaskState::Running).await;
    let log = dir.path().join("tasks/killtask0000000000000001/log");
    poll(|| async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("ready"))
    })
    .await;
    let t0 = Instant::now();
    run.stop.cancel();
    let done = run.until(TaskState::Complete).await;
    assert_eq!(done.state(), TaskState::Shutdown);
    assert_eq!(done.exit_code, 137);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn exit_codes_become_complete_or_failed() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TaskRunner::new(config(dir.path(), Duration::from_secs(5)));

    let mut ok = Run::start(&runner, script_task("exit0", "exit 0", &[]));
    let s = ok.until(TaskState::Complete).await;
    assert_eq!(s.state(), TaskState::Complete);
    assert_eq!(s.message, "finished");

    let mut bad = Run::start(&runner, script_task("exit3", "exit 3", &[]));
    let s = bad.until(TaskState::Complete).await;
    assert_eq!(s.state(), TaskState::Failed);
    assert_eq!(s.err, "task: non-zero exit (3)");
    assert_eq!(s.exit_code, 3);

    let mut empty_task = script_task("empty", "", &[]);
    empty_task.spec.as_mut().unwrap().command.clear();
    let mut empty = Run::start(&runner, empty_task);
    let s = empty.until(TaskState::Complete).await;
    assert_eq!(s.state(), TaskState::Failed);
    assert_eq!(s.err, "task: empty command");
    assert!(!empty.states().contains(&TaskState::Running));

    let mut missing_task = script_task("missing", "", &[]);
    missing_task.spec.as_mut().unwrap().command = vec!["/nonexistent/binary".into()];
    let mut missing = Run::start(&runner, missing_task);
    let s = missing.until(TaskState::Complete).await;
    assert_eq!(s.state(), TaskState::Failed);
    assert!(
        s.err.starts_with("task: start /nonexistent/binary"),
        "{}",
        s.err
    );

    // A missing --workdir is named as such, not as a missing program.
    let mut nowhere_task = script_task("nowhere", "exit 0", &[]);
    nowhere_task.spec.as_mut().unwrap().workdir = "/nonexistent/workdir".into();
    let mut nowhere = Run::start(&runner, nowhere_task);
    let s = nowhere.until(TaskState::Complete).await;
    assert_eq!(s.state(), TaskState::Failed);
    assert_eq!(
        s.err,
        "task: workdir /nonexistent/workdir: no such directory"
    );
}

#[tokio::test]
async fn restart_delay_holds_task_in_ready_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TaskRunner::new(config(dir.path(), Duration::from_secs(5)));
    let mut task = script_task("delayed", "sleep 30", &[]);
    task.not_before_ms = shoal_api::now_ms() + 60_000;
    let mut run = Run::start(&runner, task);
    run.until(TaskState::Ready).await;
    run.stop.cancel();
    let s = run.until(TaskState::Complete).await;
    assert_eq!(s.state(), TaskState::Shutdown);
    assert!(!run.states().contains(&TaskState::Starting));
}
