use super::data::{from_json, go_duration_ns, parse_go_duration_ns};
use super::*;

fn render(tmpl: &str, v: &serde_json::Value) -> anyhow::Result<String> {
    Template::parse(tmpl)?.render(&from_json(v))
}

fn sample() -> serde_json::Value {
    serde_json::json!({
        "ID": "abc",
        "CreatedAt": "2026-12-07T16:52:55.123Z",
        "Spec": {
            "Name": "web",
            "Labels": {"Delay": "x", "b": "2", "a": "1"},
            "Args": ["sh", "-c", "sleep 1"],
            "RestartPolicy": {"Condition": "any", "Delay": 5_000_000_000u64, "MaxAttempts": 0},
        },
        "Nothing": null,
    })
}

#[test]
fn paths_functions_and_builtins() {
    let v = sample();
    assert_eq!(render("{{.Spec.Name}}", &v).unwrap(), "web");
    assert_eq!(render("{{ .Spec.Name | upper }}", &v).unwrap(), "WEB");
    assert_eq!(
        render("{{title \"hello wide world\"}}", &v).unwrap(),
        "Hello Wide World"
    );
    assert_eq!(render("{{lower \"ABC\"}}", &v).unwrap(), "abc");
    assert_eq!(
        render("{{join .Spec.Args \",\"}}", &v).unwrap(),
        "sh,-c,sleep 1"
    );
    assert_eq!(
        render("{{index (split \"a:b\" \":\") 1}}", &v).unwrap(),
        "b"
    );
    assert_eq!(render("[{{pad .ID 1 2}}]", &v).unwrap(), "[ abc  ]");
    assert_eq!(render("{{truncate .ID 2}}", &v).unwrap(), "ab");
    assert_eq!(
        render("{{printf \"%s-%s\" .ID .Spec.Name}}", &v).unwrap(),
        "abc-web"
    );
    assert_eq!(render("{{len .Spec.Args}}", &v).unwrap(), "3");
    assert_eq!(render("{{println .ID}}", &v).unwrap(), "abc\n");
    assert_eq!(
        render("{{range .Spec.Args}}<{{.}}>{{end}}", &v).unwrap(),
        "<sh><-c><sleep 1>"
    );
    assert_eq!(
        render("{{if eq .Spec.Name \"web\"}}yes{{else}}no{{end}}", &v).unwrap(),
        "yes"
    );
    assert_eq!(render("{{$n := .Spec.Name}}{{$n}}", &v).unwrap(), "web");
    assert_eq!(render("{{- .ID -}} {{/* note */}}", &v).unwrap(), "abc");
    assert_eq!(render("{{\"}}\"}}", &v).unwrap(), "}}");
}

#[test]
fn values_print_as_go_prints_them() {
    let v = sample();
    assert_eq!(
        render("{{.Spec.Labels}}", &v).unwrap(),
        "map[Delay:x a:1 b:2]"
    );
    assert_eq!(render("{{.Spec.Args}}", &v).unwrap(), "[sh -c sleep 1]");
    assert_eq!(render("{{.Nothing}}", &v).unwrap(), "<nil>");
}

#[test]
fn durations_and_times_as_go_shows_them_json_as_docker_writes_it() {
    let v = sample();
    assert_eq!(render("{{.Spec.RestartPolicy.Delay}}", &v).unwrap(), "5s");
    assert_eq!(
        render("{{.CreatedAt}}", &v).unwrap(),
        "2026-12-07 16:52:55.123 +0000 UTC"
    );
    let back: serde_json::Value = serde_json::from_str(&render("{{json .}}", &v).unwrap()).unwrap();
    assert_eq!(back, v);
    assert_eq!(
        render("{{json .Spec.RestartPolicy}}", &v).unwrap(),
        r#"{"Condition":"any","Delay":5000000000,"MaxAttempts":0}"#
    );
}

#[test]
fn a_missing_field_fails_with_dockers_words() {
    let v = sample();
    let err = render("{{.Nope}}", &v).unwrap_err().to_string();
    assert_eq!(
        err,
        r#"template: :1:2: executing "" at <.Nope>: map has no entry for key "Nope""#
    );
    let err = render("x\n  {{.Spec.Nope}}", &v).unwrap_err().to_string();
    assert_eq!(
        err,
        r#"template: :2:4: executing "" at <.Spec.Nope>: map has no entry for key "Nope""#
    );
    assert!(Template::parse("{{.ID").is_err());
    // Unclosed actions the engine would spin on are refused before it runs.
    assert!(Template::parse("{{.").is_err());
    assert!(Template::parse("x {{-").is_err());
    assert!(Template::parse("{{range .X}}").is_err());
    assert!(render("{{nope .ID}}", &v).is_err());
}

#[test]
fn go_durations_round_trip() {
    for (ns, s) in [
        (0, "0s"),
        (1_500, "1.5µs"),
        (500_000_000, "500ms"),
        (5_000_000_000, "5s"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
    ] {
        assert_eq!(go_duration_ns(ns), s);
        assert_eq!(parse_go_duration_ns(s), Some(ns));
    }
    assert_eq!(parse_go_duration_ns("5"), None);
    assert_eq!(parse_go_duration_ns("x5s"), None);
}

#[test]
fn list_formats() {
    let rows: Vec<listing::Row> = vec![
        vec![("ID", Value::from("a1")), ("Name", Value::from("web"))],
        vec![("ID", Value::from("b2")), ("Name", Value::from("api"))],
    ];
    let headers = [("ID", "ID"), ("Name", "NAME")];
    assert_eq!(
        listing::render("table {{.ID}}\\t{{.Name}}", &headers, &rows).unwrap(),
        "ID        NAME\na1        web\nb2        api\n"
    );
    assert_eq!(
        listing::render("json", &headers, &rows).unwrap(),
        "{\"ID\":\"a1\",\"Name\":\"web\"}\n{\"ID\":\"b2\",\"Name\":\"api\"}\n"
    );
    assert_eq!(
        listing::render("{{.Name}}: {{.ID}}", &headers, &rows).unwrap(),
        "web: a1\napi: b2\n"
    );
    assert!(listing::render("{{.Nope}}", &headers, &rows).is_err());
    assert!(listing::is_default(None));
    assert!(listing::is_default(Some("table")));
    assert!(listing::is_default(Some("")));
    assert!(!listing::is_default(Some("table {{.ID}}")));
}

proptest::proptest! {
    /// Any template text is rendered or refused, never a panic.
    #[test]
    fn any_template_renders_or_is_refused(
        tmpl in "(\\{\\{-? ?|\\}\\}| ?-?\\}\\}|json |upper |pad |truncate |\\$x :?= |\\.[A-Za-z]{0,6}|\"[a-z}]{0,3}\"|[ a-z.{}|()0-9-]){0,14}|.{0,40}"
    ) {
        if let Ok(t) = Template::parse(&tmpl) {
            let _ = t.render(&from_json(&sample()));
        }
    }

    /// Go durations print and parse back.
    #[test]
    fn durations_round_trip(ns in 0u64..u64::MAX / 2) {
        proptest::prop_assert_eq!(parse_go_duration_ns(&go_duration_ns(ns)), Some(ns));
    }

    /// The duration parser takes any text without panicking.
    #[test]
    fn duration_parser_takes_any_text(s in ".{0,30}") {
        let _ = parse_go_duration_ns(&s);
    }
}
