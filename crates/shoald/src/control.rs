//! The `Control` service on the node socket. Before `swarm init` the node
//! answers `Info` and `SwarmInit` itself and refuses cluster calls with
//! Docker's "not a swarm manager" message; afterwards every call goes to the
//! manager. (The socket's `Dispatcher` is the manager's relaying one,
//! [`shoal_manager::dispatcher::relay::RelayDispatcher`].)

use std::sync::Arc;

use shoal_api::pb::control_server::Control;
use shoal_api::pb::*;
use shoal_manager::ControlApi;
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;
use crate::node::Membership;

const NOT_IN_SWARM: &str = "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect this node to swarm and try again.";
const STARTING: &str = "shoald is starting: this manager is rejoining the swarm; retry in a moment";
const WORKER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";

/// `Control` as served on the node socket.
#[derive(Clone)]
pub struct NodeControl(pub Arc<Daemon>);

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
