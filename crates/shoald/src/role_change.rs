//! Role changes at run time. `node promote` and `node demote` only change
//! the role in the node's spec; the node learns it from its dispatcher
//! session ([`NodeDirective`]) and acts, without stopping its tasks:
//!
//! - promote: take a manager certificate (`RenewNodeCertificate`, which also
//!   gives the node its Raft id), start the store, the manager components and
//!   the node listener, then ask the leader to add it to the Raft group;
//! - demote: once the leader's role manager has removed it from the Raft group
//!   (the renewal is refused until then), take a worker certificate, stop the
//!   manager components and the store, forget the replica, and relay the
//!   local agent's calls to the remaining managers.
//!
//! Workers also follow the session's manager list, so managers added after a
//! worker joined become fail-over targets (and demoted ones stop being).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_agent::NodeDirective;
use shoal_api::pb::NodeRole;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;
use crate::node::{self, Membership};
use crate::role::{Role, WorkerRole};
use crate::tls::ManagersChannel;

/// Follows the cluster's directives until `shutdown`, retrying a transition
/// that could not finish yet (a demoted manager waits for the leader to take
/// it out of Raft).
pub async fn follow_directives(
    daemon: Arc<Daemon>,
    mut directives: watch::Receiver<Option<NodeDirective>>,
    shutdown: CancellationToken,
) {
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = directives.changed() => if r.is_err() { return },
            _ = retry.tick() => {}
        }
        let Some(directive) = directives.borrow_and_update().clone() else {
            continue;
        };
        if let Err(err) = daemon.follow(&directive).await {
            tracing::warn!("role change not done yet: {err:#}");
        }
    }
}

impl Daemon {
    async fn follow(self: &Arc<Self>, d: &NodeDirective) -> anyhow::Result<()> {
        self.follow_managers(&d.managers)?;
        match (self.membership(), d.role) {
            (Membership::Worker, NodeRole::Manager) => self.promote().await,
            (Membership::Manager, NodeRole::Worker) => self.demote(d).await,
            _ => Ok(()),
        }
    }

    /// The node dials the managers the cluster names now: a worker's agent
    /// and feed, and those of a promoted node, which keep their channel.
    fn follow_managers(&self, managers: &[String]) -> anyhow::Result<()> {
        if managers.is_empty() {
            return Ok(());
        }
        if let Some(upstream) = self.role.upstream() {
            upstream.set_managers(managers)?;
        }
        if self.identity().manager_addrs != managers {
            self.update_identity(|id| id.manager_addrs = managers.to_vec())?;
        }
        Ok(())
    }

    /// Worker → manager.
    async fn promote(self: &Arc<Self>) -> anyhow::Result<()> {
        let _guard = self.membership_lock.lock().await;
        if self.membership() != Membership::Worker {
            return Ok(());
        }
        let upstream = self.role.upstream().context("no channel to the managers")?;
        let (certs, resp) = self
            .renew_certificate(upstream.channel(), false)
            .await
            .map_err(|s| anyhow::anyhow!("renew the node certificate: {}", s.message()))?;
        if resp.role() != NodeRole::Manager || resp.raft_id == 0 {
            return Ok(()); // demoted again meanwhile
        }
        node::save_certificates(&self.cfg.data_root, &certs)?;
        self.tls.install(&certs)?;
        if self.manager().is_none() {
            let dir = self.store_dir();
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("remove stale store {}", dir.display()))?;
            }
            let tasks = self
                .role
                .tasks()
                .context("the node roles are not running")?;
            let store = self.open_store(resp.raft_id, &certs).await?;
            self.start_manager_components(store, &certs, &tasks, Some(upstream))
                .await?;
        }
        self.join_raft(&resp.manager_addrs, resp.raft_id)
            .await
            .map_err(|s| anyhow::anyhow!("join the Raft group: {}", s.message()))?;
        let mut managers = resp.manager_addrs.clone();
        if !managers.contains(&self.manager_addr()) {
            managers.push(self.manager_addr());
        }
        self.update_identity(|id| {
            id.membership = Membership::Manager;
            id.raft_id = resp.raft_id;
            id.manager_addrs = managers;
        })?;
        tracing::info!(
            raft_id = resp.raft_id,
            "promoted: this node is a manager now"
        );
        Ok(())
    }

    /// Manager → worker, once the leader has taken this node out of Raft.
    async fn demote(self: &Arc<Self>, d: &NodeDirective) -> anyhow::Result<()> {
        let _guard = self.membership_lock.lock().await;
        if self.membership() != Membership::Manager {
            return Ok(());
        }
        let own = self.manager_addr();
        let others: Vec<String> = d.managers.iter().filter(|a| **a != own).cloned().collect();
        let via = ManagersChannel::new(&others, &self.tls)?;
        let (certs, resp) = match self.renew_certificate(via.channel(), false).await {
            Ok(r) => r,
            // Still in the Raft group: the leader removes it first.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => return Ok(()),
            Err(s) => anyhow::bail!("renew the node certificate: {}", s.message()),
        };
        if resp.role() != NodeRole::Worker {
            return Ok(()); // promoted again meanwhile
        }
        node::save_certificates(&self.cfg.data_root, &certs)?;
        let tasks = self
            .role
            .tasks()
            .context("the node roles are not running")?;
        if let Role::Manager(m) = &*self.role.load() {
            m.components.cancel();
            let store = m.manager.store().clone();
            if tokio::time::timeout(Duration::from_secs(5), store.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("the store of the demoted manager did not stop in time");
            }
        }
        let dir = self.store_dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        self.tls.install(&certs)?;
        let upstream = Arc::new(ManagersChannel::new(&resp.manager_addrs, &self.tls)?);
        self.role
            .switch(Role::Worker(WorkerRole { tasks, upstream }));
        self.update_identity(|id| {
            id.membership = Membership::Worker;
            id.raft_id = 0;
            id.manager_addrs = resp.manager_addrs.clone();
        })?;
        tracing::info!("demoted: this node is a worker now");
        Ok(())
    }
}
