use super::*;

#[test]
fn reconnect_waits_grow_with_jitter_and_stay_bounded() {
    let waits: Vec<Duration> = reconnect_backoff().take(50).collect();
    assert_eq!(waits.len(), 50, "the feed retries without end");
    assert!(waits[0] >= Duration::from_millis(100) && waits[0] < Duration::from_millis(200));
    assert!(waits.iter().all(|w| *w <= RECONNECT_MAX_WAIT));
    // Past the cap the base wait is half the maximum, the jitter adds up to as much.
    assert!(waits[20..].iter().all(|w| *w >= RECONNECT_MAX_WAIT / 2));
    // The jitter spreads nodes out: not every late wait is the same.
    assert!(waits[20..].iter().any(|w| *w != waits[20]));
}

#[test]
fn host_mode_ports_reach_the_mesh_as_host_mode() {
    use shoal_api::pb::RoutePort;

    let port = |published: u32, mode: &str| RoutePort {
        published_port: published,
        target_port: 80,
        protocol: "tcp".into(),
        publish_mode: mode.into(),
        ..Default::default()
    };
    let route = to_route(ServiceRoute {
        service_id: "web".into(),
        service_name: "web".into(),
        ports: vec![port(8080, "host"), port(9090, "ingress"), port(9091, "")],
        endpoints: vec![],
    });
    let modes: Vec<(u16, PublishMode)> =
        route.ports.iter().map(|p| (p.published, p.mode)).collect();
    assert_eq!(
        modes,
        vec![
            (8080, PublishMode::Host),
            (9090, PublishMode::Ingress),
            (9091, PublishMode::Ingress)
        ]
    );
}

#[test]
fn to_route_carries_tcp_and_udp_ports_of_one_number_and_drops_others() {
    let port = |protocol: &str| shoal_api::pb::RoutePort {
        published_port: 5353,
        target_port: 53,
        protocol: protocol.into(),
        ..Default::default()
    };
    let route = to_route(ServiceRoute {
        service_id: "s".into(),
        service_name: "dns".into(),
        ports: vec![port("tcp"), port("udp"), port("sctp")],
        endpoints: vec![],
    });
    assert_eq!(
        route.ports,
        [
            PortRoute::tcp(5353, 53),
            PortRoute {
                protocol: Protocol::Udp,
                ..PortRoute::tcp(5353, 53)
            }
        ]
    );
}
