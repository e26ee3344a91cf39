//! The gRPC services on the node socket. Before `swarm init` the node answers
//! `Info` and `SwarmInit` itself and refuses cluster calls with Docker's
//! "not a swarm manager" message; afterwards every call goes to the manager.

use std::sync::Arc;

use shoal_api::pb::control_server::Control;
use shoal_api::pb::dispatcher_server::Dispatcher;
use shoal_api::pb::*;
use shoal_manager::{ControlApi, DispatcherApi};
use tonic::{Request, Response, Status, Streaming};

use crate::daemon::Daemon;
use crate::node::Membership;

const NOT_IN_SWARM: &str = "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect this node to swarm and try again.";
const STARTING: &str = "shoald is starting: this manager is rejoining the swarm; retry in a moment";
const WORKER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";

/// `Control` as served on the node socket.
#[derive(Clone)]
pub struct NodeControl(pub Arc<Daemon>);

/// `Dispatcher` as served on the node socket (`remote: false`, trusted local
/// agent) and on the mTLS listener (`remote: true`).
#[derive(Clone)]
pub struct NodeDispatcher {
    pub daemon: Arc<Daemon>,
    pub remote: bool,
}

impl NodeControl {
    fn manager(&self) -> Result<ControlApi, Status> {
        match (self.0.manager(), self.0.membership()) {
            (Some(m), _) => Ok(m.control()),
            (None, Membership::Worker) => Err(Status::failed_precondition(WORKER)),
            // Between start-up and the manager role resuming.
            (None, Membership::Manager) => Err(Status::unavailable(STARTING)),
            (None, Membership::None) => Err(Status::failed_precondition(NOT_IN_SWARM)),
        }
    }
}

impl NodeDispatcher {
    fn manager(&self) -> Result<DispatcherApi, Status> {
        self.daemon
            .manager()
            .map(|m| m.dispatcher())
            .ok_or_else(|| Status::unavailable("this node is not a manager"))
    }

    /// Over TLS, the caller must hold a node certificate from the cluster CA,
    /// and may only speak for the node it names.
    fn authorize<T>(&self, req: &Request<T>, node_id: Option<&str>) -> Result<(), Status> {
        if !self.remote {
            return Ok(());
        }
        let (peer, role) = shoal_ca::peer_identity(req)?;
        match node_id {
            // Managers relay the calls of the agents connected to them.
            _ if role == shoal_ca::CertRole::Manager => Ok(()),
            Some(id) if id != peer => Err(Status::permission_denied(format!(
                "certificate of node {peer} cannot act for node {id}"
            ))),
            _ => Ok(()),
        }
    }
}

/// Forwards unary calls to the manager's implementation.
macro_rules! forward {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        $(
            // The shape `#[tonic::async_trait]` gives an `async fn`; macros
            // expand after that attribute ran, so it is spelled out here.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                req: Request<$req>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { self.manager()?.$method(req).await })
            }
        )*
    };
}

#[tonic::async_trait]
impl Control for NodeControl {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        match self.0.manager() {
            Some(m) => m.control().info(req).await,
            None => {
                let identity = self.0.identity();
                let active = identity.membership != Membership::None;
                Ok(Response::new(InfoResponse {
                    node_id: identity.node_id.clone(),
                    hostname: identity.hostname.clone(),
                    local_node_state: if active { "active" } else { "inactive" }.into(),
                    is_manager: false,
                    cluster_id: String::new(),
                    engine_version: env!("CARGO_PKG_VERSION").into(),
                    managers: identity.manager_addrs.clone(),
                    ..Default::default()
                }))
            }
        }
    }

    async fn swarm_init(
        &self,
        req: Request<SwarmInitRequest>,
    ) -> Result<Response<SwarmInitResponse>, Status> {
        let req = req.into_inner();
        let cluster_id = self.0.init_swarm(&req).await?;
        Ok(Response::new(SwarmInitResponse {
            node_id: self.0.identity().node_id,
            cluster_id,
        }))
    }

    async fn swarm_join(
        &self,
        req: Request<SwarmJoinRequest>,
    ) -> Result<Response<SwarmJoinResponse>, Status> {
        let req = req.into_inner();
        let role = self
            .0
            .join_swarm(&req.token, &req.remote_addr, &req.advertise_addr)
            .await?;
        Ok(Response::new(SwarmJoinResponse {
            node_id: self.0.identity().node_id,
            role: role as i32,
        }))
    }

    async fn swarm_leave(
        &self,
        req: Request<SwarmLeaveRequest>,
    ) -> Result<Response<SwarmLeaveResponse>, Status> {
        self.0.leave_swarm(req.into_inner().force).await?;
        Ok(Response::new(SwarmLeaveResponse {}))
    }

    forward! {
        create_service(CreateServiceRequest) -> ServiceResponse;
        get_service(GetServiceRequest) -> ServiceResponse;
        list_services(ListServicesRequest) -> ListServicesResponse;
        update_service(UpdateServiceRequest) -> ServiceResponse;
        remove_service(RemoveServiceRequest) -> RemoveServiceResponse;
        get_task(GetTaskRequest) -> TaskResponse;
        list_tasks(ListTasksRequest) -> ListTasksResponse;
        get_node(GetNodeRequest) -> NodeResponse;
        list_nodes(ListNodesRequest) -> ListNodesResponse;
        update_node(UpdateNodeRequest) -> NodeResponse;
        remove_node(RemoveNodeRequest) -> RemoveNodeResponse;
        join_token(JoinTokenRequest) -> JoinTokenResponse;
        update_swarm(UpdateSwarmRequest) -> UpdateSwarmResponse;
    }

    type ServiceLogsStream = <ControlApi as Control>::ServiceLogsStream;

    async fn service_logs(
        &self,
        req: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let control = self.manager()?;
        // Agents publish logs to the leader's broker: a follower relays.
        if let Some(mut leader) = self.0.leader_dispatcher()? {
            let stream = leader.service_logs(req.into_inner()).await?.into_inner();
            return Ok(Response::new(Box::pin(stream) as Self::ServiceLogsStream));
        }
        control.service_logs(req).await
    }
}

#[tonic::async_trait]
impl Dispatcher for NodeDispatcher {
    type SessionStream = <DispatcherApi as Dispatcher>::SessionStream;
    type FeedStream = <DispatcherApi as Dispatcher>::FeedStream;
    type ListenSubscriptionsStream = <DispatcherApi as Dispatcher>::ListenSubscriptionsStream;

    // Sessions, heartbeats, status and logs live on the Raft leader; a
    // follower relays them there. The feed is served from any replica.
    async fn session(
        &self,
        req: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.authorize(&req, Some(&req.get_ref().node_id))?;
        if let Some(mut leader) = self.daemon.leader_dispatcher()? {
            let stream = leader.session(req.into_inner()).await?.into_inner();
            return Ok(Response::new(Box::pin(stream) as Self::SessionStream));
        }
        self.manager()?.session(req).await
    }

    type ServiceLogsStream = <ControlApi as Control>::ServiceLogsStream;

    /// A follower manager's `service logs`, answered here on the leader.
    async fn service_logs(
        &self,
        req: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        if self.remote {
            match shoal_ca::peer_identity(&req)? {
                (_, shoal_ca::CertRole::Manager) => {}
                (node, _) => {
                    return Err(Status::permission_denied(format!(
                        "node {node} is not a manager"
                    )))
                }
            }
        }
        let manager = self
            .daemon
            .manager()
            .ok_or_else(|| Status::unavailable("this node is not a manager"))?;
        manager.control().service_logs(req).await
    }

    async fn feed_applied(
        &self,
        req: Request<FeedAppliedRequest>,
    ) -> Result<Response<FeedAppliedResponse>, Status> {
        self.authorize(&req, Some(&req.get_ref().node_id))?;
        if let Some(mut leader) = self.daemon.leader_dispatcher()? {
            return leader.feed_applied(req.into_inner()).await;
        }
        self.manager()?.feed_applied(req).await
    }

    async fn feed(&self, req: Request<FeedRequest>) -> Result<Response<Self::FeedStream>, Status> {
        self.authorize(&req, None)?;
        // Any replica serves the feed; a demoted manager relays to the others.
        if self.daemon.manager().is_none() {
            if let Some(mut upstream) = self.daemon.worker_upstream() {
                let stream = upstream.feed(req.into_inner()).await?.into_inner();
                return Ok(Response::new(Box::pin(stream) as Self::FeedStream));
            }
        }
        self.manager()?.feed(req).await
    }

    async fn listen_subscriptions(
        &self,
        req: Request<ListenSubscriptionsRequest>,
    ) -> Result<Response<Self::ListenSubscriptionsStream>, Status> {
        self.authorize(&req, Some(&req.get_ref().node_id))?;
        if let Some(mut leader) = self.daemon.leader_dispatcher()? {
            let stream = leader
                .listen_subscriptions(req.into_inner())
                .await?
                .into_inner();
            return Ok(Response::new(
                Box::pin(stream) as Self::ListenSubscriptionsStream
            ));
        }
        self.manager()?.listen_subscriptions(req).await
    }

    async fn publish_logs(
        &self,
        req: Request<Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        self.authorize(&req, None)?;
        if let Some(mut leader) = self.daemon.leader_dispatcher()? {
            use tokio_stream::StreamExt;
            let messages = req.into_inner().filter_map(|m| m.ok());
            return leader.publish_logs(messages).await;
        }
        self.manager()?.publish_logs(req).await
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.authorize(&req, Some(&req.get_ref().node_id))?;
        if let Some(mut leader) = self.daemon.leader_dispatcher()? {
            return leader.heartbeat(req.into_inner()).await;
        }
        self.manager()?.heartbeat(req).await
    }

    async fn update_task_status(
        &self,
        req: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        self.authorize(&req, Some(&req.get_ref().node_id))?;
        if let Some(mut leader) = self.daemon.leader_dispatcher()? {
            return leader.update_task_status(req.into_inner()).await;
        }
        self.manager()?.update_task_status(req).await
    }
}
