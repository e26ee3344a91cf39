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
    let old = crate::ca::ClusterCa::generate().unwrap();
    let new = crate::ca::ClusterCa::generate().unwrap();
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
        crate::ca::pem_digests(&roots).unwrap(),
        [new.digest().to_string(), old.digest().to_string()]
    );
}
