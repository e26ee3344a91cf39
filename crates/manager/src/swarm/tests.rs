use super::*;

fn req(limit: Option<u64>, heartbeat_ms: Option<u64>) -> UpdateSwarmRequest {
    UpdateSwarmRequest {
        task_history_limit: limit,
        dispatcher_heartbeat_ms: heartbeat_ms,
        node_cert_expiry_ms: None,
        rotate_root_ca: false,
    }
}

#[test]
fn only_given_settings_change() {
    let mut c = Cluster {
        task_history_limit: 5,
        dispatcher_heartbeat_ms: 5000,
        ..Default::default()
    };
    apply_update(&mut c, &req(Some(2), None));
    assert_eq!((c.task_history_limit, c.dispatcher_heartbeat_ms), (2, 5000));
    apply_update(&mut c, &req(None, Some(500)));
    assert_eq!((c.task_history_limit, c.dispatcher_heartbeat_ms), (2, 500));
    let before = c.clone();
    apply_update(&mut c, &req(None, None));
    assert_eq!(c, before);
}

#[test]
fn bad_values_name_the_flag() {
    assert!(validate_update(&req(Some(1), Some(100))).is_ok());
    assert!(validate_update(&req(None, None)).is_ok());
    let e = validate_update(&req(Some(0), None)).unwrap_err();
    assert!(e.starts_with("task-history-limit: "), "{e}");
    let e = validate_update(&req(None, Some(99))).unwrap_err();
    assert_eq!(
        e,
        "dispatcher-heartbeat: 99ms is too short; use at least 100ms"
    );
}

#[test]
fn values_past_the_maxima_name_the_flag() {
    let e = validate_update(&req(Some(u64::MAX), None)).unwrap_err();
    assert!(
        e.starts_with("task-history-limit: 18446744073709551615 is more than the maximum 1000"),
        "{e}"
    );
    let e = validate_update(&req(None, Some(u64::MAX))).unwrap_err();
    assert!(
        e.starts_with("dispatcher-heartbeat: 18446744073709551615ms is more than the maximum 24h"),
        "{e}"
    );
    assert!(validate_update(&req(Some(MAX_TASK_HISTORY_LIMIT), Some(MAX_HEARTBEAT_MS))).is_ok());
    assert!(validate_init(0, 0, 0).is_ok());
    assert!(validate_init(u64::MAX, 0, 0).is_err());
    assert!(validate_init(0, 0, 60_000).is_ok());
    assert!(validate_init(0, 0, 1)
        .unwrap_err()
        .starts_with("cert-expiry: "));
}

/// `swarm init` with values past the maxima starts a cluster within them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_keeps_settings_within_the_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::test_support::leading_store(dir.path(), 1000).await;
    let node = crate::LocalNode {
        id: "manager1".into(),
        hostname: "m1".into(),
        addr: "10.0.0.1".into(),
        manager_addr: "10.0.0.1:2377".into(),
        engine_version: "test".into(),
        raft_id: 1,
    };
    let (ca, certs) = crate::new_cluster_ca(&node.id, &node.addr).unwrap();
    let huge = std::time::Duration::from_millis(u64::MAX);
    let settings = crate::InitSettings {
        task_history_limit: u64::MAX,
        heartbeat: huge,
        ..Default::default()
    };
    let init = crate::init_cluster(&store, &node, &settings, &ca, certs)
        .await
        .unwrap();
    assert_eq!(init.cluster.task_history_limit, MAX_TASK_HISTORY_LIMIT);
    assert_eq!(init.cluster.dispatcher_heartbeat_ms, MAX_HEARTBEAT_MS);
}

#[test]
fn cert_expiry_is_bounded_and_stored() {
    let expiry = |ms| UpdateSwarmRequest {
        node_cert_expiry_ms: Some(ms),
        ..Default::default()
    };
    assert!(validate_update(&expiry(MIN_CERT_EXPIRY_MS)).is_ok());
    assert!(validate_update(&expiry(MAX_CERT_EXPIRY_MS)).is_ok());
    for bad in [0, MIN_CERT_EXPIRY_MS - 1, MAX_CERT_EXPIRY_MS + 1, u64::MAX] {
        let e = validate_update(&expiry(bad)).unwrap_err();
        assert!(e.starts_with("cert-expiry: "), "{e}");
    }
    let mut c = Cluster {
        node_cert_expiry_ms: 7_776_000_000,
        ..Default::default()
    };
    apply_update(&mut c, &expiry(60_000));
    assert_eq!(c.node_cert_expiry_ms, 60_000);
    // Another setting leaves it alone.
    apply_update(&mut c, &req(Some(3), None));
    assert_eq!(c.node_cert_expiry_ms, 60_000);
}

#[test]
fn a_root_rotation_keeps_the_old_root_trusted_and_cross_signed() {
    let old = shoal_ca::ClusterCa::generate().unwrap();
    let new = shoal_ca::ClusterCa::generate().unwrap();
    let mut c = Cluster {
        root_ca_pem: old.cert_pem().into(),
        root_ca_key_pem: old.key_pem().into(),
        ..Default::default()
    };
    let cross = old.cross_sign(&new).unwrap();
    rotate_root(&mut c, &new, cross.clone());
    assert_eq!(c.root_ca_pem, new.cert_pem());
    assert_eq!(c.root_ca_key_pem, new.key_pem());
    assert_eq!(c.previous_root_ca_pem, old.cert_pem());
    assert_eq!(c.root_ca_cross_signed_pem, cross);
    let roots = crate::join::trusted_roots_pem(&c);
    assert_eq!(
        shoal_ca::pem_digests(&roots).unwrap(),
        [new.digest().to_string(), old.digest().to_string()]
    );
}
