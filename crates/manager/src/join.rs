//! Joining the cluster: the `NodeCA` service a new node calls with its join
//! token and CSR, and the token operations behind `swarm join-token`. The
//! token's secret decides the role; the node's key never leaves the node.

use shoal_api::codec;
use shoal_api::pb::node_ca_server::NodeCa;
use shoal_api::pb::*;
use shoal_store::{Compare, Op, Store, StoreError, Txn};
use tonic::{Request, Response, Status};

use crate::allocator;
use crate::ca::{self, CertRole, ClusterCa};
use crate::state::{self, ClusterView};

/// Implements `shoal.v1.NodeCA` on a manager.
#[derive(Clone)]
pub struct NodeCaApi {
    store: Store,
}

impl NodeCaApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

/// The cluster CA as stored.
pub fn cluster_ca(cluster: &Cluster) -> Result<ClusterCa, Status> {
    ClusterCa::from_pem(&cluster.root_ca_pem, &cluster.root_ca_key_pem)
        .map_err(|e| Status::internal(format!("cluster CA unusable: {e}")))
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

#[tonic::async_trait]
impl NodeCa for NodeCaApi {
    async fn issue_node_certificate(
        &self,
        req: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        let req = req.into_inner();
        let view = ClusterView::load(&self.store);
        let cluster = view.cluster.clone();
        let ca = cluster_ca(&cluster)?;
        let role = token_role(&cluster, &ca, &req.token)?;
        if role == CertRole::Manager {
            return Err(Status::unimplemented(
                "joining as a manager is not supported yet: this cluster has a single manager; join as a worker (shoal swarm join-token worker)",
            ));
        }
        let node_id = if req.node_id.is_empty() {
            shoal_api::id::new_id()
        } else {
            req.node_id.clone()
        };
        if view.nodes.contains_key(&node_id) {
            return Err(Status::already_exists(format!(
                "node {node_id} is already a member of this swarm; remove it with `shoal node rm` first"
            )));
        }
        if req.advertise_addr.is_empty() {
            return Err(Status::invalid_argument(
                "advertise_addr: the joining node must say where it can be reached",
            ));
        }
        let ingress_address = allocator::allocate_node_address(&view).ok_or_else(|| {
            Status::resource_exhausted("no free address left on the ingress network")
        })?;
        let underlay = host_of(&req.advertise_addr).to_string();
        let certificate_pem = ca
            .sign_node(
                &req.csr_pem,
                &node_id,
                role,
                std::slice::from_ref(&underlay),
            )
            .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
        let now = shoal_api::now_ms();
        let node = Node {
            id: node_id.clone(),
            meta: Some(Meta {
                version: 0,
                created_at_ms: now,
                updated_at_ms: now,
            }),
            spec: Some(NodeSpec {
                role: NodeRole::Worker as i32,
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
                addr: underlay,
                ingress_address: ingress_address.clone(),
            }),
            manager_status: None,
        };
        let key = state::node_key(&node_id);
        let txn = Txn {
            compares: vec![Compare::Version {
                key: key.clone(),
                version: 0,
            }],
            ops: vec![Op::Put {
                key,
                value: codec::encode(&node),
            }],
        };
        self.store.write(txn).await.map_err(|e| match e {
            StoreError::ConditionFailed { .. } => {
                Status::already_exists(format!("node {node_id} joined concurrently"))
            }
            other => Status::unavailable(format!("store: {other}")),
        })?;
        tracing::info!(node = %node_id, hostname = %req.hostname, ?role, "node joined");
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id,
            certificate_pem,
            ca_certificate_pem: ca.cert_pem().to_string(),
            role: NodeRole::Worker as i32,
            manager_addrs: cluster.manager_addrs.clone(),
            raft_id: 0,
            ingress_address,
            ingress_subnet: cluster.ingress_subnet.clone(),
            ingress_vni: cluster.ingress_vni,
            data_path_port: cluster.data_path_port,
        }))
    }
}
