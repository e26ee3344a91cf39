//! The applied state: an in-memory map for reads, made durable in redb on every apply.

use std::collections::BTreeMap;
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
use crate::types::{Compare, EventKind, KeyValue, Op, Txn, TxnOutcome, TypeConfig, WatchEvent};
use crate::watch::WatchHub;

type NodeId = u64;
type Membership = StoredMembership<NodeId, BasicNode>;

/// Keys: key -> postcard `KeyValue`.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// `last_applied`, `last_membership`, `snapshot` (postcard).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const LAST_APPLIED: &str = "last_applied";
const LAST_MEMBERSHIP: &str = "last_membership";
const SNAPSHOT: &str = "snapshot";

/// In-memory state shared by the state machine (writer) and the store's readers.
pub(crate) struct KvState {
    pub(crate) map: BTreeMap<String, KeyValue>,
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
        let revision = last_applied.map(|l| l.index).unwrap_or(0);
        let state = KvState {
            map,
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
        last_applied: &Option<LogId<NodeId>>,
        membership: Option<&Membership>,
    ) -> Result<(), DbError> {
        let txn = self.db.begin_write()?;
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
    fn persist_snapshot(&self, kvs: &[KeyValue], stored: &StoredSnapshot) -> Result<(), DbError> {
        let txn = self.db.begin_write()?;
        {
            let mut kv = txn.open_table(KV)?;
            kv.retain(|_, _| false)?;
            for value in kvs {
                kv.insert(value.key.as_str(), db::encode(value)?.as_slice())?;
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
    changes: BTreeMap<String, Option<KeyValue>>,
    events: Vec<WatchEvent>,
}

impl Batch<'_> {
    fn current(&self, key: &str) -> Option<&KeyValue> {
        match self.changes.get(key) {
            Some(pending) => pending.as_ref(),
            None => self.map.get(key),
        }
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
        let (changes, events) = {
            let state = self.shared.read();
            let mut batch = Batch {
                map: &state.map,
                changes: BTreeMap::new(),
                events: Vec::new(),
            };
            for entry in entries {
                let revision = entry.log_id.index;
                last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(TxnOutcome(Ok(revision))),
                    EntryPayload::Normal(txn) => results.push(batch.apply(revision, txn)),
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        results.push(TxnOutcome(Ok(revision)));
                    }
                }
            }
            (batch.changes, batch.events)
        };
        if last_applied.is_none() {
            return Ok(results);
        }
        self.persist(&changes, &last_applied, membership.as_ref())
            .map_err(|e| StorageIOError::write_state_machine(&e))?;

        let mut state = self.shared.write();
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
        let kvs: Vec<KeyValue> = db::decode(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.persist_snapshot(&kvs, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;

        let mut state = self.shared.write();
        state.map = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
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

/// Serialises the whole map (postcard `Vec<KeyValue>`) and keeps it as the current snapshot.
pub(crate) struct SnapshotBuilder {
    db: Arc<Db>,
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (kvs, last_applied, last_membership) = {
            let state = self.shared.read();
            let kvs: Vec<KeyValue> = state.map.values().cloned().collect();
            (kvs, state.last_applied, state.last_membership.clone())
        };
        let data = db::encode(&kvs).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
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
