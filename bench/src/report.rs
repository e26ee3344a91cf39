//! Aggregation over runs (medians, min-max) and the markdown report.

use std::fmt::Write as _;
use std::time::Duration;

use crate::targets::Kind;

/// The measured workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// 64 keepalive connections, tiny responses.
    W1,
    /// 64 connections, `Connection: close`: one new TCP connection per request.
    W2,
    /// 16 connections fetching 1 MiB bodies.
    W3,
    /// 10 000 idle connections: proxy memory per connection.
    W4,
}

/// One measurement of one target in one workload.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Which of the interleaved runs (1-based) measured it.
    pub run: u32,
    pub kind: Kind,
    pub workload: Workload,
    /// req/s (W1, W2), MB/s (W3, wrk's 2^20-byte MB) or KiB per connection (W4).
    pub value: f64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// Proxy CPU time per request, in µs.
    pub cpu_us_per_req: Option<f64>,
    /// Proxy CPU seconds per GB (2^30 B) moved (W3).
    pub cpu_s_per_gb: Option<f64>,
    /// wrk socket errors and non-2xx responses; W4: idle connections found closed.
    pub errors: u64,
}

/// Header facts printed above the tables.
pub struct Context {
    pub nproc: String,
    pub kernel: String,
    pub versions: Vec<String>,
    pub runs: u32,
    pub duration: Duration,
    pub quick: bool,
    pub idle_connections: usize,
    /// The data path the `shoal` target ran, as it reported it.
    pub shoal_data_path: String,
}

/// Median, min and max of one figure over runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

// === impl Workload ===

impl Workload {
    pub const ALL: [Workload; 4] = [Workload::W1, Workload::W2, Workload::W3, Workload::W4];

    pub fn describe(self) -> &'static str {
        match self {
            Workload::W1 => "W1 keepalive req/s",
            Workload::W2 => "W2 new conn/req req/s",
            Workload::W3 => "W3 1 MiB MB/s",
            Workload::W4 => "W4 idle KiB/conn",
        }
    }
}

// === impl Stat ===

impl Stat {
    /// `None` for no values. The median of an even count is the mean of the middle two.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// Formats a figure: req/s as `44.3k`, others with one decimal below 100.
fn fmt_value(w: Workload, v: f64) -> String {
    match w {
        Workload::W1 | Workload::W2 if v >= 1000.0 => format!("{:.1}k", v / 1000.0),
        _ if v >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.1}"),
    }
}

fn fmt_latency(d: Option<f64>) -> String {
    match d {
        None => "-".into(),
        Some(s) if s < 1e-3 => format!("{:.0} µs", s * 1e6),
        Some(s) => format!("{:.2} ms", s * 1e3),
    }
}

fn samples(all: &[Sample], k: Kind, w: Workload) -> impl Iterator<Item = &Sample> {
    all.iter().filter(move |s| s.kind == k && s.workload == w)
}

fn stat(all: &[Sample], k: Kind, w: Workload, f: impl Fn(&Sample) -> Option<f64>) -> Option<Stat> {
    Stat::of(samples(all, k, w).filter_map(f))
}

/// Median figure of a target in a workload.
fn median(all: &[Sample], k: Kind, w: Workload) -> Option<f64> {
    stat(all, k, w, |s| Some(s.value)).map(|s| s.median)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

fn yes_no(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "n/a",
    }
}

/// The whole markdown report.
pub fn render(ctx: &Context, all: &[Sample]) -> String {
    let mut out = String::new();
    let _ = render_into(&mut out, ctx, all);
    out
}

fn render_into(out: &mut String, ctx: &Context, all: &[Sample]) -> std::fmt::Result {
    let kinds = [
        Kind::Direct,
        Kind::Shoal,
        Kind::Haproxy,
        Kind::HaproxySplice,
        Kind::Nginx,
        Kind::ShoalEpoll,
    ];
    writeln!(out, "## Shoal mesh vs HAProxy and nginx")?;
    writeln!(out)?;
    let what = if ctx.quick { "QUICK run: " } else { "" };
    writeln!(
        out,
        "{what}{} run(s) of {} per target and workload, interleaved; medians (min-max over runs). \
         Cores (nproc): {}. Kernel: {}. Loopback only, unpinned.",
        ctx.runs,
        humantime::format_duration(ctx.duration),
        ctx.nproc,
        ctx.kernel
    )?;
    writeln!(
        out,
        "`shoal` is the shoal-mesh code path (listener, balancer, forwarder) on its default \
         data path, here {}, in a child process fed a one-service routing table, not a full cluster.",
        ctx.shoal_data_path
    )?;
    writeln!(out, "Versions: {}.", ctx.versions.join("; "))?;
    writeln!(out)?;
    writeln!(
        out,
        "| workload | target | median | min-max | p50 | p99 | proxy CPU µs/req | errors |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for w in Workload::ALL {
        for k in kinds {
            let Some(v) = stat(all, k, w, |s| Some(s.value)) else {
                continue;
            };
            let p50 = stat(all, k, w, |s| s.p50.map(|d| d.as_secs_f64())).map(|s| s.median);
            let p99 = stat(all, k, w, |s| s.p99.map(|d| d.as_secs_f64())).map(|s| s.median);
            let cpu = stat(all, k, w, |s| s.cpu_us_per_req).map(|s| s.median);
            let gb = stat(all, k, w, |s| s.cpu_s_per_gb).map(|s| s.median);
            let cpu = match (cpu, gb) {
                (Some(c), Some(g)) => format!("{c:.1} ({g:.2} CPU-s/GB)"),
                (Some(c), None) => format!("{c:.1}"),
                _ => "-".into(),
            };
            let errors: u64 = samples(all, k, w).map(|s| s.errors).sum();
            writeln!(
                out,
                "| {} | {} | {} | {}-{} | {} | {} | {} | {} |",
                w.describe(),
                k.name(),
                fmt_value(w, v.median),
                fmt_value(w, v.min),
                fmt_value(w, v.max),
                fmt_latency(p50),
                fmt_latency(p99),
                cpu,
                errors
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "| workload | Shoal/HAProxy | Shoal/nginx | Shoal/HAProxy-splice | Shoal CPU/req vs HAProxy | target | met |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    let cpu_med = |k, w| stat(all, k, w, |s| s.cpu_us_per_req).map(|s| s.median);
    let mut misses = Vec::new();
    for w in Workload::ALL {
        let shoal = median(all, Kind::Shoal, w);
        if shoal.is_none() {
            continue;
        }
        let vs_h = ratio(shoal, median(all, Kind::Haproxy, w));
        let vs_n = ratio(shoal, median(all, Kind::Nginx, w));
        let vs_s = ratio(shoal, median(all, Kind::HaproxySplice, w));
        let cpu = ratio(cpu_med(Kind::Shoal, w), cpu_med(Kind::Haproxy, w));
        let (target, met) = match w {
            Workload::W1 | Workload::W2 => (
                ">= 1.0x HAProxy and nginx, CPU/req <= HAProxy",
                vs_h.zip(vs_n)
                    .zip(cpu)
                    .map(|((h, n), c)| h >= 1.0 && n >= 1.0 && c <= 1.0),
            ),
            Workload::W3 => (">= HAProxy with splice", vs_s.map(|s| s >= 1.0)),
            Workload::W4 => ("<= 16 KiB per idle connection", shoal.map(|v| v <= 16.0)),
        };
        if met == Some(false) {
            misses.push(w.describe());
        }
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            w.describe(),
            fmt_ratio(vs_h),
            fmt_ratio(vs_n),
            fmt_ratio(vs_s),
            fmt_ratio(cpu),
            target,
            yes_no(met)
        )?;
    }
    let shoal_errors: u64 = all
        .iter()
        .filter(|s| s.kind == Kind::Shoal)
        .map(|s| s.errors)
        .sum();
    writeln!(out)?;
    writeln!(
        out,
        "Zero errors through Shoal: {} ({shoal_errors} errors). W4 holds {} idle connections per proxy; \
         its ratios are memory (lower is better).",
        yes_no(Some(shoal_errors == 0)),
        ctx.idle_connections
    )?;
    render_paired(out, all)?;
    if misses.is_empty() && shoal_errors == 0 {
        writeln!(out, "All targets met in this run.")?;
    } else {
        writeln!(out, "Targets missed in this run: {}.", misses.join(", "))?;
    }
    Ok(())
}

/// Shoal's figure over a peer's from the same run, for each run that
/// measured both.
fn paired_ratios(all: &[Sample], peer: Kind, w: Workload) -> Vec<f64> {
    samples(all, Kind::Shoal, w)
        .filter_map(|s| {
            let p = samples(all, peer, w).find(|p| p.run == s.run)?;
            ratio(Some(s.value), Some(p.value))
        })
        .collect()
}

/// The per-run ratios behind the medians: how far one run's ratio moves, and
/// in how many runs Shoal was ahead. Printed for two runs or more.
fn render_paired(out: &mut String, all: &[Sample]) -> std::fmt::Result {
    let pairs = [
        (Workload::W1, Kind::Haproxy),
        (Workload::W1, Kind::Nginx),
        (Workload::W2, Kind::Haproxy),
        (Workload::W2, Kind::Nginx),
        (Workload::W3, Kind::HaproxySplice),
    ];
    let rows: Vec<_> = pairs
        .into_iter()
        .map(|(w, peer)| (w, peer, paired_ratios(all, peer, w)))
        .filter(|(_, _, r)| r.len() >= 2)
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "Per-run ratios (Shoal over the peer measured in the same run, next to it):"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| workload | peer | median of per-run ratios | runs with Shoal ahead | min-max |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    for (w, peer, r) in rows {
        let Some(st) = Stat::of(r.iter().copied()) else {
            continue;
        };
        writeln!(
            out,
            "| {} | {} | {} | {} of {} | {}-{} |",
            w.describe(),
            peer.name(),
            fmt_ratio(Some(st.median)),
            r.iter().filter(|&&x| x >= 1.0).count(),
            r.len(),
            fmt_ratio(Some(st.min)),
            fmt_ratio(Some(st.max)),
        )?;
    }
    writeln!(out)
}

#[cfg(test)]
mod tests;
