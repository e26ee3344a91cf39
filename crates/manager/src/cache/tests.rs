use shoal_api::codec;
use shoal_api::pb::{Meta, Service, ServiceSpec, Task};
use shoal_store::Txn;

use super::*;
use crate::state;
use crate::test_support::leading_store;

fn task(id: &str, service: &str, slot: u64) -> Task {
    Task {
        id: id.into(),
        meta: Some(Meta::default()),
        service_id: service.into(),
        slot,
        ..Default::default()
    }
}

fn service(id: &str, replicas: u64) -> Service {
    Service {
        id: id.into(),
        meta: Some(Meta::default()),
        spec: Some(ServiceSpec {
            name: id.into(),
            replicas,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The cached view equals a full decode of the store.
fn assert_matches_store(cache: &ViewCache, store: &Store) {
    let cached = cache.current();
    let loaded = ClusterView::load(store);
    assert_eq!(cached.services, loaded.services);
    assert_eq!(cached.tasks, loaded.tasks);
    assert_eq!(cached.nodes, loaded.nodes);
    assert_eq!(cached.cluster, loaded.cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_puts_and_deletes_and_keeps_old_views_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = leading_store(dir.path(), 1000).await;
    store
        .write(Txn::new().put(state::service_key("s1"), codec::encode(&service("s1", 2))))
        .await
        .unwrap();
    let cache = ViewCache::new(store.clone());
    assert_matches_store(&cache, &store);
    let before = cache.current();

    let mut txn = Txn::new()
        .put(state::task_key("t1"), codec::encode(&task("t1", "s1", 1)))
        .put(state::task_key("t2"), codec::encode(&task("t2", "s1", 2)))
        .put("index/unrelated", "x");
    txn = txn.put(state::service_key("s1"), codec::encode(&service("s1", 3)));
    let rev = store.write(txn).await.unwrap();
    let now = cache.current();
    assert_matches_store(&cache, &store);
    assert_eq!(now.tasks.len(), 2);
    assert_eq!(now.tasks["t1"].meta.as_ref().unwrap().version, rev);
    assert_eq!(now.services["s1"].spec.as_ref().unwrap().replicas, 3);
    // Builds the per-service index, which later changes must keep.
    assert_eq!(now.tasks_of("s1").count(), 2);
    drop(now);
    // A reader's view of the earlier revision did not change under it.
    assert!(before.tasks.is_empty());
    assert_eq!(before.services["s1"].spec.as_ref().unwrap().replicas, 2);

    store
        .write(
            Txn::new()
                .delete(state::task_key("t1"))
                .delete(state::service_key("s1")),
        )
        .await
        .unwrap();
    assert_matches_store(&cache, &store);
    let after = cache.current();
    assert!(after.services.is_empty());
    assert_eq!(after.tasks.keys().collect::<Vec<_>>(), ["t2"]);
    let ids: Vec<&str> = after.tasks_of("s1").map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t2"]);
    // Nothing changed: the same view is handed out again.
    assert!(Arc::ptr_eq(&after, &cache.current()));
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_when_the_history_no_longer_reaches_back() {
    let dir = tempfile::tempdir().unwrap();
    // Two events of history: more changes than that between two reads.
    let store = leading_store(dir.path(), 2).await;
    let cache = ViewCache::new(store.clone());
    assert!(cache.current().tasks.is_empty());
    for i in 0..5 {
        let id = format!("t{i}");
        store
            .write(Txn::new().put(state::task_key(&id), codec::encode(&task(&id, "s", i))))
            .await
            .unwrap();
    }
    assert_eq!(cache.current().tasks.len(), 5);
    assert_matches_store(&cache, &store);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_the_view_again_after_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = leading_store(dir.path(), 1000).await;
    let cache = ViewCache::new(store.clone());
    let key = state::task_key("t1");

    // Nothing to write: no write.
    assert_eq!(cache.write_from_view(|_| Txn::new()).await.unwrap(), None);

    // The first attempt loses a race (a stale compare); the next one, built
    // again from the view, commits.
    let mut attempts = 0;
    let rev = cache
        .write_from_view(|view| {
            attempts += 1;
            let version = if attempts == 1 { 7 } else { 0 };
            assert!(view.tasks.is_empty());
            Txn::new()
                .when_version(key.clone(), version)
                .put(key.clone(), codec::encode(&task("t1", "s", 1)))
        })
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(store.get(&key).unwrap().mod_revision, rev.unwrap());

    // A conflict that never ends is reported after a bounded number of tries.
    let mut attempts = 0;
    let err = cache
        .write_from_view(|_| {
            attempts += 1;
            Txn::new().when_absent(key.clone()).put(key.clone(), "x")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err}");
    assert_eq!(attempts, WRITE_ATTEMPTS);
    store.shutdown().await.unwrap();
}

/// A change copies the objects it touches; a reader of the old view and the
/// new view share every other object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_copies_only_the_objects_it_touches() {
    let dir = tempfile::tempdir().unwrap();
    let store = leading_store(dir.path(), 1000).await;
    store
        .write(
            Txn::new()
                .put(state::service_key("s1"), codec::encode(&service("s1", 2)))
                .put(state::task_key("t1"), codec::encode(&task("t1", "s1", 1)))
                .put(state::task_key("t2"), codec::encode(&task("t2", "s1", 2))),
        )
        .await
        .unwrap();
    let cache = ViewCache::new(store.clone());
    let before = cache.current();
    store
        .write(Txn::new().put(state::task_key("t2"), codec::encode(&task("t2", "s1", 7))))
        .await
        .unwrap();
    let after = cache.current();
    assert!(Arc::ptr_eq(&before.tasks["t1"], &after.tasks["t1"]));
    assert!(Arc::ptr_eq(&before.services["s1"], &after.services["s1"]));
    assert!(Arc::ptr_eq(&before.cluster, &after.cluster));
    assert!(!Arc::ptr_eq(&before.tasks["t2"], &after.tasks["t2"]));
    assert_eq!(before.tasks["t2"].slot, 2);
    assert_eq!(after.tasks["t2"].slot, 7);

    // A reconcile pass's working copy shares everything until it writes.
    let mut working = (*after).clone();
    working
        .tasks
        .get_mut("t1")
        .map(Arc::make_mut)
        .unwrap()
        .desired_state = 4;
    assert!(!Arc::ptr_eq(&working.tasks["t1"], &after.tasks["t1"]));
    assert!(Arc::ptr_eq(&working.tasks["t2"], &after.tasks["t2"]));
}
