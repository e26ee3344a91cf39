//! The dispatcher as a node serves it, on its socket and on its node
//! listener. Sessions, heartbeats, task status and log calls are answered by
//! the Raft leader's dispatcher: a follower relays them there, and a node
//! with no manager of its own in the group (a worker, a demoted manager's
//! local agent, a manager whose promotion or demotion is under way) relays
//! them to the managers it knows. The feed is served by any replica. What
//! the node runs now, and so where a call goes, is the [`RelayTarget`]'s to
//! say; [`Caller`] checks who may make the call.

use std::sync::Arc;

use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::dispatcher_server::Dispatcher;
use shoal_api::pb::*;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::caller::Caller;
use super::DispatcherApi;
use crate::{ControlApi, Manager};

/// What a node runs now, as far as its dispatcher calls are concerned.
pub trait RelayTarget: Send + Sync + 'static {
    /// This node's manager, when it runs one.
    fn manager(&self) -> Option<Manager>;

    /// Where the leader's calls go instead of this node's manager: the
    /// leader when this manager follows, the other managers when this node
    /// is a worker or a manager outside the Raft group; None when this node
    /// leads (or has nowhere to relay to).
    fn leader(&self) -> Result<Option<DispatcherClient<Channel>>, Status>;

    /// A worker's dispatcher over its managers; None unless this node is a worker.
    fn worker_upstream(&self) -> Option<DispatcherClient<Channel>>;
}

/// `Dispatcher` as a node serves it: answered by this node's manager or
/// relayed, for a caller checked by [`Caller`].
pub struct RelayDispatcher<T> {
    target: Arc<T>,
    caller: Caller,
}

impl<T> Clone for RelayDispatcher<T> {
    fn clone(&self) -> Self {
        RelayDispatcher {
            target: self.target.clone(),
            caller: self.caller,
        }
    }
}

// === impl RelayDispatcher ===

impl<T: RelayTarget> RelayDispatcher<T> {
    pub fn new(target: Arc<T>, caller: Caller) -> Self {
        RelayDispatcher { target, caller }
    }

    fn local(&self) -> Result<DispatcherApi, Status> {
        self.target
            .manager()
            .map(|m| m.dispatcher())
            .ok_or_else(|| Status::unavailable("this node is not a manager"))
    }
}

#[tonic::async_trait]
impl<T: RelayTarget> Dispatcher for RelayDispatcher<T> {
    type SessionStream = <DispatcherApi as Dispatcher>::SessionStream;
    type FeedStream = <DispatcherApi as Dispatcher>::FeedStream;
    type ListenSubscriptionsStream = <DispatcherApi as Dispatcher>::ListenSubscriptionsStream;

    // Sessions, heartbeats, status and logs live on the Raft leader; a
    // follower relays them there. The feed is served from any replica.
    async fn session(
        &self,
        req: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.caller.authorize(&req, Some(&req.get_ref().node_id))?;
        if let Some(mut leader) = self.target.leader()? {
            let stream = leader.session(req.into_inner()).await?.into_inner();
            return Ok(Response::new(Box::pin(stream) as Self::SessionStream));
        }
        self.local()?.session(req).await
    }

    type ServiceLogsStream =
        <ControlApi as shoal_api::pb::control_server::Control>::ServiceLogsStream;

    /// A follower manager's `service logs`, answered here on the leader.
    async fn service_logs(
        &self,
        req: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        use shoal_api::pb::control_server::Control;
        self.caller.require_manager(&req)?;
        let manager = self
            .target
            .manager()
            .ok_or_else(|| Status::unavailable("this node is not a manager"))?;
        manager.control().service_logs(req).await
    }

    async fn feed_applied(
        &self,
        req: Request<FeedAppliedRequest>,
    ) -> Result<Response<FeedAppliedResponse>, Status> {
        self.caller.authorize(&req, Some(&req.get_ref().node_id))?;
        if let Some(mut leader) = self.target.leader()? {
            return leader.feed_applied(req.into_inner()).await;
        }
        self.local()?.feed_applied(req).await
    }

    async fn feed(&self, req: Request<FeedRequest>) -> Result<Response<Self::FeedStream>, Status> {
        self.caller.authorize(&req, None)?;
        // Any replica serves the feed; a demoted manager relays to the others.
        if self.target.manager().is_none() {
            if let Some(mut upstream) = self.target.worker_upstream() {
                let stream = upstream.feed(req.into_inner()).await?.into_inner();
                return Ok(Response::new(Box::pin(stream) as Self::FeedStream));
            }
        }
        self.local()?.feed(req).await
    }

    async fn listen_subscriptions(
        &self,
        req: Request<ListenSubscriptionsRequest>,
    ) -> Result<Response<Self::ListenSubscriptionsStream>, Status> {
        self.caller.authorize(&req, Some(&req.get_ref().node_id))?;
        if let Some(mut leader) = self.target.leader()? {
            let stream = leader
                .listen_subscriptions(req.into_inner())
                .await?
                .into_inner();
            return Ok(Response::new(
                Box::pin(stream) as Self::ListenSubscriptionsStream
            ));
        }
        self.local()?.listen_subscriptions(req).await
    }

    async fn publish_logs(
        &self,
        req: Request<Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        self.caller.authorize(&req, None)?;
        if let Some(mut leader) = self.target.leader()? {
            use tokio_stream::StreamExt;
            let messages = req.into_inner().filter_map(|m| m.ok());
            return leader.publish_logs(messages).await;
        }
        self.local()?.publish_logs(req).await
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.caller.authorize(&req, Some(&req.get_ref().node_id))?;
        if let Some(mut leader) = self.target.leader()? {
            return leader.heartbeat(req.into_inner()).await;
        }
        self.local()?.heartbeat(req).await
    }

    async fn update_task_status(
        &self,
        req: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        self.caller.authorize(&req, Some(&req.get_ref().node_id))?;
        if let Some(mut leader) = self.target.leader()? {
            return leader.update_task_status(req.into_inner()).await;
        }
        self.local()?.update_task_status(req).await
    }
}
