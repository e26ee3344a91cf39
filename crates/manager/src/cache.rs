//! The decoded cluster state the manager's components share: one
//! [`ClusterView`] brought up to date from the store's change history, so a
//! change decodes only the objects it touched instead of the whole store, and
//! every reader of one revision shares one `Arc<ClusterView>`.
//!
//! Every leader component (reconciler, feed, withdrawal confirmer, heartbeat
//! checker, assignment index, role manager) and every API handler (control,
//! join, dispatcher) reads through this cache: decoding the whole store per
//! change or per request would be most of a busy manager's CPU
//! (`bench/README.md`). Readers take what they need and drop the view before
//! they await: a view still held when the next change arrives makes
//! [`ViewCache::current`] copy the view's maps (the objects themselves are
//! shared, see [`ClusterView`]).

use std::sync::{Arc, Mutex};

use shoal_store::{Store, StoreError, Txn};

use crate::state::ClusterView;

/// A [`ClusterView`] that follows the store. Cheap to clone.
#[derive(Clone)]
pub struct ViewCache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cached: Mutex<Cached>,
}

struct Cached {
    /// The store revision `view` reflects (None: never loaded).
    revision: Option<u64>,
    view: Arc<ClusterView>,
}

// === impl ViewCache ===

impl ViewCache {
    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                cached: Mutex::new(Cached {
                    revision: None,
                    view: Arc::default(),
                }),
            }),
        }
    }

    /// The view as of the store's current revision (or later): whatever was
    /// applied before this call is in it. Applies the changes since the last
    /// call; reloads everything only when the store's history no longer
    /// reaches back (a snapshot was installed, or the cache fell far behind).
    pub fn current(&self) -> Arc<ClusterView> {
        self.current_with_revision().1
    }

    /// [`ViewCache::current`] and the store revision the view reflects.
    pub fn current_with_revision(&self) -> (u64, Arc<ClusterView>) {
        let mut cached = self.inner.cached.lock().expect("view cache lock");
        let store = &self.inner.store;
        let caught_up = cached.revision.and_then(|from| {
            let (revision, events) = store.changes_since(from).ok()?;
            if !events.is_empty() {
                // Copies the view only if a reader still holds the old one.
                let view = Arc::make_mut(&mut cached.view);
                for event in &events {
                    view.apply(event);
                }
            }
            Some(revision)
        });
        let revision = match caught_up {
            Some(revision) => revision,
            None => {
                let (revision, kvs) = store.list_at("");
                cached.view = Arc::new(ClusterView::from_kvs(&kvs));
                revision
            }
        };
        cached.revision = Some(revision);
        (revision, cached.view.clone())
    }
}

/// How often [`ViewCache::write_from_view`] builds its transaction again.
const WRITE_ATTEMPTS: usize = 5;

impl ViewCache {
    /// Builds a transaction from the current view and writes it; when one of
    /// its version compares fails (another write changed an object it read),
    /// builds it again from the fresh view, `WRITE_ATTEMPTS` times at most.
    /// An empty transaction writes nothing. The view is not held during the
    /// write. Returns the committed revision, or None if nothing was written.
    pub async fn write_from_view(
        &self,
        mut build: impl FnMut(&ClusterView) -> Txn,
    ) -> Result<Option<u64>, StoreError> {
        let mut last = Ok(None);
        for _ in 0..WRITE_ATTEMPTS {
            let txn = build(&self.current());
            if txn.ops.is_empty() {
                return Ok(None);
            }
            match self.inner.store.write(txn).await {
                Err(e @ StoreError::ConditionFailed { .. }) => last = Err(e),
                other => return other.map(Some),
            }
        }
        last
    }
}

#[cfg(test)]
mod tests;
