//! The control-plane report: percentiles and one markdown table.

use std::fmt::Write as _;
use std::time::Duration;

/// One line of the table; empty cells print as `-`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub figure: String,
    pub median: String,
    pub range: String,
    pub p50: String,
    pub p99: String,
    /// Samples behind the figure.
    pub n: String,
    /// How it was measured, or what went wrong.
    pub how: String,
}

/// Header facts printed above the table.
pub struct Context {
    pub quick: bool,
    pub nproc: String,
    pub cpu: String,
    pub kernel: String,
    pub load: String,
}

/// The `p`-th percentile (nearest rank) of `v`; `None` when empty.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Seconds with a precision that suits the size: `0.231 s`, `12.4 s`, `154 s`.
pub fn secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.3} s")
    } else if s < 100.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

/// Milliseconds: `4.2 ms`, `231 ms`.
pub fn millis(s: f64) -> String {
    let ms = s * 1e3;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// A row of durations: median and min-max over a few runs.
pub fn runs_row(figure: &str, samples: &[Duration], how: &str) -> Row {
    let v: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    let (min, max) = (percentile(&v, 0.0), percentile(&v, 100.0));
    Row {
        figure: figure.into(),
        median: percentile(&v, 50.0).map(secs).unwrap_or_default(),
        range: min
            .zip(max)
            .map(|(a, b)| format!("{}-{}", secs(a), secs(b)))
            .unwrap_or_default(),
        n: v.len().to_string(),
        how: how.into(),
        ..Default::default()
    }
}

/// A row of latencies: p50, p99 and min-max over many samples.
pub fn latency_row(figure: &str, samples: &[f64], how: &str) -> Row {
    let (min, max) = (percentile(samples, 0.0), percentile(samples, 100.0));
    let p50 = percentile(samples, 50.0);
    Row {
        figure: figure.into(),
        median: p50.map(millis).unwrap_or_default(),
        range: min
            .zip(max)
            .map(|(a, b)| format!("{}-{}", millis(a), millis(b)))
            .unwrap_or_default(),
        p50: p50.map(millis).unwrap_or_default(),
        p99: percentile(samples, 99.0).map(millis).unwrap_or_default(),
        n: samples.len().to_string(),
        how: how.into(),
    }
}

/// A row with one value.
pub fn value_row(figure: &str, value: String, how: &str) -> Row {
    Row {
        figure: figure.into(),
        median: value,
        n: "1".into(),
        how: how.into(),
        ..Default::default()
    }
}

fn cell(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// The whole markdown report.
pub fn render(ctx: &Context, rows: &[Row], notes: &[String]) -> String {
    let mut out = String::new();
    let _ = render_into(&mut out, ctx, rows, notes);
    out
}

fn render_into(
    out: &mut String,
    ctx: &Context,
    rows: &[Row],
    notes: &[String],
) -> std::fmt::Result {
    writeln!(out, "## Shoal control plane")?;
    writeln!(out)?;
    let what = if ctx.quick { "QUICK run. " } else { "" };
    writeln!(
        out,
        "{what}Cores (nproc): {}. CPU: {}. Kernel: {}. Load average at start: {}. \
         Every node is a real `shoald` in its own network namespace; simulated agents \
         share the same cores.",
        ctx.nproc, ctx.cpu, ctx.kernel, ctx.load
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| figure | median | min-max | p50 | p99 | n | how measured |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for r in rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.figure),
            cell(&r.median),
            cell(&r.range),
            cell(&r.p50),
            cell(&r.p99),
            cell(&r.n),
            cell(&r.how)
        )?;
    }
    if !notes.is_empty() {
        writeln!(out)?;
        for n in notes {
            writeln!(out, "- {n}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
