//! Agent::run against a tiny in-test Dispatcher server (test scaffolding).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_agent::{Agent, AgentConfig, NetworkMode};
use shoal_api::pb::dispatcher_server::{Dispatcher, DispatcherServer};
use shoal_api::pb::{
    FeedMessage, FeedRequest, HeartbeatRequest, HeartbeatResponse, ListenSubscriptionsRequest,
    LogSubscription, PublishLogsMessage, PublishLogsResponse, Runtime, ServiceSpec, SessionMessage,
    SessionRequest, Task, TaskState, TaskStatus, TaskStatusUpdate, UpdateTaskStatusRequest,
    UpdateTaskStatusResponse,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone)]
struct FakeDispatcher {
    assignments: watch::Sender<Vec<Task>>,
    sessions: Arc<Mutex<Vec<SessionRequest>>>,
    updates: Arc<Mutex<Vec<TaskStatusUpdate>>>,
    heartbeats: Arc<AtomicUsize>,
    subscriptions: broadcast::Sender<LogSubscription>,
    published: Arc<Mutex<Vec<PublishLogsMessage>>>,
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl Dispatcher for FakeDispatcher {
    type SessionStream = Stream<SessionMessage>;
    type FeedStream = Stream<FeedMessage>;
    type ListenSubscriptionsStream = Stream<LogSubscription>;

    async fn session(
        &self,
        req: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let first = {
            let mut sessions = self.sessions.lock().unwrap();
            sessions.push(req.into_inner());
            sessions.len() == 1
        };
        if first {
            // The agent must retry a failed session.
            return Err(Status::unavailable("not ready yet"));
        }
        let (tx, rx) = mpsc::channel(4);
        let mut assignments = self.assignments.subscribe();
        tokio::spawn(async move {
            loop {
                let tasks = assignments.borrow_and_update().clone();
                let msg = SessionMessage {
                    session_id: "sess1".into(),
                    heartbeat_period_ms: 100,
                    tasks,
                    ..Default::default()
                };
                if tx.send(Ok(msg)).await.is_err() || assignments.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        assert_eq!(req.into_inner().session_id, "sess1");
        self.heartbeats.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(HeartbeatResponse { period_ms: 100 }))
    }

    type ServiceLogsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<shoal_api::pb::LogMessage, Status>> + Send>,
    >;

    async fn service_logs(
        &self,
        _: Request<shoal_api::pb::ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn feed_applied(
        &self,
        _: Request<shoal_api::pb::FeedAppliedRequest>,
    ) -> Result<Response<shoal_api::pb::FeedAppliedResponse>, Status> {
        Ok(Response::new(shoal_api::pb::FeedAppliedResponse {}))
    }

    async fn update_task_status(
        &self,
        req: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        let req = req.into_inner();
        assert_eq!(req.session_id, "sess1");
        assert_eq!(req.node_id, "node1");
        self.updates.lock().unwrap().extend(req.updates);
        Ok(Response::new(UpdateTaskStatusResponse {}))
    }

    async fn feed(&self, _: Request<FeedRequest>) -> Result<Response<Self::FeedStream>, Status> {
        Err(Status::unimplemented("feed"))
    }

    async fn listen_subscriptions(
        &self,
        _: Request<ListenSubscriptionsRequest>,
    ) -> Result<Response<Self::ListenSubscriptionsStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let mut subs = self.subscriptions.subscribe();
        tokio::spawn(async move {
            while let Ok(s) = subs.recv().await {
                if tx.send(Ok(s)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn publish_logs(
        &self,
        req: Request<Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        let mut stream = req.into_inner();
        while let Some(m) = stream.message().await? {
            self.published.lock().unwrap().push(m);
        }
        Ok(Response::new(PublishLogsResponse {}))
    }
}

fn process_task(id: &str, script: &str, desired: TaskState, status: TaskState) -> Task {
    Task {
        id: id.into(),
        service_id: "svc1".into(),
        service_name: "web".into(),
        slot: 1,
        node_id: "node1".into(),
        spec: Some(ServiceSpec {
            image: "app:1".into(),
            runtime: Runtime::Process as i32,
            command: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        }),
        desired_state: desired as i32,
        status: Some(TaskStatus {
            state: status as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_assignments_reports_and_serves_logs() {
    let (assign_tx, _) = watch::channel(vec![
        process_task(
            "taskA",
            "echo hi-from-task; exec sleep 30",
            TaskState::Running,
            TaskState::Assigned,
        ),
        process_task(
            "taskB",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
            TaskState::Running,
            TaskState::Assigned,
        ),
        process_task(
            "orphan",
            "exec sleep 30",
            TaskState::Running,
            TaskState::Running,
        ),
    ]);
    let fake = FakeDispatcher {
        assignments: assign_tx,
        sessions: Default::default(),
        updates: Default::default(),
        heartbeats: Default::default(),
        subscriptions: broadcast::channel(16).0,
        published: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_stop = CancellationToken::new();
    tokio::spawn({
        let fake = fake.clone();
        let stop = server_stop.clone();
        async move {
            tonic::transport::Server::builder()
                .add_service(DispatcherServer::new(fake))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled())
                .await
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        node_id: "node1".into(),
        hostname: "hostos1".into(),
        addr: "127.0.0.1".into(),
        data_root: dir.path().to_path_buf(),
        workload_exe: "/nonexistent/shoald".into(),
        network: NetworkMode::Loopback,
        stop_grace: Duration::from_secs(2),
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(Agent::run(config, channel, shutdown.clone()));

    let states_of = |id: &str| -> Vec<TaskState> {
        fake.updates
            .lock()
            .unwrap()
            .iter()
            .filter(|u| u.task_id == id)
            .map(|u| u.status.as_ref().unwrap().state())
            .collect()
    };
    let status_of = |id: &str, state: TaskState| -> Option<TaskStatus> {
        fake.updates
            .lock()
            .unwrap()
            .iter()
            .filter(|u| u.task_id == id)
            .filter_map(|u| u.status.clone())
            .find(|s| s.state() == state)
    };

    for id in ["taskA", "taskB"] {
        eventually("RUNNING", || {
            states_of(id).contains(&TaskState::Running).then_some(())
        })
        .await;
        assert_eq!(
            states_of(id),
            [
                TaskState::Accepted,
                TaskState::Preparing,
                TaskState::Ready,
                TaskState::Starting,
                TaskState::Running
            ]
        );
    }
    let orphan = eventually("orphan failed", || status_of("orphan", TaskState::Failed)).await;
    assert_eq!(
        orphan.err,
        "task: shoald restarted while the task was running"
    );
    assert_eq!(states_of("orphan"), [TaskState::Failed]);
    assert_eq!(fake.sessions.lock().unwrap().len(), 2, "one retry");
    let session = fake.sessions.lock().unwrap()[1].clone();
    assert_eq!(session.node_id, "node1");
    assert_eq!(session.description.unwrap().hostname, "hostos1");
    eventually("heartbeats", || {
        (fake.heartbeats.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;

    // Logs: a subscription naming a local and a foreign task.
    let log = dir.path().join("tasks/taskA/log");
    eventually("log line", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("hi-from-task"))
    })
    .await;
    fake.subscriptions
        .send(LogSubscription {
            id: "sub1".into(),
            task_ids: vec!["taskA".into(), "elsewhere".into()],
            follow: false,
            tail: -1,
            since_ns: 0,
            close: false,
            service_ids: vec![],
        })
        .unwrap();
    fake.subscriptions
        .send(LogSubscription {
            id: "sub2".into(),
            task_ids: vec!["elsewhere".into()],
            follow: false,
            tail: -1,
            since_ns: 0,
            close: false,
            service_ids: vec![],
        })
        .unwrap();
    let closed = |id: &str| {
        fake.published
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.subscription_id == id && m.close)
    };
    eventually("sub1 closed", || closed("sub1").then_some(())).await;
    eventually("sub2 closed", || closed("sub2").then_some(())).await;
    {
        let published = fake.published.lock().unwrap();
        let lines: Vec<_> = published
            .iter()
            .filter(|m| m.subscription_id == "sub1")
            .flat_map(|m| m.messages.clone())
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].data, b"hi-from-task");
        assert_eq!(lines[0].stream, "stdout");
        assert_eq!(lines[0].service_name, "web");
        assert_eq!(lines[0].node_id, "node1");
        let sub2: Vec<_> = published
            .iter()
            .filter(|m| m.subscription_id == "sub2")
            .collect();
        assert_eq!(sub2.len(), 1);
        assert!(sub2[0].messages.is_empty());
    }

    // Following: new lines keep coming until the subscription closes.
    fake.subscriptions
        .send(LogSubscription {
            id: "sub3".into(),
            task_ids: vec!["taskB".into()],
            follow: true,
            tail: 1,
            since_ns: 0,
            close: false,
            service_ids: vec![],
        })
        .unwrap();
    let followed = |id: &str| -> Vec<String> {
        fake.published
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.subscription_id == id)
            .flat_map(|m| {
                m.messages
                    .iter()
                    .map(|l| String::from_utf8_lossy(&l.data).to_string())
            })
            .collect()
    };
    eventually("followed lines", || {
        (followed("sub3").len() >= 4).then_some(())
    })
    .await;
    let lines = followed("sub3");
    let numbers: Vec<u64> = lines
        .iter()
        .map(|l| l.strip_prefix("tick ").unwrap().parse().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive lines: {lines:?}"
    );
    assert!(!closed("sub3"));
    fake.subscriptions
        .send(LogSubscription {
            id: "sub3".into(),
            close: true,
            ..Default::default()
        })
        .unwrap();
    eventually("sub3 closed", || closed("sub3").then_some(())).await;

    // Following a service: a task of it that starts later is streamed too.
    fake.subscriptions
        .send(LogSubscription {
            id: "sub4".into(),
            follow: true,
            tail: 0,
            service_ids: vec!["svc1".into()],
            ..Default::default()
        })
        .unwrap();
    fake.assignments.send_modify(|tasks| {
        tasks.push(process_task(
            "taskC",
            "echo from-a-new-task; exec sleep 30",
            TaskState::Running,
            TaskState::Assigned,
        ))
    });
    eventually("the new task's line on the followed stream", || {
        followed("sub4")
            .contains(&"from-a-new-task".to_string())
            .then_some(())
    })
    .await;
    let task_c: Vec<String> = fake
        .published
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.subscription_id == "sub4")
        .flat_map(|m| m.messages.iter().map(|l| l.task_id.clone()))
        .filter(|t| t == "taskC")
        .collect();
    assert_eq!(task_c.len(), 1, "its line once: {task_c:?}");
    fake.subscriptions
        .send(LogSubscription {
            id: "sub4".into(),
            close: true,
            ..Default::default()
        })
        .unwrap();
    eventually("sub4 closed", || closed("sub4").then_some(())).await;

    // Desired SHUTDOWN stops taskA; taskB keeps running.
    fake.assignments.send_modify(|tasks| {
        tasks[0].desired_state = TaskState::Shutdown as i32;
        tasks[0].status = Some(TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        });
    });
    let shut = eventually("taskA shutdown", || status_of("taskA", TaskState::Shutdown)).await;
    assert_eq!(shut.message, "shutdown");
    assert!(status_of("taskB", TaskState::Shutdown).is_none());

    // Shutdown of the agent stops taskB's process and returns.
    let pid_b = status_of("taskB", TaskState::Running).unwrap().pid as i32;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("agent returns after shutdown")
        .unwrap()
        .unwrap();
    let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid_b), None);
    assert_eq!(
        gone,
        Err(nix::errno::Errno::ESRCH),
        "taskB's process is gone"
    );
    server_stop.cancel();
}
