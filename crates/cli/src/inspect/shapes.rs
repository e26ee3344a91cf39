//! Docker's JSON shapes of services, tasks and nodes (`docker service
//! inspect`, `docker inspect TASK`, `docker node inspect`): field names and
//! order, omitted empty fields, durations in nanoseconds, RFC 3339 times.
//! One file past the usual length because it is one thing: serde structs
//! that mirror Docker's API types one to one, the three objects sharing the
//! port, container-spec, resources and restart-policy pieces.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_api::pb;

use crate::format::rfc3339;
use crate::names::{
    availability_name, failure_action_name, node_state_name, restart_condition_name, runtime_name,
    task_state_str, update_order_name, update_state_name,
};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Version {
    index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct PortJson {
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    pub(super) protocol: String,
    pub(super) target_port: u32,
    pub(super) published_port: u32,
    pub(super) publish_mode: String,
    /// The PROXY protocol header the port sends its tasks (`v1`, `v2`);
    /// absent when it sends none. Docker has no such field.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(super) proxy_protocol: String,
}

pub(super) fn ports_json(ports: &[pb::PortConfig]) -> Vec<PortJson> {
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
            proxy_protocol: p.proxy_protocol.clone(),
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
pub(super) struct RestartPolicyJson {
    pub(super) condition: &'static str,
    /// Nanoseconds, as Go's time.Duration.
    pub(super) delay: u64,
    pub(super) max_attempts: u64,
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

pub(super) fn restart_json(spec: &pb::ServiceSpec) -> RestartPolicyJson {
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
