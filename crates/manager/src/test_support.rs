//! Fixtures shared by the crate's unit tests.

use std::path::Path;
use std::time::Duration;

use shoal_store::{Store, StoreConfig};

/// A one-member store in `dir` (Raft id 1) that leads, keeping
/// `watch_history` events of history.
pub(crate) async fn leading_store(dir: &Path, watch_history: usize) -> Store {
    let mut config = StoreConfig::new(dir, 1);
    config.watch_history = watch_history;
    let store = Store::open(config).await.unwrap();
    store.initialize().await.unwrap();
    store
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    while !store.is_leader() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
}
