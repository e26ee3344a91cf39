use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::test_support::leading_store;
use crate::{init_cluster, new_cluster_ca, InitSettings, LocalNode};

/// A one-manager cluster in a fresh store (raft id 1).
async fn cluster(dir: &std::path::Path) -> (Store, Cluster) {
    let store = leading_store(dir, 1000).await;
    let node = LocalNode {
        id: "manager1".into(),
        hostname: "m1".into(),
        addr: "10.0.0.1".into(),
        manager_addr: "10.0.0.1:2377".into(),
        engine_version: "test".into(),
        raft_id: 1,
    };
    let (ca, certs) = new_cluster_ca(&node.id, &node.addr).unwrap();
    let init = init_cluster(&store, &node, &InitSettings::default(), &ca, certs)
        .await
        .unwrap();
    (store, init.cluster)
}

async fn join(api: &NodeCaApi, token: &str, i: usize) -> IssueNodeCertificateResponse {
    let req = IssueNodeCertificateRequest {
        token: token.to_string(),
        csr_pem: ca::new_node_key().unwrap().csr_pem,
        hostname: format!("node-{i}"),
        advertise_addr: format!("10.0.1.{i}:2377"),
        node_id: String::new(),
    };
    api.issue_node_certificate(Request::new(req))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_at_once_get_distinct_raft_ids_and_addresses_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, cluster) = cluster(dir.path()).await;
    let api = NodeCaApi::new(store.clone(), crate::cache::ViewCache::new(store.clone()));
    let ca = cluster_ca(&cluster).unwrap();
    let token = ca::format_token(ca.digest(), &cluster.manager_token_secret);

    let joins: Vec<_> = (0..6)
        .map(|i| {
            let (api, token) = (api.clone(), token.clone());
            tokio::spawn(async move { join(&api, &token, i).await })
        })
        .collect();
    let mut raft_ids = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for j in joins {
        let resp = j.await.unwrap();
        raft_ids.insert(resp.raft_id);
        addresses.insert(resp.ingress_address);
    }
    assert_eq!(
        raft_ids,
        (2..=7).collect(),
        "one Raft id each, after the first manager's"
    );
    assert_eq!(addresses.len(), 6, "{addresses:?}");
    let first: Node = state::get(&store, &state::node_key("manager1")).unwrap();
    assert!(!addresses.contains(&first.status.unwrap().ingress_address));

    // A demoted manager's id stays taken: the next manager gets a new one.
    let highest = ClusterView::load(&store)
        .nodes
        .into_values()
        .find(|n| n.manager_status.as_ref().is_some_and(|m| m.raft_id == 7))
        .unwrap();
    let mut demoted = Node::clone(&highest);
    demoted.manager_status = None;
    let mut txn = Txn::default();
    state::guarded_put(&mut txn, state::node_key(&highest.id), &mut demoted);
    store.write(txn).await.unwrap();
    assert_eq!(join(&api, &token, 7).await.raft_id, 8);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_rejoins_only_as_a_new_node_with_the_configured_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (store, cluster) = cluster(dir.path()).await;
    let api = NodeCaApi::new(store.clone(), crate::cache::ViewCache::new(store.clone()));
    let ca = cluster_ca(&cluster).unwrap();
    let token = ca::format_token(ca.digest(), &cluster.worker_token_secret);

    // Certificates last what the cluster object says.
    let mut c: Cluster = state::get(&store, state::CLUSTER_KEY).unwrap();
    c.node_cert_expiry_ms = 120_000;
    let mut txn = Txn::default();
    state::guarded_put(&mut txn, state::CLUSTER_KEY.into(), &mut c);
    store.write(txn).await.unwrap();

    let first = join(&api, &token, 1).await;
    let (not_before, not_after) = ca::cert_validity(first.certificate_pem.as_bytes()).unwrap();
    let life = not_after.duration_since(not_before).unwrap();
    assert!(
        (Duration::from_secs(120)..=Duration::from_secs(133)).contains(&life),
        "{life:?}"
    );
    assert!(!is_removed(&store, &first.node_id));

    // `node rm` records the id; a join under it gets a new one.
    store
        .write(Txn::new().put(removed_node_key(&first.node_id), b"1".to_vec()))
        .await
        .unwrap();
    assert!(is_removed(&store, &first.node_id));
    let status = removed_status(&first.node_id);
    assert!(is_removed_status(&status), "{status:?}");
    assert!(status.message().contains(&first.node_id));
    assert!(!is_removed_status(&Status::permission_denied("other")));
    let again = api
        .issue_node_certificate(Request::new(IssueNodeCertificateRequest {
            token: token.clone(),
            csr_pem: ca::new_node_key().unwrap().csr_pem,
            hostname: "node-1".into(),
            advertise_addr: "10.0.1.1:2377".into(),
            node_id: first.node_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.node_id, first.node_id);
    assert_eq!(
        ca::cert_identity(again.certificate_pem.as_bytes())
            .unwrap()
            .0,
        again.node_id
    );
}
