//! The store's error type.

use std::path::PathBuf;

/// Errors of [`Store`](crate::Store) operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare of the transaction did not hold; nothing was written.
    #[error("transaction condition failed on key {key:?}")]
    ConditionFailed { key: String },
    /// This node cannot accept writes; `leader` is the leader's address if known.
    #[error("this node is not the store leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    /// The requested watch start is older than the retained history.
    #[error("watch from revision {requested} is compacted; oldest resumable revision is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
    /// The watcher fell too far behind the live stream and was dropped; re-list and re-watch.
    #[error("watch lagged behind and was dropped")]
    Lagged,
    /// No leader became known within the bound.
    #[error("no store leader within {0:?}")]
    NoLeader(std::time::Duration),
    /// A write was not committed within the bound (no quorum).
    #[error("write not committed within {0:?}: the managers may have lost quorum")]
    NotCommitted(std::time::Duration),
    /// A Raft-level failure.
    #[error("raft {op}: {message}")]
    Raft { op: &'static str, message: String },
    /// A redb or encoding failure.
    #[error("storage {context}: {message}")]
    Storage { context: String, message: String },
    /// A filesystem failure.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn raft(op: &'static str, e: impl std::fmt::Display) -> Self {
        StoreError::Raft {
            op,
            message: e.to_string(),
        }
    }

    pub(crate) fn storage(context: impl Into<String>, e: impl std::fmt::Display) -> Self {
        StoreError::Storage {
            context: context.into(),
            message: e.to_string(),
        }
    }
}

impl StoreError {
    /// Worth retrying after a moment: no leader known yet, or the leader we
    /// knew did not answer (it may have just died), or it stepped down.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::NotLeader { .. } => true,
            StoreError::Raft { op, .. } => op.starts_with("forward write"),
            _ => false,
        }
    }
}
