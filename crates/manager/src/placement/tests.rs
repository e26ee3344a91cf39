use shoal_api::pb::{Node, NodeDescription, NodeRole, NodeSpec, Placement, Resources, ServiceSpec};

use super::*;

fn node() -> Node {
    Node {
        id: "abc123".into(),
        spec: Some(NodeSpec {
            role: NodeRole::Manager as i32,
            labels: [("zone".to_string(), "a".to_string())].into(),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: "node-1".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            nano_cpus: 2_000_000_000,
            memory_bytes: 1 << 30,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn matches(cs: &[&str]) -> bool {
    let cs: Vec<String> = cs.iter().map(|s| s.to_string()).collect();
    node_matches(&node(), &parse_constraints(&cs).unwrap())
}

fn spec(constraints: &[&str], prefs: &[&str]) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        placement: Some(Placement {
            constraints: constraints.iter().map(|s| s.to_string()).collect(),
            preferences: prefs.iter().map(|s| s.to_string()).collect(),
            max_replicas_per_node: 0,
        }),
        ..Default::default()
    }
}

#[test]
fn parses_every_key_and_both_operators() {
    let c = parse_constraint("node.labels.zone != a").unwrap();
    assert_eq!(c.key, Key::Label("zone".into()));
    assert_eq!(c.op, Op::Ne);
    assert_eq!(c.value, "a");
    assert_eq!(
        parse_constraint("engine.labels.disk==ssd").unwrap().key,
        Key::Label("disk".into())
    );
    for (text, key) in [
        ("node.id==x", Key::Id),
        ("node.hostname==x", Key::Hostname),
        ("node.role==worker", Key::Role),
        ("node.platform.os==linux", Key::Os),
        ("node.platform.arch==amd64", Key::Arch),
    ] {
        assert_eq!(parse_constraint(text).unwrap().key, key, "{text}");
    }
}

#[test]
fn bad_constraints_and_preferences_are_one_line_errors_naming_the_field() {
    let err = validate(&spec(&["node.role"], &[])).unwrap_err();
    assert_eq!(
        err,
        r#"placement: constraint "node.role" has no operator: use ==, != (e.g. node.role==manager)"#
    );
    let err = validate(&spec(&["node.colour==red"], &[])).unwrap_err();
    assert!(
        err.starts_with(
            r#"placement: constraint "node.colour==red" has unknown key "node.colour""#
        ),
        "{err}"
    );
    assert!(validate(&spec(&["node.labels.==a"], &[])).is_err());
    assert!(validate(&spec(&["node.role=="], &[])).is_err());
    assert!(validate(&spec(&["node.role==boss"], &[])).is_err());
    let err = validate(&spec(&[], &["binpack=node.labels.zone"])).unwrap_err();
    assert!(
        err.starts_with(r#"placement: preference "binpack=node.labels.zone""#),
        "{err}"
    );
    assert!(validate(&spec(&[], &["spread=node.hostname"])).is_err());
    assert!(validate(&spec(&["node.role==manager"], &["spread=node.labels.zone"])).is_ok());
    assert!(!err.contains('\n'));
}

#[test]
fn negative_resources_are_refused() {
    let mut s = spec(&[], &[]);
    s.resources = Some(Resources {
        reserve_memory_bytes: -1,
        ..Default::default()
    });
    assert!(validate(&s).unwrap_err().starts_with("resources:"));
}

#[test]
fn memory_limits_below_dockers_minimum_are_refused() {
    let mut s = spec(&[], &[]);
    let with_limit = |s: &mut ServiceSpec, bytes| {
        s.resources = Some(Resources {
            limit_memory_bytes: bytes,
            ..Default::default()
        })
    };
    with_limit(&mut s, 1024);
    assert_eq!(
        validate(&s).unwrap_err(),
        "resources: limit_memory_bytes 1024: Minimum memory limit allowed is 6MB"
    );
    with_limit(&mut s, MIN_LIMIT_MEMORY_BYTES);
    assert!(validate(&s).is_ok());
    with_limit(&mut s, 0);
    assert!(validate(&s).is_ok(), "0 is no limit");
}

#[test]
fn matching_is_an_and_of_case_insensitive_comparisons() {
    assert!(matches(&[]));
    assert!(matches(&["node.role==manager"]));
    assert!(!matches(&["node.role==worker"]));
    assert!(matches(&["node.role!=worker"]));
    assert!(matches(&["node.hostname==NODE-1", "node.id==abc123"]));
    assert!(!matches(&["node.hostname==node-1", "node.id!=abc123"]));
    assert!(matches(&["node.platform.os==linux"]));
    assert!(matches(&["node.platform.arch==amd64"]), "x86_64 is amd64");
    assert!(matches(&["node.labels.zone==a", "engine.labels.zone==A"]));
    assert!(!matches(&["node.labels.zone==b"]));
    // A missing label equals nothing.
    assert!(!matches(&["node.labels.disk==ssd"]));
    assert!(matches(&["node.labels.disk!=ssd"]));
}

#[test]
fn spread_and_reservations() {
    assert_eq!(
        spread_labels(&spec(&[], &["spread=node.labels.zone"])),
        vec!["zone".to_string()]
    );
    let n = node();
    assert!(fits(&n, (0, 0), (2_000_000_000, 1 << 30)));
    assert!(!fits(&n, (1, 0), (2_000_000_000, 0)));
    assert!(!fits(&n, (0, 1 << 29), (0, (1 << 29) + 1)));
    let mut unknown = n.clone();
    unknown.description = None;
    assert!(
        fits(&unknown, (0, 0), (64_000_000_000, 1 << 40)),
        "unknown capacity"
    );
}

// === property tests ===

proptest::proptest! {
    /// Any constraint or preference text (they come from the API, not only
    /// the CLI) is parsed or refused, never a panic.
    #[test]
    fn any_placement_text_parses_or_is_refused(text in "(node|engine)?[.a-z]{0,16}(==|!=|=)?.{0,12}|.{0,40}") {
        let _ = parse_constraint(&text);
        let _ = parse_preference(&text);
    }

    /// A constraint reads back as the key, operator and value it was written with.
    #[test]
    fn constraints_round_trip(
        key in proptest::sample::select(vec!["node.id", "node.hostname", "node.platform.os", "node.platform.arch", "node.labels.zone", "engine.labels.disk"]),
        ne in proptest::prelude::any::<bool>(),
        value in "[A-Za-z0-9_.-]{1,12}",
    ) {
        let op = if ne { "!=" } else { "==" };
        let c = parse_constraint(&format!(" {key} {op} {value} ")).unwrap();
        proptest::prop_assert_eq!(c.op, if ne { Op::Ne } else { Op::Eq });
        proptest::prop_assert_eq!(&c.value, &value);
        let want = match key {
            "node.id" => Key::Id,
            "node.hostname" => Key::Hostname,
            "node.platform.os" => Key::Os,
            "node.platform.arch" => Key::Arch,
            "node.labels.zone" => Key::Label("zone".into()),
            _ => Key::Label("disk".into()),
        };
        proptest::prop_assert_eq!(c.key, want);
        let pref = format!("spread=node.labels.{value}");
        proptest::prop_assert_eq!(parse_preference(&pref).unwrap(), value);
    }
}
