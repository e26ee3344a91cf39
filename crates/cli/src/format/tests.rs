use super::*;

fn port_cfg(published: u32, target: u32, proto: &str, mode: &str) -> PortConfig {
    PortConfig {
        name: String::new(),
        protocol: proto.into(),
        target_port: target,
        published_port: published,
        publish_mode: mode.into(),
        proxy_protocol: String::new(),
    }
}

#[test]
fn table_matches_docker_service_ls() {
    let mut t = Table::new(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
    t.row(vec![
        "vbrmfwap9emp".into(),
        "timecheck".into(),
        "replicated".into(),
        "1/1".into(),
        "diamol/ch12-timecheck:1.0".into(),
        String::new(),
    ]);
    let out = t.render();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "ID             NAME        MODE         REPLICAS   IMAGE                       PORTS"
    );
    assert_eq!(
        lines[1],
        "vbrmfwap9emp   timecheck   replicated   1/1        diamol/ch12-timecheck:1.0   "
    );
}

#[test]
fn table_pads_short_columns_to_ten() {
    let mut t = Table::new(&["ERROR", "PORTS"]);
    t.row(vec![String::new(), String::new()]);
    assert_eq!(t.render(), "ERROR     PORTS\n          \n");
}

#[test]
fn human_durations() {
    let s = Duration::from_secs;
    assert_eq!(
        human_duration(Duration::from_millis(300)),
        "Less than a second"
    );
    assert_eq!(human_duration(s(1)), "1 second");
    assert_eq!(human_duration(s(6)), "6 seconds");
    assert_eq!(human_duration(s(59)), "59 seconds");
    assert_eq!(human_duration(s(60)), "About a minute");
    assert_eq!(human_duration(s(119)), "About a minute");
    assert_eq!(human_duration(s(5 * 60)), "5 minutes");
    assert_eq!(human_duration(s(59 * 60 + 59)), "59 minutes");
    assert_eq!(human_duration(s(60 * 60)), "About an hour");
    assert_eq!(human_duration(s(89 * 60)), "About an hour");
    assert_eq!(human_duration(s(90 * 60)), "2 hours");
    assert_eq!(human_duration(s(47 * 3600)), "47 hours");
    assert_eq!(human_duration(s(3 * 86400)), "3 days");
    assert_eq!(human_duration(s(15 * 86400)), "2 weeks");
    assert_eq!(human_duration(s(90 * 86400)), "3 months");
    assert_eq!(human_duration(s(800 * 86400)), "2 years");
}

#[test]
fn ports_column() {
    assert_eq!(service_ports(&[]), "");
    assert_eq!(
        service_ports(&[port_cfg(8080, 80, "tcp", "ingress")]),
        "*:8080->80/tcp"
    );
    // Host-mode ports are not shown; sorted by published port.
    assert_eq!(
        service_ports(&[
            port_cfg(9090, 90, "tcp", "ingress"),
            port_cfg(8080, 80, "tcp", "ingress"),
            port_cfg(7070, 70, "tcp", "host"),
        ]),
        "*:8080->80/tcp, *:9090->90/tcp"
    );
    // Consecutive ports merge into a range.
    assert_eq!(
        service_ports(&[
            port_cfg(8080, 80, "tcp", "ingress"),
            port_cfg(8081, 81, "tcp", "ingress"),
            port_cfg(8082, 82, "tcp", "ingress"),
        ]),
        "*:8080-8082->80-82/tcp"
    );
    assert_eq!(
        service_ports(&[
            port_cfg(8080, 80, "tcp", "ingress"),
            port_cfg(8080, 80, "udp", "ingress"),
        ]),
        "*:8080->80/tcp, *:8080->80/udp"
    );
    assert_eq!(port(&port_cfg(30000, 80, "", "host")), "*:30000->80/tcp");
}

#[test]
fn timestamps_like_go() {
    assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(1_700_000_000_120), "2023-11-14T22:13:20.12Z");
    assert_eq!(rfc3339(1_700_000_000_001), "2023-11-14T22:13:20.001Z");
}

#[test]
fn natural_order() {
    assert_eq!(natural_cmp("web.2", "web.10"), Ordering::Less);
    assert_eq!(natural_cmp("web.10", "web.9"), Ordering::Greater);
    assert_eq!(natural_cmp("a", "b"), Ordering::Less);
    assert_eq!(natural_cmp("web", "web.1"), Ordering::Less);
    assert_eq!(natural_cmp("x1y", "x1y"), Ordering::Equal);
}

#[test]
fn ellipsis_and_title() {
    assert_eq!(
        ellipsis("No such container: helloworld.1.abc", 30),
        "No such container: helloworld…"
    );
    assert_eq!(ellipsis("short", 30), "short");
    assert_eq!(title("running"), "Running");
}

#[test]
fn go_durations() {
    assert_eq!(go_duration_ms(0), "0s");
    assert_eq!(go_duration_ms(500), "500ms");
    assert_eq!(go_duration_ms(5_000), "5s");
    assert_eq!(go_duration_ms(1_500), "1.5s");
    assert_eq!(go_duration_ms(1_250), "1.25s");
    assert_eq!(go_duration_ms(90_000), "1m30s");
    assert_eq!(go_duration_ms(3_600_000), "1h0m0s");
    assert_eq!(go_duration_ms(3_661_000), "1h1m1s");
}

#[test]
fn a_timestamp_past_the_year_9999_does_not_panic() {
    assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
    assert_eq!(rfc3339(253_402_300_800_000), "9999-12-31T23:59:59.999Z");
}

proptest::proptest! {
    /// Printers of daemon-given numbers never panic, whatever the number.
    #[test]
    fn printers_take_any_number(ms in proptest::prelude::any::<i64>(), n in proptest::prelude::any::<u64>()) {
        let _ = rfc3339(ms);
        let _ = human_duration(age(ms, n as i64));
        let _ = go_duration_ms(n);
    }
}

/// Docker's padding rule written out: each column but the last is its widest
/// cell plus 3, at least 10.
fn reference_render(rows: &[Vec<String>]) -> String {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            let widest = rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
            (widest + 3).max(10)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < cols {
                out.extend(std::iter::repeat_n(' ', widths[c] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

#[test]
fn a_tab_in_a_cell_does_not_split_the_row() {
    let mut t = Table::new(&["A", "B"]);
    t.row(vec!["x\ty".into(), "z\nw".into()]);
    assert_eq!(t.render(), "A         B\nx y       z w\n");
}

proptest::proptest! {
    /// The table pads exactly as Docker's tabwriter settings do.
    #[test]
    fn table_pads_as_docker(
        header in proptest::collection::vec("[A-Z ]{0,14}", 1..6),
        cells in proptest::collection::vec(proptest::collection::vec("[a-z0-9 .:/>*-]{0,20}", 6), 0..5),
    ) {
        let names: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut t = Table::new(&names);
        let mut rows = vec![header.clone()];
        for r in cells {
            let r: Vec<String> = r.into_iter().take(header.len()).collect();
            t.row(r.clone());
            rows.push(r);
        }
        proptest::prop_assert_eq!(t.render(), reference_render(&rows));
    }
}
