//! The `Control` gRPC service: validates requests, resolves names, and turns
//! them into store transactions. It never runs tasks itself; the reconcilers
//! react to what it writes.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use shoal_api::codec;
use shoal_api::pb::control_server::Control;
use shoal_api::pb::*;
use shoal_api::state::{is_terminal, parse_task_state};
use shoal_store::{Compare, Op, Store, StoreError, Txn};
use tonic::{Request, Response, Status};

use crate::cache::ViewCache;
use crate::dispatcher::DispatcherApi;
use crate::orchestrator::{self, task_state};
use crate::state::{self, ClusterView};
use crate::{allocator, ca, join, quarantine, spec, ManagerConfig};

/// Implements `shoal.v1.Control` on a manager.
#[derive(Clone)]
pub struct ControlApi {
    store: Store,
    cache: ViewCache,
    config: ManagerConfig,
    dispatcher: DispatcherApi,
}

fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::NotLeader { leader: None } => Status::unavailable(
            "the swarm does not have a leader: the managers have lost quorum; writes are refused until a majority of managers is back (the mesh keeps serving)",
        ),
        // A leader that cannot commit has lost its quorum, or is too loaded
        // to commit in time (the control-plane bench saw the latter).
        StoreError::NotCommitted(within) => Status::unavailable(format!(
            "the write was not committed within {within:?}: the managers have lost quorum or are overloaded; retry, and check `shoal node ls` for managers that are Down (the mesh keeps serving)"
        )),
        StoreError::NotLeader { leader: Some(leader) } => Status::unavailable(format!(
            "this manager is not the Raft leader (leader: {leader}); retry"
        )),
        StoreError::ConditionFailed { key } => Status::aborted(format!(
            "update out of sequence: {key} changed meanwhile; retry"
        )),
        other => Status::unavailable(format!("store: {other}")),
    }
}

/// Finds one object by full ID, name, or unique ID prefix.
fn resolve<'a, T>(
    kind: &str,
    query: &str,
    items: impl Iterator<Item = &'a T> + Clone,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<&'a T, Status>
where
    T: 'a,
{
    if query.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{kind}: a {kind} name or ID is required"
        )));
    }
    if let Some(hit) = items.clone().find(|t| id(t) == query) {
        return Ok(hit);
    }
    if let Some(hit) = items.clone().find(|t| name(t) == query) {
        return Ok(hit);
    }
    let prefixed: Vec<&T> = items.filter(|t| id(t).starts_with(query)).collect();
    match prefixed.len() {
        1 => Ok(prefixed[0]),
        0 => Err(Status::not_found(format!("no such {kind}: {query}"))),
        n => Err(Status::invalid_argument(format!(
            "{kind} {query} is ambiguous ({n} matches); use more of the ID"
        ))),
    }
}

impl ControlApi {
    pub fn new(
        store: Store,
        cache: ViewCache,
        config: ManagerConfig,
        dispatcher: DispatcherApi,
    ) -> Self {
        Self {
            store,
            cache,
            config,
            dispatcher,
        }
    }

    /// The cluster as of now (everything this manager applied so far).
    fn view(&self) -> Arc<ClusterView> {
        self.cache.current()
    }

    fn find_service(&self, view: &ClusterView, q: &str) -> Result<Service, Status> {
        resolve(
            "service",
            q,
            view.services.values(),
            |s| &s.id,
            |s| s.spec.as_ref().map(|sp| sp.name.as_str()).unwrap_or(""),
        )
        .cloned()
    }

    fn find_node(&self, view: &ClusterView, q: &str) -> Result<Node, Status> {
        resolve(
            "node",
            q,
            view.nodes.values(),
            |n| &n.id,
            |n| {
                n.description
                    .as_ref()
                    .map(|d| d.hostname.as_str())
                    .unwrap_or("")
            },
        )
        .cloned()
    }

    /// Published ports already owned by other services: port → service name.
    fn taken_ports(
        &self,
        view: &ClusterView,
        except: &str,
    ) -> std::collections::BTreeMap<u32, String> {
        view.services
            .values()
            .filter(|s| s.id != except)
            .flat_map(|s| {
                let name = s
                    .spec
                    .as_ref()
                    .map(|sp| sp.name.clone())
                    .unwrap_or_default();
                s.endpoint
                    .iter()
                    .flat_map(|e| e.ports.iter())
                    .map(move |p| (p.published_port, name.clone()))
            })
            .collect()
    }

    /// Fills the endpoint of a service spec: keeps ports it already had,
    /// rejects ports owned by others or bound on this host, allocates the rest.
    fn allocate_endpoint(
        &self,
        view: &ClusterView,
        service_id: &str,
        spec: &ServiceSpec,
        current: Option<&ServiceEndpoint>,
    ) -> Result<ServiceEndpoint, Status> {
        let taken = self.taken_ports(view, service_id);
        let mine: BTreeSet<u32> = current
            .iter()
            .flat_map(|e| e.ports.iter().map(|p| p.published_port))
            .collect();
        let mut ports = spec.ports.clone();
        for p in &ports {
            if p.published_port == 0 {
                continue;
            }
            if let Some(owner) = taken.get(&p.published_port) {
                return Err(Status::already_exists(format!(
                    "ports: published port {} is already used by service {owner}; pick another published port",
                    p.published_port
                )));
            }
            if !mine.contains(&p.published_port) && host_port_in_use(p.published_port) {
                return Err(Status::already_exists(format!(
                    "ports: port {} is already in use on this host by another program; pick another published port",
                    p.published_port
                )));
            }
        }
        // Ports with no number keep the one they had, if the target matches.
        for p in ports.iter_mut().filter(|p| p.published_port == 0) {
            if let Some(old) = current
                .iter()
                .flat_map(|e| e.ports.iter())
                .find(|o| o.target_port == p.target_port && o.protocol == p.protocol)
            {
                p.published_port = old.published_port;
            }
        }
        allocator::allocate_ports(&mut ports, |port| {
            !taken.contains_key(&port) && (mine.contains(&port) || !host_port_in_use(port))
        })
        .map_err(Status::resource_exhausted)?;
        Ok(ServiceEndpoint { ports })
    }

    /// One try at `node rm`: a store conflict comes back as the outer error.
    async fn remove_node_once(
        &self,
        req: &RemoveNodeRequest,
    ) -> Result<Result<Response<RemoveNodeResponse>, Status>, StoreError> {
        let view = self.view();
        let node = match self.find_node(&view, &req.node) {
            Ok(n) => n,
            Err(s) => return Ok(Err(s)),
        };
        if node
            .spec
            .as_ref()
            .is_some_and(|s| s.role() == NodeRole::Manager)
        {
            return Ok(Err(Status::failed_precondition(format!(
                "node {} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
                req.node
            ))));
        }
        let ready = node
            .status
            .as_ref()
            .is_some_and(|s| s.state() == NodeState::Ready);
        if ready && !req.force {
            return Ok(Err(Status::failed_precondition(format!(
                "node {} is not down and can't be removed: stop it first, or use --force",
                req.node
            ))));
        }
        let version = node.meta.as_ref().map(|m| m.version).unwrap_or(0);
        let mut txn = Txn::default();
        txn.compares.push(Compare::Version {
            key: state::node_key(&node.id),
            version,
        });
        txn.ops.push(Op::Delete {
            key: state::node_key(&node.id),
        });
        // Its identity is refused from now on; it rejoins as a new node.
        txn.ops.push(Op::Put {
            key: crate::join::removed_node_key(&node.id),
            value: shoal_api::now_ms().to_string().into_bytes(),
        });
        // Its tasks will never report again: they end as orphaned, which frees
        // their addresses; the orchestrator replaces them elsewhere.
        for t in view
            .tasks
            .values()
            .filter(|t| t.node_id == node.id && !is_terminal(task_state(t)))
        {
            let mut t = t.clone();
            let tv = t.meta.as_ref().map(|m| m.version).unwrap_or(0);
            let status = t.status.get_or_insert_with(Default::default);
            status.state = TaskState::Orphaned as i32;
            status.timestamp_ms = shoal_api::now_ms();
            status.message = "node removed from the swarm".into();
            t.desired_state = t.desired_state.max(TaskState::Shutdown as i32);
            state::touch_meta(&mut t.meta);
            txn.compares.push(Compare::Version {
                key: state::task_key(&t.id),
                version: tv,
            });
            txn.ops.push(Op::Put {
                key: state::task_key(&t.id),
                value: codec::encode(&t),
            });
        }
        self.store.write(txn).await?;
        tracing::info!(node = %node.id, force = req.force, "node removed");
        Ok(Ok(Response::new(RemoveNodeResponse { id: node.id })))
    }

    /// Fills the live manager status: Leader from Raft, reachability from
    /// the node's state; `voters` are [`Store::committed_voter_ids`].
    fn with_leader(&self, mut node: Node, voters: &BTreeSet<u64>) -> Node {
        let leader = self.store.leader().map(|(id, _)| id);
        let down = node
            .status
            .as_ref()
            .is_some_and(|s| s.state() == NodeState::Down);
        if let Some(ms) = node.manager_status.as_mut() {
            ms.leader = Some(ms.raft_id) == leader;
            ms.reachability = if down {
                "unavailable"
            } else if !voters.contains(&ms.raft_id) {
                // Promoted, still joining the Raft group (not committed yet).
                "unknown"
            } else {
                "reachable"
            }
            .into();
        }
        node
    }
}

impl ControlApi {
    /// `service rollback`: the previous spec comes back (and the current one
    /// becomes the previous, as in swarmkit), rolled out with the rollback config.
    async fn rollback(&self, current: Service) -> Result<Response<ServiceResponse>, Status> {
        let name = current
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let Some(previous) = current.previous_spec.clone() else {
            return Err(Status::failed_precondition(format!(
                "service {name} has no previous spec: there is nothing to roll back to"
            )));
        };
        let version = current.meta.as_ref().map(|m| m.version).unwrap_or(0);
        let mut service = current.clone();
        let view = self.view();
        let endpoint =
            self.allocate_endpoint(&view, &current.id, &previous, current.endpoint.as_ref())?;
        service.previous_spec = current.spec.clone();
        service.spec = Some(previous);
        service.endpoint = Some(endpoint);
        service.spec_version += 1;
        service.update_status = Some(UpdateStatus {
            state: UpdateState::RollbackStarted as i32,
            started_at_ms: shoal_api::now_ms(),
            completed_at_ms: 0,
            message: "manually requested rollback".into(),
        });
        orchestrator::jobs::spec_changed(&mut service, shoal_api::now_ms());
        state::touch_meta(&mut service.meta);
        let txn = service_write(&service, version, current.endpoint.as_ref());
        let rev = self.store.write(txn).await.map_err(store_status)?;
        service.meta.get_or_insert_with(Default::default).version = rev;
        tracing::info!(service = %name, "rollback requested");
        Ok(Response::new(ServiceResponse {
            service: Some(service),
        }))
    }
}

/// Whether something on this host already listens on the TCP port.
fn host_port_in_use(port: u32) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port as u16)).is_err()
}

/// The write of a changed service read at `version`: the service itself and
/// the published-port index moved from `before` to its new endpoint (taken
/// ports must be free, released ones are freed).
/// `node promote` / `node demote` preconditions (the change itself is the
/// spec's role; the node and the role manager carry it out).
fn check_role_change(
    view: &ClusterView,
    node: &Node,
    name: &str,
    role: NodeRole,
) -> Result<(), Status> {
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .is_some_and(|s| s.state() == NodeState::Ready)
    };
    if role == NodeRole::Manager {
        if !ready(node) {
            return Err(Status::failed_precondition(format!(
                "node {name} is not Ready and can't be promoted: bring it back first"
            )));
        }
        return Ok(());
    }
    let managers: Vec<&Node> = view
        .nodes
        .values()
        .filter(|n| {
            n.spec
                .as_ref()
                .is_some_and(|s| s.role() == NodeRole::Manager)
        })
        .collect();
    if managers.len() <= 1 {
        return Err(Status::failed_precondition(
            "attempting to demote the last manager of the swarm: promote another node first",
        ));
    }
    // The group left behind must still have a quorum of reachable members.
    let remaining = managers.iter().filter(|n| n.id != node.id).count();
    // Reachable as `node ls` shows it: not Down.
    let reachable = managers
        .iter()
        .filter(|n| {
            n.id != node.id
                && n.status
                    .as_ref()
                    .is_none_or(|s| s.state() != NodeState::Down)
        })
        .count();
    if reachable < remaining / 2 + 1 {
        return Err(Status::failed_precondition(format!(
            "can't demote {name}: removing it may result in loss of quorum ({reachable} of the {remaining} remaining managers are reachable)"
        )));
    }
    Ok(())
}

fn service_write(service: &Service, version: u64, before: Option<&ServiceEndpoint>) -> Txn {
    let ports = |e: Option<&ServiceEndpoint>| -> BTreeSet<u32> {
        e.iter()
            .flat_map(|e| e.ports.iter().map(|p| p.published_port))
            .collect()
    };
    let (old, new) = (ports(before), ports(service.endpoint.as_ref()));
    let mut txn = Txn::default();
    txn.compares.push(Compare::Version {
        key: state::service_key(&service.id),
        version,
    });
    for p in old.difference(&new) {
        txn.ops.push(Op::Delete {
            key: state::ingress_port_key(*p),
        });
    }
    for p in new.difference(&old) {
        txn.compares.push(Compare::Version {
            key: state::ingress_port_key(*p),
            version: 0,
        });
        txn.ops.push(Op::Put {
            key: state::ingress_port_key(*p),
            value: service.id.clone().into_bytes(),
        });
    }
    service_ops(&mut txn, service);
    txn
}

fn service_ops(txn: &mut Txn, service: &Service) {
    txn.ops.push(Op::Put {
        key: state::service_key(&service.id),
        value: codec::encode(service),
    });
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlApi {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let cluster: Option<Cluster> = state::get(&self.store, state::CLUSTER_KEY);
        let node_cert_expiry_ms = cluster
            .as_ref()
            .map_or(0, |c| crate::join::node_cert_validity(c).as_millis() as u64);
        let view = self.view();
        Ok(Response::new(InfoResponse {
            node_cert_expiry_ms,
            default_addr_pool: view.cluster.default_addr_pool.clone(),
            subnet_size: view.cluster.subnet_size,
            ingress_subnet: view.cluster.ingress_subnet.clone(),
            data_path_port: view.cluster.data_path_port,
            node_id: self.config.node_id.clone(),
            hostname: self.config.hostname.clone(),
            local_node_state: "active".into(),
            is_manager: true,
            cluster_id: cluster.map(|c| c.id).unwrap_or_default(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            managers: view.cluster.manager_addrs.clone(),
        }))
    }

    async fn swarm_init(
        &self,
        _: Request<SwarmInitRequest>,
    ) -> Result<Response<SwarmInitResponse>, Status> {
        Err(Status::already_exists(
            "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.",
        ))
    }

    async fn update_swarm(
        &self,
        req: Request<UpdateSwarmRequest>,
    ) -> Result<Response<UpdateSwarmResponse>, Status> {
        let req = req.into_inner();
        crate::swarm::validate_update(&req).map_err(Status::invalid_argument)?;
        let new_root = if req.rotate_root_ca {
            Some(
                crate::ca::ClusterCa::generate()
                    .map_err(|e| Status::internal(format!("create the new root CA: {e}")))?,
            )
        } else {
            None
        };
        // The cluster object also changes with token rotations: retry a race.
        for _ in 0..5 {
            let mut cluster: Cluster = state::get(&self.store, state::CLUSTER_KEY)
                .ok_or_else(|| Status::failed_precondition("the cluster object is missing"))?;
            let before = cluster.clone();
            crate::swarm::apply_update(&mut cluster, &req);
            if let Some(root) = &new_root {
                let current = crate::join::cluster_ca(&cluster)?;
                let cross_signed = current
                    .cross_sign(root)
                    .map_err(|e| Status::internal(format!("cross-sign the new root CA: {e}")))?;
                crate::swarm::rotate_root(&mut cluster, root, cross_signed);
            }
            if cluster != before {
                let mut txn = Txn::default();
                state::guarded_put(&mut txn, state::CLUSTER_KEY.into(), &mut cluster);
                match self.store.write(txn).await {
                    Err(StoreError::ConditionFailed { .. }) => continue,
                    r => {
                        r.map_err(store_status)?;
                    }
                }
                tracing::info!(
                    task_history_limit = cluster.task_history_limit,
                    dispatcher_heartbeat_ms = cluster.dispatcher_heartbeat_ms,
                    node_cert_expiry_ms = cluster.node_cert_expiry_ms,
                    "swarm updated"
                );
            }
            return Ok(Response::new(UpdateSwarmResponse {
                task_history_limit: cluster.task_history_limit,
                dispatcher_heartbeat_ms: cluster.dispatcher_heartbeat_ms,
                node_cert_expiry_ms: crate::join::node_cert_validity(&cluster).as_millis() as u64,
                root_ca_pem: cluster.root_ca_pem.clone(),
                root_rotation_in_progress: !cluster.previous_root_ca_pem.is_empty(),
            }));
        }
        Err(Status::aborted(
            "update out of sequence: the cluster changed meanwhile; retry",
        ))
    }

    async fn create_service(
        &self,
        req: Request<CreateServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let mut spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        spec::normalize(&mut spec);
        spec::validate(&spec).map_err(Status::invalid_argument)?;
        let view = self.view();
        if view
            .services
            .values()
            .any(|s| s.spec.as_ref().is_some_and(|sp| sp.name == spec.name))
        {
            return Err(Status::already_exists(format!(
                "service {} already exists: choose another --name, or remove it first with shoal service rm {}",
                spec.name, spec.name
            )));
        }
        let id = shoal_api::id::new_id();
        let endpoint = self.allocate_endpoint(&view, &id, &spec, None)?;
        let now = shoal_api::now_ms();
        let mut service = Service {
            id: id.clone(),
            meta: Some(Meta {
                version: 0,
                created_at_ms: now,
                updated_at_ms: now,
            }),
            spec: Some(spec.clone()),
            previous_spec: None,
            endpoint: Some(endpoint.clone()),
            spec_version: 1,
            update_status: None,
            job_status: None,
        };
        orchestrator::jobs::start_iteration(&mut service, now);
        let mut txn = Txn::default();
        txn.compares.push(Compare::Version {
            key: state::service_key(&id),
            version: 0,
        });
        txn.compares.push(Compare::Version {
            key: state::service_name_key(&spec.name),
            version: 0,
        });
        txn.ops.push(Op::Put {
            key: state::service_name_key(&spec.name),
            value: id.clone().into_bytes(),
        });
        for p in &endpoint.ports {
            txn.compares.push(Compare::Version {
                key: state::ingress_port_key(p.published_port),
                version: 0,
            });
            txn.ops.push(Op::Put {
                key: state::ingress_port_key(p.published_port),
                value: id.clone().into_bytes(),
            });
        }
        service_ops(&mut txn, &service);
        let rev = self.store.write(txn).await.map_err(|e| match e {
            StoreError::ConditionFailed { key } => {
                Status::already_exists(format!("{key} was taken by a concurrent request; retry"))
            }
            other => store_status(other),
        })?;
        service.meta.get_or_insert_with(Default::default).version = rev;
        tracing::info!(service = %spec.name, %id, "service created");
        Ok(Response::new(ServiceResponse {
            service: Some(service),
        }))
    }

    async fn get_service(
        &self,
        req: Request<GetServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let view = self.view();
        let service = self.find_service(&view, &req.into_inner().service)?;
        Ok(Response::new(ServiceResponse {
            service: Some(service),
        }))
    }

    async fn list_services(
        &self,
        _: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let view = self.view();
        let mut services: Vec<ServiceListEntry> = view
            .services
            .values()
            .filter(|s| quarantine::service_fits(s))
            .map(|s| {
                let (running, desired, completed) = orchestrator::service_counts(&view, s);
                ServiceListEntry {
                    service: Some(s.clone()),
                    running_tasks: running,
                    desired_tasks: desired,
                    completed_tasks: completed,
                }
            })
            .collect();
        services.sort_by(|a, b| {
            let name = |e: &ServiceListEntry| {
                e.service
                    .as_ref()
                    .and_then(|s| s.spec.as_ref())
                    .map(|s| s.name.clone())
            };
            name(a).cmp(&name(b))
        });
        quarantine::fit_list(
            "services",
            &mut services,
            quarantine::LIST_BUDGET_BYTES,
            |e| codec::encoded_len(e) + 8,
            |e| {
                if let Some(s) = e.service.as_mut() {
                    s.previous_spec = None;
                    s.spec.iter_mut().for_each(quarantine::slim_spec);
                }
            },
        );
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn update_service(
        &self,
        req: Request<UpdateServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let req = req.into_inner();
        let view = self.view();
        let current = self.find_service(&view, &req.service)?;
        if req.rollback {
            return self.rollback(current).await;
        }
        let mut spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let version = current.meta.as_ref().map(|m| m.version).unwrap_or(0);
        if req.version != 0 && req.version != version {
            return Err(Status::aborted(format!(
                "update out of sequence: service {} changed since version {}; retry",
                req.service, req.version
            )));
        }
        let old_spec = current.spec.clone().unwrap_or_default();
        if spec.name != old_spec.name {
            return Err(Status::invalid_argument(
                "name: renaming a service is not supported",
            ));
        }
        if spec.mode != old_spec.mode {
            return Err(Status::invalid_argument(
                "mode: the mode of a service cannot be changed; remove and create it again",
            ));
        }
        spec::normalize(&mut spec);
        spec::validate(&spec).map_err(Status::invalid_argument)?;
        if spec == old_spec {
            return Ok(Response::new(ServiceResponse {
                service: Some(current),
            }));
        }
        let endpoint =
            self.allocate_endpoint(&view, &current.id, &spec, current.endpoint.as_ref())?;
        let mut service = current.clone();
        if spec::task_template_changed(&old_spec, &spec) {
            service.spec_version += 1;
            service.update_status = Some(UpdateStatus {
                state: UpdateState::Updating as i32,
                started_at_ms: shoal_api::now_ms(),
                completed_at_ms: 0,
                message: "update in progress".into(),
            });
        }
        service.previous_spec = Some(old_spec);
        service.spec = Some(spec);
        service.endpoint = Some(endpoint);
        orchestrator::jobs::spec_changed(&mut service, shoal_api::now_ms());
        state::touch_meta(&mut service.meta);
        let txn = service_write(&service, version, current.endpoint.as_ref());
        let rev = self.store.write(txn).await.map_err(store_status)?;
        service.meta.get_or_insert_with(Default::default).version = rev;
        Ok(Response::new(ServiceResponse {
            service: Some(service),
        }))
    }

    async fn remove_service(
        &self,
        req: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        let view = self.view();
        let service = self.find_service(&view, &req.into_inner().service)?;
        let version = service.meta.as_ref().map(|m| m.version).unwrap_or(0);
        let name = service
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let mut txn = Txn::default();
        txn.compares.push(Compare::Version {
            key: state::service_key(&service.id),
            version,
        });
        txn.ops.push(Op::Delete {
            key: state::service_key(&service.id),
        });
        txn.ops.push(Op::Delete {
            key: state::service_name_key(&name),
        });
        for p in service.endpoint.iter().flat_map(|e| e.ports.iter()) {
            txn.ops.push(Op::Delete {
                key: state::ingress_port_key(p.published_port),
            });
        }
        self.store.write(txn).await.map_err(store_status)?;
        tracing::info!(service = %name, "service removed");
        Ok(Response::new(RemoveServiceResponse { id: service.id }))
    }

    type ServiceLogsStream = LogStream;

    async fn service_logs(
        &self,
        req: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let req = req.into_inner();
        let view = self.view();
        // One task's lines, or (following) every task the service ever runs.
        let (tasks, service_ids): (Vec<Task>, Vec<String>) = if req.task.is_empty() {
            let service = self.find_service(&view, &req.service)?;
            (
                view.tasks_of(&service.id).cloned().collect(),
                vec![service.id],
            )
        } else {
            let task = resolve("task", &req.task, view.tasks.values(), |t| &t.id, |_| "")?;
            (vec![task.clone()], Vec::new())
        };
        let stream = self.dispatcher.log_broker().subscribe(
            &tasks,
            service_ids,
            req.follow,
            req.tail,
            req.since_ns,
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_task(
        &self,
        req: Request<GetTaskRequest>,
    ) -> Result<Response<TaskResponse>, Status> {
        let view = self.view();
        let q = req.into_inner().task;
        let task = resolve("task", &q, view.tasks.values(), |t| &t.id, |_| "")?.clone();
        Ok(Response::new(TaskResponse { task: Some(task) }))
    }

    async fn list_tasks(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let req = req.into_inner();
        let view = self.view();
        let mut services = BTreeSet::new();
        for q in &req.services {
            services.insert(self.find_service(&view, q)?.id);
        }
        let mut nodes = BTreeSet::new();
        for q in &req.nodes {
            nodes.insert(self.find_node(&view, q)?.id);
        }
        let mut desired = BTreeSet::new();
        for s in &req.desired_states {
            let state = parse_task_state(s).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "desired-state: invalid value {s:?}; use running, shutdown or accepted"
                ))
            })?;
            desired.insert(state as i32);
        }
        let mut tasks: Vec<Task> = view
            .tasks
            .values()
            .filter(|t| services.is_empty() || services.contains(&t.service_id))
            .filter(|t| nodes.is_empty() || nodes.contains(&t.node_id))
            .filter(|t| desired.is_empty() || desired.contains(&t.desired_state)
                // Docker's "accepted" filter means "not yet running or done".
                || (desired.contains(&(TaskState::Accepted as i32)) && t.desired_state <= TaskState::Running as i32 && !is_terminal(task_state(t))))
            .filter(|t| quarantine::task_fits(t))
            .cloned()
            .collect();
        quarantine::fit_list(
            "tasks",
            &mut tasks,
            quarantine::LIST_BUDGET_BYTES,
            |t| codec::encoded_len(t) + 8,
            |t| t.spec.iter_mut().for_each(quarantine::slim_spec),
        );
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn get_node(
        &self,
        req: Request<GetNodeRequest>,
    ) -> Result<Response<NodeResponse>, Status> {
        let view = self.view();
        let node = self.find_node(&view, &req.into_inner().node)?;
        let voters = self.store.committed_voter_ids().await;
        Ok(Response::new(NodeResponse {
            node: Some(self.with_leader(node, &voters)),
        }))
    }

    async fn list_nodes(
        &self,
        _: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let view = self.view();
        let voters = self.store.committed_voter_ids().await;
        let nodes = view
            .nodes
            .values()
            .cloned()
            .map(|n| self.with_leader(n, &voters))
            .collect();
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<NodeResponse>, Status> {
        let req = req.into_inner();
        let view = self.view();
        let mut node = self.find_node(&view, &req.node)?;
        let version = node.meta.as_ref().map(|m| m.version).unwrap_or(0);
        if req.version != 0 && req.version != version {
            return Err(Status::aborted(format!(
                "update out of sequence: node {} changed since version {}; retry",
                req.node, req.version
            )));
        }
        let new = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        spec::bounds::labels("labels", new.labels.iter()).map_err(Status::invalid_argument)?;
        let old = node.spec.clone().unwrap_or_default();
        if new.role != old.role {
            check_role_change(&view, &node, &req.node, new.role())?;
        }
        let voters = self.store.committed_voter_ids().await;
        if new == old {
            return Ok(Response::new(NodeResponse {
                node: Some(self.with_leader(node, &voters)),
            }));
        }
        node.spec = Some(new);
        state::touch_meta(&mut node.meta);
        let key = state::node_key(&node.id);
        let txn = Txn {
            compares: vec![Compare::Version {
                key: key.clone(),
                version,
            }],
            ops: vec![Op::Put {
                key,
                value: codec::encode(&node),
            }],
        };
        let rev = self.store.write(txn).await.map_err(store_status)?;
        node.meta.get_or_insert_with(Default::default).version = rev;
        Ok(Response::new(NodeResponse {
            node: Some(self.with_leader(node, &voters)),
        }))
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let req = req.into_inner();
        // The reconciler rewrites the node's tasks meanwhile (it is Down):
        // retry on a fresh view rather than fail the user's command.
        let mut attempt = 0;
        loop {
            match self.remove_node_once(&req).await {
                Err(StoreError::ConditionFailed { .. }) if attempt < 5 => attempt += 1,
                Err(e) => return Err(store_status(e)),
                Ok(r) => return r,
            }
        }
    }

    async fn join_token(
        &self,
        req: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        let req = req.into_inner();
        let manager = match req.role.as_str() {
            "worker" => false,
            "manager" => true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "role: {other:?} is not a role; use worker or manager"
                )))
            }
        };
        let mut cluster: Cluster = state::get(&self.store, state::CLUSTER_KEY)
            .ok_or_else(|| Status::failed_precondition("the cluster object is missing"))?;
        if req.rotate {
            let version = cluster.meta.as_ref().map(|m| m.version).unwrap_or(0);
            let secret = ca::new_token_secret();
            if manager {
                cluster.manager_token_secret = secret;
            } else {
                cluster.worker_token_secret = secret;
            }
            state::touch_meta(&mut cluster.meta);
            let txn = Txn {
                compares: vec![Compare::Version {
                    key: state::CLUSTER_KEY.into(),
                    version,
                }],
                ops: vec![Op::Put {
                    key: state::CLUSTER_KEY.into(),
                    value: codec::encode(&cluster),
                }],
            };
            self.store.write(txn).await.map_err(store_status)?;
            tracing::info!(role = %req.role, "join token rotated");
        }
        let ca = join::cluster_ca(&cluster)?;
        let secret = if manager {
            &cluster.manager_token_secret
        } else {
            &cluster.worker_token_secret
        };
        Ok(Response::new(JoinTokenResponse {
            token: ca::format_token(ca.digest(), secret),
            manager_addr: self.config.advertise_addr.clone(),
        }))
    }

    async fn swarm_join(
        &self,
        _: Request<SwarmJoinRequest>,
    ) -> Result<Response<SwarmJoinResponse>, Status> {
        Err(Status::already_exists(
            "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.",
        ))
    }

    async fn swarm_leave(
        &self,
        req: Request<SwarmLeaveRequest>,
    ) -> Result<Response<SwarmLeaveResponse>, Status> {
        let _ = req;
        Err(Status::failed_precondition(
            "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.",
        ))
    }
}
