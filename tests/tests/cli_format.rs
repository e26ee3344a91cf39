//! `--format` and `-f/--filter` of the list commands and `inspect`, end to
//! end on one node: Docker's placeholders, `table`, `json`, template errors,
//! filters and their error wording, and `service ps -q` printing whole IDs.

use std::time::Duration;

use shoal_testkit::{assert_eventually, require_root, text, Cluster};

#[test]
fn list_formats_filters_and_template_errors() {
    if !require_root("list_formats_filters_and_template_errors") {
        return;
    }
    let c = Cluster::single("clifmt");
    let n = &c.node;
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "-l",
        "tier=front",
        "shoal/echo",
    ]);
    n.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "mon",
        "--mode",
        "global",
        "shoal/echo",
    ]);
    let web_id = n
        .shoal_ok(&["service", "inspect", "-f", "{{.ID}}", "web"])
        .trim()
        .to_string();

    // service ls: a template, a table, one JSON object per line.
    assert_eq!(
        n.shoal_ok(&["service", "ls", "--format", "{{.Name}} {{.Mode}}"]),
        "mon global\nweb replicated\n"
    );
    let table = n.shoal_ok(&["service", "ls", "--format", "table {{.Name}}\t{{.Image}}"]);
    assert_eq!(
        table,
        "NAME      IMAGE\nmon       shoal/echo\nweb       shoal/echo\n"
    );
    let json = n.shoal_ok(&["service", "ls", "--format", "json", "-f", "name=we"]);
    let row: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(row["Name"], "web");
    assert_eq!(row["ID"], &web_id[..12]);
    let mut keys: Vec<&String> = row.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["ID", "Image", "Mode", "Name", "Ports", "Replicas"]);

    // service ls filters.
    let names = |args: &[&str]| {
        let mut all = vec!["service", "ls", "--format", "{{.Name}}"];
        all.extend_from_slice(args);
        n.shoal_ok(&all)
    };
    assert_eq!(names(&["-f", "label=tier=front"]), "web\n");
    assert_eq!(names(&["-f", "mode=global"]), "mon\n");
    assert_eq!(names(&["-f", &format!("id={}", &web_id[..5])]), "web\n");
    assert_eq!(names(&["-f", "name=nope"]), "");
    let out = n.shoal(&["service", "ls", "-f", "x=1"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("Error response from daemon: invalid filter 'x'"),
        "{stderr}"
    );
    let out = n.shoal(&["service", "ls", "-f", "nope"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("bad format of filter (expected name=value)"),
        "{stderr}"
    );

    // node ls: format and filters.
    let hostname = n.shoal_ok(&["node", "ls", "--format", "{{.Hostname}}"]);
    assert_eq!(hostname.lines().count(), 1);
    assert_eq!(
        n.shoal_ok(&["node", "ls", "--format", "{{.Self}} {{.ManagerStatus}}"]),
        "true Leader\n"
    );
    assert_eq!(
        n.shoal_ok(&["node", "ls", "-q", "-f", "role=worker"]),
        "",
        "a manager is not a worker"
    );
    assert_eq!(
        n.shoal_ok(&["node", "ls", "-q", "-f", "role=manager"])
            .lines()
            .count(),
        1
    );
    let out = n.shoal(&["node", "ls", "-f", "role=boss"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("Error response from daemon: Invalid role filter: 'boss'"),
        "{stderr}"
    );

    // service ps: -q prints whole task IDs; --format with Docker's placeholders.
    assert_eventually("web's tasks run", Duration::from_secs(30), || {
        let states = n.shoal_ok(&[
            "service",
            "ps",
            "web",
            "--format",
            "{{.Name}} {{.DesiredState}}",
        ]);
        if states == "web.1 Running\nweb.2 Running\n" {
            Ok(())
        } else {
            Err(states)
        }
    });
    // `--format table` is the plain table.
    assert_eq!(
        n.shoal_ok(&["service", "ls", "--format", "table", "-f", "name=web"]),
        n.shoal_ok(&["service", "ls", "-f", "name=web"])
    );
    for id in n.shoal_ok(&["service", "ps", "-q", "web"]).lines() {
        assert_eq!(id.len(), 25, "{id}");
        let json = n.shoal_ok(&[
            "service",
            "ps",
            "--format",
            "json",
            "-f",
            &format!("id={id}"),
            "web",
        ]);
        let row: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(row["ID"], &id[..12]);
    }
    assert_eq!(
        n.shoal_ok(&["node", "ps", "--format", "{{.Name}}", "-f", "name=web"]),
        "web.1\nweb.2\n"
    );

    // inspect templates: Go's durations and times, Docker's JSON, functions.
    assert_eq!(
        n.shoal_ok(&[
            "service",
            "inspect",
            "-f",
            "{{.Spec.TaskTemplate.RestartPolicy.Delay}}",
            "web"
        ]),
        "5s\n"
    );
    assert_eq!(
        n.shoal_ok(&[
            "service",
            "inspect",
            "-f",
            "{{json .Spec.TaskTemplate.RestartPolicy}}",
            "web"
        ]),
        "{\"Condition\":\"any\",\"Delay\":5000000000,\"MaxAttempts\":0}\n"
    );
    let created = n.shoal_ok(&["service", "inspect", "-f", "{{.CreatedAt}}", "web"]);
    assert!(created.trim_end().ends_with(" +0000 UTC"), "{created}");
    assert_eq!(
        n.shoal_ok(&[
            "service",
            "inspect",
            "-f",
            "{{upper .Spec.Name}} {{index .Spec.Labels \"tier\"}} {{len .Spec.Labels}}",
            "web"
        ]),
        "WEB front 1\n"
    );
    let out = n.shoal(&["inspect", "-f", "{{.Nope}}", "web"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "template: :1:2: executing \"\" at <.Nope>: map has no entry for key \"Nope\""
    );
}
