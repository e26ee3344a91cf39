//! Small redb helpers shared by the log store and the state machine.

use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

/// A redb or postcard failure inside one storage operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("encoding: {0}")]
    Codec(#[from] postcard::Error),
}

macro_rules! via_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(e.into())
            }
        }
    )*};
}

via_redb_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DbError> {
    Ok(postcard::to_allocvec(value)?)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DbError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// An open redb file that reports when it is fully closed (its file lock released), so
/// a shut-down store's directory can be reopened at once.
pub(crate) struct Db {
    db: Option<redb::Database>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl Db {
    /// Opens (or creates) the redb file at `path`; the receiver turns `true` once closed.
    pub(crate) fn open(path: &Path) -> Result<(Db, tokio::sync::watch::Receiver<bool>), DbError> {
        let db = redb::Database::create(path)?;
        let (closed, rx) = tokio::sync::watch::channel(false);
        Ok((
            Db {
                db: Some(db),
                closed,
            },
            rx,
        ))
    }
}

impl std::ops::Deref for Db {
    type Target = redb::Database;

    fn deref(&self) -> &redb::Database {
        self.db.as_ref().expect("database is only taken in drop")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        drop(self.db.take());
        self.closed.send_replace(true);
    }
}
