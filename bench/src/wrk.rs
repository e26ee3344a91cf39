//! Running wrk and parsing its report.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

/// What one wrk run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkResult {
    /// Completed requests.
    pub requests: u64,
    pub requests_per_sec: f64,
    /// Response bytes per second (wrk's binary units: 1 MB = 2^20 B).
    pub transfer_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    pub errors: u64,
}

/// One wrk invocation.
pub struct WrkArgs<'a> {
    pub url: &'a str,
    pub connections: u32,
    pub duration: Duration,
    /// Send `Connection: close`: one new TCP connection per request.
    pub close: bool,
}

/// Runs `wrk -t1 --latency` and parses its output.
pub fn run(args: &WrkArgs<'_>) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.arg("-t1")
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.duration.as_secs().max(1)))
        .arg("--latency")
        .arg("--timeout")
        .arg("5s");
    if args.close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(args.url);
    let out = cmd.output().context("run wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk {} failed ({}): {}{}",
            args.url,
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("parse wrk output:\n{stdout}"))
}

/// Parses wrk's text report (run with `--latency`).
pub fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let (mut saw_rps, mut saw_p50, mut saw_p99) = (false, false, false);
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.requests_per_sec = v.trim().parse().context("Requests/sec")?;
            saw_rps = true;
        } else if let Some(v) = line.strip_prefix("Transfer/sec:") {
            r.transfer_per_sec = parse_bytes(v.trim()).context("Transfer/sec")?;
        } else if let Some(v) = line.strip_prefix("50%") {
            r.p50 = parse_time(v.trim()).context("50% latency")?;
            saw_p50 = true;
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99 = parse_time(v.trim()).context("99% latency")?;
            saw_p99 = true;
        } else if line.contains(" requests in ") {
            r.requests = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .context("request count")?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                let n: u64 = part
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("socket error count in {part:?}"))?;
                r.errors += n;
            }
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().context("non-2xx count")?;
        }
    }
    if !(saw_rps && saw_p50 && saw_p99) {
        bail!("no Requests/sec or latency distribution in wrk output");
    }
    Ok(r)
}

/// Parses wrk's binary-unit sizes: `512.00B`, `12.36KB`, `1.50GB`.
pub fn parse_bytes(s: &str) -> anyhow::Result<f64> {
    let s = s.strip_suffix('B').context("size without B suffix")?;
    let (num, scale) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1024f64),
        Some('M') => (&s[..s.len() - 1], 1024f64.powi(2)),
        Some('G') => (&s[..s.len() - 1], 1024f64.powi(3)),
        Some('T') => (&s[..s.len() - 1], 1024f64.powi(4)),
        _ => (s, 1.0),
    };
    Ok(num.parse::<f64>().with_context(|| format!("size {s:?}"))? * scale)
}

/// Parses wrk's times: `730.00us`, `1.45ms`, `2.00s`, `1.00m`.
pub fn parse_time(s: &str) -> anyhow::Result<Duration> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("time {s:?} without unit"))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().with_context(|| format!("time {s:?}"))?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => bail!("unknown time unit in {s:?}"),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests;
