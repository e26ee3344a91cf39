//! Replicated, revisioned key-value store: openraft over redb.
//!
//! Shoal's cluster state (services, tasks, nodes, networks, ...) lives here. Writes are
//! [`Txn`]s proposed through Raft; each applied transaction gets the Raft log index of its
//! entry as its *revision*. Reads ([`Store::get`], [`Store::list`]) are served from a local
//! in-memory map; [`Store::watch`] streams changes after a revision. Everything is durable
//! under `data_dir` (two redb files: the Raft log and the applied state), so a restarted
//! node resumes where it stopped without replaying the whole log. Managers join the group
//! with [`Store::add_learner`] + [`Store::change_membership`] and leave it with
//! [`Store::remove_member`], over the gRPC
//! [`RaftTransport`](shoal_api::pb::raft_transport_server::RaftTransport).
//!
//! # Layout
//! - `types`: [`Txn`], [`KeyValue`], [`WatchEvent`] and the openraft [`TypeConfig`].
//! - `error`: [`StoreError`].
//! - `log_store`: the Raft log in redb (`RaftLogStorage`).
//! - `state_machine`: the applied map, durable in redb (`RaftStateMachine`), snapshots.
//! - `watch`: bounded event history + live broadcast ([`Watch`]).
//! - `network`: gRPC Raft clients and the `RaftTransport` server.

#![forbid(unsafe_code)]

mod db;
mod error;
mod log_store;
mod network;
mod state_machine;
mod types;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState, SnapshotPolicy};

pub use crate::error::StoreError;
pub use crate::network::{NetworkFactory, PeerChannels, RaftAuthorizer, RaftServer, RaftService};
pub use crate::types::{
    Compare, EventKind, KeyValue, Op, Proposal, StoreRaft, Txn, TxnOutcome, TypeConfig, WatchEvent,
};
pub use crate::watch::Watch;

use crate::log_store::LogStore;
use crate::state_machine::{Shared, StateMachine};

/// Default number of past events kept in memory for watch resume.
pub const DEFAULT_WATCH_HISTORY: usize = 100_000;

/// Where and as whom a store runs.
#[derive(Clone)]
pub struct StoreConfig {
    /// Directory of the redb files (`raft-log.redb`, `state.redb`); created if missing.
    pub data_dir: PathBuf,
    /// This node's Raft id; must stay the same across restarts of one data_dir.
    pub node_id: u64,
    /// "host:port" of this node's RaftTransport gRPC server, as peers dial it
    /// (may be empty while the group has one member).
    pub advertise_addr: String,
    /// How many past events are kept in memory: watches may resume from any revision
    /// within this window, older starts get [`StoreError::Compacted`].
    pub watch_history: usize,
    /// Dials peers for Raft RPCs and forwarded writes (mTLS in shoald);
    /// None speaks plain HTTP/2 (tests, single node).
    pub peer_channels: Option<PeerChannels>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("data_dir", &self.data_dir)
            .field("node_id", &self.node_id)
            .field("advertise_addr", &self.advertise_addr)
            .field("watch_history", &self.watch_history)
            .field("peer_channels", &self.peer_channels.is_some())
            .finish()
    }
}

/// How long a write may wait for its commit. A leader that lost its quorum
/// never commits; the caller gets [`StoreError::NotCommitted`] instead of
/// waiting forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

impl StoreConfig {
    /// A config with no advertised address and the default watch history.
    pub fn new(data_dir: impl Into<PathBuf>, node_id: u64) -> Self {
        Self {
            data_dir: data_dir.into(),
            node_id,
            advertise_addr: String::new(),
            watch_history: DEFAULT_WATCH_HISTORY,
            peer_channels: None,
        }
    }
}

/// Raft timing and log compaction knobs. The defaults suit production; tests shrink
/// them to exercise snapshots quickly.
#[derive(Clone, Debug)]
pub struct RaftTuning {
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// A follower without heartbeats for a random time in [min, max) starts an election.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind the snapshot (for followers slightly behind).
    pub max_in_snapshot_log_to_keep: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            snapshot_logs_since_last: 5000,
            max_in_snapshot_log_to_keep: 1000,
        }
    }
}

impl RaftTuning {
    fn raft_config(&self) -> Result<openraft::Config, StoreError> {
        let config = openraft::Config {
            cluster_name: "shoal".to_owned(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| StoreError::raft("validate config", e))
    }
}

/// Handle to the replicated store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    raft: StoreRaft,
    /// The applied map, revision and watch hub (shared with the state machine).
    shared: Arc<Shared>,
    node_id: u64,
    advertise_addr: String,
    peer_channels: Option<PeerChannels>,
    /// Turn true when the redb files (held by the Raft tasks only) are closed: shutdown
    /// waits for them so the same data_dir can be opened again.
    closed: [tokio::sync::watch::Receiver<bool>; 2],
}

// === impl Store ===

impl Store {
    /// Opens (or creates) the store under `config.data_dir` with default Raft tuning.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        Self::open_with(config, RaftTuning::default()).await
    }

    /// Opens the store with explicit Raft tuning.
    pub async fn open_with(config: StoreConfig, tuning: RaftTuning) -> Result<Store, StoreError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            context: "create store data dir",
            path: dir.clone(),
            source,
        })?;
        make_private(dir, PRIVATE_DIR_MODE)?;
        let (log_db, log_closed) = open_db(&dir.join("raft-log.redb"))?;
        let (sm_db, sm_closed) = open_db(&dir.join("state.redb"))?;
        let closed = [log_closed, sm_closed];
        let (log_db, sm_db) = (Arc::new(log_db), Arc::new(sm_db));

        let log_store =
            LogStore::open(log_db).map_err(|e| StoreError::storage("init raft log tables", e))?;
        let sm = StateMachine::open(sm_db, config.watch_history)
            .map_err(|e| StoreError::storage("load applied state", e))?;
        let shared = sm.shared();

        let raft_config = Arc::new(tuning.raft_config()?);
        let raft = StoreRaft::new(
            config.node_id,
            raft_config,
            NetworkFactory {
                peers: config.peer_channels.clone(),
            },
            log_store,
            sm,
        )
        .await
        .map_err(|e| StoreError::raft("start", e))?;
        tracing::info!(
            node_id = config.node_id,
            dir = %dir.display(),
            revision = shared.read().revision(),
            "store opened"
        );
        Ok(Store {
            inner: Arc::new(Inner {
                raft,
                shared,
                node_id: config.node_id,
                advertise_addr: config.advertise_addr,
                peer_channels: config.peer_channels,
                closed,
            }),
        })
    }

    /// Forms a one-member group with this node (no-op Ok if already initialized).
    pub async fn initialize(&self) -> Result<(), StoreError> {
        if self.is_initialized().await? {
            return Ok(());
        }
        let mut members = BTreeMap::new();
        members.insert(
            self.inner.node_id,
            BasicNode::new(&self.inner.advertise_addr),
        );
        match self.inner.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(StoreError::raft("initialize", e)),
        }
    }

    /// Whether this node has (or had) a Raft log/membership: it is part of a group.
    pub async fn is_initialized(&self) -> Result<bool, StoreError> {
        self.inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| StoreError::raft("is_initialized", e))
    }

    /// Whether this node currently is the Raft leader.
    pub fn is_leader(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.node_id)
    }

    /// The Raft term this replica is in.
    pub fn current_term(&self) -> u64 {
        self.inner.raft.metrics().borrow().current_term
    }

    /// The current leader's id and advertised address, if known.
    pub fn leader(&self) -> Option<(u64, String)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Some((id, addr))
    }

    /// Waits until this node is leader or a leader is known, at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<(), StoreError> {
        self.inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await
            .map(|_| ())
            .map_err(|_| StoreError::NoLeader(timeout))
    }

    /// Proposes a transaction through Raft; returns the revision it committed at (once
    /// applied locally, so a following `get` sees it). If a compare fails, nothing is
    /// written and `ConditionFailed{key}` is returned. A follower forwards it to the
    /// leader. Within [`WRITE_TIMEOUT`], attempts that failed for want of a leader are
    /// retried as one [`Proposal`], so a write applies at most once even when an
    /// attempt's outcome was lost after its commit.
    pub async fn write(&self, txn: Txn) -> Result<u64, StoreError> {
        self.propose(Proposal::new(txn)).await
    }

    /// [`Store::write`] of a proposal whose id is already chosen (a forwarded one).
    pub(crate) async fn propose(&self, proposal: Proposal) -> Result<u64, StoreError> {
        // During an election there is briefly no leader, or the last known
        // one is gone: keep trying until the deadline, so a write that can
        // commit within WRITE_TIMEOUT does.
        let attempts = async {
            loop {
                match self.write_once(&proposal).await {
                    Err(e) if e.is_transient() => {
                        tracing::debug!(error = %e, "write waits for a leader");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => return other,
                }
            }
        };
        tokio::time::timeout(WRITE_TIMEOUT, attempts)
            .await
            .map_err(|_| StoreError::NotCommitted(WRITE_TIMEOUT))?
    }

    /// Waits (bounded) until this replica has applied `revision`.
    async fn wait_applied(&self, revision: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.revision() < revision && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One proposal: locally if this node leads, else forwarded to the leader.
    async fn write_once(&self, proposal: &Proposal) -> Result<u64, StoreError> {
        match self.inner.raft.client_write(proposal.clone()).await {
            Ok(resp) => resp.data.into_result(),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                match f.leader_node.map(|n| n.addr).filter(|a| !a.is_empty()) {
                    // A follower forwards to the leader, so any manager takes writes.
                    Some(addr) => {
                        let rev = network::write_remote(
                            &addr,
                            proposal,
                            self.inner.peer_channels.as_ref(),
                        )
                        .await?;
                        // Read-your-writes: answer once this replica has it too.
                        self.wait_applied(rev, Duration::from_secs(2)).await;
                        Ok(rev)
                    }
                    None => Err(StoreError::NotLeader { leader: None }),
                }
            }
            Err(e) => Err(StoreError::raft("client_write", e)),
        }
    }
    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.inner.shared.read().map.get(key).cloned()
    }

    /// All keys starting with `prefix`, sorted by key.
    pub fn list(&self, prefix: &str) -> Vec<KeyValue> {
        list_prefix(&self.inner.shared.read().map, prefix)
    }

    /// The last applied revision: the Raft log index of the last applied entry. Blank and
    /// membership entries advance it too (without events), so revisions have gaps.
    pub fn revision(&self) -> u64 {
        self.inner.shared.read().revision()
    }

    /// Atomically: the current revision and all keys under `prefix`.
    pub fn list_at(&self, prefix: &str) -> (u64, Vec<KeyValue>) {
        let state = self.inner.shared.read();
        (state.revision(), list_prefix(&state.map, prefix))
    }

    /// Atomically: the current revision and every change after `from_revision`, in
    /// revision order, without waiting (a cache catching up reads these instead of the
    /// whole store). `Compacted` if the in-memory history no longer reaches back there.
    pub fn changes_since(
        &self,
        from_revision: u64,
    ) -> Result<(u64, Vec<Arc<WatchEvent>>), StoreError> {
        let state = self.inner.shared.read();
        let events = state.hub.since(from_revision)?;
        Ok((state.revision(), events))
    }

    /// Atomically: current revision, all keys under `prefix`, and a watch of every
    /// change after that revision.
    pub fn snapshot_and_watch(&self, prefix: &str) -> (u64, Vec<KeyValue>, Watch) {
        let state = self.inner.shared.read();
        (
            state.revision(),
            list_prefix(&state.map, prefix),
            state.hub.watch_live(prefix),
        )
    }

    /// Events with revision > `from_revision` under `prefix`, then live ones.
    /// `Compacted` if the in-memory history no longer holds them (re-list instead).
    pub fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError> {
        self.inner.shared.read().hub.watch(prefix, from_revision)
    }

    /// The tonic service peers use to reach this node's Raft (serve it on advertise_addr).
    pub fn raft_service(&self) -> RaftServer {
        network::server(self.clone(), None)
    }

    /// Like [`Store::raft_service`], admitting only callers `authorize` accepts.
    pub fn raft_service_authorized(&self, authorize: RaftAuthorizer) -> RaftServer {
        network::server(self.clone(), Some(authorize))
    }

    /// Adds a node as a non-voting learner and waits until it caught up.
    pub async fn add_learner(&self, node_id: u64, addr: &str) -> Result<(), StoreError> {
        self.inner
            .raft
            .add_learner(node_id, BasicNode::new(addr), true)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::raft("add_learner", e))
    }

    /// Sets the voting members (each must already be a learner or member).
    pub async fn change_membership(&self, voters: BTreeSet<u64>) -> Result<(), StoreError> {
        self.inner
            .raft
            .change_membership(voters, false)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::raft("change_membership", e))
    }

    /// Removes a member from the group entirely (a voter is not kept as a
    /// learner). Removing the leader itself commits the change, then the
    /// leader steps down and the others elect a new one.
    pub async fn remove_member(&self, node_id: u64) -> Result<(), StoreError> {
        let membership = self.metrics().membership_config;
        let membership = membership.membership();
        let change = if membership.voter_ids().any(|id| id == node_id) {
            openraft::ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else if membership.learner_ids().any(|id| id == node_id) {
            openraft::ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        } else {
            return Ok(());
        };
        self.inner
            .raft
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::raft("change_membership", e))
    }

    /// Raft ids of every member (voters and learners) in the effective
    /// membership this replica knows.
    pub fn member_ids(&self) -> BTreeSet<u64> {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .chain(membership.learner_ids())
            .collect()
    }

    /// Raft ids of the voters in the effective membership this replica knows.
    pub fn voter_ids(&self) -> BTreeSet<u64> {
        let metrics = self.metrics();
        let ids = metrics.membership_config.membership().voter_ids().collect();
        ids
    }

    /// Raft ids that are voters in every configuration of the membership this
    /// replica knows to be committed. A manager being added counts only once
    /// its change has committed: until then a joint configuration still needs
    /// a majority of the old voters, so losing one of those could stall the
    /// group although the new member looks like a voter.
    pub async fn committed_voter_ids(&self) -> BTreeSet<u64> {
        self.inner
            .raft
            .with_raft_state(|st| {
                let membership = st.membership_state.committed().membership();
                let mut configs = membership.get_joint_config().iter();
                let first = configs.next().cloned().unwrap_or_default();
                configs.fold(first, |all, c| all.intersection(c).copied().collect())
            })
            .await
            .unwrap_or_default()
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// The underlying Raft handle (metrics, membership, triggers).
    pub fn raft(&self) -> &StoreRaft {
        &self.inner.raft
    }

    /// Current Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<u64, BasicNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// Stops Raft, ends all watches and waits (bounded) until the redb files are closed.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| StoreError::raft("shutdown", e))?;
        self.inner.shared.write().hub.close();
        for closed in &self.inner.closed {
            let mut closed = closed.clone();
            let wait = closed.wait_for(|closed| *closed);
            if tokio::time::timeout(Duration::from_secs(5), wait)
                .await
                .is_err()
            {
                tracing::warn!("store shut down but its database files are still open");
                break;
            }
        }
        tracing::info!(node_id = self.inner.node_id, "store shut down");
        Ok(())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node_id", &self.inner.node_id)
            .field("revision", &self.revision())
            .finish()
    }
}

/// Mode of the store's directory: the store holds the CA key, join-token
/// secrets and services' environment values.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Mode of the redb files, whatever the umask.
const PRIVATE_FILE_MODE: u32 = 0o600;

/// Opens (or creates) a redb file, readable and writable by its owner only.
fn open_db(path: &Path) -> Result<(db::Db, tokio::sync::watch::Receiver<bool>), StoreError> {
    let opened = db::Db::open(path)
        .map_err(|e| StoreError::storage(format!("open {}", path.display()), e))?;
    make_private(path, PRIVATE_FILE_MODE)?;
    Ok(opened)
}

/// Sets `mode` on `path` (a file or directory of the store).
fn make_private(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        StoreError::Io {
            context: "make private",
            path: path.to_path_buf(),
            source,
        }
    })
}

fn list_prefix(map: &BTreeMap<String, KeyValue>, prefix: &str) -> Vec<KeyValue> {
    map.range::<str, _>((
        std::ops::Bound::Included(prefix),
        std::ops::Bound::Unbounded,
    ))
    .take_while(|(k, _)| k.starts_with(prefix))
    .map(|(_, v)| v.clone())
    .collect()
}
