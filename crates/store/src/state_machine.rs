//! The applied state: an in-memory map for reads, made durable in redb on every apply,
//! and the ids of recently applied proposals (so a retried proposal applies once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::db::{self, Db, DbError};
use crate::types::{
    Compare, EventKind, KeyValue, Op, Proposal, Txn, TxnOutcome, TypeConfig, WatchEvent,
};
use crate::watch::WatchHub;

type NodeId = u64;
type Membership = StoredMembership<NodeId, BasicNode>;

/// Keys: key -> postcard `KeyValue`.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// `last_applied`, `last_membership`, `snapshot` (postcard).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Proposal id -> the revision it was applied at (see [`AppliedProposals`]).
const PROPOSALS: TableDefinition<u64, u64> = TableDefinition::new("proposals");

/// How many revisions a proposal id is remembered for. A retry happens within
/// one [`WRITE_TIMEOUT`](crate::WRITE_TIMEOUT) of the first attempt, far fewer
/// revisions than this even under load.
pub(crate) const DEDUP_WINDOW: u64 = 50_000;

const LAST_APPLIED: &str = "last_applied";
const LAST_MEMBERSHIP: &str = "last_membership";
const SNAPSHOT: &str = "snapshot";

/// In-memory state shared by the state machine (writer) and the store's readers.
pub(crate) struct KvState {
    pub(crate) map: BTreeMap<String, KeyValue>,
    pub(crate) proposals: AppliedProposals,
    pub(crate) last_applied: Option<LogId<NodeId>>,
    pub(crate) last_membership: Membership,
    pub(crate) hub: WatchHub,
}

impl KvState {
    /// The store revision: the index of the last applied log entry (0 before any).
    pub(crate) fn revision(&self) -> u64 {
        self.last_applied.map(|l| l.index).unwrap_or(0)
    }
}

/// The ids of the proposals applied in the last [`DEDUP_WINDOW`] revisions, with
/// the revision each was applied at. Part of the replicated state (persisted
/// and in snapshots): whether a repeat is skipped must be the same decision on
/// every replica, or their revisions would diverge.
#[derive(Default)]
pub(crate) struct AppliedProposals {
    by_id: HashMap<u64, u64>,
    /// (revision, id), oldest first, for pruning.
    order: VecDeque<(u64, u64)>,
}

impl AppliedProposals {
    fn from_pairs(mut pairs: Vec<(u64, u64)>) -> Self {
        pairs.sort_by_key(|&(_, rev)| rev);
        Self {
            by_id: pairs.iter().copied().collect(),
            order: pairs.into_iter().map(|(id, rev)| (rev, id)).collect(),
        }
    }

    /// The revision `id` was applied at, if that is within the window of `revision`.
    /// (The window is checked here, so when pruning happens never matters.)
    pub(crate) fn applied_at(&self, id: u64, revision: u64) -> Option<u64> {
        self.by_id
            .get(&id)
            .copied()
            .filter(|&first| first + DEDUP_WINDOW >= revision)
    }

    /// The ids that fall out of the window once `revision` is applied. It depends
    /// only on revisions, so every replica drops the same ones.
    fn expiring(&self, revision: u64) -> Vec<u64> {
        self.order
            .iter()
            .take_while(|&&(rev, _)| rev + DEDUP_WINDOW < revision)
            .filter(|&&(rev, id)| self.by_id.get(&id) == Some(&rev))
            .map(|&(_, id)| id)
            .collect()
    }

    /// Records newly applied ids and drops those out of the window of `revision`.
    pub(crate) fn advance(&mut self, applied: &[(u64, u64)], revision: u64) {
        for &(id, rev) in applied {
            self.by_id.insert(id, rev);
            self.order.push_back((rev, id));
        }
        while let Some(&(rev, id)) = self.order.front() {
            if rev + DEDUP_WINDOW >= revision {
                break;
            }
            self.order.pop_front();
            if self.by_id.get(&id) == Some(&rev) {
                self.by_id.remove(&id);
            }
        }
    }

    fn pairs(&self) -> Vec<(u64, u64)> {
        self.order.iter().map(|&(rev, id)| (id, rev)).collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// Lock around [`KvState`]. Readers take it briefly; the state machine takes it for
/// writing only after the redb commit, to swap in the changes and publish events.
pub(crate) struct Shared {
    state: RwLock<KvState>,
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, KvState> {
        // A panic while holding the lock leaves the map consistent (changes are applied
        // with infallible operations), so poisoning is ignored.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, KvState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The replicated state a snapshot carries (postcard).
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    kvs: Vec<KeyValue>,
    /// (proposal id, revision applied at), see [`AppliedProposals`].
    proposals: Vec<(u64, u64)>,
}

/// The snapshot as stored on disk (the current one is kept for `get_current_snapshot`).
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// openraft state machine over redb + the shared in-memory map.
pub(crate) struct StateMachine {
    db: Arc<Db>,
    shared: Arc<Shared>,
}

// === impl StateMachine ===

impl StateMachine {
    /// Loads the applied state from redb (creating tables on first use).
    pub(crate) fn open(db: Arc<Db>, watch_history: usize) -> Result<Self, DbError> {
        let txn = db.begin_write()?;
        txn.open_table(KV)?;
        txn.open_table(META)?;
        txn.open_table(PROPOSALS)?;
        txn.commit()?;

        let txn = db.begin_read()?;
        let kv = txn.open_table(KV)?;
        let mut map = BTreeMap::new();
        for item in kv.iter()? {
            let (_, v) = item?;
            let kv: KeyValue = db::decode(v.value())?;
            map.insert(kv.key.clone(), kv);
        }
        let meta = txn.open_table(META)?;
        let last_applied: Option<LogId<NodeId>> = match meta.get(LAST_APPLIED)? {
            Some(v) => db::decode(v.value())?,
            None => None,
        };
        let last_membership: Membership = match meta.get(LAST_MEMBERSHIP)? {
            Some(v) => db::decode(v.value())?,
            None => Membership::default(),
        };
        let mut pairs = Vec::new();
        for item in txn.open_table(PROPOSALS)?.iter()? {
            let (id, rev) = item?;
            pairs.push((id.value(), rev.value()));
        }
        let revision = last_applied.map(|l| l.index).unwrap_or(0);
        let state = KvState {
            map,
            proposals: AppliedProposals::from_pairs(pairs),
            last_applied,
            last_membership,
            hub: WatchHub::new(watch_history, revision),
        };
        Ok(Self {
            db,
            shared: Arc::new(Shared {
                state: RwLock::new(state),
            }),
        })
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Persists one apply batch in a single redb write transaction.
    fn persist(
        &self,
        changes: &BTreeMap<String, Option<KeyValue>>,
        proposals: (&[(u64, u64)], &[u64]),
        last_applied: &Option<LogId<NodeId>>,
        membership: Option<&Membership>,
    ) -> Result<(), DbError> {
        let txn = self.db.begin_write()?;
        {
            let (applied, dropped) = proposals;
            let mut table = txn.open_table(PROPOSALS)?;
            for &(id, rev) in applied {
                table.insert(id, rev)?;
            }
            for &id in dropped {
                table.remove(id)?;
            }
        }
        {
            let mut kv = txn.open_table(KV)?;
            for (key, value) in changes {
                match value {
                    Some(value) => {
                        kv.insert(key.as_str(), db::encode(value)?.as_slice())?;
                    }
                    None => {
                        kv.remove(key.as_str())?;
                    }
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(LAST_APPLIED, db::encode(last_applied)?.as_slice())?;
            if let Some(membership) = membership {
                meta.insert(LAST_MEMBERSHIP, db::encode(membership)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Replaces the whole state with a snapshot, durably.
    fn persist_snapshot(
        &self,
        data: &SnapshotData,
        stored: &StoredSnapshot,
    ) -> Result<(), DbError> {
        let txn = self.db.begin_write()?;
        {
            let mut kv = txn.open_table(KV)?;
            kv.retain(|_, _| false)?;
            for value in &data.kvs {
                kv.insert(value.key.as_str(), db::encode(value)?.as_slice())?;
            }
            let mut proposals = txn.open_table(PROPOSALS)?;
            proposals.retain(|_, _| false)?;
            for &(id, rev) in &data.proposals {
                proposals.insert(id, rev)?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(
                LAST_APPLIED,
                db::encode(&stored.meta.last_log_id)?.as_slice(),
            )?;
            meta.insert(
                LAST_MEMBERSHIP,
                db::encode(&stored.meta.last_membership)?.as_slice(),
            )?;
            meta.insert(SNAPSHOT, db::encode(stored)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn read_snapshot(&self) -> Result<Option<StoredSnapshot>, DbError> {
        read_stored_snapshot(&self.db)
    }
}

fn read_stored_snapshot(db: &Db) -> Result<Option<StoredSnapshot>, DbError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    match meta.get(SNAPSHOT)? {
        Some(v) => Ok(Some(db::decode(v.value())?)),
        None => Ok(None),
    }
}

/// The pending view of one apply batch: changes over the committed map.
struct Batch<'a> {
    map: &'a BTreeMap<String, KeyValue>,
    proposals: &'a AppliedProposals,
    changes: BTreeMap<String, Option<KeyValue>>,
    /// (proposal id, revision) applied in this batch.
    applied: Vec<(u64, u64)>,
    events: Vec<WatchEvent>,
}

impl Batch<'_> {
    fn current(&self, key: &str) -> Option<&KeyValue> {
        match self.changes.get(key) {
            Some(pending) => pending.as_ref(),
            None => self.map.get(key),
        }
    }

    /// Applies one proposal at `revision`, unless its id was applied before: then
    /// nothing changes and the outcome is the first application's revision.
    fn propose(&mut self, revision: u64, proposal: Proposal) -> TxnOutcome {
        let id = proposal.id;
        if id != 0 {
            let earlier = self
                .applied
                .iter()
                .find(|&&(i, _)| i == id)
                .map(|&(_, r)| r);
            if let Some(first) = earlier.or_else(|| self.proposals.applied_at(id, revision)) {
                return TxnOutcome(Ok(first));
            }
        }
        let outcome = self.apply(revision, proposal.txn);
        if id != 0 && outcome.0.is_ok() {
            self.applied.push((id, revision));
        }
        outcome
    }

    /// Applies one transaction at `revision`; on a failed compare nothing changes.
    fn apply(&mut self, revision: u64, txn: Txn) -> TxnOutcome {
        for compare in &txn.compares {
            let Compare::Version { key, version } = compare;
            let actual = self.current(key).map(|kv| kv.mod_revision).unwrap_or(0);
            if actual != *version {
                return TxnOutcome(Err(key.clone()));
            }
        }
        for op in txn.ops {
            match op {
                Op::Put { key, value } => {
                    let create_revision = self
                        .current(&key)
                        .map(|kv| kv.create_revision)
                        .unwrap_or(revision);
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: revision,
                    };
                    self.events.push(WatchEvent {
                        revision,
                        kind: EventKind::Put,
                        kv: kv.clone(),
                    });
                    self.changes.insert(key, Some(kv));
                }
                Op::Delete { key } => {
                    if let Some(last) = self.current(&key).cloned() {
                        self.events.push(WatchEvent {
                            revision,
                            kind: EventKind::Delete,
                            kv: last,
                        });
                        self.changes.insert(key, None);
                    }
                }
            }
        }
        TxnOutcome(Ok(revision))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        let state = self.shared.read();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<TxnOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut last_applied = None;
        let mut membership = None;
        let (changes, applied, expiring, events) = {
            let state = self.shared.read();
            let mut batch = Batch {
                map: &state.map,
                proposals: &state.proposals,
                changes: BTreeMap::new(),
                applied: Vec::new(),
                events: Vec::new(),
            };
            for entry in entries {
                let revision = entry.log_id.index;
                last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(TxnOutcome(Ok(revision))),
                    EntryPayload::Normal(p) => results.push(batch.propose(revision, p)),
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        results.push(TxnOutcome(Ok(revision)));
                    }
                }
            }
            let expiring = last_applied
                .map(|l| state.proposals.expiring(l.index))
                .unwrap_or_default();
            (batch.changes, batch.applied, expiring, batch.events)
        };
        let Some(last) = last_applied else {
            return Ok(results);
        };
        self.persist(
            &changes,
            (&applied, &expiring),
            &last_applied,
            membership.as_ref(),
        )
        .map_err(|e| StorageIOError::write_state_machine(&e))?;

        let mut state = self.shared.write();
        state.proposals.advance(&applied, last.index);
        for (key, value) in changes {
            match value {
                Some(value) => {
                    state.map.insert(key, value);
                }
                None => {
                    state.map.remove(&key);
                }
            }
        }
        state.last_applied = last_applied;
        if let Some(membership) = membership {
            state.last_membership = membership;
        }
        for event in events {
            state.hub.publish(event);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let decoded: SnapshotData = db::decode(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.persist_snapshot(&decoded, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;

        let mut state = self.shared.write();
        state.map = decoded
            .kvs
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        state.proposals = AppliedProposals::from_pairs(decoded.proposals);
        state.last_applied = meta.last_log_id;
        state.last_membership = meta.last_membership.clone();
        let revision = state.revision();
        state.hub.reset(revision);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = self
            .read_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// Serialises the whole map and the recent proposal ids (postcard [`SnapshotData`]) and
/// keeps it as the current snapshot.
pub(crate) struct SnapshotBuilder {
    db: Arc<Db>,
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (snapshot, last_applied, last_membership) = {
            let state = self.shared.read();
            let snapshot = SnapshotData {
                kvs: state.map.values().cloned().collect(),
                proposals: state.proposals.pairs(),
            };
            (snapshot, state.last_applied, state.last_membership.clone())
        };
        let data = db::encode(&snapshot).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, shoal_api::now_ms()),
            None => format!("none-{}", shoal_api::now_ms()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, data };
        let bytes = db::encode(&stored).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let write = || -> Result<(), DbError> {
            let txn = self.db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert(SNAPSHOT, bytes.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &e))?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}
