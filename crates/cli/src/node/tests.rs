use super::*;

fn node(id: &str, host: &str, leader: Option<bool>) -> pb::Node {
    pb::Node {
        id: id.into(),
        meta: None,
        spec: Some(pb::NodeSpec {
            role: if leader.is_some() { 1 } else { 0 },
            availability: 0,
            labels: Default::default(),
        }),
        description: Some(pb::NodeDescription {
            hostname: host.into(),
            engine_version: "0.1.0".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            ..Default::default()
        }),
        status: Some(pb::NodeStatus {
            state: pb::NodeState::Ready as i32,
            message: String::new(),
            addr: String::new(),
            ingress_address: String::new(),
        }),
        manager_status: leader.map(|l| pb::ManagerStatus {
            leader: l,
            reachability: "reachable".into(),
            addr: String::new(),
            raft_id: 1,
        }),
    }
}

#[test]
fn node_ls_marks_self_and_leader() {
    let nodes = [
        node("4ekbnwh2ayfy2qo9alcarsy5q", "ip-1", None),
        node("f4ag8t9kczcn0sg0wzexfac3x", "ip-2", Some(true)),
        node("js2iuhm3i5r7qpnsrxs15ojc1", "ip-3", Some(false)),
    ];
    let out = node_table(&nodes, "f4ag8t9kczcn0sg0wzexfac3x").render();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION"
    );
    assert_eq!(
        lines[1],
        "4ekbnwh2ayfy2qo9alcarsy5q     ip-1       Ready     Active                          0.1.0"
    );
    assert_eq!(
        lines[2],
        "f4ag8t9kczcn0sg0wzexfac3x *   ip-2       Ready     Active         Leader           0.1.0"
    );
    assert!(lines[3].contains("Reachable"));
}

#[test]
fn node_ls_status_and_manager_columns() {
    let mut down = node("a", "h-down", None);
    down.status.as_mut().unwrap().state = pb::NodeState::Down as i32;
    let mut unknown = node("b", "h-unknown", None);
    unknown.status = None;
    let mut disc = node("c", "h-disc", Some(false));
    disc.status.as_mut().unwrap().state = pb::NodeState::Disconnected as i32;
    disc.manager_status.as_mut().unwrap().reachability = "unavailable".into();
    // A worker with a stale manager status shows nothing.
    let mut worker = node("d", "h-worker", Some(true));
    worker.spec.as_mut().unwrap().role = pb::NodeRole::Worker as i32;
    let t = node_table(&[down, unknown, disc, worker], "x").render();
    let cells: Vec<Vec<&str>> = t
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(cells[0], ["a", "h-down", "Down", "Active", "0.1.0"]);
    assert_eq!(cells[1], ["b", "h-unknown", "Unknown", "Active", "0.1.0"]);
    assert_eq!(
        cells[2],
        [
            "c",
            "h-disc",
            "Disconnected",
            "Active",
            "Unavailable",
            "0.1.0"
        ]
    );
    assert_eq!(cells[3], ["d", "h-worker", "Ready", "Active", "0.1.0"]);
}

fn update_args(args: &[&str]) -> UpdateArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        a: UpdateArgs,
    }
    let mut argv = vec!["node-update"];
    argv.extend_from_slice(args);
    W::try_parse_from(argv).unwrap().a
}

#[test]
fn node_update_merges_like_docker() {
    let a = update_args(&[
        "--availability",
        "drain",
        "--label-add",
        "zone=east",
        "--label-add",
        "ssd=yes",
        "--label-rm",
        "old",
        "--role",
        "manager",
        "node-1",
    ]);
    assert_eq!(a.node, "node-1");
    let u = NodeUpdate::parse(&a).unwrap();
    let mut spec = pb::NodeSpec {
        role: pb::NodeRole::Worker as i32,
        availability: pb::NodeAvailability::Active as i32,
        labels: [("old".to_string(), "1".to_string())].into(),
    };
    u.apply(&mut spec).unwrap();
    assert_eq!(spec.role, pb::NodeRole::Manager as i32);
    assert_eq!(spec.availability, pb::NodeAvailability::Drain as i32);
    let labels: std::collections::BTreeMap<_, _> = spec.labels.clone().into_iter().collect();
    assert_eq!(
        labels,
        [
            ("ssd".to_string(), "yes".to_string()),
            ("zone".to_string(), "east".to_string())
        ]
        .into()
    );
    // Removing a missing key fails, as Docker's mergeNodeUpdate does.
    let err = u.apply(&mut spec).unwrap_err().to_string();
    assert_eq!(err, "key old doesn't exist in node's labels");

    // No flags: the spec is unchanged.
    let mut same = spec.clone();
    NodeUpdate::parse(&update_args(&["n"]))
        .unwrap()
        .apply(&mut same)
        .unwrap();
    assert_eq!(same, spec);
}

#[test]
fn node_update_flag_errors_name_the_flag() {
    let e = NodeUpdate::parse(&update_args(&["--availability", "sideways", "n"]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"invalid argument "sideways" for "--availability" flag: must be active, pause or drain"#
    );
    let e = NodeUpdate::parse(&update_args(&["--label-add", "zone", "n"]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"invalid argument "zone" for "--label-add" flag: expected KEY=VALUE"#
    );
    let e = NodeUpdate::parse(&update_args(&["--role", "boss", "n"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(r#"invalid argument "boss" for "--role" flag"#),
        "{e}"
    );
}

#[test]
fn promote_and_demote_lines() {
    assert_eq!(
        role_changed_text("worker1", pb::NodeRole::Manager),
        "Node worker1 promoted to a manager in the swarm."
    );
    assert_eq!(
        role_changed_text("worker1", pb::NodeRole::Worker),
        "Manager worker1 demoted in the swarm."
    );
    assert_eq!(
        already_text("abc", pb::NodeRole::Manager),
        "Node abc is already a manager."
    );
    assert_eq!(
        already_text("abc", pb::NodeRole::Worker),
        "Node abc is already a worker."
    );
}

#[test]
fn node_pretty_matches_docker_template() {
    let mut n = node("e216jshn25ckzbvmwlnh5jr3g", "swarm-manager", Some(true));
    n.meta = Some(pb::Meta {
        version: 3,
        created_at_ms: 1_494_975_164_991,
        updated_at_ms: 0,
    });
    n.status.as_mut().unwrap().addr = "172.17.0.2".into();
    n.manager_status.as_mut().unwrap().addr = "172.17.0.2:2377".into();
    n.spec.as_mut().unwrap().labels.extend([
        ("zone".to_string(), "east".to_string()),
        ("ssd".to_string(), String::new()),
    ]);
    assert_eq!(
        inspect::node_pretty(&n),
        "ID:\t\t\te216jshn25ckzbvmwlnh5jr3g\n\
         Labels:\n - ssd\n - zone=east\n\
         Hostname:              \tswarm-manager\n\
         Joined at:             \t2017-05-16 22:52:44.991 +0000 utc\n\
         Status:\n \
         State:\t\t\tReady\n \
         Availability:         \tActive\n \
         Address:\t\t172.17.0.2\n\
         Manager Status:\n \
         Address:\t\t172.17.0.2:2377\n \
         Raft Status:\t\tReachable\n \
         Leader:\t\tYes\n\
         Platform:\n \
         Operating System:\tlinux\n \
         Architecture:\t\tx86_64\n\
         Engine Version:\t\t0.1.0\n"
    );

    // A worker: no Manager Status, no Address when unknown, a status message.
    let mut w = node("w1", "worker-1", None);
    w.status.as_mut().unwrap().state = pb::NodeState::Down as i32;
    w.status.as_mut().unwrap().message = "heartbeat failure".into();
    let p = inspect::node_pretty(&w);
    assert!(
        p.contains(" State:\t\t\tDown\n Message:              \tHeartbeat failure\n"),
        "{p}"
    );
    assert!(!p.contains("Manager Status"), "{p}");
    assert!(!p.contains(" Address:"), "{p}");
    assert!(
        p.contains("Joined at:             \t0001-01-01 00:00:00 +0000 utc\n"),
        "{p}"
    );
}

#[test]
fn node_ls_format_matches_the_default_table_and_filters() {
    let mut worker = node("4ekbnwh2ayfy2qo9alcarsy5q", "ip-1", None);
    worker
        .spec
        .as_mut()
        .unwrap()
        .labels
        .insert("zone".into(), "a".into());
    let nodes = [
        worker,
        node("f4ag8t9kczcn0sg0wzexfac3x", "ip-2", Some(true)),
    ];
    let self_id = "f4ag8t9kczcn0sg0wzexfac3x";
    // Docker's default node table format gives the table `node ls` prints.
    let docker_default = "table {{.ID}} {{if .Self}}*{{else}} {{ end }}\\t{{.Hostname}}\\t{{.Status}}\\t{{.Availability}}\\t{{.ManagerStatus}}\\t{{.EngineVersion}}";
    assert_eq!(
        node_formatted(&nodes, self_id, docker_default).unwrap(),
        node_table(&nodes, self_id).render()
    );
    assert_eq!(
        node_formatted(&nodes, self_id, "{{.Hostname}} {{.Self}}").unwrap(),
        "ip-1 false\nip-2 true\n"
    );
    assert!(node_formatted(&nodes, self_id, "json")
        .unwrap()
        .starts_with("{\"Availability\":\"Active\",\"EngineVersion\":\"0.1.0\",\"Hostname\":\"ip-1\",\"ID\":\"4ekbnwh2ayfy2qo9alcarsy5q\",\"ManagerStatus\":\"\",\"Self\":false,\"Status\":\"Ready\"}\n"));
    let pass = |values: &[&str], n: &pb::Node| {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        matches(&parse_filter(&values).unwrap(), n)
    };
    assert!(pass(&["role=worker"], &nodes[0]));
    assert!(!pass(&["role=manager"], &nodes[0]));
    assert!(pass(&["name=ip-2"], &nodes[1]));
    assert!(pass(&["id=f4ag"], &nodes[1]));
    assert!(!pass(&["id=f4ag"], &nodes[0]));
    assert!(pass(&["node.label=zone=a"], &nodes[0]));
    assert!(!pass(&["node.label=zone"], &nodes[1]));
    assert!(pass(&["membership=accepted"], &nodes[1]));
    assert!(!pass(&["membership=pending"], &nodes[1]));
    assert!(!pass(&["label=zone"], &nodes[0]));
    assert!(parse_filter(&["role=boss".to_string()]).is_err());
    assert!(parse_filter(&["membership=x".to_string()]).is_err());
}
