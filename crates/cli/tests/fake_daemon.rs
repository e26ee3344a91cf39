//! Drives the `shoal` binary against an in-memory fake of the control API on
//! a Unix socket: the connector, each verb's request, and its output.

use std::sync::{Arc, Mutex};

use shoal_api::pb::{self, control_server::ControlServer};
use tonic::codegen::tokio_stream;
use tonic::{Request, Response, Status};

const NODE: &str = "nodeaaaaaaaaaaaaaaaaaaaaa";

/// A daemon whose tasks start running the moment they are created.
#[derive(Default, Clone)]
struct Fake {
    services: Arc<Mutex<Vec<pb::Service>>>,
    tasks: Arc<Mutex<Vec<pb::Task>>>,
}

impl Fake {
    fn find(&self, key: &str) -> Result<pb::Service, Status> {
        self.services
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.id.starts_with(key) || s.spec.as_ref().is_some_and(|sp| sp.name == key))
            .cloned()
            .ok_or_else(|| Status::not_found(format!("service {key} not found")))
    }

    fn reconcile(&self, svc: &pb::Service) {
        let spec = svc.spec.clone().unwrap();
        let mut tasks = self.tasks.lock().unwrap();
        for slot in 1..=spec.replicas {
            if tasks
                .iter()
                .any(|t| t.service_id == svc.id && t.slot == slot)
            {
                continue;
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
        };
        self.services.lock().unwrap().push(svc.clone());
        self.reconcile(&svc);
        Ok(Response::new(pb::ServiceResponse { service: Some(svc) }))
    }

    async fn get_service(
        &self,
        r: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let svc = self.find(&r.into_inner().service)?;
        Ok(Response::new(pb::ServiceResponse { service: Some(svc) }))
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
                    service: Some(s),
                })
                .collect(),
        }))
    }

    async fn update_service(
        &self,
        r: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let r = r.into_inner();
        let found = self.find(&r.service)?;
        let svc = {
            let mut services = self.services.lock().unwrap();
            let svc = services.iter_mut().find(|s| s.id == found.id).unwrap();
            svc.previous_spec = svc.spec.take();
            svc.spec = r.spec;
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
                    timestamp_ms: 1_700_000_000_000,
                    stream: "stdout".into(),
                    data: format!("hello from {}\n", t.slot).into_bytes(),
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
            .cloned()
            .collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn get_node(
        &self,
        r: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::NodeResponse>, Status> {
        if r.into_inner().node == NODE {
            Ok(Response::new(pb::NodeResponse { node: Some(node()) }))
        } else {
            Err(Status::not_found("no such node"))
        }
    }

    async fn list_nodes(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        Ok(Response::new(pb::ListNodesResponse {
            nodes: vec![node()],
        }))
    }
}

fn node() -> pb::Node {
    pb::Node {
        id: NODE.into(),
        meta: None,
        spec: Some(pb::NodeSpec {
            role: pb::NodeRole::Manager as i32,
            availability: pb::NodeAvailability::Active as i32,
            labels: Default::default(),
        }),
        description: Some(pb::NodeDescription {
            hostname: "host1".into(),
            engine_version: "0.1.0".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
        }),
        status: Some(pb::NodeStatus {
            state: pb::NodeState::Ready as i32,
            message: String::new(),
            addr: "10.0.0.1".into(),
        }),
        manager_status: Some(pb::ManagerStatus {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_against_a_fake_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("shoal.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServer::new(Fake::default()))
            .serve_with_incoming(incoming),
    );
    let host = format!("unix://{}", sock.display());

    // create: ID, then the non-TTY progress once converged.
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
    let bar = "running   [==================================================>]";
    assert_eq!(lines[0].len(), 25);
    assert_eq!(lines[1], "overall progress: 3 out of 3 tasks");
    assert_eq!(lines[2], format!("1/3: {bar}"));
    assert_eq!(lines[4], format!("3/3: {bar}"));
    assert_eq!(lines[5], "verify: Service web converged");
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
    assert!(o.stdout.starts_with(&format!(
        "Swarm initialized: current node ({NODE}) is now a manager.\n"
    )));

    drop(dir);
    let o = shoal("unix:///nonexistent/shoal.sock", &["service", "ls"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "cannot connect to shoald at unix:///nonexistent/shoal.sock: is it running?\n"
    );
}
