//! Who may call a node's dispatcher, and for whom. The node's own agent and
//! feed client call over the local socket and are trusted; another node calls
//! over mTLS and must present a node certificate from the cluster CA, which
//! names the node it may speak for (a manager may speak for any node: it
//! relays the calls of the agents connected to it). Only managers read a
//! service's logs through another manager, and only managers speak Raft.

use shoal_ca::{peer_identity, CertRole};
use tonic::{Request, Status};

/// Where a dispatcher call came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// This node's own agent and feed client, on the node socket.
    Local,
    /// Another node, on the mTLS node listener.
    Remote,
}

// === impl Caller ===

impl Caller {
    /// Checks that the caller may act for `node_id` (None: a call that names
    /// no node, which any node of the cluster may make).
    pub fn authorize<T>(self, req: &Request<T>, node_id: Option<&str>) -> Result<(), Status> {
        if self == Caller::Local {
            return Ok(());
        }
        let (peer, role) = peer_identity(req)?;
        match node_id {
            // Managers relay the calls of the agents connected to them.
            _ if role == CertRole::Manager => Ok(()),
            Some(id) if id != peer => Err(Status::permission_denied(format!(
                "certificate of node {peer} cannot act for node {id}"
            ))),
            _ => Ok(()),
        }
    }

    /// Checks that a remote caller is a manager (a follower relaying
    /// `service logs` to the leader).
    pub fn require_manager<T>(self, req: &Request<T>) -> Result<(), Status> {
        if self == Caller::Local {
            return Ok(());
        }
        match peer_identity(req)? {
            (_, CertRole::Manager) => Ok(()),
            (node, _) => Err(Status::permission_denied(format!(
                "node {node} is not a manager"
            ))),
        }
    }
}

/// Checks that a Raft peer holds a manager certificate (for
/// [`shoal_store::Store::raft_service_authorized`]).
pub fn require_raft_manager<T>(req: &Request<T>) -> Result<(), Status> {
    match peer_identity(req)? {
        (_, CertRole::Manager) => Ok(()),
        (node, _) => Err(Status::permission_denied(format!(
            "node {node} is not a manager and cannot take part in Raft"
        ))),
    }
}
