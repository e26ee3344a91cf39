use super::*;

fn msg(data: &str) -> pb::LogMessage {
    pb::LogMessage {
        task_id: "u5d8gatt116jabcdefghijklm".into(),
        service_id: "svc".into(),
        service_name: "timecheck".into(),
        slot: 1,
        node_id: "node1".into(),
        timestamp_ns: 1_700_000_000_120_000_007,
        stream: "stdout".into(),
        data: data.as_bytes().to_vec(),
        unavailable_nodes: Vec::new(),
        attrs: Vec::new(),
    }
}

fn attr(key: &str, value: &str) -> pb::LogAttr {
    pb::LogAttr {
        key: key.into(),
        value: value.into(),
    }
}

#[test]
fn docker_line_prefix() {
    let f = LineFormat {
        slot_width: 1,
        ..Default::default()
    };
    assert_eq!(
        format_message(
            &msg("App version: 1.0; time check: 01:10.43\n"),
            "timecheck",
            "orbstack",
            &f
        ),
        ["timecheck.1.u5d8gatt116j@orbstack    | App version: 1.0; time check: 01:10.43"]
    );
}

#[test]
fn flags_change_the_prefix() {
    let m = msg("hi\n");
    let f = LineFormat {
        no_trunc: true,
        slot_width: 2,
        ..Default::default()
    };
    assert_eq!(
        format_message(&m, "timecheck", "n", &f),
        ["timecheck.1.u5d8gatt116jabcdefghijklm@n     | hi"]
    );
    let f = LineFormat {
        no_task_ids: true,
        slot_width: 1,
        ..Default::default()
    };
    assert_eq!(
        format_message(&m, "timecheck", "n", &f),
        ["timecheck.1@n    | hi"]
    );
    let f = LineFormat {
        raw: true,
        ..Default::default()
    };
    assert_eq!(format_message(&m, "timecheck", "n", &f), ["hi"]);
    assert_eq!(
        format_message(&msg("a\nb"), "timecheck", "n", &f),
        ["a", "b"]
    );
    assert_eq!(format_message(&msg("a\r\n"), "timecheck", "n", &f), ["a"]);
}

#[test]
fn timestamps_come_first_with_nine_fraction_digits() {
    let m = msg("hi\n");
    let f = LineFormat {
        timestamps: true,
        slot_width: 1,
        ..Default::default()
    };
    assert_eq!(
        format_message(&m, "timecheck", "n", &f),
        ["2023-11-14T22:13:20.120000007Z timecheck.1.u5d8gatt116j@n    | hi"]
    );
    let f = LineFormat {
        timestamps: true,
        raw: true,
        ..Default::default()
    };
    assert_eq!(
        format_message(&m, "timecheck", "n", &f),
        ["2023-11-14T22:13:20.120000007Z hi"]
    );
    assert_eq!(
        rfc3339_nano_fixed(1_000_000_000),
        "1970-01-01T00:00:01.000000000Z"
    );
    assert_eq!(rfc3339_nano_fixed(0), "0001-01-01T00:00:00.000000000Z");
    assert_eq!(rfc3339_nano_fixed(-5), "0001-01-01T00:00:00.000000000Z");
}

#[test]
fn details_come_after_the_context_as_docker_prints_them() {
    let mut m = msg("hi\n");
    let f = LineFormat {
        details: true,
        slot_width: 1,
        ..Default::default()
    };
    // No extra attributes: Docker prints the empty details and their space.
    assert_eq!(
        format_message(&m, "timecheck", "n", &f),
        ["timecheck.1.u5d8gatt116j@n    |  hi"]
    );
    m.attrs = vec![
        attr("zone", "eu west"),
        attr("app", "a,b"),
        attr(TASK_KEY, "spoofed"),
    ];
    assert_eq!(
        format_message(&m, "timecheck", "n", &f),
        ["timecheck.1.u5d8gatt116j@n    | app=a,b,zone=eu west hi"]
    );
    // Raw: what Docker's daemon sends, the context included, escaped.
    let f = LineFormat {
        details: true,
        raw: true,
        timestamps: true,
        ..Default::default()
    };
    assert_eq!(
        format_message(&m, "timecheck", "n", &f),
        [
            "2023-11-14T22:13:20.120000007Z app=a%2Cb,com.docker.swarm.node.id=node1,\
             com.docker.swarm.service.id=svc,com.docker.swarm.task.id=u5d8gatt116jabcdefghijklm,\
             zone=eu+west hi"
        ]
    );
}

#[test]
fn unreachable_nodes_get_swarmkits_warning() {
    let hosts = HashMap::from([("n3".to_string(), "node-3".to_string())]);
    assert_eq!(
        incomplete_warning(&["n3".into(), "n9".into()], &hosts),
        "warning: incomplete log stream. some logs could not be retrieved for the following \
         reasons: node n3 (node-3) is not available, node n9 is not available"
    );
}

#[test]
fn global_tasks_use_the_node_id() {
    let mut m = msg("x");
    m.slot = 0;
    let f = LineFormat::default();
    assert_eq!(
        format_message(&m, "mon", "host1", &f),
        ["mon.node1.u5d8gatt116j@host1    | x"]
    );
}

/// Go's `url.QueryUnescape`, to read raw details back.
fn query_unescape(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

proptest::proptest! {
    /// Any bytes and timestamp render without panicking; raw output of a
    /// single line without CR/LF is the line itself.
    #[test]
    fn any_message_renders(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        timestamp_ns in proptest::prelude::any::<i64>(),
        slot in proptest::prelude::any::<u64>(),
        slot_width in 0usize..30,
        flags in proptest::prelude::any::<(bool, bool, bool, bool, bool)>(),
        attrs in proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4),
    ) {
        let mut m = msg("");
        m.data = data;
        m.timestamp_ns = timestamp_ns;
        m.slot = slot;
        m.attrs = attrs.iter().map(|(k, v)| attr(k, v)).collect();
        let (no_trunc, raw, no_task_ids, timestamps, details) = flags;
        let f = LineFormat { no_trunc, raw, no_task_ids, timestamps, details, slot_width };
        let lines = format_message(&m, "web", "host1", &f);
        proptest::prop_assert!(!lines.is_empty());
        if timestamps {
            proptest::prop_assert!(lines.iter().all(|l| l.as_bytes()[29..31] == *b"Z "));
        }
    }

    #[test]
    fn a_raw_line_is_itself(line in "[^\r\n]{0,40}") {
        let f = LineFormat { raw: true, ..Default::default() };
        proptest::prop_assert_eq!(
            format_message(&msg(&format!("{line}\n")), "web", "host1", &f),
            vec![line]
        );
    }

    /// Raw details read back (split at `,` and `=`, unescaped) as the
    /// attributes and the context, sorted by key, whatever the text.
    #[test]
    fn raw_details_read_back(attrs in proptest::collection::btree_map("a[^,=]{0,8}|.{0,8}", ".{0,12}", 0..4)) {
        let mut m = msg("x");
        m.attrs = attrs.iter().map(|(k, v)| attr(k, v)).collect();
        let text = details(&m, true);
        let read: Vec<(String, String)> = text
            .split(',')
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("k=v");
                (query_unescape(k).unwrap(), query_unescape(v).unwrap())
            })
            .collect();
        let mut want: Vec<(String, String)> = attrs
            .into_iter()
            .filter(|(k, _)| ![NODE_KEY, SERVICE_KEY, TASK_KEY].contains(&k.as_str()))
            .collect();
        want.extend([
            (NODE_KEY.to_string(), m.node_id.clone()),
            (SERVICE_KEY.to_string(), m.service_id.clone()),
            (TASK_KEY.to_string(), m.task_id.clone()),
        ]);
        want.sort();
        proptest::prop_assert_eq!(read, want);
    }
}
