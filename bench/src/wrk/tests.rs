use std::time::Duration;

use super::*;

const KEEPALIVE: &str = "Running 10s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   755.73us  201.12us   5.02ms   77.23%
    Req/Sec    85.12k     3.42k   90.28k    73.00%
  Latency Distribution
     50%  730.00us
     75%  837.00us
     90%    0.96ms
     99%    1.45ms
  847095 requests in 10.00s, 123.57MB read
Requests/sec:  84708.87
Transfer/sec:     12.36MB
";

#[test]
fn parses_keepalive_report() {
    let r = parse(KEEPALIVE).unwrap();
    assert_eq!(r.requests, 847_095);
    assert!((r.requests_per_sec - 84708.87).abs() < 1e-6);
    assert!((r.transfer_per_sec - 12.36 * 1024.0 * 1024.0).abs() < 1.0);
    assert_eq!(r.p50, Duration::from_micros(730));
    assert_eq!(r.p99, Duration::from_micros(1450));
    assert_eq!(r.errors, 0);
}

#[test]
fn counts_socket_errors_and_non_2xx() {
    let text = format!(
        "{KEEPALIVE}  Socket errors: connect 1, read 2, write 3, timeout 4\n  Non-2xx or 3xx responses: 5\n"
    );
    assert_eq!(parse(&text).unwrap().errors, 15);
}

#[test]
fn parses_units() {
    assert_eq!(parse_bytes("512.00B").unwrap(), 512.0);
    assert_eq!(parse_bytes("2.00KB").unwrap(), 2048.0);
    assert_eq!(parse_bytes("1.50GB").unwrap(), 1.5 * 1024f64.powi(3));
    assert_eq!(parse_time("2.00s").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_time("1.00m").unwrap(), Duration::from_secs(60));
    assert!(parse_time("3.0xs").is_err());
    assert!(parse_bytes("12").is_err());
}

#[test]
fn rejects_output_without_figures() {
    assert!(parse("unable to connect to 127.0.0.1:1 Connection refused\n").is_err());
}

#[test]
fn the_summary_line_replaces_the_rounded_transfer_rate() {
    // wrk rounds Transfer/sec to 2.13GB here; the summary gives the exact rate.
    let text = KEEPALIVE.replace("12.36MB", "2.13GB")
        + "shoal-summary: bytes 23409000000 duration_us 10000000\n";
    let r = parse(&text).unwrap();
    assert!((r.transfer_per_sec - 2_340_900_000.0).abs() < 1e-3);
    assert!(parse(&(KEEPALIVE.to_owned() + "shoal-summary: bytes 1 duration_us 0\n")).is_err());
    assert!(parse(&(KEEPALIVE.to_owned() + "shoal-summary: bytes x\n")).is_err());
}

#[test]
fn the_summary_script_prints_the_line_parse_reads() {
    // The script's format string and the parser must agree on the field names.
    assert!(SUMMARY_SCRIPT.contains("shoal-summary: bytes %d duration_us %d"));
    let dir = tempfile::tempdir().unwrap();
    let path = write_summary_script(dir.path()).unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), SUMMARY_SCRIPT);
}
