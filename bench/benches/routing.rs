//! The routing mesh's table in a mesh that holds 1000 services x 10 endpoints:
//! a feed delta for one service whose endpoint changed (swapped into its slot),
//! one that changes the port map (a new table), a full snapshot, and the
//! endpoint pick a new connection makes.
//!
//! Routes publish no ports (an empty `ports` list), so no listener is bound and
//! only the table update and publication are measured; the pick is measured on
//! one more service that publishes a port (and so has a listener).

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use shoal_mesh::{Endpoint, Mesh, MeshConfig, PortRoute, ServiceRoute};

const SERVICES: usize = 1000;
const ENDPOINTS: usize = 10;
const TARGET_PORT: u16 = 80;

/// Service `s` with its endpoints; `variant` moves the first endpoint to another port.
fn service(s: usize, variant: u16) -> ServiceRoute {
    ServiceRoute {
        service_id: format!("svc{s}").into(),
        service_name: format!("service-{s}").into(),
        ports: Vec::new(),
        endpoints: (0..ENDPOINTS)
            .map(|e| {
                let port = if e == 0 { 10_000 + variant } else { 10_000 };
                let ip = [10, (s / 250) as u8, (s % 250) as u8, e as u8 + 1];
                Endpoint {
                    task_id: format!("task-{s}-{e}").into(),
                    task_name: format!("service-{s}.{}.task-{s}-{e}", e + 1).into(),
                    slot: e as u64 + 1,
                    node: Arc::from("node-1"),
                    ports: vec![(TARGET_PORT, SocketAddr::from((ip, port)))],
                    draining: false,
                }
            })
            .collect(),
    }
}

fn all_services() -> Vec<ServiceRoute> {
    (0..SERVICES).map(|s| service(s, 0)).collect()
}

fn new_mesh() -> Mesh {
    let config = MeshConfig {
        listen_ip: [127, 0, 0, 1].into(),
        ..MeshConfig::default()
    };
    let mesh = Mesh::new(config, &prometheus::Registry::new()).expect("create mesh");
    let errors = mesh.apply_snapshot(all_services());
    assert!(errors.is_empty(), "{errors:?}");
    mesh
}

fn routing_update(c: &mut Criterion) {
    // The mesh spawns tasks only for listeners; a runtime context is cheap insurance.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = rt.enter();

    let mut group = c.benchmark_group("routing_table_1000x10");
    let mesh = new_mesh();
    let variants = [service(SERVICES / 2, 1), service(SERVICES / 2, 0)];
    let mut i = 0usize;
    group.bench_function("apply_delta_one_endpoint_changed", |b| {
        b.iter_batched(
            || {
                i += 1;
                variants[i % 2].clone()
            },
            |route| {
                let errors = mesh.apply_delta(vec![route], &[]);
                debug_assert!(errors.is_empty());
            },
            BatchSize::SmallInput,
        )
    });
    // A service that leaves and comes back: the port map changes each time.
    let mut present = true;
    group.bench_function("apply_delta_service_added_or_removed", |b| {
        b.iter_batched(
            || {
                present = !present;
                (service(SERVICES, 0), present)
            },
            |(route, remove)| {
                let errors = if remove {
                    mesh.apply_delta(vec![], &[route.service_id.to_string()])
                } else {
                    mesh.apply_delta(vec![route], &[])
                };
                debug_assert!(errors.is_empty());
            },
            BatchSize::SmallInput,
        )
    });
    if mesh.table().service(&format!("svc{SERVICES}")).is_some() {
        mesh.apply_delta(vec![], &[format!("svc{SERVICES}")]);
    }
    group.bench_function("apply_snapshot_all", |b| {
        b.iter_batched(
            all_services,
            |routes| {
                let errors = mesh.apply_snapshot(routes);
                debug_assert!(errors.is_empty());
            },
            BatchSize::LargeInput,
        )
    });
    // The pick: a routing lookup and the round-robin choice of an endpoint.
    let published = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let mut picked = service(SERVICES + 1, 0);
    picked.ports = vec![PortRoute::tcp(published, TARGET_PORT)];
    let errors = mesh.apply_delta(vec![picked], &[]);
    assert!(errors.is_empty(), "{errors:?}");
    group.bench_function("pick_endpoint", |b| {
        b.iter(|| mesh.pick(published).expect("an endpoint"))
    });
    group.finish();
    assert_eq!(mesh.table().services().count(), SERVICES + 1);
}

criterion_group!(benches, routing_update);
criterion_main!(benches);
