use super::*;

fn req(limit: Option<u64>, heartbeat_ms: Option<u64>) -> UpdateSwarmRequest {
    UpdateSwarmRequest {
        task_history_limit: limit,
        dispatcher_heartbeat_ms: heartbeat_ms,
        node_cert_expiry_ms: None,
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
