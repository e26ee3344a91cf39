//! The `Control` gRPC service: validates requests, resolves names, and turns
//! them into store transactions. It never runs tasks itself; the reconcilers
//! react to what it writes.
//!
//! # Layout
//! One file per object, as swarmkit's `manager/controlapi`; a new object type
//! (network, secret, config) is one more file.
//! - this module: [`ControlApi`], whose `Control` methods only delegate.
//! - [`resolve`]: finding objects by ID, name or prefix; store errors as statuses.
//! - [`service`]: services, their published ports and rollbacks.
//! - [`task`]: tasks (`service ps`, `node ps`, `inspect`).
//! - [`node`]: nodes, role changes, removal.
//! - [`cluster`]: info, swarm init/update/join/leave, join tokens.
//! - [`logs`]: `service logs`, a thin call into the dispatcher's log broker.
//!
//! Handlers take what they need from the [`ViewCache`]'s view and drop it
//! before they await (a view held across a write would make the cache copy
//! it on its next change).

pub mod cluster;
pub mod logs;
pub mod node;
pub mod resolve;
pub mod service;
pub mod task;

use shoal_api::pb::control_server::Control;
use shoal_api::pb::*;
use shoal_store::Store;
use tonic::{Request, Response, Status};

use crate::cache::ViewCache;
use crate::dispatcher::DispatcherApi;
use crate::ManagerConfig;

/// Implements `shoal.v1.Control` on a manager.
#[derive(Clone)]
pub struct ControlApi {
    /// Where writes go (and the Raft state `node ls` shows).
    store: Store,
    /// The decoded state every read starts from.
    cache: ViewCache,
    /// Who answers (`info`, join-token addresses).
    config: ManagerConfig,
    /// Its log broker serves `service logs`.
    dispatcher: DispatcherApi,
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
}

#[tonic::async_trait]
impl Control for ControlApi {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(cluster::info(
            &self.store,
            &self.cache,
            &self.config,
        )))
    }

    async fn swarm_init(
        &self,
        _: Request<SwarmInitRequest>,
    ) -> Result<Response<SwarmInitResponse>, Status> {
        cluster::init().map(Response::new)
    }

    async fn update_swarm(
        &self,
        req: Request<UpdateSwarmRequest>,
    ) -> Result<Response<UpdateSwarmResponse>, Status> {
        cluster::update(&self.store, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_service(
        &self,
        req: Request<CreateServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        service::create(&self.store, &self.cache, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_service(
        &self,
        req: Request<GetServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        service::get(&self.cache, req.into_inner()).map(Response::new)
    }

    async fn list_services(
        &self,
        _: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        Ok(Response::new(service::list(&self.cache)))
    }

    async fn update_service(
        &self,
        req: Request<UpdateServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        service::update(&self.store, &self.cache, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_service(
        &self,
        req: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        service::remove(&self.store, &self.cache, req.into_inner())
            .await
            .map(Response::new)
    }

    type ServiceLogsStream = logs::LogStream;

    async fn service_logs(
        &self,
        req: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        logs::service_logs(&self.cache, &self.dispatcher, req.into_inner()).map(Response::new)
    }

    async fn get_task(
        &self,
        req: Request<GetTaskRequest>,
    ) -> Result<Response<TaskResponse>, Status> {
        task::get(&self.cache, req.into_inner()).map(Response::new)
    }

    async fn list_tasks(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        task::list(&self.cache, req.into_inner()).map(Response::new)
    }

    async fn get_node(
        &self,
        req: Request<GetNodeRequest>,
    ) -> Result<Response<NodeResponse>, Status> {
        node::get(&self.store, &self.cache, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_nodes(
        &self,
        _: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        Ok(Response::new(node::list(&self.store, &self.cache).await))
    }

    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<NodeResponse>, Status> {
        node::update(&self.store, &self.cache, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        node::remove(&self.store, &self.cache, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn join_token(
        &self,
        req: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        cluster::join_token(&self.store, &self.config, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn swarm_join(
        &self,
        _: Request<SwarmJoinRequest>,
    ) -> Result<Response<SwarmJoinResponse>, Status> {
        cluster::join().map(Response::new)
    }

    async fn swarm_leave(
        &self,
        _: Request<SwarmLeaveRequest>,
    ) -> Result<Response<SwarmLeaveResponse>, Status> {
        cluster::leave().map(Response::new)
    }
}
