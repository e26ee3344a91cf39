//! What this node runs as a swarm member, held in one place.
//!
//! [`Role`] is the running role: none, a worker (agent and feed client over
//! a channel to the managers), or a manager (store, manager components and
//! node listener, with the agent and feed client on the local socket).
//! [`RoleCell`] holds it and [`RoleCell::switch`] is the one place it
//! changes: `swarm init`, `swarm join`, a restart's resume, `node promote`,
//! `node demote` and `swarm leave`. Readers (every API call) load it without
//! a lock. The role in `node.json` ([`crate::node::Membership`]) says what
//! the node should run; this is what it runs now.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_manager::Manager;
use shoal_store::Store;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Status;

use crate::tls::{manager_channel, ManagersChannel, NodeTls};

/// The role this node runs now.
pub enum Role {
    /// Not in a swarm, or its role not started yet (start-up, a join under way).
    None,
    Worker(WorkerRole),
    Manager(ManagerRole),
}

/// A worker: the agent and feed client dial the managers.
pub struct WorkerRole {
    pub tasks: NodeTasks,
    /// The channel over the managers (it also relays the local socket's
    /// dispatcher calls of a demoted manager's agent).
    pub upstream: Arc<ManagersChannel>,
}

/// A manager: its components over its replica of the store, and the agent
/// and feed client on the local socket.
pub struct ManagerRole {
    pub tasks: NodeTasks,
    pub manager: Manager,
    /// Stops the manager components and the node listener alone (`node
    /// demote`); a child of the tasks' token.
    pub components: CancellationToken,
    /// The channel over the managers: a promoted worker's, kept, or one made
    /// when this manager is first outside the Raft group.
    upstream: Mutex<Option<Arc<ManagersChannel>>>,
    /// A channel to the current Raft leader, for a follower's relayed calls.
    leader: Mutex<Option<(String, Channel)>>,
}

/// The tasks every member runs whatever its role: the agent, the feed
/// client, certificate renewal and the follower of role changes. A role
/// change keeps them running.
#[derive(Clone)]
pub struct NodeTasks {
    /// Stops the feed client, renewal, the role follower and (through child
    /// tokens) the manager components.
    pub token: CancellationToken,
    /// Stops the agent, which stops its tasks (after the mesh drained).
    pub agent_stop: CancellationToken,
    /// Cancelled once the agent has stopped.
    pub agent_done: CancellationToken,
}

/// Holds the node's [`Role`].
pub struct RoleCell {
    current: ArcSwap<Role>,
}

// === impl RoleCell ===

impl RoleCell {
    pub fn new() -> RoleCell {
        RoleCell {
            current: ArcSwap::from_pointee(Role::None),
        }
    }

    /// The role now.
    pub fn load(&self) -> Arc<Role> {
        self.current.load_full()
    }

    /// Makes `next` the running role; returns the one it replaces. The
    /// caller stops what the old role ran and the new one does not.
    pub fn switch(&self, next: Role) -> Arc<Role> {
        self.current.swap(Arc::new(next))
    }

    /// This node's manager, when it runs one.
    pub fn manager(&self) -> Option<Manager> {
        match &**self.current.load() {
            Role::Manager(m) => Some(m.manager.clone()),
            _ => None,
        }
    }

    /// This manager's replica of the store.
    pub fn store(&self) -> Option<Store> {
        self.manager().map(|m| m.store().clone())
    }

    /// The member's running tasks.
    pub fn tasks(&self) -> Option<NodeTasks> {
        match &**self.current.load() {
            Role::None => None,
            Role::Worker(w) => Some(w.tasks.clone()),
            Role::Manager(m) => Some(m.tasks.clone()),
        }
    }

    /// The channel over the managers a worker (or a manager being promoted)
    /// dials.
    pub fn upstream(&self) -> Option<Arc<ManagersChannel>> {
        match &**self.current.load() {
            Role::None => None,
            Role::Worker(w) => Some(w.upstream.clone()),
            Role::Manager(m) => m.upstream.lock().expect("upstream lock").clone(),
        }
    }

    /// A worker's dispatcher client over its managers.
    pub fn worker_upstream(&self) -> Option<DispatcherClient<Channel>> {
        match &**self.current.load() {
            Role::Worker(w) => Some(DispatcherClient::new(w.upstream.channel())),
            _ => None,
        }
    }
}

// === impl ManagerRole ===

impl ManagerRole {
    /// A manager role over `manager`; `upstream` is a promoted worker's
    /// channel over the managers, kept while the promotion completes.
    pub fn new(
        tasks: NodeTasks,
        manager: Manager,
        components: CancellationToken,
        upstream: Option<Arc<ManagersChannel>>,
    ) -> ManagerRole {
        ManagerRole {
            tasks,
            manager,
            components,
            upstream: Mutex::new(upstream),
            leader: Mutex::new(None),
        }
    }

    /// Where this manager's dispatcher calls go when it cannot answer them
    /// itself: the Raft leader when it follows, the `other_managers` when it
    /// is outside the Raft group (its demotion is under way, or its promotion has not joined the
    /// group yet: no leader talks to it, so without this its agent would miss
    /// heartbeats and be called Down); None when it leads.
    pub fn relay_target(
        &self,
        other_managers: impl FnOnce() -> Vec<String>,
        tls: &NodeTls,
    ) -> Result<Option<DispatcherClient<Channel>>, Status> {
        let store = self.manager.store();
        if store.is_leader() {
            return Ok(None);
        }
        if !store.member_ids().contains(&store.node_id()) {
            return self.outside_raft_upstream(other_managers, tls).map(Some);
        }
        let (_, addr) = store.leader().ok_or_else(|| {
            Status::unavailable("the swarm has no leader: the managers have lost quorum")
        })?;
        if addr.is_empty() {
            // A leader no longer in the membership: it removed itself
            // (`node demote`) and steps down; the others elect a new one.
            return Err(Status::unavailable(
                "the leader is leaving the Raft group; a new one is being elected",
            ));
        }
        let mut cached = self.leader.lock().expect("leader channel lock");
        if let Some((a, ch)) = cached.as_ref() {
            if *a == addr {
                return Ok(Some(DispatcherClient::new(ch.clone())));
            }
        }
        let ch = manager_channel(&addr, tls).map_err(|e| Status::internal(format!("{e:#}")))?;
        *cached = Some((addr, ch.clone()));
        Ok(Some(DispatcherClient::new(ch)))
    }

    /// The channel over the other managers for a manager outside the Raft
    /// group, made on first need.
    fn outside_raft_upstream(
        &self,
        other_managers: impl FnOnce() -> Vec<String>,
        tls: &NodeTls,
    ) -> Result<DispatcherClient<Channel>, Status> {
        let mut upstream = self.upstream.lock().expect("upstream lock");
        if let Some(u) = upstream.as_ref() {
            return Ok(DispatcherClient::new(u.channel()));
        }
        let channel = Arc::new(ManagersChannel::new(&other_managers(), tls).map_err(|e| {
            Status::unavailable(format!(
                "this manager is outside the Raft group and knows no other manager: {e:#}"
            ))
        })?);
        *upstream = Some(channel.clone());
        Ok(DispatcherClient::new(channel.channel()))
    }
}

// === impl NodeTasks ===

impl NodeTasks {
    pub fn new() -> NodeTasks {
        NodeTasks {
            token: CancellationToken::new(),
            agent_stop: CancellationToken::new(),
            agent_done: CancellationToken::new(),
        }
    }

    /// Stops the agent (and its tasks, waiting at most `bound`), then
    /// everything else.
    pub async fn stop(&self, bound: Duration) {
        self.agent_stop.cancel();
        if tokio::time::timeout(bound, self.agent_done.cancelled())
            .await
            .is_err()
        {
            tracing::warn!("agent did not stop its tasks within {bound:?}");
        }
        self.token.cancel();
    }
}
