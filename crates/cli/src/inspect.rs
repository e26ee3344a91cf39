//! Docker-shaped JSON for services, tasks and nodes (`inspect` output), their
//! `-f/--format` templates, and the top-level `shoal inspect`.

use std::collections::BTreeMap;

use anyhow::bail;
use serde::Serialize;
use shoal_api::pb;

use crate::client::{self, DaemonError, Host};
use crate::format::rfc3339;

#[cfg(test)]
mod tests;

/// `shoal inspect ID...`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Format output using a Go template, e.g. '{{.Status.ContainerStatus.PID}}'.
    #[arg(short, long)]
    format: Option<String>,
    /// Task, service or node IDs (or names).
    #[arg(required = true)]
    ids: Vec<String>,
}

/// Looks each argument up as a task, then a service, then a node.
pub async fn run(host: &Host, args: InspectArgs) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for id in &args.ids {
        if let Ok(r) = c.get_task(pb::GetTaskRequest { task: id.clone() }).await {
            if let Some(t) = r.into_inner().task {
                found.push(Object::Task(task_json(&t)));
                continue;
            }
        }
        match c
            .get_service(pb::GetServiceRequest {
                service: id.clone(),
            })
            .await
        {
            Ok(r) => {
                if let Some(s) = r.into_inner().service {
                    found.push(Object::Service(service_json(&s)));
                    continue;
                }
            }
            Err(s) if !is_not_found(&s) => return Err(DaemonError(s).into()),
            Err(_) => {}
        }
        match c.get_node(pb::GetNodeRequest { node: id.clone() }).await {
            Ok(r) => match r.into_inner().node {
                Some(n) => found.push(Object::Node(node_json(&n))),
                None => missing.push(id.clone()),
            },
            Err(s) if !is_not_found(&s) => return Err(DaemonError(s).into()),
            Err(_) => missing.push(id.clone()),
        }
    }
    print_values(&found, args.format.as_deref())?;
    if !missing.is_empty() {
        bail!("Error: No such object: {}", missing.join(", "));
    }
    Ok(())
}

/// Whether a status means "no such object" rather than a real failure.
pub fn is_not_found(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::NotFound | tonic::Code::InvalidArgument
    )
}

/// Anything `inspect` can print, keeping Docker's field order.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Object {
    /// `docker inspect TASK`.
    Task(TaskJson),
    /// `docker service inspect`.
    Service(ServiceJson),
    /// `docker node inspect`.
    Node(NodeJson),
}

/// Prints inspect results: a JSON array, or one template line per object.
pub fn print_values(values: &[Object], format: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match format {
        Some(tmpl) => {
            let template = crate::template::Template::parse(tmpl)?;
            for v in values {
                let data = crate::template::data::from_json(&serde_json::to_value(v)?);
                writeln!(out, "{}", template.render(&data)?)?;
            }
        }
        None => writeln!(out, "{}", to_docker_json(values))?,
    }
    Ok(())
}

/// Pretty JSON with Docker's 4-space indent.
pub fn to_docker_json<T: Serialize + ?Sized>(v: &T) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    // Serializing a Value into memory cannot fail.
    v.serialize(&mut ser).expect("serialize JSON value");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

// === Docker shapes ===

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Version {
    index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PortJson {
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    protocol: String,
    target_port: u32,
    published_port: u32,
    publish_mode: String,
}

fn ports_json(ports: &[pb::PortConfig]) -> Vec<PortJson> {
    ports
        .iter()
        .map(|p| PortJson {
            name: p.name.clone(),
            protocol: if p.protocol.is_empty() {
                "tcp".into()
            } else {
                p.protocol.clone()
            },
            target_port: p.target_port,
            published_port: p.published_port,
            publish_mode: if p.publish_mode.is_empty() {
                "ingress".into()
            } else {
                p.publish_mode.clone()
            },
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerSpecJson {
    image: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<HealthcheckJson>,
    /// Nanoseconds, as Docker.
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_grace_period: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    stop_signal: String,
}

/// Docker's `HealthConfig`; durations in nanoseconds.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HealthcheckJson {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    test: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    interval: u64,
    #[serde(skip_serializing_if = "is_zero")]
    timeout: u64,
    #[serde(skip_serializing_if = "is_zero")]
    start_period: u64,
    #[serde(skip_serializing_if = "is_zero")]
    retries: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// Docker's `Resources` / `Limit`: omitted fields are unset.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ResourceJson {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "is_zero_i64")]
    nano_cpus: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    memory_bytes: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ResourcesJson {
    limits: ResourceJson,
    reservations: ResourceJson,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SpreadJson {
    spread_descriptor: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PreferenceJson {
    spread: SpreadJson,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PlacementJson {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    constraints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    preferences: Vec<PreferenceJson>,
    #[serde(skip_serializing_if = "is_zero")]
    max_replicas: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RestartPolicyJson {
    condition: &'static str,
    /// Nanoseconds, as Go's time.Duration.
    delay: u64,
    max_attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TaskTemplateJson {
    container_spec: ContainerSpecJson,
    resources: ResourcesJson,
    restart_policy: RestartPolicyJson,
    placement: PlacementJson,
    force_update: u64,
    runtime: &'static str,
}

/// Docker's `UpdateConfig` (also the shape of `RollbackConfig`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateConfigJson {
    parallelism: u64,
    /// Nanoseconds.
    delay: u64,
    failure_action: &'static str,
    /// Nanoseconds.
    monitor: u64,
    #[serde(serialize_with = "go_float32")]
    max_failure_ratio: f32,
    order: &'static str,
}

/// A float32 as Go's JSON writes it: `0`, `0.1` (not `0.0`, `0.10000000149`).
fn go_float32<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(v.to_string().parse().unwrap_or(f64::from(*v)))
    }
}

/// Docker's `UpdateStatus`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateStatusJson {
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointSpecJson {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<PortJson>,
}

#[derive(Serialize)]
enum ModeJson {
    Replicated {
        #[serde(rename = "Replicas")]
        replicas: u64,
    },
    Global {},
    ReplicatedJob {
        #[serde(rename = "MaxConcurrent")]
        max_concurrent: u64,
        #[serde(rename = "TotalCompletions")]
        total_completions: u64,
    },
    GlobalJob {},
}

/// Docker's `JobStatus` of a job service.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JobStatusJson {
    job_iteration: Version,
    last_execution: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceSpecJson {
    name: String,
    labels: BTreeMap<String, String>,
    task_template: TaskTemplateJson,
    mode: ModeJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_config: Option<UpdateConfigJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_config: Option<UpdateConfigJson>,
    endpoint_spec: EndpointSpecJson,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointJson {
    spec: EndpointSpecJson,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<PortJson>,
}

/// A service as `docker service inspect` shows it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceJson {
    #[serde(rename = "ID")]
    id: String,
    version: Version,
    created_at: String,
    updated_at: String,
    spec: ServiceSpecJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_spec: Option<Box<ServiceSpecJson>>,
    endpoint: EndpointJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_status: Option<UpdateStatusJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_status: Option<JobStatusJson>,
}

/// Docker's name for a runtime (`TaskTemplate.Runtime`).
pub fn runtime_name(r: i32) -> &'static str {
    match pb::Runtime::try_from(r) {
        Ok(pb::Runtime::Process) => "process",
        _ => "builtin",
    }
}

/// Docker's name for a restart condition.
pub fn restart_condition_name(c: i32) -> &'static str {
    match pb::RestartCondition::try_from(c) {
        Ok(pb::RestartCondition::OnFailure) => "on-failure",
        Ok(pb::RestartCondition::None) => "none",
        _ => "any",
    }
}

/// Docker's name for a failure action (`pause`, `continue`, `rollback`).
pub fn failure_action_name(a: i32) -> &'static str {
    match pb::FailureAction::try_from(a) {
        Ok(pb::FailureAction::Continue) => "continue",
        Ok(pb::FailureAction::Rollback) => "rollback",
        _ => "pause",
    }
}

/// Docker's name for an update order (`stop-first`, `start-first`).
pub fn update_order_name(o: i32) -> &'static str {
    match pb::UpdateOrder::try_from(o) {
        Ok(pb::UpdateOrder::StartFirst) => "start-first",
        _ => "stop-first",
    }
}

/// Docker's name for an update state (`updating`, `rollback_started`, ...).
pub fn update_state_name(s: i32) -> &'static str {
    match pb::UpdateState::try_from(s) {
        Ok(pb::UpdateState::Updating) => "updating",
        Ok(pb::UpdateState::Paused) => "paused",
        Ok(pb::UpdateState::Completed) => "completed",
        Ok(pb::UpdateState::RollbackStarted) => "rollback_started",
        Ok(pb::UpdateState::RollbackPaused) => "rollback_paused",
        Ok(pb::UpdateState::RollbackCompleted) => "rollback_completed",
        _ => "",
    }
}

fn update_config_json(c: &pb::UpdateConfig) -> UpdateConfigJson {
    UpdateConfigJson {
        parallelism: c.parallelism,
        delay: c.delay_ms * 1_000_000,
        failure_action: failure_action_name(c.failure_action),
        monitor: c.monitor_ms * 1_000_000,
        max_failure_ratio: c.max_failure_ratio,
        order: update_order_name(c.order),
    }
}

fn update_status_json(s: &pb::UpdateStatus) -> Option<UpdateStatusJson> {
    let state = update_state_name(s.state);
    if state.is_empty() {
        return None;
    }
    Some(UpdateStatusJson {
        state,
        started_at: (s.started_at_ms > 0).then(|| rfc3339(s.started_at_ms)),
        completed_at: (s.completed_at_ms > 0).then(|| rfc3339(s.completed_at_ms)),
        message: s.message.clone(),
    })
}

fn container_spec_json(spec: &pb::ServiceSpec) -> ContainerSpecJson {
    ContainerSpecJson {
        image: spec.image.clone(),
        args: spec.command.clone(),
        env: spec.env.clone(),
        dir: spec.workdir.clone(),
        healthcheck: spec.health.as_ref().map(|h| HealthcheckJson {
            test: h.test.clone(),
            interval: h.interval_ms * 1_000_000,
            timeout: h.timeout_ms * 1_000_000,
            start_period: h.start_period_ms * 1_000_000,
            retries: h.retries,
        }),
        stop_grace_period: (spec.stop_grace_period_ms > 0)
            .then_some(spec.stop_grace_period_ms * 1_000_000),
        stop_signal: spec.stop_signal.clone(),
    }
}

fn resources_json(spec: &pb::ServiceSpec) -> ResourcesJson {
    let r = spec.resources.unwrap_or_default();
    ResourcesJson {
        limits: ResourceJson {
            nano_cpus: r.limit_nano_cpus,
            memory_bytes: r.limit_memory_bytes,
        },
        reservations: ResourceJson {
            nano_cpus: r.reserve_nano_cpus,
            memory_bytes: r.reserve_memory_bytes,
        },
    }
}

fn placement_json(spec: &pb::ServiceSpec) -> PlacementJson {
    let p = spec.placement.clone().unwrap_or_default();
    PlacementJson {
        constraints: p.constraints,
        preferences: p
            .preferences
            .iter()
            .map(|pref| PreferenceJson {
                spread: SpreadJson {
                    spread_descriptor: pref.strip_prefix("spread=").unwrap_or(pref).to_string(),
                },
            })
            .collect(),
        max_replicas: p.max_replicas_per_node,
    }
}

fn restart_json(spec: &pb::ServiceSpec) -> RestartPolicyJson {
    let r = spec.restart.unwrap_or_default();
    RestartPolicyJson {
        condition: restart_condition_name(r.condition),
        delay: r.delay_ms * 1_000_000,
        max_attempts: r.max_attempts,
        window: (r.window_ms > 0).then_some(r.window_ms * 1_000_000),
    }
}

fn service_spec_json(spec: &pb::ServiceSpec) -> ServiceSpecJson {
    ServiceSpecJson {
        name: spec.name.clone(),
        labels: spec.labels.clone().into_iter().collect(),
        task_template: TaskTemplateJson {
            container_spec: container_spec_json(spec),
            resources: resources_json(spec),
            restart_policy: restart_json(spec),
            placement: placement_json(spec),
            force_update: spec.force_update,
            runtime: runtime_name(spec.runtime),
        },
        mode: match pb::ServiceMode::try_from(spec.mode).unwrap_or_default() {
            pb::ServiceMode::Global => ModeJson::Global {},
            pb::ServiceMode::Replicated => ModeJson::Replicated {
                replicas: spec.replicas,
            },
            pb::ServiceMode::ReplicatedJob => ModeJson::ReplicatedJob {
                max_concurrent: spec.max_concurrent,
                total_completions: spec.replicas,
            },
            pb::ServiceMode::GlobalJob => ModeJson::GlobalJob {},
        },
        update_config: spec.update_config.as_ref().map(update_config_json),
        rollback_config: spec.rollback_config.as_ref().map(update_config_json),
        endpoint_spec: EndpointSpecJson {
            mode: "vip",
            ports: ports_json(&spec.ports),
        },
    }
}

/// A service as `docker service inspect` shows it.
pub fn service_json(s: &pb::Service) -> ServiceJson {
    let meta = s.meta.unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    let endpoint_ports = s
        .endpoint
        .as_ref()
        .map(|e| e.ports.as_slice())
        .unwrap_or(&[]);
    ServiceJson {
        id: s.id.clone(),
        version: Version {
            index: meta.version,
        },
        created_at: rfc3339(meta.created_at_ms),
        updated_at: rfc3339(meta.updated_at_ms),
        spec: service_spec_json(&spec),
        previous_spec: s
            .previous_spec
            .as_ref()
            .map(|p| Box::new(service_spec_json(p))),
        endpoint: EndpointJson {
            spec: EndpointSpecJson {
                mode: "vip",
                ports: ports_json(&spec.ports),
            },
            ports: ports_json(endpoint_ports),
        },
        update_status: s.update_status.as_ref().and_then(update_status_json),
        job_status: s.job_status.as_ref().map(|j| JobStatusJson {
            job_iteration: Version { index: j.iteration },
            last_execution: rfc3339(j.last_execution_ms),
        }),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TaskSpecJson {
    container_spec: ContainerSpecJson,
    resources: ResourcesJson,
    restart_policy: RestartPolicyJson,
    placement: PlacementJson,
    runtime: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerStatusJson {
    #[serde(rename = "ContainerID")]
    container_id: String,
    #[serde(rename = "PID")]
    pid: u32,
    exit_code: i32,
    /// `starting`, `healthy` or `unhealthy` when the task has a health check.
    #[serde(skip_serializing_if = "String::is_empty")]
    health: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PortStatusJson {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<PortJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TaskStatusJson {
    timestamp: String,
    state: &'static str,
    message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    err: String,
    container_status: ContainerStatusJson,
    port_status: PortStatusJson,
}

#[derive(Serialize)]
struct NetworkSpecJson {
    #[serde(rename = "Name")]
    name: &'static str,
}

#[derive(Serialize)]
struct NetworkJson {
    #[serde(rename = "Spec")]
    spec: NetworkSpecJson,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkAttachmentJson {
    network: NetworkJson,
    addresses: Vec<String>,
}

/// A task as `docker inspect TASK` shows it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskJson {
    #[serde(rename = "ID")]
    id: String,
    version: Version,
    created_at: String,
    updated_at: String,
    labels: BTreeMap<String, String>,
    spec: TaskSpecJson,
    #[serde(rename = "ServiceID")]
    service_id: String,
    slot: u64,
    #[serde(rename = "NodeID")]
    node_id: String,
    status: TaskStatusJson,
    desired_state: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    networks_attachments: Vec<NetworkAttachmentJson>,
    /// Jobs only: the iteration the task ran in.
    #[serde(skip_serializing_if = "Option::is_none")]
    job_iteration: Option<Version>,
}

fn task_state_str(s: i32) -> &'static str {
    pb::TaskState::try_from(s)
        .map(shoal_api::state::task_state_name)
        .unwrap_or("unknown")
}

/// A task as `docker inspect TASK` shows it.
pub fn task_json(t: &pb::Task) -> TaskJson {
    let meta = t.meta.unwrap_or_default();
    let spec = t.spec.clone().unwrap_or_default();
    let status = t.status.clone().unwrap_or_default();
    let host_ports: Vec<pb::PortConfig> = t
        .endpoint
        .as_ref()
        .map(|e| {
            e.ports
                .iter()
                .filter(|p| p.publish_mode == "host")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    TaskJson {
        id: t.id.clone(),
        version: Version {
            index: meta.version,
        },
        created_at: rfc3339(meta.created_at_ms),
        updated_at: rfc3339(meta.updated_at_ms),
        labels: BTreeMap::new(),
        spec: TaskSpecJson {
            container_spec: container_spec_json(&spec),
            resources: resources_json(&spec),
            restart_policy: restart_json(&spec),
            placement: placement_json(&spec),
            runtime: runtime_name(spec.runtime),
        },
        service_id: t.service_id.clone(),
        slot: t.slot,
        node_id: t.node_id.clone(),
        status: TaskStatusJson {
            timestamp: rfc3339(status.timestamp_ms),
            state: task_state_str(status.state),
            message: status.message.clone(),
            err: status.err.clone(),
            container_status: ContainerStatusJson {
                container_id: t.id.clone(),
                pid: status.pid,
                exit_code: status.exit_code,
                health: status.health.clone(),
            },
            port_status: PortStatusJson {
                ports: ports_json(&host_ports),
            },
        },
        desired_state: task_state_str(t.desired_state),
        networks_attachments: if t.ingress_address.is_empty() {
            Vec::new()
        } else {
            vec![NetworkAttachmentJson {
                network: NetworkJson {
                    spec: NetworkSpecJson { name: "ingress" },
                },
                addresses: vec![t.ingress_address.clone()],
            }]
        },
        job_iteration: crate::opts::is_job(spec.mode).then_some(Version {
            index: t.job_iteration,
        }),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeSpecJson {
    labels: BTreeMap<String, String>,
    role: &'static str,
    availability: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PlatformJson {
    architecture: String,
    #[serde(rename = "OS")]
    os: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EngineJson {
    engine_version: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeDescriptionJson {
    hostname: String,
    platform: PlatformJson,
    engine: EngineJson,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeStatusJson {
    state: String,
    message: String,
    addr: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ManagerStatusJson {
    leader: bool,
    reachability: String,
    addr: String,
}

/// A node as `docker node inspect` shows it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeJson {
    #[serde(rename = "ID")]
    id: String,
    version: Version,
    created_at: String,
    updated_at: String,
    spec: NodeSpecJson,
    description: NodeDescriptionJson,
    status: NodeStatusJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    manager_status: Option<ManagerStatusJson>,
}

/// A node as `docker node inspect` shows it.
pub fn node_json(n: &pb::Node) -> NodeJson {
    let meta = n.meta.unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let desc = n.description.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    NodeJson {
        id: n.id.clone(),
        version: Version {
            index: meta.version,
        },
        created_at: rfc3339(meta.created_at_ms),
        updated_at: rfc3339(meta.updated_at_ms),
        spec: NodeSpecJson {
            labels: spec.labels.into_iter().collect(),
            role: if spec.role == pb::NodeRole::Manager as i32 {
                "manager"
            } else {
                "worker"
            },
            availability: availability_name(spec.availability).to_lowercase(),
        },
        description: NodeDescriptionJson {
            hostname: desc.hostname,
            platform: PlatformJson {
                architecture: desc.arch,
                os: desc.os,
            },
            engine: EngineJson {
                engine_version: desc.engine_version,
            },
        },
        status: NodeStatusJson {
            state: node_state_name(status.state).to_lowercase(),
            message: status.message,
            addr: status.addr,
        },
        manager_status: n.manager_status.as_ref().map(|m| ManagerStatusJson {
            leader: m.leader,
            reachability: m.reachability.clone(),
            addr: m.addr.clone(),
        }),
    }
}

/// `Active` / `Pause` / `Drain`.
pub fn availability_name(a: i32) -> &'static str {
    match pb::NodeAvailability::try_from(a) {
        Ok(pb::NodeAvailability::Pause) => "Pause",
        Ok(pb::NodeAvailability::Drain) => "Drain",
        _ => "Active",
    }
}

/// `Ready` / `Down` / `Disconnected` / `Unknown`.
pub fn node_state_name(s: i32) -> &'static str {
    match pb::NodeState::try_from(s) {
        Ok(pb::NodeState::Ready) => "Ready",
        Ok(pb::NodeState::Down) => "Down",
        Ok(pb::NodeState::Disconnected) => "Disconnected",
        _ => "Unknown",
    }
}

/// `docker service inspect --pretty`.
pub fn service_pretty(s: &pb::Service) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let mut o = String::new();
    o.push('\n');
    o.push_str(&format!("ID:\t\t{}\n", s.id));
    o.push_str(&format!("Name:\t\t{}\n", spec.name));
    if !spec.labels.is_empty() {
        o.push_str("Labels:\n");
        let labels: BTreeMap<_, _> = spec.labels.iter().collect();
        for (k, v) in labels {
            if v.is_empty() {
                o.push_str(&format!(" {k}\n"));
            } else {
                o.push_str(&format!(" {k}={v}\n"));
            }
        }
    }
    match pb::ServiceMode::try_from(spec.mode).unwrap_or_default() {
        pb::ServiceMode::Global => o.push_str("Service Mode:\tGlobal\n"),
        pb::ServiceMode::Replicated => {
            o.push_str("Service Mode:\tReplicated\n");
            o.push_str(&format!(" Replicas:\t{}\n", spec.replicas));
        }
        pb::ServiceMode::ReplicatedJob => {
            o.push_str("Service Mode:\tReplicated Job\n");
            o.push_str(&format!(" Max Concurrent:\t{}\n", spec.max_concurrent));
            o.push_str(&format!(" Total Completions:\t{}\n", spec.replicas));
        }
        pb::ServiceMode::GlobalJob => o.push_str("Service Mode:\tGlobal Job\n"),
    }
    if let Some(st) = s.update_status.as_ref() {
        let state = update_state_name(st.state);
        if !state.is_empty() {
            let ago = |ms: i64| {
                let d = crate::format::age(shoal_api::now_ms(), ms);
                format!("{} ago", crate::format::human_duration(d))
            };
            o.push_str("UpdateStatus:\n");
            o.push_str(&format!(" State:\t\t{state}\n"));
            if st.started_at_ms > 0 {
                o.push_str(&format!(" Started:\t{}\n", ago(st.started_at_ms)));
            }
            if st.state == pb::UpdateState::Completed as i32 && st.completed_at_ms > 0 {
                o.push_str(&format!(" Completed:\t{}\n", ago(st.completed_at_ms)));
            }
            o.push_str(&format!(" Message:\t{}\n", st.message));
        }
    }
    pretty_placement(&mut o, &spec);
    let r = restart_json(&spec);
    o.push_str("RestartPolicy:\n");
    o.push_str(&format!(" Condition:\t{}\n", r.condition));
    o.push_str(&format!(
        " Delay:\t\t{}\n",
        humantime::format_duration(std::time::Duration::from_nanos(r.delay))
    ));
    o.push_str(&format!(" Max Attempts:\t{}\n", r.max_attempts));
    if let Some(c) = &spec.update_config {
        o.push_str("UpdateConfig:\n");
        pretty_update_config(&mut o, c, "Update order:      ");
    }
    if let Some(c) = &spec.rollback_config {
        o.push_str("RollbackConfig:\n");
        pretty_update_config(&mut o, c, "Rollback order:    ");
    }
    o.push_str("ContainerSpec:\n");
    o.push_str(&format!(" Image:\t\t{}\n", spec.image));
    if !spec.command.is_empty() {
        o.push_str(&format!(" Args:\t\t{} \n", spec.command.join(" ")));
    }
    if !spec.env.is_empty() {
        o.push_str(&format!(" Env:\t\t{} \n", spec.env.join(" ")));
    }
    if !spec.workdir.is_empty() {
        o.push_str(&format!(" Dir:\t\t{}\n", spec.workdir));
    }
    pretty_resources(&mut o, &spec);
    o.push_str(&format!("Runtime:\t{}\n", runtime_name(spec.runtime)));
    o.push_str("Endpoint Mode:\tvip\n");
    let ports = s
        .endpoint
        .as_ref()
        .filter(|e| !e.ports.is_empty())
        .map(|e| e.ports.clone())
        .unwrap_or(spec.ports);
    if !ports.is_empty() {
        o.push_str("Ports:\n");
        for p in ports_json(&ports) {
            o.push_str(&format!(" PublishedPort = {}\n", p.published_port));
            o.push_str(&format!("  Protocol = {}\n", p.protocol));
            o.push_str(&format!("  TargetPort = {}\n", p.target_port));
            o.push_str(&format!("  PublishMode = {}\n", p.publish_mode));
        }
    }
    o
}

/// Docker's `Placement:` section: Go-formatted lists (`[a b]`).
fn pretty_placement(o: &mut String, spec: &pb::ServiceSpec) {
    let p = spec.placement.clone().unwrap_or_default();
    if p.constraints.is_empty() && p.preferences.is_empty() && p.max_replicas_per_node == 0 {
        return;
    }
    o.push_str("Placement:\n");
    if !p.constraints.is_empty() {
        o.push_str(&format!(" Constraints:\t[{}]\n", p.constraints.join(" ")));
    }
    if !p.preferences.is_empty() {
        o.push_str(&format!(" Preferences:   [{}]\n", p.preferences.join(" ")));
    }
    if p.max_replicas_per_node > 0 {
        o.push_str(&format!(
            " Max Replicas Per Node:   {}\n",
            p.max_replicas_per_node
        ));
    }
}

/// Docker's `Resources:` section: CPUs as a decimal, memory in binary units.
fn pretty_resources(o: &mut String, spec: &pb::ServiceSpec) {
    let r = spec.resources.unwrap_or_default();
    let section = |o: &mut String, title: &str, cpu: i64, mem: i64| {
        if cpu == 0 && mem == 0 {
            return;
        }
        o.push_str(&format!(" {title}:\n"));
        if cpu > 0 {
            o.push_str(&format!("  CPU:\t\t{}\n", cpu as f64 / 1e9));
        }
        if mem > 0 {
            o.push_str(&format!("  Memory:\t{}\n", bytes_size(mem)));
        }
    };
    if r == pb::Resources::default() {
        return;
    }
    o.push_str("Resources:\n");
    section(
        o,
        "Reservations",
        r.reserve_nano_cpus,
        r.reserve_memory_bytes,
    );
    section(o, "Limits", r.limit_nano_cpus, r.limit_memory_bytes);
}

/// Docker's `units.BytesSize`: binary units, up to 4 significant digits
/// (`64MiB`, `1.5GiB`).
pub fn bytes_size(n: i64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    // Go's %.4g: four significant digits, trailing zeros dropped.
    let int_digits = (v.max(1.0).log10().floor() as usize) + 1;
    let s = format!("{v:.*}", 4usize.saturating_sub(int_digits));
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[i])
}

/// The body of Docker's `UpdateConfig:` / `RollbackConfig:` sections.
fn pretty_update_config(o: &mut String, c: &pb::UpdateConfig, order_label: &str) {
    o.push_str(&format!(" Parallelism:\t{}\n", c.parallelism));
    if c.delay_ms > 0 {
        o.push_str(&format!(
            " Delay:\t\t{}\n",
            crate::format::go_duration_ms(c.delay_ms)
        ));
    }
    o.push_str(&format!(
        " On failure:\t{}\n",
        failure_action_name(c.failure_action)
    ));
    if c.monitor_ms > 0 {
        o.push_str(&format!(
            " Monitoring Period: {}\n",
            crate::format::go_duration_ms(c.monitor_ms)
        ));
    }
    o.push_str(&format!(" Max failure ratio: {}\n", c.max_failure_ratio));
    o.push_str(&format!(" {order_label}{}\n", update_order_name(c.order)));
}

/// `docker node inspect --pretty`: Docker's `nodeInspectPrettyTemplate`
/// (without the Resources and Plugins sections, which Shoal does not track).
pub fn node_pretty(n: &pb::Node) -> String {
    let meta = n.meta.unwrap_or_default();
    let desc = n.description.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let mut o = String::new();
    o.push_str(&format!("ID:\t\t\t{}\n", n.id));
    if !spec.labels.is_empty() {
        o.push_str("Labels:\n");
        let labels: BTreeMap<_, _> = spec.labels.iter().collect();
        for (k, v) in labels {
            if v.is_empty() {
                o.push_str(&format!(" - {k}\n"));
            } else {
                o.push_str(&format!(" - {k}={v}\n"));
            }
        }
    }
    o.push_str(&format!("Hostname:              \t{}\n", desc.hostname));
    o.push_str(&format!(
        "Joined at:             \t{}\n",
        go_time_string(meta.created_at_ms)
    ));
    o.push_str("Status:\n");
    o.push_str(&format!(" State:\t\t\t{}\n", node_state_name(status.state)));
    if !status.message.is_empty() {
        o.push_str(&format!(
            " Message:              \t{}\n",
            pretty_print(&status.message)
        ));
    }
    o.push_str(&format!(
        " Availability:         \t{}\n",
        availability_name(spec.availability)
    ));
    if !status.addr.is_empty() {
        o.push_str(&format!(" Address:\t\t{}\n", status.addr));
    }
    if let Some(m) = n
        .manager_status
        .as_ref()
        .filter(|_| spec.role == pb::NodeRole::Manager as i32)
    {
        o.push_str("Manager Status:\n");
        o.push_str(&format!(" Address:\t\t{}\n", m.addr));
        o.push_str(&format!(
            " Raft Status:\t\t{}\n",
            pretty_print(&m.reachability)
        ));
        o.push_str(&format!(
            " Leader:\t\t{}\n",
            if m.leader { "Yes" } else { "No" }
        ));
    }
    o.push_str("Platform:\n");
    o.push_str(&format!(" Operating System:\t{}\n", desc.os));
    o.push_str(&format!(" Architecture:\t\t{}\n", desc.arch));
    o.push_str(&format!("Engine Version:\t\t{}\n", desc.engine_version));
    o
}

/// Docker's `command.PrettyPrint` of a string: first letter upper-cased, the
/// rest lower-cased.
fn pretty_print(s: &str) -> String {
    crate::format::title(&s.to_lowercase())
}

/// Docker's `PrettyPrint(time.Time)`: Go's `Time.String()` in UTC, lower-cased
/// (`2017-05-16 22:52:44.991 +0000 utc`).
pub fn go_time_string(ms: i64) -> String {
    let t = rfc3339(ms);
    let body = t.strip_suffix('Z').unwrap_or(&t).replacen('T', " ", 1);
    format!("{body} +0000 utc")
}
