use super::*;

fn parse(values: &[&str], accepted: &[&str]) -> anyhow::Result<ListFilter> {
    let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    ListFilter::parse(&values, accepted)
}

#[test]
fn keys_values_and_matching() {
    let f = parse(
        &["name=we", "NAME = ap ", "label=tier", "label=env=prod"],
        &["name", "label"],
    )
    .unwrap();
    assert!(f.prefix("name", "web"));
    assert!(f.prefix("name", "api"));
    assert!(!f.prefix("name", "db"));
    assert!(f.prefix("id", "anything"));
    let labels: HashMap<String, String> = [("tier", "front"), ("env", "prod")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(f.labels("label", &labels));
    let mut other = labels.clone();
    other.insert("env".into(), "dev".into());
    assert!(!f.labels("label", &other));
}

#[test]
fn bad_filters_use_dockers_words() {
    let err = parse(&["x=1"], &["name", "id"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Error response from daemon: invalid filter 'x' (this command filters on name, id)"
    );
    assert!(!opts::is_flag_error(&err));
    let err = parse(&["nope"], &["name"]).unwrap_err();
    assert!(opts::is_flag_error(&err));
    assert!(
        err.to_string()
            .contains("bad format of filter (expected name=value)"),
        "{err}"
    );
    let f = parse(&["role=boss"], &["role"]).unwrap();
    assert_eq!(
        f.check_values("role", "role", crate::names::parse_role)
            .unwrap_err()
            .to_string(),
        "Error response from daemon: Invalid role filter: 'boss'"
    );
    assert!(parse(&[&"a".repeat(2000)], &["name"]).is_err());
}

proptest::proptest! {
    /// Any `-f` values are parsed or refused with one line, never a panic.
    #[test]
    fn any_filter_is_parsed_or_refused(values in proptest::collection::vec(".{0,40}", 0..5)) {
        let values: Vec<String> = values;
        match ListFilter::parse(&values, &["id", "name", "label", "mode"]) {
            Ok(f) => {
                let _ = f.prefix("name", "web");
                let _ = f.labels("label", &HashMap::new());
                let _ = f.check_values("mode", "mode", crate::names::parse_mode);
            }
            Err(e) => proptest::prop_assert!(!e.to_string().contains('\n')),
        }
    }
}
