//! TaskRunner in netns mode (root): the task gets its own namespace and
//! address on a bridge. Everything happens inside a throwaway namespace so
//! the host's network is untouched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_agent::{AgentConfig, NetworkMode, TaskRunner};
use shoal_api::pb::{
    PortConfig, Runtime, ServiceEndpoint, ServiceSpec, Task, TaskState, TaskStatusUpdate,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn root_or_skip() -> bool {
    if shoal_agent::is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("netns tests need root (CI=true)");
    }
    eprintln!("skipping: netns tests need root");
    false
}

async fn until(
    rx: &mut mpsc::UnboundedReceiver<TaskStatusUpdate>,
    state: TaskState,
) -> shoal_api::pb::TaskStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let u = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("status within deadline")
            .expect("runner still reporting");
        let s = u.status.unwrap();
        if s.state >= state as i32 {
            return s;
        }
    }
}

#[test]
fn task_runs_in_its_own_namespace_on_the_bridge() {
    if !root_or_skip() {
        return;
    }
    let ns = shoal_net::new_netns().expect("test namespace");
    use std::os::fd::AsRawFd;
    shoal_net::run_in_netns(ns.as_raw_fd(), || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario())
    })
    .expect("run in test namespace");
}

async fn scenario() {
    let bridge = "shtestbr0";
    shoal_net::ensure_bridge(bridge, "10.77.0.1/24".parse().unwrap())
        .await
        .expect("bridge");
    let dir = tempfile::tempdir().unwrap();
    let runner = TaskRunner::new(Arc::new(AgentConfig {
        node_id: "node1".into(),
        hostname: "hostos1".into(),
        addr: "127.0.0.1".into(),
        data_root: dir.path().to_path_buf(),
        workload_exe: "/nonexistent/shoald".into(),
        network: NetworkMode::Netns {
            bridge: bridge.into(),
            gateway: "10.77.0.1".parse().unwrap(),
        },
        stop_grace: Duration::from_secs(5),
    }));
    let task = Task {
        id: "nstask00000000000000001".into(),
        service_name: "web".into(),
        slot: 1,
        spec: Some(ServiceSpec {
            image: "app".into(),
            runtime: Runtime::Process as i32,
            command: vec![
                "python3".into(),
                "-u".into(),
                "-m".into(),
                "http.server".into(),
                "8000".into(),
            ],
            ..Default::default()
        }),
        endpoint: Some(ServiceEndpoint {
            ports: vec![PortConfig {
                target_port: 8000,
                published_port: 30080,
                ..Default::default()
            }],
        }),
        desired_state: TaskState::Running as i32,
        ingress_address: "10.77.0.5/24".into(),
        ..Default::default()
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let join = tokio::spawn({
        let stop = stop.clone();
        async move { runner.run(task, stop, tx).await }
    });
    let running = until(&mut rx, TaskState::Running).await;
    assert_eq!(running.state(), TaskState::Running, "{running:?}");
    assert_eq!(running.ports[0].address, "10.77.0.5:8000");

    let veth = shoal_agent::veth_name("nstask00000000000000001");
    assert!(shoal_net::link_state(&veth).await.unwrap().is_some());

    let deadline = Instant::now() + Duration::from_secs(20);
    let resp = loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect("10.77.0.5:8000").await {
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            break out;
        }
        assert!(Instant::now() < deadline, "task address never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");

    stop.cancel();
    let done = until(&mut rx, TaskState::Complete).await;
    assert_eq!(done.state(), TaskState::Shutdown);
    join.await.unwrap();
    assert!(
        shoal_net::link_state(&veth).await.unwrap().is_none(),
        "veth removed with the namespace"
    );
}
