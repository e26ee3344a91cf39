//! The swarm as a whole: `info`, `swarm init|join|leave` on a node that is
//! already a manager, `swarm update` (with root CA rotation) and
//! `swarm join-token`.

use shoal_api::codec;
use shoal_api::pb::{
    Cluster, InfoResponse, JoinTokenRequest, JoinTokenResponse, SwarmInitResponse,
    SwarmJoinResponse, SwarmLeaveResponse, UpdateSwarmRequest, UpdateSwarmResponse,
};
use shoal_store::{Compare, Op, Store, StoreError, Txn};
use tonic::Status;

use super::resolve::store_status;
use crate::cache::ViewCache;
use shoal_ca as ca;

use crate::{join, state, swarm, ManagerConfig};

/// How often `swarm update` builds its write again after a race with
/// another change of the cluster object (a token rotation).
const UPDATE_ATTEMPTS: usize = 5;

/// `shoal info` and `shoal version`: who answers and the cluster's settings.
pub fn info(store: &Store, cache: &ViewCache, config: &ManagerConfig) -> InfoResponse {
    let cluster: Option<Cluster> = state::get(store, state::CLUSTER_KEY);
    let node_cert_expiry_ms = cluster
        .as_ref()
        .map_or(0, |c| join::node_cert_validity(c).as_millis() as u64);
    let view = cache.current();
    InfoResponse {
        node_cert_expiry_ms,
        default_addr_pool: view.cluster.default_addr_pool.clone(),
        subnet_size: view.cluster.subnet_size,
        ingress_subnet: view.cluster.ingress_subnet.clone(),
        data_path_port: view.cluster.data_path_port,
        node_id: config.node_id.clone(),
        hostname: config.hostname.clone(),
        local_node_state: "active".into(),
        is_manager: true,
        cluster_id: cluster.map(|c| c.id).unwrap_or_default(),
        engine_version: env!("CARGO_PKG_VERSION").into(),
        managers: view.cluster.manager_addrs.clone(),
    }
}

/// `swarm init` on a manager: it already is in a swarm.
pub fn init() -> Result<SwarmInitResponse, Status> {
    Err(Status::already_exists(
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.",
    ))
}

/// `swarm join` on a manager: it already is in a swarm.
pub fn join() -> Result<SwarmJoinResponse, Status> {
    Err(Status::already_exists(
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.",
    ))
}

/// `swarm leave` without `--force` on a manager is refused (shoald handles
/// `--force`).
pub fn leave() -> Result<SwarmLeaveResponse, Status> {
    Err(Status::failed_precondition(
        "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.",
    ))
}

/// `swarm update` and `swarm ca --rotate`.
pub async fn update(store: &Store, req: UpdateSwarmRequest) -> Result<UpdateSwarmResponse, Status> {
    swarm::validate_update(&req).map_err(Status::invalid_argument)?;
    let new_root = if req.rotate_root_ca {
        Some(
            ca::ClusterCa::generate()
                .map_err(|e| Status::internal(format!("create the new root CA: {e}")))?,
        )
    } else {
        None
    };
    // The cluster object also changes with token rotations: retry a race.
    for _ in 0..UPDATE_ATTEMPTS {
        let mut cluster: Cluster = state::get(store, state::CLUSTER_KEY)
            .ok_or_else(|| Status::failed_precondition("the cluster object is missing"))?;
        let before = cluster.clone();
        swarm::apply_update(&mut cluster, &req);
        if let Some(root) = &new_root {
            let current = join::cluster_ca(&cluster)?;
            let cross_signed = current
                .cross_sign(root)
                .map_err(|e| Status::internal(format!("cross-sign the new root CA: {e}")))?;
            swarm::rotate_root(&mut cluster, root, cross_signed);
        }
        if cluster != before {
            let mut txn = Txn::default();
            state::guarded_put(&mut txn, state::CLUSTER_KEY.into(), &mut cluster);
            match store.write(txn).await {
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
        return Ok(UpdateSwarmResponse {
            task_history_limit: cluster.task_history_limit,
            dispatcher_heartbeat_ms: cluster.dispatcher_heartbeat_ms,
            node_cert_expiry_ms: join::node_cert_validity(&cluster).as_millis() as u64,
            root_ca_pem: cluster.root_ca_pem.clone(),
            root_rotation_in_progress: !cluster.previous_root_ca_pem.is_empty(),
        });
    }
    Err(Status::aborted(
        "update out of sequence: the cluster changed meanwhile; retry",
    ))
}

/// `swarm join-token [--rotate] worker|manager`.
pub async fn join_token(
    store: &Store,
    config: &ManagerConfig,
    req: JoinTokenRequest,
) -> Result<JoinTokenResponse, Status> {
    let manager = match req.role.as_str() {
        "worker" => false,
        "manager" => true,
        other => {
            return Err(Status::invalid_argument(format!(
                "role: {other:?} is not a role; use worker or manager"
            )))
        }
    };
    let mut cluster: Cluster = state::get(store, state::CLUSTER_KEY)
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
        store.write(txn).await.map_err(store_status)?;
        tracing::info!(role = %req.role, "join token rotated");
    }
    let ca = join::cluster_ca(&cluster)?;
    let secret = if manager {
        &cluster.manager_token_secret
    } else {
        &cluster.worker_token_secret
    };
    Ok(JoinTokenResponse {
        token: ca::format_token(ca.digest(), secret),
        manager_addr: config.advertise_addr.clone(),
    })
}
