//! Joining the cluster: the `NodeCA` service a new node calls with its join
//! token and CSR, and the token operations behind `swarm join-token`. The
//! token's secret decides the role; the node's key never leaves the node.

use shoal_api::codec;
use shoal_api::pb::node_ca_server::NodeCa;
use shoal_api::pb::*;
use shoal_ca::{self as ca, CertRole, ClusterCa};
use shoal_store::{Compare, Op, Store, StoreError, Txn};
use tonic::{Request, Response, Status};

use crate::allocator;
use crate::cache::ViewCache;
use crate::state::{self, ClusterView};

/// Implements `shoal.v1.NodeCA` on a manager.
#[derive(Clone)]
pub struct NodeCaApi {
    /// Where joins and renewals write.
    store: Store,
    /// The decoded state every join and renewal reads.
    cache: ViewCache,
}

impl NodeCaApi {
    pub fn new(store: Store, cache: ViewCache) -> Self {
        Self { store, cache }
    }
}

/// The cluster CA as stored.
pub fn cluster_ca(cluster: &Cluster) -> Result<ClusterCa, Status> {
    ClusterCa::from_pem(&cluster.root_ca_pem, &cluster.root_ca_key_pem)
        .map_err(|e| Status::internal(format!("cluster CA unusable: {e}")))
}

/// A removed node's id, kept for good (swarmkit's `RemovedNodes`): its
/// certificate is refused by every manager, and it must join again with a
/// token, as a new node.
pub const REMOVED_NODES: &str = "index/removed-nodes/";

/// What a manager answers a removed node; the node recognises it with
/// [`is_removed_status`].
const REMOVED_FROM_SWARM: &str = "was removed from the swarm";

pub fn removed_node_key(node_id: &str) -> String {
    format!("{REMOVED_NODES}{node_id}")
}

/// True when `node rm` removed `node_id`.
pub fn is_removed(store: &Store, node_id: &str) -> bool {
    store.get(&removed_node_key(node_id)).is_some()
}

/// The refusal of every call a removed node makes.
pub fn removed_status(node_id: &str) -> Status {
    Status::permission_denied(format!(
        "node {node_id} {REMOVED_FROM_SWARM}; join it again with a token (`shoal swarm join --token ...`)"
    ))
}

/// True when a manager refused a call because the caller was removed.
pub fn is_removed_status(status: &Status) -> bool {
    status.code() == tonic::Code::PermissionDenied && status.message().contains(REMOVED_FROM_SWARM)
}

/// The root CA each node's certificate chains to, by node id (sha256 of the
/// root, as [`ClusterCa::digest`]): a root rotation ends once every node's
/// is the new one.
pub const NODE_CERT_ROOTS: &str = "index/node-cert-roots/";

/// The roots a node trusts: the current one, and during a rotation the one
/// it replaces.
pub fn trusted_roots_pem(cluster: &Cluster) -> String {
    let mut roots = cluster.root_ca_pem.clone();
    if !cluster.previous_root_ca_pem.is_empty() {
        if !roots.ends_with('\n') {
            roots.push('\n');
        }
        roots.push_str(&cluster.previous_root_ca_pem);
    }
    roots
}

/// True while some node of `view` holds a certificate of a root other than
/// `digest` (the current one), going by what the CA signed last for it.
pub fn rotation_pending(store: &Store, view: &ClusterView, digest: &str) -> bool {
    view.nodes.keys().any(|id| {
        store
            .get(&format!("{NODE_CERT_ROOTS}{id}"))
            .is_none_or(|kv| kv.value != digest.as_bytes())
    })
}

/// A node certificate as sent to its node: during a root rotation followed
/// by the new root cross-signed by the previous one.
fn with_cross_signed(mut certificate_pem: String, cluster: &Cluster) -> String {
    if !cluster.root_ca_cross_signed_pem.is_empty() {
        if !certificate_pem.ends_with('\n') {
            certificate_pem.push('\n');
        }
        certificate_pem.push_str(&cluster.root_ca_cross_signed_pem);
    }
    certificate_pem
}

/// Records that `node_id` now holds a certificate of the root `digest`, and
/// ends a root rotation once every node does (best effort: a renewal does
/// not fail for it; the next one records again).
async fn record_certificate_root(store: &Store, cache: &ViewCache, node_id: &str, digest: &str) {
    if let Err(err) = try_record_certificate_root(store, cache, node_id, digest).await {
        tracing::warn!(node = %node_id, error = %err.message(), "recording the root of a node certificate failed");
    }
}

async fn try_record_certificate_root(
    store: &Store,
    cache: &ViewCache,
    node_id: &str,
    digest: &str,
) -> Result<(), Status> {
    let key = format!("{NODE_CERT_ROOTS}{node_id}");
    if store
        .get(&key)
        .is_none_or(|kv| kv.value != digest.as_bytes())
    {
        store
            .write(Txn::new().put(key, digest.as_bytes().to_vec()))
            .await
            .map_err(|e| Status::unavailable(format!("store: {e}")))?;
    }
    for _ in 0..5 {
        let view = cache.current();
        let mut cluster = Cluster::clone(&view.cluster);
        if cluster.previous_root_ca_pem.is_empty() || rotation_pending(store, &view, digest) {
            return Ok(());
        }
        drop(view);
        cluster.previous_root_ca_pem.clear();
        cluster.root_ca_cross_signed_pem.clear();
        let mut txn = Txn::default();
        state::guarded_put(&mut txn, state::CLUSTER_KEY.into(), &mut cluster);
        match store.write(txn).await {
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(Status::unavailable(format!("store: {e}"))),
            Ok(_) => {
                tracing::info!(root = %digest, "root CA rotation done: every node holds a certificate of the new root; the previous root is no longer trusted");
                return Ok(());
            }
        }
    }
    Ok(())
}

/// How long the node certificates this cluster signs last.
pub fn node_cert_validity(cluster: &Cluster) -> std::time::Duration {
    if cluster.node_cert_expiry_ms == 0 {
        ca::NODE_VALIDITY
    } else {
        std::time::Duration::from_millis(cluster.node_cert_expiry_ms)
    }
}

/// The role a token grants, or why it grants none.
pub fn token_role(cluster: &Cluster, ca: &ClusterCa, token: &str) -> Result<CertRole, Status> {
    let token = ca::parse_token(token).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if token.ca_digest != ca.digest() {
        return Err(Status::permission_denied(
            "the join token is for another cluster: its CA digest does not match this cluster's CA",
        ));
    }
    if ca::token_matches(&token, ca.digest(), &cluster.manager_token_secret) {
        Ok(CertRole::Manager)
    } else if ca::token_matches(&token, ca.digest(), &cluster.worker_token_secret) {
        Ok(CertRole::Worker)
    } else {
        Err(Status::permission_denied(
            "invalid join token: it was rotated or never valid; get a current one with `shoal swarm join-token worker` on a manager",
        ))
    }
}

/// Host part of `host:port` (or the whole string).
pub fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
            h.trim_matches(|c| c == '[' || c == ']')
        }
        _ => addr,
    }
}

/// Joins and promotions pick a Raft id (and a join an ingress address) from a
/// view of every node, so two at once could pick the same. Each such write
/// compares and bumps [`state::NODE_ALLOCATIONS`], read before the view: the
/// second of two racing writes fails its compare and picks again from a fresh
/// view. The key's value is the highest Raft id ever given, so the id of a
/// demoted manager is never given to another node.
struct Allocations {
    version: u64,
    highest_raft_id: u64,
}

/// How often a join or promotion picks again after losing a race (each lost
/// race is another node's win, so N at once need at most N attempts).
const ALLOCATION_ATTEMPTS: usize = 32;

impl Allocations {
    fn read(store: &Store) -> Self {
        let kv = store.get(state::NODE_ALLOCATIONS);
        Self {
            version: kv.as_ref().map_or(0, |kv| kv.mod_revision),
            highest_raft_id: kv
                .and_then(|kv| String::from_utf8(kv.value).ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }

    /// One more than the highest Raft id ever given (the first manager is 1).
    fn next_raft_id(&self, view: &ClusterView) -> u64 {
        view.nodes
            .values()
            .filter_map(|n| n.manager_status.as_ref().map(|m| m.raft_id))
            .chain([self.highest_raft_id, 1])
            .max()
            .unwrap_or(1)
            + 1
    }

    /// Makes `txn` commit only if no other allocation committed since the read.
    fn guard(&self, txn: &mut Txn, raft_id: u64) {
        txn.compares.push(Compare::Version {
            key: state::NODE_ALLOCATIONS.into(),
            version: self.version,
        });
        txn.ops.push(Op::Put {
            key: state::NODE_ALLOCATIONS.into(),
            value: self.highest_raft_id.max(raft_id).to_string().into_bytes(),
        });
    }
}

#[tonic::async_trait]
impl NodeCa for NodeCaApi {
    async fn join_raft(
        &self,
        req: Request<JoinRaftRequest>,
    ) -> Result<Response<JoinRaftResponse>, Status> {
        let (peer, role) = ca::peer_identity(&req)?;
        if role != CertRole::Manager {
            return Err(Status::permission_denied(
                "only managers join the Raft group",
            ));
        }
        let req = req.into_inner();
        let node: Node = state::get(&self.store, &state::node_key(&peer)).ok_or_else(|| {
            Status::not_found(format!("node {peer} is not a member of this swarm"))
        })?;
        let expected = node.manager_status.as_ref().map(|m| m.raft_id).unwrap_or(0);
        if expected == 0 || expected != req.raft_id {
            return Err(Status::permission_denied(format!(
                "node {peer} was not given raft id {} at join",
                req.raft_id
            )));
        }
        if !self.store.is_leader() {
            let leader = self.store.leader().map(|(_, a)| a).unwrap_or_default();
            return Err(Status::unavailable(format!(
                "not the Raft leader; join through the leader at {leader}"
            )));
        }
        self.store
            .add_learner(req.raft_id, &req.addr)
            .await
            .map_err(|e| Status::unavailable(format!("add {peer} as a Raft learner: {e}")))?;
        let mut voters: std::collections::BTreeSet<u64> = self
            .store
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        voters.insert(req.raft_id);
        self.store
            .change_membership(voters)
            .await
            .map_err(|e| Status::unavailable(format!("make {peer} a Raft voter: {e}")))?;
        // Workers learn every manager address for fail-over.
        for _ in 0..5 {
            let Some(mut cluster) = state::get::<Cluster>(&self.store, state::CLUSTER_KEY) else {
                break;
            };
            if cluster.manager_addrs.contains(&req.addr) {
                break;
            }
            cluster.manager_addrs.push(req.addr.clone());
            let mut txn = Txn::default();
            state::guarded_put(&mut txn, state::CLUSTER_KEY.into(), &mut cluster);
            match self.store.write(txn).await {
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(e) => return Err(Status::unavailable(format!("store: {e}"))),
                Ok(_) => break,
            }
        }
        tracing::info!(node = %peer, raft_id = req.raft_id, addr = %req.addr, "manager joined the Raft group");
        Ok(Response::new(JoinRaftResponse {}))
    }

    async fn renew_node_certificate(
        &self,
        req: Request<RenewNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        let (peer, _) = ca::peer_identity(&req)?;
        if is_removed(&self.store, &peer) {
            return Err(removed_status(&peer));
        }
        let req = req.into_inner();
        let mut attempts = 0;
        let (cluster, node) = loop {
            attempts += 1;
            let allocations = Allocations::read(&self.store);
            let view = self.cache.current();
            let cluster = Cluster::clone(&view.cluster);
            let mut node = view
                .nodes
                .get(&peer)
                .map(|n| Node::clone(n))
                .ok_or_else(|| {
                    Status::not_found(format!("node {peer} is not a member of this swarm"))
                })?;
            let role = node.spec.as_ref().map(|s| s.role()).unwrap_or_default();
            if req.keep_role {
                // A renewal before expiry: the role change, if any, is the
                // role follower's to make.
                break (cluster, node);
            }
            match (role, node.manager_status.as_ref()) {
                // Promoted: give it a Raft id and the address it will serve Raft on;
                // it then asks the leader to join the group (`JoinRaft`).
                (NodeRole::Manager, None) => {
                    if req.advertise_addr.is_empty() {
                        return Err(Status::invalid_argument(
                            "advertise_addr: a promoted node must say where it serves Raft",
                        ));
                    }
                    let raft_id = allocations.next_raft_id(&view);
                    drop(view);
                    node.manager_status = Some(ManagerStatus {
                        leader: false,
                        reachability: "unknown".into(),
                        addr: req.advertise_addr.clone(),
                        raft_id,
                    });
                    let mut txn = Txn::default();
                    state::guarded_put(&mut txn, state::node_key(&peer), &mut node);
                    allocations.guard(&mut txn, raft_id);
                    match self.store.write(txn).await {
                        Ok(_) => {}
                        Err(StoreError::ConditionFailed { .. })
                            if attempts < ALLOCATION_ATTEMPTS =>
                        {
                            continue
                        }
                        Err(StoreError::ConditionFailed { .. }) => {
                            return Err(Status::aborted(format!(
                                "node {peer} changed concurrently; retry"
                            )))
                        }
                        Err(other) => return Err(Status::unavailable(format!("store: {other}"))),
                    }
                }
                // Demoted, but the leader has not taken it out of Raft yet.
                (NodeRole::Worker, Some(_)) => {
                    return Err(Status::failed_precondition(format!(
                    "node {peer} is still a member of the Raft group; retry once the leader removed it"
                )))
                }
                _ => {}
            }
            break (cluster, node);
        };
        let ca = cluster_ca(&cluster)?;
        let role = if req.keep_role {
            // The role it holds: a manager while it is in the Raft group.
            if node.manager_status.is_some() {
                NodeRole::Manager
            } else {
                NodeRole::Worker
            }
        } else {
            node.spec.as_ref().map(|s| s.role()).unwrap_or_default()
        };
        let cert_role = CertRole::from(role);
        let underlay = node
            .status
            .as_ref()
            .map(|s| s.addr.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| host_of(&req.advertise_addr).to_string());
        let validity = node_cert_validity(&cluster);
        let certificate_pem = ca
            .sign_node_valid_for(
                &req.csr_pem,
                &peer,
                cert_role,
                std::slice::from_ref(&underlay),
                validity,
            )
            .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
        if req.keep_role {
            tracing::info!(node = %peer, ?role, ?validity, "node certificate renewed before expiry");
        } else {
            tracing::info!(node = %peer, ?role, "node certificate renewed for its new role");
        }
        let certificate_pem = with_cross_signed(certificate_pem, &cluster);
        record_certificate_root(&self.store, &self.cache, &peer, ca.digest()).await;
        let status = node.status.clone().unwrap_or_default();
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id: peer,
            certificate_pem,
            ca_certificate_pem: trusted_roots_pem(&cluster),
            role: role as i32,
            manager_addrs: cluster.manager_addrs.clone(),
            raft_id: node.manager_status.as_ref().map(|m| m.raft_id).unwrap_or(0),
            ingress_address: status.ingress_address,
            ingress_subnet: cluster.ingress_subnet.clone(),
            ingress_vni: cluster.ingress_vni,
            data_path_port: cluster.data_path_port,
        }))
    }

    async fn node_certificate_status(
        &self,
        req: Request<NodeCertificateStatusRequest>,
    ) -> Result<Response<NodeCertificateStatusResponse>, Status> {
        let (peer, _) = ca::peer_identity(&req)?;
        if is_removed(&self.store, &peer) {
            return Err(removed_status(&peer));
        }
        let cluster: Cluster = state::get(&self.store, state::CLUSTER_KEY)
            .ok_or_else(|| Status::unavailable("the cluster object is not replicated here yet"))?;
        let ca = cluster_ca(&cluster)?;
        Ok(Response::new(NodeCertificateStatusResponse {
            root_ca_digest: ca.digest().to_string(),
            trusted_roots_pem: trusted_roots_pem(&cluster),
            node_cert_expiry_ms: node_cert_validity(&cluster).as_millis() as u64,
        }))
    }

    async fn issue_node_certificate(
        &self,
        req: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        let req = req.into_inner();
        // A removed node comes back as a new node: its old id stays refused.
        let node_id = if req.node_id.is_empty() || is_removed(&self.store, &req.node_id) {
            shoal_api::id::new_id()
        } else {
            req.node_id.clone()
        };
        if req.advertise_addr.is_empty() {
            return Err(Status::invalid_argument(
                "advertise_addr: the joining node must say where it can be reached",
            ));
        }
        let underlay = host_of(&req.advertise_addr).to_string();
        let mut attempts = 0;
        let (cluster, ca, role, node) = loop {
            attempts += 1;
            let allocations = Allocations::read(&self.store);
            let view = self.cache.current();
            let cluster = Cluster::clone(&view.cluster);
            let ca = cluster_ca(&cluster)?;
            let role = token_role(&cluster, &ca, &req.token)?;
            if view.nodes.contains_key(&node_id) {
                return Err(Status::already_exists(format!(
                    "node {node_id} is already a member of this swarm; remove it with `shoal node rm` first"
                )));
            }
            let ingress_address = allocator::allocate_node_address(&view).ok_or_else(|| {
                Status::resource_exhausted("no free address left on the ingress network")
            })?;
            let raft_id = match role {
                CertRole::Manager => allocations.next_raft_id(&view),
                CertRole::Worker => 0,
            };
            let now = shoal_api::now_ms();
            let node = Node {
                id: node_id.clone(),
                meta: Some(Meta {
                    version: 0,
                    created_at_ms: now,
                    updated_at_ms: now,
                }),
                spec: Some(NodeSpec {
                    role: NodeRole::from(role) as i32,
                    availability: NodeAvailability::Active as i32,
                    labels: Default::default(),
                }),
                description: Some(NodeDescription {
                    hostname: req.hostname.clone(),
                    ..Default::default()
                }),
                status: Some(NodeStatus {
                    state: NodeState::Unknown as i32,
                    message: "joined; waiting for its first session".into(),
                    addr: underlay.clone(),
                    ingress_address,
                }),
                manager_status: (role == CertRole::Manager).then(|| ManagerStatus {
                    leader: false,
                    reachability: "unknown".into(),
                    addr: req.advertise_addr.clone(),
                    raft_id,
                }),
            };
            let key = state::node_key(&node_id);
            let mut txn = Txn::new()
                .when_absent(key.clone())
                .put(key, codec::encode(&node));
            allocations.guard(&mut txn, raft_id);
            drop(view);
            match self.store.write(txn).await {
                Ok(_) => break (cluster, ca, role, node),
                Err(StoreError::ConditionFailed { .. }) if attempts < ALLOCATION_ATTEMPTS => {}
                Err(StoreError::ConditionFailed { .. }) => {
                    return Err(Status::unavailable(
                        "too many nodes joined at once; retry the join",
                    ))
                }
                Err(other) => return Err(Status::unavailable(format!("store: {other}"))),
            }
        };
        let certificate_pem = ca
            .sign_node_valid_for(
                &req.csr_pem,
                &node_id,
                role,
                std::slice::from_ref(&underlay),
                node_cert_validity(&cluster),
            )
            .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
        tracing::info!(node = %node_id, hostname = %req.hostname, ?role, "node joined");
        let certificate_pem = with_cross_signed(certificate_pem, &cluster);
        record_certificate_root(&self.store, &self.cache, &node_id, ca.digest()).await;
        let status = node.status.unwrap_or_default();
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id,
            certificate_pem,
            ca_certificate_pem: trusted_roots_pem(&cluster),
            role: NodeRole::from(role) as i32,
            manager_addrs: cluster.manager_addrs.clone(),
            raft_id: node.manager_status.map_or(0, |m| m.raft_id),
            ingress_address: status.ingress_address,
            ingress_subnet: cluster.ingress_subnet.clone(),
            ingress_vni: cluster.ingress_vni,
            data_path_port: cluster.data_path_port,
        }))
    }
}

#[cfg(test)]
mod tests;
