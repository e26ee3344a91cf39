use super::*;

#[test]
fn nearest_rank_percentiles() {
    let v: Vec<f64> = (1..=200).map(f64::from).collect();
    assert_eq!(percentile(&v, 50.0), Some(100.0));
    assert_eq!(percentile(&v, 99.0), Some(198.0));
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert_eq!(percentile(&v, 100.0), Some(200.0));
    assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(percentile(&[f64::NAN, 4.0], 99.0), Some(4.0));
}

#[test]
fn rows_format_their_units() {
    let r = runs_row(
        "create",
        &[
            Duration::from_millis(12_400),
            Duration::from_millis(9_000),
            Duration::from_millis(15_000),
        ],
        "x",
    );
    assert_eq!(r.median, "12.4 s");
    assert_eq!(r.range, "9.000 s-15.0 s");
    assert_eq!(r.n, "3");
    let l = latency_row("feed", &[0.0042, 0.231, 0.1], "y");
    assert_eq!(l.p50, "100 ms");
    assert_eq!(l.p99, "231 ms");
    assert_eq!(l.range, "4.2 ms-231 ms");
}

#[test]
fn table_has_a_line_per_row_and_dashes_for_empty_cells() {
    let ctx = Context {
        quick: true,
        nproc: "2".into(),
        cpu: "cpu".into(),
        kernel: "6".into(),
        load: "1.0".into(),
    };
    let rows = vec![value_row("rss", "12 MiB".into(), "VmRSS")];
    let md = render(&ctx, &rows, &["a note".into()]);
    assert!(md.contains("QUICK run."), "{md}");
    assert!(
        md.contains("| rss | 12 MiB | - | - | - | 1 | VmRSS |"),
        "{md}"
    );
    assert!(md.contains("- a note"), "{md}");
}
