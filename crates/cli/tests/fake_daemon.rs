//! Drives the `shoal` binary against an in-memory fake of the control API on
//! a Unix socket: the connector, each verb's request, and its output.

use std::sync::{Arc, Mutex};

use shoal_api::pb::{self, control_server::ControlServer};
use tonic::codegen::tokio_stream;
use tonic::{Request, Response, Status};

const NODE: &str = "nodeaaaaaaaaaaaaaaaaaaaaa";
const NODE2: &str = "nodebbbbbbbbbbbbbbbbbbbbb";

/// A daemon whose tasks start running the moment they are created. It has
/// two nodes: `host1` (this node, the leader) and `host2` (a ready worker).
#[derive(Clone)]
struct Fake {
    services: Arc<Mutex<Vec<pb::Service>>>,
    tasks: Arc<Mutex<Vec<pb::Task>>>,
    nodes: Arc<Mutex<Vec<pb::Node>>>,
    /// Bumped by `join-token --rotate`.
    rotations: Arc<Mutex<u32>>,
    /// `GetService` calls left before an update or rollback in progress
    /// completes (one service updates at a time in these tests).
    polls_left: Arc<Mutex<u32>>,
    /// Reads of a service or node left that a manager's status write follows
    /// at once (its version moves on before the CLI writes).
    racing_reads: Arc<Mutex<u32>>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            services: Arc::default(),
            tasks: Arc::default(),
            nodes: Arc::new(Mutex::new(vec![
                node(NODE, "host1", pb::NodeRole::Manager),
                node(NODE2, "host2", pb::NodeRole::Worker),
            ])),
            rotations: Arc::default(),
            polls_left: Arc::default(),
            racing_reads: Arc::default(),
        }
    }

    /// Whether this read is followed by a racing status write.
    fn races(&self) -> bool {
        let mut left = self.racing_reads.lock().unwrap();
        let race = *left > 0;
        *left = left.saturating_sub(1);
        race
    }

    fn find_node(&self, key: &str) -> Result<pb::Node, Status> {
        self.nodes
            .lock()
            .unwrap()
            .iter()
            .find(|n| {
                n.id.starts_with(key) || n.description.as_ref().is_some_and(|d| d.hostname == key)
            })
            .cloned()
            .ok_or_else(|| Status::not_found(format!("node {key} not found")))
    }

    fn token(&self, role: &str) -> String {
        format!("SWMTKN-1-digest-{role}{}", self.rotations.lock().unwrap())
    }

    fn find(&self, key: &str) -> Result<pb::Service, Status> {
        self.services
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.id.starts_with(key) || s.spec.as_ref().is_some_and(|sp| sp.name == key))
            .cloned()
            .ok_or_else(|| Status::not_found(format!("service {key} not found")))
    }

    /// Gives every slot a running task of the current spec version; older
    /// tasks of the slot are shut down.
    fn reconcile(&self, svc: &pb::Service) {
        let spec = svc.spec.clone().unwrap();
        let mut tasks = self.tasks.lock().unwrap();
        for slot in 1..=spec.replicas {
            if tasks.iter().any(|t| {
                t.service_id == svc.id && t.slot == slot && t.spec_version == svc.spec_version
            }) {
                continue;
            }
            for old in tasks
                .iter_mut()
                .filter(|t| t.service_id == svc.id && t.slot == slot)
            {
                old.desired_state = pb::TaskState::Shutdown as i32;
                old.status.as_mut().unwrap().state = pb::TaskState::Shutdown as i32;
            }
            let now = shoal_api::now_ms();
            tasks.push(pb::Task {
                id: shoal_api::id::new_id(),
                meta: Some(pb::Meta {
                    version: 1,
                    created_at_ms: now,
                    updated_at_ms: now,
                }),
                service_id: svc.id.clone(),
                service_name: spec.name.clone(),
                slot,
                node_id: NODE.into(),
                spec: Some(spec.clone()),
                spec_version: svc.spec_version,
                desired_state: pb::TaskState::Running as i32,
                status: Some(pb::TaskStatus {
                    state: pb::TaskState::Running as i32,
                    timestamp_ms: now,
                    message: "started".into(),
                    pid: 1000 + slot as u32,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
}

#[tonic::async_trait]
impl pb::control_server::Control for Fake {
    async fn info(
        &self,
        _: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        Ok(Response::new(pb::InfoResponse {
            node_id: NODE.into(),
            hostname: "host1".into(),
            local_node_state: "active".into(),
            is_manager: true,
            cluster_id: "c".into(),
            engine_version: "0.1.0".into(),
            managers: vec!["10.0.0.1:2377".into()],
            ..Default::default()
        }))
    }

    async fn swarm_init(
        &self,
        _: Request<pb::SwarmInitRequest>,
    ) -> Result<Response<pb::SwarmInitResponse>, Status> {
        Ok(Response::new(pb::SwarmInitResponse {
            node_id: NODE.into(),
            cluster_id: "c".into(),
        }))
    }

    async fn update_swarm(
        &self,
        r: Request<pb::UpdateSwarmRequest>,
    ) -> Result<Response<pb::UpdateSwarmResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(pb::UpdateSwarmResponse {
            task_history_limit: r.task_history_limit.unwrap_or(5),
            dispatcher_heartbeat_ms: r.dispatcher_heartbeat_ms.unwrap_or(5000),
            ..Default::default()
        }))
    }

    async fn create_service(
        &self,
        r: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let spec = r.into_inner().spec.unwrap();
        let mut ports = spec.ports.clone();
        for p in &mut ports {
            if p.published_port == 0 {
                p.published_port = 30000;
            }
        }
        let svc = pb::Service {
            id: shoal_api::id::new_id(),
            meta: Some(pb::Meta {
                version: 1,
                created_at_ms: shoal_api::now_ms(),
                updated_at_ms: shoal_api::now_ms(),
            }),
            spec: Some(spec),
            previous_spec: None,
            endpoint: Some(pb::ServiceEndpoint { ports }),
            spec_version: 1,
            update_status: None,
            job_status: None,
        };
        self.services.lock().unwrap().push(svc.clone());
        self.reconcile(&svc);
        Ok(Response::new(pb::ServiceResponse { service: Some(svc) }))
    }

    async fn get_service(
        &self,
        r: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let found = self.find(&r.into_inner().service)?;
        if self.races() {
            let mut services = self.services.lock().unwrap();
            let svc = services.iter_mut().find(|s| s.id == found.id).unwrap();
            svc.meta.as_mut().unwrap().version += 1;
        }
        let mut polls_left = self.polls_left.lock().unwrap();
        if *polls_left > 0 {
            *polls_left -= 1;
            if *polls_left == 0 {
                let mut services = self.services.lock().unwrap();
                let svc = services.iter_mut().find(|s| s.id == found.id).unwrap();
                let status = svc.update_status.as_mut().unwrap();
                let (state, message) = match pb::UpdateState::try_from(status.state).unwrap() {
                    pb::UpdateState::RollbackStarted => {
                        (pb::UpdateState::RollbackCompleted, "rollback completed")
                    }
                    _ => (pb::UpdateState::Completed, "update completed"),
                };
                status.state = state as i32;
                status.message = message.into();
                status.completed_at_ms = shoal_api::now_ms();
                return Ok(Response::new(pb::ServiceResponse {
                    service: Some(svc.clone()),
                }));
            }
        }
        Ok(Response::new(pb::ServiceResponse {
            service: Some(found),
        }))
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let services = self.services.lock().unwrap().clone();
        let tasks = self.tasks.lock().unwrap().clone();
        Ok(Response::new(pb::ListServicesResponse {
            services: services
                .into_iter()
                .map(|s| pb::ServiceListEntry {
                    running_tasks: tasks.iter().filter(|t| t.service_id == s.id).count() as u64,
                    desired_tasks: s.spec.as_ref().unwrap().replicas,
                    completed_tasks: 0,
                    service: Some(s),
                })
                .collect(),
        }))
    }

    async fn update_service(
        &self,
        r: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        // Images tagged `:paused` pause the update; `:broken` ones make it
        // roll back automatically.
        let r = r.into_inner();
        let found = self.find(&r.service)?;
        let status = |state: pb::UpdateState, message: &str| pb::UpdateStatus {
            state: state as i32,
            started_at_ms: shoal_api::now_ms(),
            completed_at_ms: 0,
            message: message.into(),
        };
        let svc = {
            let mut services = self.services.lock().unwrap();
            let svc = services.iter_mut().find(|s| s.id == found.id).unwrap();
            let meta = svc.meta.as_mut().unwrap();
            if r.version != 0 && r.version != meta.version {
                return Err(Status::failed_precondition("update out of sequence"));
            }
            meta.version += 1;
            svc.spec_version += 1;
            let name = svc.spec.as_ref().unwrap().name.clone();
            if r.rollback {
                let Some(previous) = svc.previous_spec.take() else {
                    return Err(Status::failed_precondition(format!(
                        "service {name} has no previous spec"
                    )));
                };
                svc.previous_spec = svc.spec.replace(previous);
                svc.update_status = Some(status(
                    pb::UpdateState::RollbackStarted,
                    "manually requested rollback",
                ));
                *self.polls_left.lock().unwrap() = 3;
            } else {
                let spec = r.spec.unwrap();
                let image = spec.image.clone();
                svc.previous_spec = svc.spec.replace(spec);
                if image.ends_with(":paused") {
                    svc.update_status = Some(status(
                        pb::UpdateState::Paused,
                        "update paused due to failure or early termination of task t1",
                    ));
                    return Ok(Response::new(pb::ServiceResponse {
                        service: Some(svc.clone()),
                    }));
                } else if image.ends_with(":broken") {
                    let broken = svc.spec.take();
                    svc.spec = svc.previous_spec.replace(broken.unwrap());
                    svc.update_status = Some(status(
                        pb::UpdateState::RollbackStarted,
                        "update rolled back due to failure or early termination of task t2",
                    ));
                    *self.polls_left.lock().unwrap() = 3;
                } else {
                    svc.update_status =
                        Some(status(pb::UpdateState::Updating, "update in progress"));
                    *self.polls_left.lock().unwrap() = 2;
                }
            }
            svc.clone()
        };
        self.reconcile(&svc);
        Ok(Response::new(pb::ServiceResponse { service: Some(svc) }))
    }

    async fn remove_service(
        &self,
        r: Request<pb::RemoveServiceRequest>,
    ) -> Result<Response<pb::RemoveServiceResponse>, Status> {
        let svc = self.find(&r.into_inner().service)?;
        self.services.lock().unwrap().retain(|s| s.id != svc.id);
        Ok(Response::new(pb::RemoveServiceResponse { id: svc.id }))
    }

    type ServiceLogsStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::LogMessage, Status>>>;

    async fn service_logs(
        &self,
        r: Request<pb::ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let svc = self.find(&r.into_inner().service)?;
        let tasks = self.tasks.lock().unwrap().clone();
        let msgs: Vec<_> = tasks
            .iter()
            .filter(|t| t.service_id == svc.id)
            .map(|t| {
                Ok(pb::LogMessage {
                    task_id: t.id.clone(),
                    service_id: svc.id.clone(),
                    service_name: t.service_name.clone(),
                    slot: t.slot,
                    node_id: t.node_id.clone(),
                    timestamp_ns: 1_700_000_000_000_000_000,
                    stream: "stdout".into(),
                    data: format!("hello from {}\n", t.slot).into_bytes(),
                    unavailable_nodes: Vec::new(),
                    attrs: Vec::new(),
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(msgs)))
    }

    async fn get_task(
        &self,
        r: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::TaskResponse>, Status> {
        let key = r.into_inner().task;
        let task = self
            .tasks
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.id.starts_with(&key))
            .cloned()
            .ok_or_else(|| Status::not_found("no such task"))?;
        Ok(Response::new(pb::TaskResponse { task: Some(task) }))
    }

    async fn list_tasks(
        &self,
        r: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let r = r.into_inner();
        let tasks = self
            .tasks
            .lock()
            .unwrap()
            .iter()
            .filter(|t| r.services.is_empty() || r.services.contains(&t.service_id))
            .filter(|t| r.nodes.is_empty() || r.nodes.contains(&t.node_id))
            .cloned()
            .collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn get_node(
        &self,
        r: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::NodeResponse>, Status> {
        let node = self.find_node(&r.into_inner().node)?;
        if self.races() {
            let mut nodes = self.nodes.lock().unwrap();
            let n = nodes.iter_mut().find(|n| n.id == node.id).unwrap();
            n.meta.as_mut().unwrap().version += 1;
        }
        Ok(Response::new(pb::NodeResponse { node: Some(node) }))
    }

    async fn list_nodes(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        Ok(Response::new(pb::ListNodesResponse {
            nodes: self.nodes.lock().unwrap().clone(),
        }))
    }

    async fn update_node(
        &self,
        r: Request<pb::UpdateNodeRequest>,
    ) -> Result<Response<pb::NodeResponse>, Status> {
        let r = r.into_inner();
        let found = self.find_node(&r.node)?;
        let mut nodes = self.nodes.lock().unwrap();
        let n = nodes.iter_mut().find(|n| n.id == found.id).unwrap();
        let meta = n.meta.as_mut().unwrap();
        if r.version != 0 && r.version != meta.version {
            return Err(Status::failed_precondition("update out of sequence"));
        }
        meta.version += 1;
        let spec = r.spec.unwrap_or_default();
        n.manager_status = (spec.role == pb::NodeRole::Manager as i32).then(|| pb::ManagerStatus {
            leader: n.id == NODE,
            reachability: "reachable".into(),
            addr: "10.0.0.1:2377".into(),
            raft_id: 1,
        });
        n.spec = Some(spec);
        Ok(Response::new(pb::NodeResponse {
            node: Some(n.clone()),
        }))
    }

    async fn remove_node(
        &self,
        r: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let r = r.into_inner();
        let n = self.find_node(&r.node)?;
        let ready = n.status.as_ref().unwrap().state == pb::NodeState::Ready as i32;
        if ready && !r.force {
            return Err(Status::failed_precondition(format!(
                "node {} is not down and can't be removed",
                n.id
            )));
        }
        self.nodes.lock().unwrap().retain(|x| x.id != n.id);
        Ok(Response::new(pb::RemoveNodeResponse { id: n.id }))
    }

    async fn join_token(
        &self,
        r: Request<pb::JoinTokenRequest>,
    ) -> Result<Response<pb::JoinTokenResponse>, Status> {
        let r = r.into_inner();
        if r.role != "worker" && r.role != "manager" {
            return Err(Status::invalid_argument(format!("bad role {}", r.role)));
        }
        if r.rotate {
            *self.rotations.lock().unwrap() += 1;
        }
        Ok(Response::new(pb::JoinTokenResponse {
            token: self.token(&r.role),
            manager_addr: "10.0.0.1:2377".into(),
        }))
    }

    async fn swarm_join(
        &self,
        r: Request<pb::SwarmJoinRequest>,
    ) -> Result<Response<pb::SwarmJoinResponse>, Status> {
        let r = r.into_inner();
        if r.remote_addr != "10.0.0.1:2377" {
            return Err(Status::unavailable(format!(
                "could not reach {}",
                r.remote_addr
            )));
        }
        let role = if r.token == self.token("manager") {
            pb::NodeRole::Manager
        } else if r.token == self.token("worker") {
            pb::NodeRole::Worker
        } else {
            return Err(Status::invalid_argument("invalid join token"));
        };
        Ok(Response::new(pb::SwarmJoinResponse {
            node_id: "nodecccccccccccccccccccccc".into(),
            role: role as i32,
        }))
    }

    async fn swarm_leave(
        &self,
        r: Request<pb::SwarmLeaveRequest>,
    ) -> Result<Response<pb::SwarmLeaveResponse>, Status> {
        if !r.into_inner().force {
            return Err(Status::failed_precondition(
                "You are attempting to leave the swarm on a node that is participating as a manager. Use `--force` to suppress this message.",
            ));
        }
        Ok(Response::new(pb::SwarmLeaveResponse {}))
    }
}

fn node(id: &str, hostname: &str, role: pb::NodeRole) -> pb::Node {
    pb::Node {
        id: id.into(),
        meta: Some(pb::Meta {
            version: 1,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_000,
        }),
        spec: Some(pb::NodeSpec {
            role: role as i32,
            availability: pb::NodeAvailability::Active as i32,
            labels: Default::default(),
        }),
        description: Some(pb::NodeDescription {
            hostname: hostname.into(),
            engine_version: "0.1.0".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            ..Default::default()
        }),
        status: Some(pb::NodeStatus {
            state: pb::NodeState::Ready as i32,
            message: String::new(),
            addr: "10.0.0.1".into(),
            ingress_address: "10.255.0.2/16".into(),
        }),
        manager_status: (role == pb::NodeRole::Manager).then(|| pb::ManagerStatus {
            leader: true,
            reachability: "reachable".into(),
            addr: "10.0.0.1:2377".into(),
            raft_id: 1,
        }),
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn shoal(host: &str, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env("SHOAL_HOST", host)
        .output()
        .await
        .expect("run shoal");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Serves a fresh fake on a Unix socket in a temporary directory; returns the
/// directory (keep it alive) and the `-H` value.
fn start() -> (tempfile::TempDir, String) {
    start_with(Fake::new())
}

/// [`start`] with a fake the test keeps a handle on.
fn start_with(fake: Fake) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("shoal.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServer::new(fake))
            .serve_with_incoming(incoming),
    );
    let host = format!("unix://{}", sock.display());
    (dir, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_against_a_fake_daemon() {
    let (dir, host) = start();

    // create: ID, then Docker's non-TTY progress: each refresh appended, no bars.
    let o = shoal(
        &host,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "-p",
            "8080:80",
            "shoal/echo",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0].len(), 25);
    assert_eq!(
        without_waits(&lines[1..].join("\n")),
        "overall progress: 0 out of 3 tasks\n1/3:  \n2/3:  \n3/3:  \n\
         overall progress: 3 out of 3 tasks\nverify: Service web converged"
    );
    assert!(o
        .stdout
        .contains("verify: Waiting 5 seconds to verify that tasks are stable...\n"));
    let id = lines[0].to_string();

    let o = shoal(&host, &["service", "ls"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let row = o.stdout.lines().nth(1).unwrap();
    assert_eq!(
        row,
        format!(
            "{}   web       replicated   3/3        shoal/echo   *:8080->80/tcp",
            &id[..12]
        )
    );
    let o = shoal(&host, &["service", "ls", "-q"]).await;
    assert_eq!(o.stdout.trim(), &id[..12]);

    let o = shoal(&host, &["service", "ps", "web"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows: Vec<&str> = o.stdout.lines().collect();
    assert!(rows[0].starts_with(
        "ID             NAME      IMAGE        NODE      DESIRED STATE   CURRENT STATE"
    ));
    assert!(
        rows[1].contains("   web.1     shoal/echo   host1     Running         Running "),
        "{}",
        rows[1]
    );
    assert_eq!(rows.len(), 4);

    let o = shoal(&host, &["service", "logs", "web"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let first = o.stdout.lines().next().unwrap();
    assert!(
        first.starts_with("web.1.") && first.ends_with("@host1    | hello from 1"),
        "{first}"
    );

    let task_id = rows[1].split_whitespace().next().unwrap();
    let o = shoal(
        &host,
        &["inspect", "-f", "{{.Status.ContainerStatus.PID}}", task_id],
    )
    .await;
    assert_eq!((o.code, o.stdout.as_str()), (0, "1001\n"), "{}", o.stderr);

    let o = shoal(&host, &["service", "inspect", "web"]).await;
    assert!(
        o.stdout.starts_with("[\n    {\n        \"ID\": \""),
        "{}",
        o.stdout
    );
    let o = shoal(&host, &["service", "inspect", "--pretty", "web"]).await;
    assert!(o.stdout.contains(" PublishedPort = 8080\n"), "{}", o.stdout);

    let o = shoal(&host, &["service", "scale", "-d", "web=5"]).await;
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "web scaled to 5\n"),
        "{}",
        o.stderr
    );

    let o = shoal(&host, &["node", "ls"]).await;
    assert!(
        o.stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(&format!("{NODE} *   host1")),
        "{}",
        o.stdout
    );

    let o = shoal(&host, &["service", "ps", "nope"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "Error response from daemon: service nope not found\n"
    );

    let o = shoal(&host, &["service", "rm", "web", "nope"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.stdout, "web\n");
    assert_eq!(
        o.stderr,
        "Error response from daemon: service nope not found\n"
    );

    let o = shoal(&host, &["swarm", "init"]).await;
    assert_eq!(
        o.stdout,
        format!(
            "Swarm initialized: current node ({NODE}) is now a manager.\n\n\
             To add a worker to this swarm, run the following command:\n\n    \
             shoal swarm join --token SWMTKN-1-digest-worker0 10.0.0.1:2377\n\n\
             To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n"
        )
    );

    drop(dir);
    let o = shoal("unix:///nonexistent/shoal.sock", &["service", "ls"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "cannot connect to shoald at unix:///nonexistent/shoal.sock: is it running?\n"
    );
}

/// Asserts success and returns stdout.
fn ok(o: Out) -> String {
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    o.stdout
}

/// Asserts failure and returns stderr.
fn fails(o: Out) -> String {
    assert_eq!(o.code, 1, "stdout: {}", o.stdout);
    o.stderr
}

/// Asserts a refused flag value (Docker's status 125) and returns stderr.
fn flag_error(o: Out) -> String {
    assert_eq!(o.code, 125, "stdout: {}", o.stdout);
    o.stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_membership_verbs() {
    let (_dir, host) = start();

    let out = ok(shoal(&host, &["swarm", "join-token", "worker"]).await);
    assert_eq!(
        out,
        "To add a worker to this swarm, run the following command:\n\n    \
         shoal swarm join --token SWMTKN-1-digest-worker0 10.0.0.1:2377\n\n"
    );
    let out = ok(shoal(&host, &["swarm", "join-token", "manager"]).await);
    assert!(
        out.starts_with("To add a manager to this swarm, run the following command:\n"),
        "{out}"
    );
    let out = ok(shoal(&host, &["swarm", "join-token", "-q", "worker"]).await);
    assert_eq!(out, "SWMTKN-1-digest-worker0\n");
    let out = ok(shoal(&host, &["swarm", "join-token", "--rotate", "worker"]).await);
    assert_eq!(
        out,
        "Successfully rotated worker join token.\n\n\
         To add a worker to this swarm, run the following command:\n\n    \
         shoal swarm join --token SWMTKN-1-digest-worker1 10.0.0.1:2377\n\n"
    );
    let out = ok(shoal(&host, &["swarm", "join-token", "-q", "--rotate", "manager"]).await);
    assert_eq!(out, "SWMTKN-1-digest-manager2\n");
    let err = fails(shoal(&host, &["swarm", "join-token", "boss"]).await);
    assert_eq!(
        err,
        "invalid argument \"boss\": role must be \"worker\" or \"manager\"\n"
    );

    // The port defaults to 2377.
    let out = ok(shoal(
        &host,
        &[
            "swarm",
            "join",
            "--token",
            "SWMTKN-1-digest-worker2",
            "10.0.0.1",
        ],
    )
    .await);
    assert_eq!(out, "This node joined a swarm as a worker.\n");
    let out = ok(shoal(
        &host,
        &[
            "swarm",
            "join",
            "--token",
            "SWMTKN-1-digest-manager2",
            "--advertise-addr",
            "10.0.0.9",
            "10.0.0.1:2377",
        ],
    )
    .await);
    assert_eq!(out, "This node joined a swarm as a manager.\n");
    let err = fails(shoal(&host, &["swarm", "join", "--token", "bad", "10.0.0.1"]).await);
    assert_eq!(err, "Error response from daemon: invalid join token\n");
    let err = fails(shoal(&host, &["swarm", "join", "--token", "t", "h:x"]).await);
    assert!(err.starts_with("invalid remote address \"h:x\""), "{err}");

    let err = fails(shoal(&host, &["swarm", "leave"]).await);
    assert!(
        err.starts_with("Error response from daemon: You are attempting to leave"),
        "{err}"
    );
    assert_eq!(
        ok(shoal(&host, &["swarm", "leave", "--force"]).await),
        "Node left the swarm.\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_verbs() {
    let (_dir, host) = start();

    let out = ok(shoal(&host, &["node", "ls"]).await);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[1].starts_with(&format!("{NODE} *   host1")), "{out}");
    assert!(rows[1].contains("   Leader   "), "{out}");
    assert!(rows[2].starts_with(&format!("{NODE2}     host2")), "{out}");
    assert!(!rows[2].contains("Reachable"), "{out}");

    // update: flags applied, the argument echoed.
    let out = ok(shoal(
        &host,
        &[
            "node",
            "update",
            "--availability",
            "drain",
            "--label-add",
            "zone=east",
            "--label-add",
            "ssd=yes",
            "host2",
        ],
    )
    .await);
    assert_eq!(out, "host2\n");
    let out = ok(shoal(&host, &["node", "update", "--label-rm", "ssd", "host2"]).await);
    assert_eq!(out, "host2\n");
    let out = ok(shoal(
        &host,
        &[
            "node",
            "inspect",
            "-f",
            "{{.Spec.Availability}} {{.Spec.Labels}}",
            "host2",
        ],
    )
    .await);
    assert!(out.starts_with("drain "), "{out}");
    assert!(out.contains("zone") && !out.contains("ssd"), "{out}");
    let out = ok(shoal(&host, &["node", "inspect", "--pretty", "host2"]).await);
    assert!(out.contains("Labels:\n - zone=east\n"), "{out}");
    assert!(out.contains(" Availability:         \tDrain\n"), "{out}");
    assert!(!out.contains("Manager Status:"), "{out}");
    let out = ok(shoal(&host, &["node", "inspect", "--pretty", "self"]).await);
    assert!(out.starts_with(&format!("ID:\t\t\t{NODE}\n")), "{out}");
    assert!(out.contains("Manager Status:\n"), "{out}");
    assert!(out.contains(" Leader:\t\tYes\n"), "{out}");

    let err = flag_error(
        shoal(
            &host,
            &["node", "update", "--availability", "sideways", "host2"],
        )
        .await,
    );
    assert_eq!(
        err,
        "invalid argument \"sideways\" for \"--availability\" flag: must be active, pause or drain\n"
    );
    let err = flag_error(shoal(&host, &["node", "update", "--label-add", "zone", "host2"]).await);
    assert_eq!(
        err,
        "invalid argument \"zone\" for \"--label-add\" flag: expected KEY=VALUE\n"
    );
    let err = fails(shoal(&host, &["node", "update", "--label-rm", "nope", "host2"]).await);
    assert_eq!(err, "key nope doesn't exist in node's labels\n");
    let err = fails(
        shoal(
            &host,
            &["node", "update", "--availability", "pause", "ghost"],
        )
        .await,
    );
    assert_eq!(err, "Error response from daemon: node ghost not found\n");

    // promote / demote, and the already-in-role case.
    let out = ok(shoal(&host, &["node", "promote", "host2"]).await);
    assert_eq!(out, "Node host2 promoted to a manager in the swarm.\n");
    let out = ok(shoal(&host, &["node", "promote", "host2", "host1"]).await);
    assert_eq!(
        out,
        format!("Node {NODE2} is already a manager.\nNode {NODE} is already a manager.\n")
    );
    let out = ok(shoal(&host, &["node", "ls"]).await);
    assert!(out.lines().nth(2).unwrap().contains("Reachable"), "{out}");
    let out = ok(shoal(&host, &["node", "demote", "host2"]).await);
    assert_eq!(out, "Manager host2 demoted in the swarm.\n");
    let out = ok(shoal(&host, &["node", "demote", "host2"]).await);
    assert_eq!(out, format!("Node {NODE2} is already a worker.\n"));
    let out = ok(shoal(&host, &["node", "update", "--role", "manager", "host2"]).await);
    assert_eq!(out, "host2\n");
    let out = ok(shoal(&host, &["node", "inspect", "-f", "{{.Spec.Role}}", "host2"]).await);
    assert_eq!(out, "manager\n");

    // ps: tasks of this node by default; another node has none.
    ok(shoal(
        &host,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "shoal/echo",
        ],
    )
    .await);
    let out = ok(shoal(&host, &["node", "ps"]).await);
    let rows: Vec<&str> = out.lines().collect();
    assert!(
        rows[0].starts_with(
            "ID             NAME      IMAGE        NODE      DESIRED STATE   CURRENT STATE"
        ),
        "{out}"
    );
    assert!(rows[0].ends_with("ERROR     PORTS"), "{out}");
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[1].contains("   web.1     shoal/echo   host1     Running         Running "),
        "{}",
        rows[1]
    );
    let out = ok(shoal(&host, &["node", "ps", "-q", "self"]).await);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.len() == 12), "{out}");
    let out = ok(shoal(&host, &["node", "ps", "--no-trunc", "-q", NODE]).await);
    assert!(out.lines().all(|l| l.len() == 25), "{out}");
    let out = ok(shoal(&host, &["node", "ps", "-f", "name=web.2", "host1"]).await);
    assert_eq!(out.lines().count(), 2, "{out}");
    let out = ok(shoal(&host, &["node", "ps", "host2"]).await);
    assert_eq!(out.lines().count(), 1, "{out}");
    let o = shoal(&host, &["node", "ps", "host1", "ghost"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.stdout.lines().count(), 3, "{}", o.stdout);
    assert_eq!(
        o.stderr,
        "Error response from daemon: node ghost not found\n"
    );

    // rm: a ready node needs --force; errors come after the removed ones.
    let o = shoal(&host, &["node", "rm", "host2", "ghost"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.stdout, "");
    assert_eq!(
        o.stderr,
        format!(
            "Error response from daemon: node {NODE2} is not down and can't be removed; \
             Error response from daemon: node ghost not found\n"
        )
    );
    let out = ok(shoal(&host, &["node", "rm", "--force", "host2"]).await);
    assert_eq!(out, "host2\n");
    let out = ok(shoal(&host, &["node", "ls", "-q"]).await);
    assert_eq!(out, format!("{NODE}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_rollback() {
    let (_dir, host) = start();
    ok(shoal(
        &host,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--update-monitor",
            "1s",
            "--rollback-monitor",
            "500ms",
            "shoal/echo",
        ],
    )
    .await);
    let out = ok(shoal(
        &host,
        &[
            "service",
            "inspect",
            "-f",
            "{{json .Spec.UpdateConfig}} {{.Spec.RollbackConfig.Monitor}}",
            "web",
        ],
    )
    .await);
    assert_eq!(
        out,
        "{\"Delay\":0,\"FailureAction\":\"pause\",\"MaxFailureRatio\":0,\"Monitor\":1000000000,\
         \"Order\":\"stop-first\",\"Parallelism\":1} 500ms\n"
    );

    // update: the name, then the progress until the update completed.
    let out = ok(shoal(
        &host,
        &[
            "service",
            "update",
            "--image",
            "shoal/echo:2",
            "--env-add",
            "A=1",
            "--force",
            "web",
        ],
    )
    .await);
    assert_eq!(
        without_waits(&out),
        "web\noverall progress: 0 out of 2 tasks\n1/2:  \n2/2:  \n\
         overall progress: 2 out of 2 tasks\nverify: Service web converged\n"
    );
    let out = ok(shoal(
        &host,
        &[
            "service",
            "inspect",
            "-f",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{json .Spec.TaskTemplate.ContainerSpec.Env}} \
             {{.Spec.TaskTemplate.ForceUpdate}} {{.UpdateStatus.State}} {{.UpdateStatus.Message}}",
            "web",
        ],
    )
    .await);
    assert_eq!(out, "shoal/echo:2 [\"A=1\"] 1 completed update completed\n");
    let out = ok(shoal(&host, &["service", "inspect", "--pretty", "web"]).await);
    assert!(
        out.contains("UpdateStatus:\n State:\t\tcompleted\n Started:\t"),
        "{out}"
    );
    assert!(
        out.contains(
            "UpdateConfig:\n Parallelism:\t1\n On failure:\tpause\n Monitoring Period: 1s\n"
        ),
        "{out}"
    );

    // rollback: the previous spec comes back.
    let out = ok(shoal(&host, &["service", "rollback", "web"]).await);
    assert_eq!(
        without_waits(&out),
        "web\nrollback: manually requested rollback\n\
         overall progress: rolling back update: 0 out of 2 tasks\n1/2:  \n2/2:  \n\
         overall progress: rolling back update: 2 out of 2 tasks\n\
         verify: Service web converged\n"
    );
    let out = ok(shoal(
        &host,
        &[
            "service",
            "inspect",
            "-f",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{.UpdateStatus.State}}",
            "web",
        ],
    )
    .await);
    assert_eq!(out, "shoal/echo rollback_completed\n");

    // update --rollback -q: waits silently.
    let out = ok(shoal(&host, &["service", "update", "--rollback", "-q", "web"]).await);
    assert_eq!(out, "web\n");

    // A paused update fails with the daemon's message.
    let o = shoal(
        &host,
        &["service", "update", "--image", "shoal/echo:paused", "web"],
    )
    .await;
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.starts_with("web\n"), "{}", o.stdout);
    assert_eq!(
        o.stderr,
        "service update paused: update paused due to failure or early termination of task t1\n"
    );

    // An update rolled back on failure: shown, waited for, then a failure.
    let o = shoal(
        &host,
        &["service", "update", "--image", "shoal/echo:broken", "web"],
    )
    .await;
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert_eq!(
        without_waits(&o.stdout),
        "web\nrollback: update rolled back due to failure or early termination of task t2\n\
         overall progress: rolling back update: 0 out of 2 tasks\n1/2:  \n2/2:  \n\
         overall progress: rolling back update: 2 out of 2 tasks\n\
         verify: Service web converged\n"
    );
    assert_eq!(
        o.stderr,
        "service update rolled back: update rolled back due to failure or early termination of task t2\n"
    );

    // -d returns at once; other edits land in the spec.
    let out = ok(shoal(
        &host,
        &[
            "service",
            "update",
            "-d",
            "--replicas",
            "3",
            "--publish-add",
            "8080:80",
            "--label-add",
            "tier=front",
            "--args",
            "--greeting 'hello there'",
            "--update-parallelism",
            "2",
            "web",
        ],
    )
    .await);
    assert_eq!(out, "web\n");
    let out = ok(shoal(
        &host,
        &[
            "service",
            "inspect",
            "-f",
            "{{.Spec.Mode.Replicated.Replicas}} {{json .Spec.TaskTemplate.ContainerSpec.Args}} \
             {{.Spec.Labels.tier}} {{.Spec.UpdateConfig.Parallelism}} \
             {{json .Spec.EndpointSpec.Ports}}",
            "web",
        ],
    )
    .await);
    assert!(
        out.starts_with("3 [\"--greeting\",\"hello there\"] front 2 "),
        "{out}"
    );
    assert!(out.contains("\"PublishedPort\":8080"), "{out}");

    // Errors: one line each.
    let err = fails(shoal(&host, &["service", "update", "--force", "nope"]).await);
    assert_eq!(err, "Error response from daemon: service nope not found\n");
    let err = flag_error(
        shoal(
            &host,
            &["service", "update", "--update-order", "sideways", "web"],
        )
        .await,
    );
    assert_eq!(
        err,
        "invalid argument \"sideways\" for \"--update-order\" flag: must be stop-first or start-first\n"
    );
    let err = flag_error(
        shoal(
            &host,
            &["service", "update", "--update-delay", "-1s", "web"],
        )
        .await,
    );
    assert_eq!(
        err,
        "invalid argument \"-1s\" for \"--update-delay\" flag: duration cannot be negative\n"
    );
    let err = flag_error(
        shoal(
            &host,
            &[
                "service",
                "update",
                "--update-max-failure-ratio",
                "1.5",
                "web",
            ],
        )
        .await,
    );
    assert_eq!(
        err,
        "invalid argument \"1.5\" for \"--update-max-failure-ratio\" flag: must be between 0 and 1\n"
    );
    ok(shoal(
        &host,
        &["service", "create", "-d", "--name", "api", "shoal/echo"],
    )
    .await);
    let err = fails(shoal(&host, &["service", "rollback", "api"]).await);
    assert_eq!(
        err,
        "Error response from daemon: service api has no previous spec\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_race_a_status_write_are_read_and_sent_again() {
    let fake = Fake::new();
    let (_dir, host) = start_with(fake.clone());
    ok(shoal(
        &host,
        &["service", "create", "-d", "--name", "web", "shoal/echo"],
    )
    .await);

    // Each of these reads a service or node whose version a manager then
    // moves on (twice in a row): the CLI reads again and re-applies its change.
    *fake.racing_reads.lock().unwrap() = 2;
    let out = ok(shoal(&host, &["service", "scale", "-d", "web=4"]).await);
    assert_eq!(out.trim(), "web scaled to 4");
    assert_eq!(fake.find("web").unwrap().spec.unwrap().replicas, 4);
    // A service that never stops changing (and no update in progress that
    // would complete): the CLI gives up with Docker's words.
    *fake.polls_left.lock().unwrap() = 0;
    *fake.racing_reads.lock().unwrap() = 100;
    let err = fails(shoal(&host, &["service", "scale", "-d", "web=5"]).await);
    assert!(err.contains("update out of sequence"), "{err}");
    assert_eq!(fake.find("web").unwrap().spec.unwrap().replicas, 4);

    *fake.racing_reads.lock().unwrap() = 2;
    ok(shoal(
        &host,
        &["service", "update", "-d", "--env-add", "A=1", "web"],
    )
    .await);
    assert_eq!(fake.find("web").unwrap().spec.unwrap().env, ["A=1"]);
    *fake.racing_reads.lock().unwrap() = 2;
    ok(shoal(&host, &["node", "update", "--label-add", "zone=a", "host2"]).await);
    assert_eq!(
        fake.find_node("host2").unwrap().spec.unwrap().labels["zone"],
        "a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_raced_many_times_in_a_row_gets_through() {
    let fake = Fake::new();
    let (_dir, host) = start_with(fake.clone());
    ok(shoal(
        &host,
        &["service", "create", "-d", "--name", "web", "shoal/echo"],
    )
    .await);
    // Eight reads in a row are overtaken by another write: more than a fixed
    // handful of retries, well within the backoff's patience.
    *fake.racing_reads.lock().unwrap() = 8;
    ok(shoal(
        &host,
        &["service", "update", "-d", "--env-add", "A=1", "web"],
    )
    .await);
    assert_eq!(fake.find("web").unwrap().spec.unwrap().env, ["A=1"]);
    assert_eq!(*fake.racing_reads.lock().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_service_all_get_through() {
    let fake = Fake::new();
    let (_dir, host) = start_with(fake.clone());
    ok(shoal(
        &host,
        &["service", "create", "-d", "--name", "web", "shoal/echo"],
    )
    .await);
    // Every read is also overtaken a few times, so the writers collide.
    *fake.racing_reads.lock().unwrap() = 12;
    let writers: Vec<_> = (0..12)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                let env = format!("K{i}=v");
                shoal(
                    &host,
                    &["service", "update", "-d", "--env-add", &env, "web"],
                )
                .await
            })
        })
        .collect();
    for w in writers {
        ok(w.await.unwrap());
    }
    let mut env = fake.find("web").unwrap().spec.unwrap().env;
    env.sort();
    let mut want: Vec<String> = (0..12).map(|i| format!("K{i}=v")).collect();
    want.sort();
    assert_eq!(env, want);
}

/// Progress output without its `verify: Waiting N seconds ...` lines, which
/// Docker repeats at every poll of the stability check.
fn without_waits(out: &str) -> String {
    out.split_inclusive('\n')
        .filter(|l| !l.starts_with("verify: Waiting "))
        .collect()
}
