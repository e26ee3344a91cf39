use shoal_api::pb::{
    FailureAction, NodeAvailability, NodeRole, PortConfig, RestartCondition, Runtime, ServiceMode,
    UpdateOrder,
};

use super::*;

fn one(v: &str) -> PortConfig {
    let mut ports = parse_publish(v).unwrap();
    assert_eq!(ports.len(), 1, "{v}");
    ports.remove(0)
}

#[test]
fn publish_short_forms() {
    let p = one("8080:80");
    assert_eq!((p.published_port, p.target_port), (8080, 80));
    assert_eq!(p.protocol, "tcp");
    assert_eq!(p.publish_mode, "ingress");

    let p = one("8080:80/udp");
    assert_eq!(
        (p.published_port, p.target_port, p.protocol.as_str()),
        (8080, 80, "udp")
    );

    let p = one("80");
    assert_eq!((p.published_port, p.target_port), (0, 80));

    let p = one("80/tcp");
    assert_eq!((p.published_port, p.target_port), (0, 80));

    let ps = parse_publish("8080-8081:80-81").unwrap();
    let pairs: Vec<_> = ps
        .iter()
        .map(|p| (p.published_port, p.target_port))
        .collect();
    assert_eq!(pairs, [(8080, 80), (8081, 81)]);
}

#[test]
fn publish_long_form() {
    let p = one("published=8081,target=80,protocol=tcp,mode=ingress");
    assert_eq!((p.published_port, p.target_port), (8081, 80));
    assert_eq!(p.publish_mode, "ingress");
    let p = one("target=80,mode=host");
    assert_eq!((p.published_port, p.target_port), (0, 80));
    assert_eq!(p.publish_mode, "host");
}

#[test]
fn publish_errors_name_the_flag() {
    let err = |v: &str| parse_publish(v).unwrap_err().to_string();
    assert_eq!(
        err("70000:80"),
        "invalid argument \"70000:80\" for \"-p, --publish\" flag: \
         published port \"70000\" must be a number from 1 to 65535"
    );
    assert_eq!(
        err("8080:0"),
        "invalid argument \"8080:0\" for \"-p, --publish\" flag: \
         target port \"0\" must be a number from 1 to 65535"
    );
    assert_eq!(
        err("-1:80"),
        "invalid argument \"-1:80\" for \"-p, --publish\" flag: \
         published port \"-1\" must be a number from 1 to 65535"
    );
    assert!(err("abc").contains("target port \"abc\" must be a number from 1 to 65535"));
    assert!(err("8080:80/sctp").contains("invalid protocol"));
    assert!(err("published=8080").contains("missing mandatory field \"target\""));
    assert!(err("target=80,mode=foo").contains("invalid publish mode"));
    assert!(err("target=80,color=red").contains("invalid field key"));
    assert!(err("1.2.3.4:80:80").contains("host IP"));
    assert!(err("8080-8082:80-81").contains("differ in size"));
}

#[test]
fn replicas_validation() {
    assert_eq!(parse_replicas("3").unwrap(), 3);
    assert_eq!(parse_replicas("0").unwrap(), 0);
    assert_eq!(
        parse_replicas("-1").unwrap_err().to_string(),
        "invalid argument \"-1\" for \"--replicas\" flag: must be a non-negative integer"
    );
    assert!(parse_replicas("abc").is_err());
}

#[test]
fn scale_specifiers() {
    assert_eq!(parse_scale("web=6").unwrap(), ("web".to_string(), 6));
    assert_eq!(
        parse_scale("web=abc").unwrap_err().to_string(),
        "invalid replicas value web=abc: must be a non-negative integer"
    );
    assert!(parse_scale("web")
        .unwrap_err()
        .to_string()
        .contains("invalid scale specifier"));
}

#[test]
fn runtimes() {
    let cmd = vec!["sleep".to_string(), "10".to_string()];
    assert_eq!(
        resolve_runtime(None, "shoal/echo", &[]).unwrap(),
        Runtime::Builtin
    );
    assert_eq!(
        resolve_runtime(None, "shoal/timecheck:1.0", &[]).unwrap(),
        Runtime::Builtin
    );
    assert_eq!(
        resolve_runtime(None, "nginx", &[]).unwrap_err().to_string(),
        "image \"nginx\" needs a container runtime, which this node does not have yet; \
         run a command with --runtime process"
    );
    assert_eq!(
        resolve_runtime(Some("process"), "nginx", &cmd).unwrap(),
        Runtime::Process
    );
    assert_eq!(
        resolve_runtime(Some("process"), "nginx", &[])
            .unwrap_err()
            .to_string(),
        "--runtime process needs a command: \
         shoal service create --runtime process IMAGE COMMAND [ARG...]"
    );
    assert!(resolve_runtime(Some("docker"), "nginx", &cmd).is_err());
    assert!(resolve_runtime(Some("builtin"), "nginx", &cmd).is_err());
}

#[test]
fn flag_values() {
    assert_eq!(parse_mode("global").unwrap(), ServiceMode::Global);
    assert_eq!(
        parse_mode("replicated-job").unwrap(),
        ServiceMode::ReplicatedJob
    );
    assert_eq!(parse_mode("global-job").unwrap(), ServiceMode::GlobalJob);
    assert!(is_job(ServiceMode::GlobalJob as i32) && !is_job(ServiceMode::Global as i32));
    assert_eq!(
        parse_mode("x").unwrap_err().to_string(),
        "invalid argument \"x\" for \"--mode\" flag: must be replicated, global, replicated-job or global-job"
    );
    assert_eq!(
        parse_restart_condition("on-failure").unwrap(),
        RestartCondition::OnFailure
    );
    assert_eq!(
        parse_duration("5s", "--restart-delay").unwrap(),
        Duration::from_secs(5)
    );
    assert_eq!(
        parse_duration("1m30s", "--restart-delay").unwrap(),
        Duration::from_secs(90)
    );
    assert_eq!(
        parse_duration("500ms", "--restart-delay").unwrap(),
        Duration::from_millis(500)
    );
    assert_eq!(
        parse_duration("0", "--restart-delay").unwrap(),
        Duration::ZERO
    );
    assert!(parse_duration("soon", "--restart-delay").is_err());
    let labels = parse_labels(&["a=b".into(), "c".into()]).unwrap();
    assert_eq!(labels["a"], "b");
    assert_eq!(labels["c"], "");
    assert_eq!(parse_env(&["A=1".into()]).unwrap(), ["A=1"]);
    assert!(parse_env(&["=1".into()]).is_err());
}

#[test]
fn logs_flags() {
    assert_eq!(parse_tail("all").unwrap(), -1);
    assert_eq!(parse_tail("10").unwrap(), 10);
    assert_eq!(parse_tail("-5").unwrap(), -1);
    assert!(parse_tail("x").is_err());
    let now = 1_700_000_000_000_000_000;
    assert_eq!(parse_since("10s", now).unwrap(), now - 10_000_000_000);
    assert_eq!(parse_since("2023-11-14T22:13:20Z", now).unwrap(), now);
    assert_eq!(parse_since("1700000000", now).unwrap(), now);
    assert!(parse_since("yesterday", now).is_err());
    // Nanoseconds are kept, from RFC 3339 and from Unix seconds.
    assert_eq!(
        parse_since("2023-11-14T22:13:20.000000007Z", now).unwrap(),
        now + 7
    );
    assert_eq!(parse_since("1700000000.5", now).unwrap(), now + 500_000_000);
    assert_eq!(parse_since("1700000000.000000007", now).unwrap(), now + 7);
    for bad in ["1.0000000001", "-1", ".5", "1e3", "99999999999999999999"] {
        assert!(parse_since(bad, now).is_err(), "{bad}");
    }
}

proptest::proptest! {
    /// Unix seconds with up to nine fraction digits read back exactly.
    #[test]
    fn since_unix_seconds_keep_their_nanoseconds(secs in 0i64..9_000_000_000, nanos in 0i64..1_000_000_000) {
        let v = format!("{secs}.{nanos:09}");
        proptest::prop_assert_eq!(parse_since(&v, 0).unwrap(), secs * 1_000_000_000 + nanos);
        let trimmed = v.trim_end_matches('0');
        proptest::prop_assert_eq!(parse_since(trimmed, 0).unwrap(), secs * 1_000_000_000 + nanos);
    }
}

#[test]
fn task_filters() {
    let f = parse_task_filters(&[
        "desired-state=running".into(),
        "node=n1".into(),
        "name=web.1".into(),
    ])
    .unwrap();
    assert_eq!(f.desired_states, ["running"]);
    assert_eq!(f.nodes, ["n1"]);
    assert_eq!(f.names, ["web.1"]);
    assert!(parse_task_filters(&["desired-state=bogus".into()]).is_err());
    assert!(parse_task_filters(&["color=red".into()]).is_err());
    assert!(parse_task_filters(&["node".into()]).is_err());
}

#[test]
fn random_names_look_like_docker() {
    let n = random_name();
    assert!(
        n.contains('_') && n.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "{n}"
    );
}

#[test]
fn join_token_roles() {
    assert_eq!(parse_join_role("worker").unwrap(), NodeRole::Worker);
    assert_eq!(parse_join_role("manager").unwrap(), NodeRole::Manager);
    assert_eq!(
        parse_join_role("x").unwrap_err().to_string(),
        r#"invalid argument "x": role must be "worker" or "manager""#
    );
}

#[test]
fn node_update_flags() {
    assert_eq!(
        parse_availability("drain").unwrap(),
        NodeAvailability::Drain
    );
    assert_eq!(
        parse_availability("Pause").unwrap(),
        NodeAvailability::Pause
    );
    assert_eq!(
        parse_availability("active").unwrap(),
        NodeAvailability::Active
    );
    assert_eq!(
        parse_availability("sideways").unwrap_err().to_string(),
        r#"invalid argument "sideways" for "--availability" flag: must be active, pause or drain"#
    );
    assert_eq!(parse_node_role("manager").unwrap(), NodeRole::Manager);
    assert_eq!(
        parse_node_role("boss").unwrap_err().to_string(),
        r#"invalid argument "boss" for "--role" flag: must be worker or manager"#
    );
    assert_eq!(
        parse_label_add("zone=east").unwrap(),
        ("zone".to_string(), "east".to_string())
    );
    assert_eq!(
        parse_label_add("empty=").unwrap(),
        ("empty".to_string(), String::new())
    );
    assert_eq!(
        parse_label_add("zone").unwrap_err().to_string(),
        r#"invalid argument "zone" for "--label-add" flag: expected KEY=VALUE"#
    );
    assert!(parse_label_add("=v").is_err());
}

#[test]
fn join_remote_addresses() {
    let ok = |v: &str| parse_remote_addr(v).unwrap();
    assert_eq!(ok("192.168.100.10"), "192.168.100.10:2377");
    assert_eq!(ok("192.168.100.10:4000"), "192.168.100.10:4000");
    assert_eq!(ok("manager1"), "manager1:2377");
    assert_eq!(ok("[::1]"), "[::1]:2377");
    assert_eq!(ok("[::1]:2400"), "[::1]:2400");
    assert_eq!(ok("fd00::1"), "[fd00::1]:2377");
    for bad in [
        "",
        "host:",
        "host:0",
        "host:99999",
        ":2377",
        "[::1]:x",
        "[]",
        "::]",
        "[host]:80",
        "a:b:c",
    ] {
        assert!(parse_remote_addr(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_remote_addr("h:x").unwrap_err().to_string(),
        r#"invalid remote address "h:x": the port must be a number from 1 to 65535"#
    );
}

#[test]
fn update_policy_values() {
    assert_eq!(
        parse_failure_action("rollback", "--update-failure-action", true).unwrap(),
        FailureAction::Rollback
    );
    assert_eq!(
        parse_failure_action("continue", "--rollback-failure-action", false).unwrap(),
        FailureAction::Continue
    );
    assert!(parse_failure_action("rollback", "--rollback-failure-action", false).is_err());
    assert_eq!(
        parse_update_order("start-first", "--update-order").unwrap(),
        UpdateOrder::StartFirst
    );
    assert_eq!(
        parse_update_order("sideways", "--update-order")
            .unwrap_err()
            .to_string(),
        "invalid argument \"sideways\" for \"--update-order\" flag: must be stop-first or start-first"
    );
    assert_eq!(parse_failure_ratio("0", "--r").unwrap(), 0.0);
    assert_eq!(parse_failure_ratio("1", "--r").unwrap(), 1.0);
    assert_eq!(parse_failure_ratio("0.3", "--r").unwrap(), 0.3);
    assert!(parse_failure_ratio("1.5", "--r").is_err());
    assert!(parse_failure_ratio("NaN", "--r").is_err());
    assert_eq!(
        parse_duration("-1s", "--update-delay")
            .unwrap_err()
            .to_string(),
        "invalid argument \"-1s\" for \"--update-delay\" flag: duration cannot be negative"
    );
}

#[test]
fn args_split_like_a_shell() {
    let split = |s: &str| split_args(s, "--args").unwrap();
    assert_eq!(split(""), Vec::<String>::new());
    assert_eq!(split("  a  b\tc "), ["a", "b", "c"]);
    assert_eq!(split("'a b' \"c d\""), ["a b", "c d"]);
    assert_eq!(split("x'y z'w"), ["xy zw"]);
    assert_eq!(split("''"), [""]);
    assert_eq!(split(r#""a\"b" 'c\d' e\ f"#), ["a\"b", "c\\d", "e f"]);
    assert_eq!(split(r#""\n""#), ["\\n"]);
    assert_eq!(
        split_args("\"open", "--args").unwrap_err().to_string(),
        "invalid argument \"\\\"open\" for \"--args\" flag: unterminated double quote"
    );
    assert!(split_args("trailing\\", "--args").is_err());
}

#[test]
fn env_keys() {
    assert_eq!(env_key("A=1=2"), "A");
    assert_eq!(env_key("A"), "A");
    assert_eq!(
        parse_env_flag(&["=1".into()], "--env-add")
            .unwrap_err()
            .to_string(),
        "invalid argument \"=1\" for \"--env-add\" flag: expected KEY=VALUE"
    );
}

#[test]
fn cpus_are_nano_cpus() {
    assert_eq!(parse_cpus("0.5", "--reserve-cpu").unwrap(), 500_000_000);
    assert_eq!(parse_cpus("2", "--reserve-cpu").unwrap(), 2_000_000_000);
    assert_eq!(parse_cpus(".25", "--reserve-cpu").unwrap(), 250_000_000);
    assert_eq!(parse_cpus("0.000000001", "--limit-cpu").unwrap(), 1);
    assert_eq!(
        parse_cpus("0.0000000001", "--limit-cpu")
            .unwrap_err()
            .to_string(),
        r#"invalid argument "0.0000000001" for "--limit-cpu" flag: value is too precise (at most 9 decimals)"#
    );
    for bad in ["", ".", "-1", "1.2.3", "abc", "1e3"] {
        assert!(parse_cpus(bad, "--reserve-cpu").is_err(), "{bad}");
    }
}

#[test]
fn ram_uses_dockers_binary_units() {
    for (v, want) in [
        ("64MiB", 64 << 20),
        ("128M", 128 << 20),
        ("1G", 1 << 30),
        ("1gb", 1 << 30),
        ("512", 512),
        ("10k", 10 << 10),
        ("1.5g", 3 << 29),
        ("2 MB", 2 << 20),
    ] {
        assert_eq!(parse_ram(v, "--reserve-memory").unwrap(), want, "{v}");
    }
    for bad in ["", "M", "-1M", "12XB", "1.2.3M"] {
        assert!(parse_ram(bad, "--reserve-memory").is_err(), "{bad}");
    }
}

#[test]
fn constraints_and_preferences_are_checked_client_side() {
    assert_eq!(
        parse_constraint("node.labels.zone != a", "--constraint").unwrap(),
        "node.labels.zone != a"
    );
    assert!(parse_constraint("engine.labels.disk==ssd", "--constraint").is_ok());
    assert!(parse_constraint("node.labels.==ssd", "--constraint").is_err());
    assert!(parse_placement_pref("spread=node.labels.zone", "--placement-pref").is_ok());
    assert!(parse_placement_pref("spread", "--placement-pref").is_err());
}

// === property tests: no panic on any input; round trips where a printer exists ===

mod properties {
    use super::*;
    use crate::client::Host;
    use crate::format::go_duration_ms;
    use crate::inspect::bytes_size;
    use proptest::prelude::*;

    /// Text that looks like flag values: digits, unit letters, separators,
    /// signs, quotes, and any other character now and then.
    fn flagish() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-zA-Z:=/.,_+ -]{0,24}",
            "[-+]?[0-9]{0,22}(\\.[0-9]{0,12})?[a-zA-Z]{0,3}",
            "[0-9]{0,6}(-[0-9]{0,6})?(:[0-9]{0,6}(-[0-9]{0,6})?)?(/[a-z]{0,4})?",
            "655[0-9]{2}:[0-9]{1,3}-[0-9]{1,3}",
            ".{0,24}",
        ]
    }

    proptest! {
        #[test]
        fn parsers_never_panic(v in flagish(), now_ns in any::<i64>()) {
            let _ = parse_publish(&v);
            let _ = parse_replicas(&v);
            let _ = parse_mode(&v);
            let _ = parse_restart_condition(&v);
            let _ = parse_duration(&v, "--restart-delay");
            let _ = parse_count(&v, "--restart-max-attempts");
            let _ = parse_labels(std::slice::from_ref(&v));
            let _ = parse_env(std::slice::from_ref(&v));
            let _ = parse_failure_action(&v, "--update-failure-action", true);
            let _ = parse_update_order(&v, "--update-order");
            let _ = parse_failure_ratio(&v, "--update-max-failure-ratio");
            let _ = split_args(&v, "--args");
            let _ = parse_constraint(&v, "--constraint");
            let _ = parse_placement_pref(&v, "--placement-pref");
            let _ = parse_cpus(&v, "--limit-cpu");
            let _ = parse_ram(&v, "--limit-memory");
            let _ = parse_scale(&v);
            let _ = parse_tail(&v);
            let _ = parse_since(&v, now_ns);
            let _ = parse_task_filters(std::slice::from_ref(&v));
            let _ = parse_join_role(&v);
            let _ = parse_node_role(&v);
            let _ = parse_availability(&v);
            let _ = parse_label_add(&v);
            let _ = parse_remote_addr(&v);
            let _ = Host::parse(&v);
            let _ = crate::swarm::parse_heartbeat(&v);
            let _ = crate::swarm::parse_history_limit(&v);
        }

        /// Every port a publish spec yields is a real port (1-65535).
        #[test]
        fn published_ports_are_in_range(v in flagish()) {
            if let Ok(ports) = parse_publish(&v) {
                for p in ports {
                    prop_assert!((1..=65535).contains(&p.target_port), "{v}: {p:?}");
                    prop_assert!(p.published_port <= 65535, "{v}: {p:?}");
                }
            }
        }

        #[test]
        fn publish_short_form_round_trips(
            published in 0u32..=65535,
            target in 1u32..=65535,
            udp in any::<bool>(),
        ) {
            let proto = if udp { "udp" } else { "tcp" };
            let text = match published {
                0 => format!("{target}/{proto}"),
                p => format!("{p}:{target}/{proto}"),
            };
            let ports = parse_publish(&text).unwrap();
            prop_assert_eq!(ports.len(), 1);
            prop_assert_eq!(
                (ports[0].published_port, ports[0].target_port, ports[0].protocol.as_str()),
                (published, target, proto)
            );
            let long = match published {
                0 => format!("target={target},protocol={proto}"),
                p => format!("published={p},target={target},protocol={proto}"),
            };
            let long = parse_publish(&long).unwrap();
            prop_assert_eq!(&long, &ports);
        }

        /// `go_duration_ms` (what `inspect --pretty` prints) reads back.
        #[test]
        fn duration_round_trips(ms in 0u64..1_000_000_000_000) {
            let text = go_duration_ms(ms);
            let back = parse_duration(&text, "--restart-delay").unwrap();
            prop_assert_eq!(back.as_millis() as u64, ms, "{}", text);
        }

        /// `bytes_size` (what `inspect --pretty` prints) reads back, for
        /// sizes it prints exactly.
        #[test]
        fn size_round_trips(n in 1i64..1024, unit in 0u32..6) {
            let bytes = n << (10 * unit);
            let text = bytes_size(bytes);
            prop_assert_eq!(parse_ram(&text, "--limit-memory").unwrap(), bytes, "{}", text);
        }

        /// Nano CPUs printed as `inspect --pretty` does (`0.5`) read back.
        #[test]
        fn cpus_round_trip(nano in 0i64..1_000_000_000_000_000) {
            let text = (nano as f64 / 1e9).to_string();
            prop_assert_eq!(parse_cpus(&text, "--limit-cpu").unwrap(), nano, "{}", text);
        }

        #[test]
        fn label_and_env_round_trip(key in "[A-Za-z_][A-Za-z0-9_.-]{0,12}", value in "[^\n]{0,16}") {
            let entry = format!("{key}={value}");
            let labels = parse_labels(std::slice::from_ref(&entry)).unwrap();
            prop_assert_eq!(labels.get(&key), Some(&value));
            prop_assert_eq!(parse_label_add(&entry).unwrap(), (key.clone(), value.clone()));
            let env = parse_env(std::slice::from_ref(&entry)).unwrap();
            prop_assert_eq!(&env, std::slice::from_ref(&entry));
            prop_assert_eq!(env_key(&env[0]), key.as_str());
        }

        #[test]
        fn filters_round_trip(
            key in prop::sample::select(vec!["node", "name", "id"]),
            value in "[^\n]{0,16}",
        ) {
            let f = parse_task_filters(&[format!("{key}={value}")]).unwrap();
            let got = match key {
                "node" => f.nodes,
                "name" => f.names,
                _ => f.ids,
            };
            prop_assert_eq!(got, vec![value]);
        }

        #[test]
        fn constraints_and_preferences_round_trip(
            key in prop::sample::select(vec!["node.id", "node.hostname", "node.labels.zone", "engine.labels.disk"]),
            ne in any::<bool>(),
            value in "[a-z0-9-]{1,12}",
        ) {
            let op = if ne { "!=" } else { "==" };
            let text = format!("{key}{op}{value}");
            prop_assert_eq!(parse_constraint(&text, "--constraint").unwrap(), text);
            let pref = format!("spread=node.labels.{value}");
            prop_assert_eq!(parse_placement_pref(&pref, "--placement-pref").unwrap(), pref);
        }

        /// Words quoted as a shell would read them come back as the same words.
        #[test]
        fn split_args_round_trips(words in prop::collection::vec("[^\u{0}]{0,8}", 0..5)) {
            let quoted: Vec<String> = words
                .iter()
                .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
                .collect();
            prop_assert_eq!(split_args(&quoted.join(" "), "--args").unwrap(), words);
        }

        /// A normalized remote address is its own normal form.
        #[test]
        fn remote_addr_is_idempotent(v in flagish()) {
            if let Ok(addr) = parse_remote_addr(&v) {
                prop_assert_eq!(parse_remote_addr(&addr).unwrap(), addr);
            }
        }

        #[test]
        fn host_round_trips(v in flagish()) {
            if let Ok(host) = Host::parse(&v) {
                prop_assert_eq!(Host::parse(&host.to_string()).unwrap(), host);
            }
        }

        #[test]
        fn host_parses_what_it_prints(path in "/[a-z0-9/._-]{0,20}", port in 1u16.., name in "[a-z][a-z0-9.-]{0,12}") {
            let unix = Host::Unix(path);
            prop_assert_eq!(Host::parse(&unix.to_string()).unwrap(), unix);
            let tcp = Host::Tcp(format!("{name}:{port}"));
            prop_assert_eq!(Host::parse(&tcp.to_string()).unwrap(), tcp);
        }
    }
}

#[test]
fn a_single_published_port_for_a_target_range_stays_in_range() {
    let err = parse_publish("65535:1-2").unwrap_err().to_string();
    assert!(err.contains("65535"), "{err}");
    let ports = parse_publish("8080:80-81").unwrap();
    assert_eq!(
        ports.iter().map(|p| p.published_port).collect::<Vec<_>>(),
        [8080, 8081]
    );
}

#[test]
fn a_since_further_back_than_time_itself_does_not_overflow() {
    for v in [
        "1000000000000y",
        "18446744073709551615s",
        "9223372036854775807ms",
    ] {
        let _ = parse_since(v, 1_700_000_000_000_000_000);
    }
    assert_eq!(
        parse_since("18446744073709551615s", 1_700_000_000_000_000_000).unwrap(),
        0
    );
    assert_eq!(parse_since("1000y", i64::MIN).unwrap(), 0);
}
