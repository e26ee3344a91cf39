use proptest::prelude::*;
use shoal_api::codec;
use shoal_api::pb::{
    HealthCheck, Placement, PortConfig, Resources, RestartPolicy, ServiceSpec, UpdateConfig,
};

use super::*;
use crate::spec::{normalize, validate};

fn spec() -> ServiceSpec {
    let mut s = ServiceSpec {
        name: "web".into(),
        image: "shoal/echo".into(),
        replicas: 3,
        ports: vec![PortConfig {
            target_port: 80,
            published_port: 8080,
            ..Default::default()
        }],
        ..Default::default()
    };
    normalize(&mut s);
    s
}

fn refused(s: &ServiceSpec) -> String {
    let err = validate(s).expect_err("refused");
    assert!(!err.contains('\n'), "one line: {err}");
    err
}

#[test]
fn the_issue_reproductions_are_refused_naming_the_field() {
    let mut s = spec();
    s.replicas = u64::MAX;
    assert_eq!(
        refused(&s),
        "replicas: 18446744073709551615 is more than the maximum 100000; use at most 100000"
    );

    let mut s = spec();
    for i in 0..15 {
        s.labels.insert(format!("l{i}"), "x".repeat(100_000));
    }
    assert!(refused(&s).starts_with("spec: the service spec is"));

    let mut s = spec();
    s.labels.insert("a\nb".into(), "v".into());
    assert!(refused(&s).starts_with("labels: label key \"a\\nb\" contains whitespace"));

    let mut s = spec();
    s.labels.insert("big".into(), "x".repeat(10_000));
    assert!(refused(&s).starts_with("labels: the value of label \"big\" is 10000 bytes"));

    let mut s = spec();
    s.update_config.as_mut().unwrap().delay_ms = 1000 * 365 * 24 * 3_600_000;
    assert_eq!(
        refused(&s),
        "update_delay: 8760000h is more than the maximum 8760h (365 days); use at most 8760h"
    );
}

#[test]
fn every_bounded_field_is_named() {
    type Edit = fn(&mut ServiceSpec);
    let cases: &[(&str, Edit)] = &[
        ("max_concurrent:", |s| s.max_concurrent = MAX_REPLICAS + 1),
        ("labels:", |s| {
            s.labels = (0..=MAX_LABELS)
                .map(|i| (format!("k{i}"), String::new()))
                .collect()
        }),
        ("labels:", |s| {
            s.labels.insert(String::new(), "v".into());
        }),
        ("labels:", |s| {
            s.labels
                .insert("k".repeat(MAX_LABEL_KEY_BYTES + 1), "v".into());
        }),
        ("env:", |s| s.env = vec!["A=1".into(); MAX_LIST_ENTRIES + 1]),
        ("env:", |s| {
            s.env = vec![format!("A={}", "x".repeat(MAX_ENTRY_BYTES))]
        }),
        ("env:", |s| s.env = vec!["A=a\0b".into()]),
        ("command:", |s| {
            s.command = vec!["x".into(); MAX_LIST_ENTRIES + 1]
        }),
        ("image:", |s| s.image = "shoal/echo\n".into()),
        ("workdir:", |s| s.workdir = "/a\0".into()),
        ("ports:", |s| {
            s.ports = (1..=MAX_PORTS as u32 + 1)
                .map(|p| PortConfig {
                    target_port: p,
                    ..Default::default()
                })
                .collect()
        }),
        ("restart_delay:", |s| {
            s.restart = Some(RestartPolicy {
                delay_ms: u64::MAX,
                ..Default::default()
            })
        }),
        ("restart_window:", |s| {
            s.restart = Some(RestartPolicy {
                window_ms: MAX_DURATION_MS + 1,
                ..Default::default()
            })
        }),
        ("restart_max_attempts:", |s| {
            s.restart = Some(RestartPolicy {
                max_attempts: u64::MAX,
                ..Default::default()
            })
        }),
        ("update_parallelism:", |s| {
            s.update_config.as_mut().unwrap().parallelism = u64::MAX
        }),
        ("rollback_monitor:", |s| {
            s.rollback_config.as_mut().unwrap().monitor_ms = u64::MAX
        }),
        ("update_config:", |s| {
            s.update_config.as_mut().unwrap().max_failure_ratio = f32::NAN
        }),
        ("update_config:", |s| {
            s.update_config.as_mut().unwrap().max_failure_ratio = -0.5
        }),
        ("replicas_max_per_node:", |s| {
            s.placement = Some(Placement {
                max_replicas_per_node: u64::MAX,
                ..Default::default()
            })
        }),
        ("constraints:", |s| {
            s.placement = Some(Placement {
                constraints: vec!["node.role==manager".into(); MAX_LIST_ENTRIES + 1],
                ..Default::default()
            })
        }),
        ("resources: limit_memory_bytes:", |s| {
            s.resources = Some(Resources {
                limit_memory_bytes: i64::MAX,
                ..Default::default()
            })
        }),
        ("resources: reserve_nano_cpus", |s| {
            s.resources = Some(Resources {
                reserve_nano_cpus: -1,
                ..Default::default()
            })
        }),
        ("health_interval:", |s| {
            s.health = Some(HealthCheck {
                test: vec!["CMD".into(), "true".into()],
                interval_ms: u64::MAX,
                ..Default::default()
            })
        }),
        ("health_retries:", |s| {
            s.health = Some(HealthCheck {
                test: vec!["CMD".into(), "true".into()],
                retries: u64::MAX,
                ..Default::default()
            })
        }),
        ("stop_grace_period:", |s| s.stop_grace_period_ms = u64::MAX),
        ("name:", |s| s.name = "web-".into()),
        ("name:", |s| s.name = "w".repeat(64)),
    ];
    for (field, edit) in cases {
        let mut s = spec();
        edit(&mut s);
        let err = refused(&s);
        assert!(err.starts_with(field), "{field}: {err}");
        assert!(err.len() < 300, "a line of sensible length: {err}");
    }
}

#[test]
fn the_maxima_themselves_are_accepted() {
    let mut s = spec();
    s.replicas = MAX_REPLICAS;
    s.update_config = Some(UpdateConfig {
        parallelism: MAX_REPLICAS,
        delay_ms: MAX_DURATION_MS,
        monitor_ms: MAX_DURATION_MS,
        max_failure_ratio: 1.0,
        ..Default::default()
    });
    s.labels = (0..MAX_LABELS)
        .map(|i| (format!("k{i}"), "v".repeat(1000)))
        .collect();
    s.stop_grace_period_ms = MAX_DURATION_MS;
    assert_eq!(validate(&s), Ok(()));
}

/// Mostly `usual` (so that many specs pass validation and the bounds of
/// accepted specs are exercised), sometimes anything.
fn usually(usual: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![3 => Just(usual.to_string()), 1 => any_text()]
}

/// Mostly `usual`, sometimes anything `any` makes.
fn sometimes<T: Clone + std::fmt::Debug + 'static>(
    usual: T,
    any: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![9 => Just(usual), 1 => any].boxed()
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[a-z0-9._/-]{0,12}",
        6 => any::<String>(),
        1 => (0usize..200_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![6 => 0u64..10, 2 => 0u64..=MAX_REPLICAS * 2, 1 => any::<u64>()]
}

fn any_update_config() -> impl Strategy<Value = Option<UpdateConfig>> {
    proptest::option::of(
        (
            any_u64(),
            any_u64(),
            any::<i32>(),
            any_u64(),
            any::<f32>(),
            any::<i32>(),
        )
            .prop_map(
                |(parallelism, delay_ms, failure_action, monitor_ms, ratio, order)| UpdateConfig {
                    parallelism,
                    delay_ms,
                    failure_action,
                    monitor_ms,
                    max_failure_ratio: ratio,
                    order,
                },
            ),
    )
}

prop_compose! {
    fn any_spec()(
        name in usually("web"),
        image in sometimes("shoal/echo".to_string(), any_text()),
        labels in sometimes(Default::default(), proptest::collection::btree_map(
            prop_oneof!["[a-z.]{1,10}", any_text()], any_text(), 0..20,
        )),
        runtime in prop_oneof![Just(0i32), any::<i32>()],
        command in sometimes(vec![], proptest::collection::vec(any_text(), 0..5)),
        env in sometimes(vec![], proptest::collection::vec(prop_oneof!["[A-Z]{1,5}=", any_text()]
            .prop_flat_map(|k| any_text().prop_map(move |v| format!("{k}{v}"))), 0..5)),
        workdir in sometimes(String::new(), any_text()),
        mode in prop_oneof![Just(0i32), 0i32..4, any::<i32>()],
        replicas in sometimes(3, any_u64()),
        ports in proptest::collection::vec(
            (
                prop_oneof![1u32..65_536, any::<u32>()],
                prop_oneof![0u32..70_000, any::<u32>()],
                usually("tcp"),
                usually("ingress"),
            ),
            0..4,
        ),
        restart in sometimes(None, proptest::option::of((any::<i32>(), any_u64(), any_u64(), any_u64()))),
        update_config in sometimes(None, any_update_config()),
        rollback_config in sometimes(None, any_update_config()),
        constraints in sometimes(vec![], proptest::collection::vec(usually("node.role==manager"), 0..3)),
        resources in sometimes(None, proptest::option::of(any::<(i64, i64, i64, i64)>())),
        health in sometimes(None, proptest::option::of((
            proptest::collection::vec(any_text(), 0..3), any_u64(), any_u64(), any_u64(), any_u64(),
        ))),
        stop in sometimes((0, String::new()), (any_u64(), any_text())),
        max_concurrent in sometimes(0, any_u64()),
    ) -> ServiceSpec {
        ServiceSpec {
            name,
            labels: labels.into_iter().collect(),
            image,
            runtime,
            command,
            env,
            workdir,
            mode,
            replicas,
            ports: ports
                .into_iter()
                .map(|(target_port, published_port, protocol, publish_mode)| PortConfig {
                    name: String::new(),
                    protocol,
                    target_port,
                    published_port,
                    publish_mode,
                    proxy_protocol: String::new(),
                })
                .collect(),
            restart: restart.map(|(condition, delay_ms, max_attempts, window_ms)| RestartPolicy {
                condition,
                delay_ms,
                max_attempts,
                window_ms,
            }),
            update_config,
            rollback_config,
            force_update: 0,
            placement: Some(Placement {
                constraints,
                ..Default::default()
            }),
            resources: resources.map(|(a, b, c, d)| Resources {
                reserve_nano_cpus: a,
                reserve_memory_bytes: b,
                limit_nano_cpus: c,
                limit_memory_bytes: d,
            }),
            health: health.map(|(test, interval_ms, timeout_ms, retries, start_period_ms)| {
                HealthCheck { test, interval_ms, timeout_ms, retries, start_period_ms }
            }),
            stop_grace_period_ms: stop.0,
            stop_signal: stop.1,
            max_concurrent,
        }
    }
}

/// Arbitrary specs: validation never panics, and what it accepts is within
/// every bound (so a node can store, schedule and send it). Run on a thread
/// with a large stack: the spec strategy is deep for a debug build.
#[test]
fn validation_never_panics_and_accepts_only_bounded_specs() {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let mut runner =
                proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(512));
            let accepted = std::cell::Cell::new(0);
            runner
                .run(&any_spec(), |mut s| {
                    normalize(&mut s);
                    if validate(&s).is_ok() {
                        accepted.set(accepted.get() + 1);
                        accepted_is_bounded(&s)?;
                    }
                    Ok(())
                })
                .unwrap();
            assert!(
                accepted.get() > 10,
                "only {} specs accepted",
                accepted.get()
            );
        })
        .unwrap()
        .join()
        .unwrap();
}

fn accepted_is_bounded(s: &ServiceSpec) -> Result<(), TestCaseError> {
    prop_assert!(codec::encoded_len(s) <= MAX_SPEC_BYTES);
    prop_assert!(s.replicas <= MAX_REPLICAS && s.max_concurrent <= MAX_REPLICAS);
    prop_assert!(s.labels.len() <= MAX_LABELS);
    for (k, v) in &s.labels {
        prop_assert!(!k.is_empty() && !k.contains(char::is_whitespace));
        prop_assert!(k.len() <= MAX_LABEL_KEY_BYTES && v.len() <= MAX_LABEL_VALUE_BYTES);
    }
    let r = s.restart.unwrap_or_default();
    prop_assert!(r.delay_ms <= MAX_DURATION_MS && r.window_ms <= MAX_DURATION_MS);
    let u = s.update_config.unwrap_or_default();
    prop_assert!(u.delay_ms <= MAX_DURATION_MS && u.monitor_ms <= MAX_DURATION_MS);
    prop_assert!((0.0..=1.0).contains(&u.max_failure_ratio));
    prop_assert!(s.stop_grace_period_ms <= MAX_DURATION_MS);
    Ok(())
}
