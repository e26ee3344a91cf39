//! Raft transport over gRPC: the [`RaftNetworkFactory`] clients and the `RaftTransport`
//! server. Payloads are openraft's own messages, postcard-encoded in `RaftPayload.data`.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use shoal_api::pb::raft_transport_client::RaftTransportClient;
use shoal_api::pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use shoal_api::pb::RaftPayload;
use tonic::transport::{Channel, Endpoint};

use crate::error::StoreError;
use crate::types::{Proposal, StoreRaft, TypeConfig};

type NodeId = u64;

/// Largest gRPC message accepted either way (AppendEntries batches, snapshot chunks).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Turns a node address ("host:port" or a full URI) into a lazily connecting
/// channel: made by `peers` (the node's mTLS dialer) when given, else plain
/// HTTP/2.
fn channel(addr: &str, peers: Option<&PeerChannels>) -> Result<Channel, ChannelError> {
    if let Some(peers) = peers {
        return peers(addr).map_err(ChannelError);
    }
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| ChannelError(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// Makes the channel to a Raft peer ("host:port"). shoald's dials mTLS with
/// the node's current certificate, so a renewed certificate serves every
/// later connection.
pub type PeerChannels = std::sync::Arc<dyn Fn(&str) -> Result<Channel, String> + Send + Sync>;

/// A peer channel could not be made (a bad address or TLS setup).
#[derive(Debug, thiserror::Error)]
#[error("peer channel: {0}")]
pub struct ChannelError(String);

fn transport_client(channel: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Creates one [`NetworkClient`] per target node.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    /// Dials peers (None: plain HTTP/2, for tests).
    pub peers: Option<PeerChannels>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> NetworkClient {
        NetworkClient {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            client: None,
        }
    }
}

/// Sends Raft RPCs to one peer's `RaftTransport` server.
pub struct NetworkClient {
    target: NodeId,
    /// The peer's advertised address (BasicNode.addr).
    addr: String,
    peers: Option<PeerChannels>,
    /// Created on first use; tonic reconnects it as needed.
    client: Option<RaftTransportClient<Channel>>,
}

/// Which RPC a call is (selects the tonic method).
#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

// === impl NetworkClient ===

impl NetworkClient {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data =
            postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if self.client.is_none() {
            let channel = channel(&self.addr, self.peers.as_ref())
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            self.client = Some(transport_client(channel));
        }
        let client = self.client.as_mut().expect("client set above");
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(ttl);
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }
}

/// The reply to a forwarded `ClientWrite`.
#[derive(Debug, Serialize, Deserialize)]
enum ForwardedWrite {
    Committed(u64),
    ConditionFailed(String),
    NotLeader(Option<String>),
    Failed(String),
}

/// Proposes `proposal` on the store node at `addr` (normally the leader) through its
/// `RaftTransport.ClientWrite`; same results as [`Store::write`](crate::Store::write).
pub(crate) async fn write_remote(
    addr: &str,
    proposal: &Proposal,
    peers: Option<&PeerChannels>,
) -> Result<u64, StoreError> {
    let data = postcard::to_allocvec(proposal)
        .map_err(|e| StoreError::storage("encode forwarded proposal", e))?;
    let channel =
        channel(addr, peers).map_err(|e| StoreError::raft("forward write: connect", e))?;
    let reply = transport_client(channel)
        .client_write(RaftPayload { data })
        .await
        .map_err(|e| StoreError::raft("forward write", e))?;
    let reply: ForwardedWrite = postcard::from_bytes(&reply.into_inner().data)
        .map_err(|e| StoreError::storage("decode forwarded write reply", e))?;
    match reply {
        ForwardedWrite::Committed(rev) => Ok(rev),
        ForwardedWrite::ConditionFailed(key) => Err(StoreError::ConditionFailed { key }),
        ForwardedWrite::NotLeader(leader) => Err(StoreError::NotLeader { leader }),
        ForwardedWrite::Failed(message) => Err(StoreError::Raft {
            op: "forwarded write",
            message,
        }),
    }
}

/// Decides whether a caller may speak Raft to this node (e.g. "holds a
/// manager certificate"); `Err` is returned to the caller as is.
pub type RaftAuthorizer =
    std::sync::Arc<dyn Fn(&tonic::Request<RaftPayload>) -> Result<(), tonic::Status> + Send + Sync>;

/// Server side of `RaftTransport`: hands decoded requests to the local Raft node.
#[derive(Clone)]
pub struct RaftService {
    pub(crate) store: crate::Store,
    /// Checked before every call; None admits everyone (tests).
    pub(crate) authorize: Option<RaftAuthorizer>,
}

/// The tonic service type returned by [`Store::raft_service`](crate::Store::raft_service).
pub type RaftServer = RaftTransportServer<RaftService>;

pub(crate) fn server(store: crate::Store, authorize: Option<RaftAuthorizer>) -> RaftServer {
    RaftTransportServer::new(RaftService { store, authorize })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn decode_req<T: DeserializeOwned>(
    request: tonic::Request<RaftPayload>,
) -> Result<T, tonic::Status> {
    postcard::from_bytes(&request.into_inner().data)
        .map_err(|e| tonic::Status::invalid_argument(format!("decode raft payload: {e}")))
}

fn encode_reply<T: Serialize>(reply: &T) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
    let data = postcard::to_allocvec(reply)
        .map_err(|e| tonic::Status::internal(format!("encode raft payload: {e}")))?;
    Ok(tonic::Response::new(RaftPayload { data }))
}

impl RaftService {
    fn raft(&self) -> &StoreRaft {
        self.store.raft()
    }

    fn check(&self, request: &tonic::Request<RaftPayload>) -> Result<(), tonic::Status> {
        match &self.authorize {
            Some(f) => f(request),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        self.check(&request)?;
        let req: AppendEntriesRequest<TypeConfig> = decode_req(request)?;
        encode_reply(&self.raft().append_entries(req).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        self.check(&request)?;
        let req: VoteRequest<NodeId> = decode_req(request)?;
        encode_reply(&self.raft().vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        self.check(&request)?;
        let req: InstallSnapshotRequest<TypeConfig> = decode_req(request)?;
        encode_reply(&self.raft().install_snapshot(req).await)
    }

    async fn client_write(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        self.check(&request)?;
        let proposal: Proposal = decode_req(request)?;
        let reply = match self.store.propose(proposal).await {
            Ok(rev) => ForwardedWrite::Committed(rev),
            Err(StoreError::ConditionFailed { key }) => ForwardedWrite::ConditionFailed(key),
            Err(StoreError::NotLeader { leader }) => ForwardedWrite::NotLeader(leader),
            Err(e) => ForwardedWrite::Failed(e.to_string()),
        };
        encode_reply(&reply)
    }
}
