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

const NOT_A_MANAGER: &str = "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect this node to swarm and try again.";

/// `Control` as served on the node socket.
#[derive(Clone)]
pub struct NodeControl(pub Arc<Daemon>);

/// `Dispatcher` as served on the node socket.
#[derive(Clone)]
pub struct NodeDispatcher(pub Arc<Daemon>);

impl NodeControl {
    fn manager(&self) -> Result<ControlApi, Status> {
        self.0
            .manager()
            .map(|m| m.control())
            .ok_or_else(|| Status::failed_precondition(NOT_A_MANAGER))
    }
}

impl NodeDispatcher {
    fn manager(&self) -> Result<DispatcherApi, Status> {
        self.0
            .manager()
            .map(|m| m.dispatcher())
            .ok_or_else(|| Status::unavailable("this node is not a manager yet"))
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
            None => Ok(Response::new(InfoResponse {
                node_id: self.0.identity.node_id.clone(),
                hostname: self.0.identity.hostname.clone(),
                local_node_state: "inactive".into(),
                is_manager: false,
                cluster_id: String::new(),
                engine_version: env!("CARGO_PKG_VERSION").into(),
            })),
        }
    }

    async fn swarm_init(
        &self,
        req: Request<SwarmInitRequest>,
    ) -> Result<Response<SwarmInitResponse>, Status> {
        let req = req.into_inner();
        let cluster_id = self
            .0
            .init_swarm(&req.advertise_addr, req.task_history_limit)
            .await?;
        Ok(Response::new(SwarmInitResponse {
            node_id: self.0.identity.node_id.clone(),
            cluster_id,
        }))
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
    }

    type ServiceLogsStream = <ControlApi as Control>::ServiceLogsStream;

    async fn service_logs(
        &self,
        req: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        self.manager()?.service_logs(req).await
    }
}

#[tonic::async_trait]
impl Dispatcher for NodeDispatcher {
    type SessionStream = <DispatcherApi as Dispatcher>::SessionStream;
    type FeedStream = <DispatcherApi as Dispatcher>::FeedStream;
    type ListenSubscriptionsStream = <DispatcherApi as Dispatcher>::ListenSubscriptionsStream;

    async fn session(
        &self,
        req: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.manager()?.session(req).await
    }

    async fn feed(&self, req: Request<FeedRequest>) -> Result<Response<Self::FeedStream>, Status> {
        self.manager()?.feed(req).await
    }

    async fn listen_subscriptions(
        &self,
        req: Request<ListenSubscriptionsRequest>,
    ) -> Result<Response<Self::ListenSubscriptionsStream>, Status> {
        self.manager()?.listen_subscriptions(req).await
    }

    async fn publish_logs(
        &self,
        req: Request<Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        self.manager()?.publish_logs(req).await
    }

    forward! {
        heartbeat(HeartbeatRequest) -> HeartbeatResponse;
        update_task_status(UpdateTaskStatusRequest) -> UpdateTaskStatusResponse;
    }
}
