use std::time::Duration;

use super::*;

fn sample(kind: Kind, workload: Workload, value: f64) -> Sample {
    Sample {
        run: 1,
        kind,
        workload,
        value,
        p50: Some(Duration::from_micros(500)),
        p99: Some(Duration::from_millis(2)),
        cpu_us_per_req: Some(10.0),
        cpu_s_per_gb: None,
        errors: 0,
    }
}

/// Report header facts for `runs` runs of `secs` seconds.
fn context(runs: u32, secs: u64, quick: bool) -> Context {
    Context {
        nproc: "2".into(),
        kernel: "6.18".into(),
        versions: vec![],
        runs,
        duration: Duration::from_secs(secs),
        quick,
        idle_connections: 10_000,
        shoal_data_path: "io_uring".into(),
    }
}

#[test]
fn stat_takes_median_min_max() {
    assert_eq!(
        Stat::of([3.0, 1.0, 2.0]),
        Some(Stat {
            median: 2.0,
            min: 1.0,
            max: 3.0
        })
    );
    assert_eq!(Stat::of([1.0, 4.0]).unwrap().median, 2.5);
    assert_eq!(Stat::of([]), None);
}

#[test]
fn report_has_ratios_and_verdicts() {
    let all = vec![
        sample(Kind::Shoal, Workload::W1, 50_000.0),
        sample(Kind::Haproxy, Workload::W1, 40_000.0),
        sample(Kind::Nginx, Workload::W1, 60_000.0),
        sample(Kind::Shoal, Workload::W4, 20.0),
    ];
    let ctx = context(1, 3, true);
    let md = render(&ctx, &all);
    assert!(
        md.contains("| W1 keepalive req/s | shoal | 50.0k |"),
        "{md}"
    );
    assert!(md.contains("1.25x"), "{md}");
    assert!(md.contains("0.83x"), "{md}");
    assert!(md.contains("QUICK run"), "{md}");
    assert!(
        md.contains("Targets missed in this run: W1 keepalive req/s, W4 idle KiB/conn."),
        "{md}"
    );
}

#[test]
fn per_run_ratios_pair_samples_of_the_same_run() {
    let run = |run, kind, value| Sample {
        run,
        ..sample(kind, Workload::W2, value)
    };
    // The medians are level (1.00x) but Shoal led in two of three runs.
    let all = vec![
        run(1, Kind::Shoal, 110.0),
        run(1, Kind::Haproxy, 100.0),
        run(2, Kind::Shoal, 90.0),
        run(2, Kind::Haproxy, 120.0),
        run(3, Kind::Shoal, 100.0),
        run(3, Kind::Haproxy, 90.0),
        run(3, Kind::Nginx, 50.0),
    ];
    let r = paired_ratios(&all, Kind::Haproxy, Workload::W2);
    assert_eq!(r, vec![1.1, 0.75, 100.0 / 90.0]);
    let ctx = context(3, 10, false);
    let md = render(&ctx, &all);
    assert!(
        md.contains("| W2 new conn/req req/s | haproxy | 1.10x | 2 of 3 | 0.75x-1.11x |"),
        "{md}"
    );
    // nginx ran once only: no per-run row for it.
    let per_run = md.split("Per-run ratios").nth(1).unwrap();
    assert!(!per_run.contains("| nginx |"), "{md}");
}

#[test]
fn a_single_run_prints_no_per_run_table() {
    let all = vec![
        sample(Kind::Shoal, Workload::W1, 50_000.0),
        sample(Kind::Haproxy, Workload::W1, 40_000.0),
    ];
    let ctx = context(1, 3, true);
    assert!(!render(&ctx, &all).contains("Per-run ratios"));
}
