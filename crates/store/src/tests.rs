use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use super::*;

const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn config(dir: &Path, node_id: u64, watch_history: usize) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_path_buf(),
        node_id,
        advertise_addr: String::new(),
        watch_history,
        peer_channels: None,
    }
}

async fn single(dir: &Path, watch_history: usize) -> Store {
    let store = Store::open(config(dir, 1, watch_history)).await.unwrap();
    store.initialize().await.unwrap();
    store.wait_for_leader(LEADER_TIMEOUT).await.unwrap();
    store
}

/// Polls `f` until it returns true, panicking after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next_event(w: &mut Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch event within 5s")
        .expect("watch still open")
        .expect("no watch error")
}

fn summary(e: &WatchEvent) -> (u64, EventKind, String, Vec<u8>) {
    (e.revision, e.kind, e.kv.key.clone(), e.kv.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reads_and_compares() {
    let dir = tempfile::tempdir().unwrap();
    let store = single(dir.path(), 1000).await;
    assert!(store.is_initialized().await.unwrap());
    assert!(store.is_leader());
    // initialize again is a no-op.
    store.initialize().await.unwrap();

    let r1 = store
        .write(Txn::new().put("a", "1").put("b", "2"))
        .await
        .unwrap();
    assert_eq!(store.revision(), r1);
    let a = store.get("a").unwrap();
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.mod_revision),
        (&b"1"[..], r1, r1)
    );

    let r2 = store.write(Txn::new().put("a", "3")).await.unwrap();
    assert!(r2 > r1);
    let a = store.get("a").unwrap();
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.mod_revision),
        (&b"3"[..], r1, r2)
    );

    // A failed compare writes nothing.
    let err = store
        .write(Txn::new().when_version("a", r1).put("c", "x").delete("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::ConditionFailed { key } if key == "a"),
        "{err}"
    );
    assert!(store.get("c").is_none());
    assert!(store.get("b").is_some());
    let err = store
        .write(Txn::new().when_absent("b").put("x", "y"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::ConditionFailed { key } if key == "b"),
        "{err}"
    );

    // Matching compares apply.
    let r3 = store
        .write(
            Txn::new()
                .when_version("a", r2)
                .when_absent("c")
                .put("c", "x")
                .delete("b"),
        )
        .await
        .unwrap();
    assert!(r3 > r2);
    assert!(store.get("b").is_none());
    let keys: Vec<_> = store.list("").into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, ["a", "c"]);

    store
        .write(
            Txn::new()
                .put("svc/2", "b")
                .put("svc/1", "a")
                .put("svd", "z"),
        )
        .await
        .unwrap();
    let keys: Vec<_> = store.list("svc/").into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, ["svc/1", "svc/2"]);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_proposal_applies_once_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = single(dir.path(), 1000).await;
    let once = Proposal {
        id: 42,
        txn: Txn::new().when_absent("job").put("job", "1"),
    };
    let first = store.propose(once.clone()).await.unwrap();
    // A retry of the same proposal is not applied again: no compare fails and
    // the key keeps its revision.
    assert_eq!(store.propose(once.clone()).await.unwrap(), first);
    assert_eq!(store.get("job").unwrap().mod_revision, first);
    // The same transaction under another id is a new write.
    let err = store
        .write(Txn::new().when_absent("job").put("job", "2"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err}");
    // A proposal whose compare failed was not applied, so it may apply later.
    let later = Proposal {
        id: 43,
        txn: Txn::new().when_version("job", first).put("job", "3"),
    };
    store.write(Txn::new().put("job", "2")).await.unwrap();
    assert!(store.propose(later.clone()).await.is_err());
    let job = store.get("job").unwrap().mod_revision;
    let retried = Proposal {
        txn: Txn::new().when_version("job", job).put("job", "3"),
        ..later
    };
    let applied = store.propose(retried.clone()).await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    // The ids are part of the durable state.
    let store = Store::open(config(dir.path(), 1, 1000)).await.unwrap();
    store.wait_for_leader(LEADER_TIMEOUT).await.unwrap();
    eventually("leadership", LEADER_TIMEOUT, || store.is_leader()).await;
    assert_eq!(store.propose(once).await.unwrap(), first);
    assert_eq!(store.propose(retried).await.unwrap(), applied);
    assert_eq!(store.get("job").unwrap().value, b"3");
    store.shutdown().await.unwrap();
}

#[test]
fn proposal_ids_leave_the_window_in_revision_order() {
    use crate::state_machine::DEDUP_WINDOW;
    let mut p = state_machine::AppliedProposals::default();
    p.advance(&[(1, 10), (2, 20)], 20);
    assert_eq!(p.applied_at(1, 20), Some(10));
    // Out of the window, an id counts as unknown even before it is pruned.
    assert_eq!(p.applied_at(1, 11 + DEDUP_WINDOW), None);
    assert_eq!(p.applied_at(2, 11 + DEDUP_WINDOW), Some(20));
    p.advance(&[(3, 11 + DEDUP_WINDOW)], 11 + DEDUP_WINDOW);
    assert_eq!(p.len(), 2);
    assert_eq!(p.applied_at(2, 20 + DEDUP_WINDOW), Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = single(dir.path(), 1000).await;
    store.write(Txn::new().put("k1", "v1")).await.unwrap();
    let rev = store
        .write(Txn::new().put("k2", "v2").delete("k1"))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let store = Store::open(config(dir.path(), 1, 1000)).await.unwrap();
    assert!(store.is_initialized().await.unwrap());
    assert_eq!(store.revision(), rev, "applied state loaded from disk");
    assert!(store.get("k1").is_none());
    assert_eq!(store.get("k2").unwrap().value, b"v2");
    store.wait_for_leader(LEADER_TIMEOUT).await.unwrap();
    eventually("leadership", LEADER_TIMEOUT, || store.is_leader()).await;
    let next = store.write(Txn::new().put("k3", "v3")).await.unwrap();
    assert!(next > rev);
    assert_eq!(store.get("k3").unwrap().create_revision, next);
    // Resuming a watch from before the restart is not possible; from now it is.
    assert!(matches!(
        store.watch("", rev - 1),
        Err(StoreError::Compacted { .. })
    ));
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_directory_and_files_are_private_also_when_they_were_not() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = single(&store_dir, 1000).await;
    store.shutdown().await.unwrap();
    drop(store);
    let files = [
        store_dir.join("raft-log.redb"),
        store_dir.join("state.redb"),
    ];
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&store_dir), 0o700);
    // An install from before: world-readable files are made private on open.
    chmod(&store_dir, 0o755);
    for file in &files {
        chmod(file, 0o644);
    }
    let store = Store::open(config(&store_dir, 1, 1000)).await.unwrap();
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&store_dir), 0o700);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resume_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = single(dir.path(), 1000).await;
    let r0 = store.revision();
    let r1 = store.write(Txn::new().put("/a/1", "x")).await.unwrap();
    store.write(Txn::new().put("/b/1", "y")).await.unwrap();
    let r3 = store
        .write(Txn::new().put("/a/2", "z").delete("/a/1"))
        .await
        .unwrap();

    let mut w = store.watch("/a/", r0).unwrap();
    let got: Vec<_> = [
        next_event(&mut w).await,
        next_event(&mut w).await,
        next_event(&mut w).await,
    ]
    .iter()
    .map(summary)
    .collect();
    assert_eq!(
        got,
        [
            (r1, EventKind::Put, "/a/1".into(), b"x".to_vec()),
            (r3, EventKind::Put, "/a/2".into(), b"z".to_vec()),
            (r3, EventKind::Delete, "/a/1".into(), b"x".to_vec()),
        ]
    );
    let mut resumed = store.watch("/a/", r1).unwrap();
    assert_eq!(next_event(&mut resumed).await.revision, r3);
    assert_eq!(next_event(&mut resumed).await.revision, r3);

    let (rev, kvs, mut live) = store.snapshot_and_watch("/a/");
    assert_eq!(rev, store.revision());
    assert_eq!(
        kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        ["/a/2"]
    );
    store
        .write(Txn::new().put("/b/2", "ignored"))
        .await
        .unwrap();
    let r5 = store.write(Txn::new().put("/a/3", "w")).await.unwrap();

    // Every watcher sees the new event next: no gaps, no duplicates, prefix filtered.
    for w in [&mut w, &mut resumed, &mut live] {
        let e = next_event(w).await;
        assert_eq!(
            summary(&e),
            (r5, EventKind::Put, "/a/3".into(), b"w".to_vec())
        );
    }

    // A watcher that falls far behind the live stream is dropped with Lagged.
    let mut slow = store.watch("", store.revision()).unwrap();
    let mut big = Txn::new();
    for i in 0..2000 {
        big = big.put(format!("/bulk/{i:04}"), "v");
    }
    store.write(big).await.unwrap();
    assert!(matches!(slow.next().await, Some(Err(StoreError::Lagged))));
    assert!(slow.next().await.is_none());

    // The live watch lagged too: the live buffer is shared by all prefixes.
    assert!(matches!(live.next().await, Some(Err(StoreError::Lagged))));

    // Shutdown ends watches.
    let mut idle = store.watch("", store.revision()).unwrap();
    store.shutdown().await.unwrap();
    assert!(idle.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = single(dir.path(), 2).await;
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(
            store
                .write(Txn::new().put(format!("k{i}"), "v"))
                .await
                .unwrap(),
        );
    }
    // History holds the last two events (revs[3], revs[4]).
    match store.watch("", revs[2] - 1) {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (revs[2] - 1, revs[2]));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut w = store.watch("", revs[2]).unwrap();
    assert_eq!(next_event(&mut w).await.revision, revs[3]);
    assert_eq!(next_event(&mut w).await.revision, revs[4]);
    // The same history, read without waiting.
    assert!(matches!(
        store.changes_since(revs[2] - 1),
        Err(StoreError::Compacted { .. })
    ));
    let (now, events) = store.changes_since(revs[2]).unwrap();
    assert_eq!(now, revs[4]);
    assert_eq!(
        events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [revs[3], revs[4]]
    );
    assert!(store.changes_since(revs[4]).unwrap().1.is_empty());
    let (at, kvs) = store.list_at("k");
    assert_eq!((at, kvs.len()), (revs[4], 5));
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_purge_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = RaftTuning {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 5,
        ..RaftTuning::default()
    };
    let store = Store::open_with(config(dir.path(), 1, 1000), tuning.clone())
        .await
        .unwrap();
    store.initialize().await.unwrap();
    store.wait_for_leader(LEADER_TIMEOUT).await.unwrap();
    let mut last = 0;
    for i in 0..60 {
        last = store
            .write(
                Txn::new()
                    .put(format!("key/{i:02}"), format!("v{i}"))
                    .delete(format!("key/{:02}", i.max(1) - 1)),
            )
            .await
            .unwrap();
    }
    eventually("snapshot and purge", Duration::from_secs(10), || {
        let m = store.metrics();
        m.snapshot.is_some() && m.purged.is_some()
    })
    .await;
    let purged = store.metrics().purged.unwrap().index;
    assert!(purged > 0);
    store.shutdown().await.unwrap();
    drop(store);

    let store = Store::open_with(config(dir.path(), 1, 1000), tuning)
        .await
        .unwrap();
    assert_eq!(store.revision(), last);
    let kvs = store.list("key/");
    assert_eq!(kvs.len(), 1);
    assert_eq!(kvs[0].key, "key/59");
    // The snapshot and the purge point are reloaded from disk.
    eventually("snapshot and purge point reloaded", LEADER_TIMEOUT, || {
        let m = store.metrics();
        m.snapshot.is_some() && m.purged.map(|p| p.index).unwrap_or(0) >= purged
    })
    .await;
    store.wait_for_leader(LEADER_TIMEOUT).await.unwrap();
    eventually("leadership", LEADER_TIMEOUT, || store.is_leader()).await;
    assert!(store.write(Txn::new().put("key/60", "v")).await.unwrap() > last);
    store.shutdown().await.unwrap();
}

/// A node with its RaftTransport server on 127.0.0.1:0.
struct Node {
    store: Store,
    addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

async fn start_node(dir: &Path, node_id: u64, tuning: &RaftTuning) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cfg = config(dir, node_id, 1000);
    cfg.advertise_addr = addr.clone();
    let store = Store::open_with(cfg, tuning.clone()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = store.raft_service();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Node {
        store,
        addr,
        stop,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_group_replicates() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let tuning = RaftTuning {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        // Small, so that the learners must be sent a snapshot.
        snapshot_logs_since_last: 10,
        max_in_snapshot_log_to_keep: 0,
    };
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(start_node(dir.path(), i as u64 + 1, &tuning).await);
    }
    let leader = &nodes[0].store;
    leader.initialize().await.unwrap();
    leader.wait_for_leader(LEADER_TIMEOUT).await.unwrap();
    const EARLY: u64 = 0x5ea1;
    let before = leader
        .propose(Proposal {
            id: EARLY,
            txn: Txn::new().put("early", "1"),
        })
        .await
        .unwrap();
    for i in 0..25 {
        leader
            .write(Txn::new().put(format!("bulk/{i:02}"), "v"))
            .await
            .unwrap();
    }
    eventually("leader purged its log", Duration::from_secs(10), || {
        leader.metrics().purged.map(|p| p.index).unwrap_or(0) > before
    })
    .await;

    leader.add_learner(2, &nodes[1].addr).await.unwrap();
    leader.add_learner(3, &nodes[2].addr).await.unwrap();
    leader
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .unwrap();
    assert!(leader.is_leader());
    assert_eq!(
        leader.committed_voter_ids().await,
        BTreeSet::from([1, 2, 3])
    );

    let rev = leader
        .write(Txn::new().put("svc/web", "spec"))
        .await
        .unwrap();
    assert!(rev > before);
    for node in &nodes {
        eventually("replication", Duration::from_secs(10), || {
            node.store.revision() >= rev && node.store.get("svc/web").is_some()
        })
        .await;
        assert_eq!(node.store.get("early").unwrap().mod_revision, before);
        assert_eq!(node.store.list("bulk/").len(), 25);
        assert_eq!(node.store.get("svc/web").unwrap().mod_revision, rev);
    }

    // A follower forwards writes to the leader over ClientWrite.
    let follower = &nodes[1].store;
    assert!(!follower.is_leader());
    let via_follower = follower.write(Txn::new().put("x", "y")).await.unwrap();
    assert!(via_follower > rev);
    let err = follower
        .write(Txn::new().when_absent("x").put("x", "z"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err}");
    let once = Proposal::new(Txn::new().when_absent("fwd").put("fwd", "1"));
    let fwd = network::write_remote(&nodes[0].addr, &once, None)
        .await
        .unwrap();
    assert!(fwd > rev);
    // The same proposal again (its first reply lost, say): the first revision.
    assert_eq!(
        network::write_remote(&nodes[0].addr, &once, None)
            .await
            .unwrap(),
        fwd
    );
    assert_eq!(follower.propose(once.clone()).await.unwrap(), fwd);
    let err = network::write_remote(
        &nodes[0].addr,
        &Proposal::new(Txn::new().when_absent("fwd").put("fwd", "2")),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err}");
    // Learners that started from a snapshot know the proposals it covered.
    for node in &nodes {
        let state = node.store.inner.shared.read();
        assert_eq!(state.proposals.applied_at(EARLY, rev), Some(before));
    }
    eventually(
        "forwarded write replicated",
        Duration::from_secs(10),
        || nodes.iter().all(|n| n.store.get("fwd").is_some()),
    )
    .await;

    for node in nodes {
        node.store.shutdown().await.unwrap();
        let _ = node.stop.send(());
        node.server.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_leave_the_group_the_leader_too() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let tuning = RaftTuning {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        ..RaftTuning::default()
    };
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(start_node(dir.path(), i as u64 + 1, &tuning).await);
    }
    let first = &nodes[0].store;
    first.initialize().await.unwrap();
    first.wait_for_leader(LEADER_TIMEOUT).await.unwrap();
    first.add_learner(2, &nodes[1].addr).await.unwrap();
    first.add_learner(3, &nodes[2].addr).await.unwrap();
    first
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(first.voter_ids(), BTreeSet::from([1, 2, 3]));

    // A follower leaves: it is neither voter nor learner afterwards.
    first.remove_member(3).await.unwrap();
    assert_eq!(first.member_ids(), BTreeSet::from([1, 2]));
    assert_eq!(first.committed_voter_ids().await, BTreeSet::from([1, 2]));
    // Removing a non-member changes nothing.
    first.remove_member(3).await.unwrap();

    // The leader removes itself: it steps down and node 2 leads alone.
    first.remove_member(1).await.unwrap();
    let second = &nodes[1].store;
    eventually("node 2 leads", Duration::from_secs(10), || {
        second.is_leader()
    })
    .await;
    assert_eq!(second.member_ids(), BTreeSet::from([2]));
    eventually("node 1 steps down", Duration::from_secs(10), || {
        !first.is_leader()
    })
    .await;
    let rev = second.write(Txn::new().put("after", "1")).await.unwrap();
    assert!(rev > 0);

    for node in nodes {
        node.store.shutdown().await.unwrap();
        let _ = node.stop.send(());
        node.server.await.unwrap();
    }
}

#[test]
fn log_store_append_truncate_purge() {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    let dir = tempfile::tempdir().unwrap();
    let (db, _closed) = db::Db::open(&dir.path().join("log.redb")).unwrap();
    let log = LogStore::open(Arc::new(db)).unwrap();
    let id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
    let entry = |index| openraft::Entry::<TypeConfig> {
        log_id: id(index),
        payload: EntryPayload::Normal(Proposal::new(Txn::new().put(format!("k{index}"), "v"))),
    };
    log.append_entries((1..=10).map(entry)).unwrap();
    let st = log.log_state().unwrap();
    assert_eq!(
        (st.last_purged_log_id, st.last_log_id),
        (None, Some(id(10)))
    );

    log.truncate_from(8).unwrap();
    log.purge_upto(&id(3)).unwrap();
    let st = log.log_state().unwrap();
    assert_eq!(
        (st.last_purged_log_id, st.last_log_id),
        (Some(id(3)), Some(id(7)))
    );
    let all = log
        .read_range((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded))
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );

    // Purging everything leaves the purge point as the last log id.
    log.purge_upto(&id(7)).unwrap();
    let st = log.log_state().unwrap();
    assert_eq!(
        (st.last_purged_log_id, st.last_log_id),
        (Some(id(7)), Some(id(7)))
    );
}
