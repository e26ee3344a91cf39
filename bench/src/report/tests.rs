use std::time::Duration;

use super::*;

fn sample(kind: Kind, workload: Workload, value: f64) -> Sample {
    Sample {
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
    let ctx = Context {
        nproc: "2".into(),
        kernel: "6.18".into(),
        versions: vec![],
        runs: 1,
        duration: Duration::from_secs(3),
        quick: true,
        idle_connections: 10_000,
    };
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
