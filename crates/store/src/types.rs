//! The data model: transactions, key-values, watch events and the openraft type config.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// openraft type configuration for the Shoal store: log entries carry a
    /// [`Proposal`] (a [`Txn`] and its id), applying one yields a [`TxnOutcome`].
    pub TypeConfig:
        D = Proposal,
        R = TxnOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft handle type of this store.
pub type StoreRaft = openraft::Raft<TypeConfig>;

/// An atomic, conditional batch of writes: if every compare holds, every op is applied at
/// one revision; otherwise nothing is written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Conditions checked against the state just before this transaction applies.
    pub compares: Vec<Compare>,
    /// Writes applied in order when all compares hold.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put of `key` = `value`.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete of `key` (a no-op if it does not exist).
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Requires `key`'s mod_revision to equal `version` (0: the key must not exist).
    pub fn when_version(mut self, key: impl Into<String>, version: u64) -> Self {
        self.compares.push(Compare::Version {
            key: key.into(),
            version,
        });
        self
    }

    /// Requires `key` not to exist.
    pub fn when_absent(self, key: impl Into<String>) -> Self {
        self.when_version(key, 0)
    }
}

impl std::fmt::Display for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Txn{{compares: {}, ops: {}}}",
            self.compares.len(),
            self.ops.len()
        )
    }
}

/// What a Raft log entry carries: a [`Txn`] and the id that makes proposing it
/// idempotent. When a write's outcome is lost (the leader stepped down after
/// appending it, or the connection that forwarded it broke after the commit),
/// [`Store::write`](crate::Store::write) proposes it again with the same id; the
/// state machine applies an id at most once and answers a repeat with the
/// revision of the first commit, so a retry never turns a committed write into
/// a spurious "changed meanwhile".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Random and non-zero, the same for every attempt of one write; 0 turns
    /// deduplication off (entries written by tests).
    pub id: u64,
    pub txn: Txn,
}

impl Proposal {
    /// A proposal of `txn` with a fresh random id.
    pub fn new(txn: Txn) -> Self {
        Self {
            id: rand::random::<u64>().max(1),
            txn,
        }
    }
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proposal{{id: {:016x}, {}}}", self.id, self.txn)
    }
}

/// A precondition of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key's mod_revision must equal `version`; version 0 means "key must not exist".
    Version { key: String, version: u64 },
}

impl Compare {
    /// The key this compare looks at.
    pub fn key(&self) -> &str {
        match self {
            Compare::Version { key, .. } => key,
        }
    }
}

/// One write of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create or replace a key.
    Put { key: String, value: Vec<u8> },
    /// Remove a key.
    Delete { key: String },
}

/// A stored key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision at which the key was (last) created.
    pub create_revision: u64,
    /// Revision of the last put of this key.
    pub mod_revision: u64,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a [`Watch`](crate::Watch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Revision of the transaction that made this change.
    pub revision: u64,
    pub kind: EventKind,
    /// For `Put`: the new value. For `Delete`: the last value the key had (its
    /// `mod_revision` is that of the last put, not of the delete).
    pub kv: KeyValue,
}

/// The result of applying a [`Txn`]: the revision it committed at, or the key whose
/// compare failed (in which case nothing was written).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcome(pub Result<u64, String>);

impl TxnOutcome {
    /// The committed revision, or `ConditionFailed` with the key whose compare failed.
    pub fn into_result(self) -> Result<u64, crate::StoreError> {
        self.0
            .map_err(|key| crate::StoreError::ConditionFailed { key })
    }
}
