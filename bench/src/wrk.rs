//! Running wrk and parsing its report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

/// What one wrk run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkResult {
    /// Completed requests.
    pub requests: u64,
    pub requests_per_sec: f64,
    /// Response bytes per second: exact when the run used the
    /// [`SUMMARY_SCRIPT`], else from wrk's rounded `Transfer/sec` line.
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
    /// The [`SUMMARY_SCRIPT`] written by [`write_summary_script`], if any.
    pub script: Option<&'a Path>,
}

/// A wrk script whose `done` hook prints the exact byte count and run time.
/// wrk's own `Transfer/sec` line keeps two decimals of its largest unit, so
/// around 2 GB/s it moves in steps of 10 MiB/s (three HAProxy runs of one
/// full run all read 2232.3 MB/s). It defines no per-request hook, so wrk
/// keeps its fast path.
pub const SUMMARY_SCRIPT: &str = "done = function(summary, latency, requests)
  io.write(string.format(\"shoal-summary: bytes %d duration_us %d\\n\", summary.bytes, summary.duration))
end
";

/// Writes [`SUMMARY_SCRIPT`] into `dir` and returns its path.
pub fn write_summary_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("summary.lua");
    std::fs::write(&path, SUMMARY_SCRIPT).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
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
    if let Some(script) = args.script {
        cmd.arg("-s").arg(script);
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
    let mut exact_transfer = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.requests_per_sec = v.trim().parse().context("Requests/sec")?;
            saw_rps = true;
        } else if let Some(v) = line.strip_prefix("shoal-summary:") {
            exact_transfer = Some(parse_summary(v).context("shoal-summary line")?);
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
    if let Some(t) = exact_transfer {
        r.transfer_per_sec = t;
    }
    Ok(r)
}

/// Bytes per second from the [`SUMMARY_SCRIPT`]'s line:
/// `bytes 2455768064 duration_us 10000512`.
fn parse_summary(v: &str) -> anyhow::Result<f64> {
    let mut words = v.split_whitespace();
    let mut field = |name: &str| -> anyhow::Result<f64> {
        match (words.next(), words.next()) {
            (Some(n), Some(x)) if n == name => x.parse().with_context(|| format!("{name} {x:?}")),
            _ => bail!("expected `{name} <integer>` in {v:?}"),
        }
    };
    let bytes = field("bytes")?;
    let micros = field("duration_us")?;
    if micros <= 0.0 {
        bail!("duration_us is 0 in {v:?}");
    }
    Ok(bytes * 1e6 / micros)
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
