//! The `mesh` subcommand: start everything, measure interleaved, print the report.

use std::time::Duration;

use anyhow::Context as _;

use crate::idle;
use crate::install;
use crate::mesh_proxy;
use crate::procfs;
use crate::procs::{self, Procs};
use crate::report::{self, Sample, Workload};
use crate::targets::{self, Kind, Target, BULK_PATH};
use crate::wrk::{self, WrkArgs};

#[derive(clap::Args, Debug)]
pub struct MeshOpts {
    /// Runs per target and workload (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Length of each wrk run.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Smoke check: one run of 3 s each.
    #[arg(long)]
    quick: bool,
    /// Also measure the mesh on its epoll data path (`shoal-epoll`).
    #[arg(long)]
    with_epoll: bool,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Runs the whole comparison and prints the markdown report on stdout.
pub fn mesh(opts: MeshOpts) -> anyhow::Result<()> {
    let (runs, duration) = if opts.quick {
        (1, Duration::from_secs(3))
    } else {
        (opts.runs.max(1), opts.duration)
    };
    install::ensure_installed()?;
    let nofile = idle::raise_nofile(idle::NOFILE)?;
    let idle_connections = idle::idle_count(nofile);
    if idle_connections < 10_000 {
        eprintln!("fd limit {nofile}: W4 holds {idle_connections} idle connections, not 10 000");
    }
    procs::stop_children_on_signal()?;

    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-")
        .tempdir()
        .context("create the work directory")?;
    let mut procs = Procs::default();
    let backends = targets::start_backends(&mut procs, dir.path(), nofile)?;
    eprintln!("backends on {backends:?}");
    let mut kinds = vec![
        Kind::Direct,
        Kind::Shoal,
        Kind::Haproxy,
        Kind::Nginx,
        Kind::HaproxySplice,
    ];
    if opts.with_epoll {
        kinds.push(Kind::ShoalEpoll);
    }
    let mut running = Vec::new();
    for kind in kinds {
        let t = targets::start(&mut procs, kind, &backends, dir.path(), "", nofile)?;
        eprintln!("{} on {}", kind.name(), t.addr);
        running.push(t);
    }
    let shoal_data_path = mesh_proxy::reported_data_path(dir.path(), Kind::Shoal.name());
    eprintln!("shoal runs the {shoal_data_path} data path");
    let clk = procfs::clock_ticks_per_sec();
    let script = wrk::write_summary_script(dir.path())?;

    for t in &running {
        wrk::run(&WrkArgs {
            url: &format!("http://{}/", t.addr),
            connections: 64,
            duration: Duration::from_secs(1),
            close: false,
            script: None,
        })
        .with_context(|| format!("warm up {}", t.kind.name()))?;
    }

    let mut samples = Vec::new();
    for run in 1..=runs {
        for w in [Workload::W1, Workload::W2, Workload::W3] {
            for t in running.iter().filter(|t| applies(t.kind, w)) {
                let s = measure(run, t, w, duration, clk, &script)?;
                eprintln!(
                    "run {run}/{runs} {:?} {:>14}: {:.1} (errors {})",
                    w,
                    t.kind.name(),
                    s.value,
                    s.errors
                );
                samples.push(s);
            }
        }
        let idle_kinds = running
            .iter()
            .map(|t| t.kind)
            .filter(|&k| !matches!(k, Kind::Direct | Kind::HaproxySplice));
        for kind in idle_kinds {
            let tag = format!("-idle{run}");
            let t = targets::start(&mut procs, kind, &backends, dir.path(), &tag, nofile)?;
            let s = measure_idle(run, &t, idle_connections);
            if let Some(pid) = t.pid {
                procs.stop(pid);
            }
            let s = s?;
            eprintln!(
                "run {run}/{runs} W4 {:>14}: {:.1} KiB/conn (closed {})",
                kind.name(),
                s.value,
                s.errors
            );
            samples.push(s);
        }
    }
    drop(procs);

    let ctx = report::Context {
        nproc: command_line("nproc", &[]),
        kernel: command_line("uname", &["-r"]),
        versions: vec![
            install::version_line("haproxy", &["-v"]),
            install::version_line("nginx", &["-v"]),
            install::version_line("wrk", &["-v"]),
        ],
        runs,
        duration,
        quick: opts.quick,
        idle_connections,
        shoal_data_path,
    };
    let md = report::render(&ctx, &samples);
    println!("{md}");
    if let Some(path) = opts.out {
        std::fs::write(&path, &md).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Forced splice is measured on bulk transfers only.
fn applies(kind: Kind, w: Workload) -> bool {
    match kind {
        Kind::HaproxySplice => w == Workload::W3,
        _ => true,
    }
}

/// One wrk run against `t`, with the proxy's CPU time sampled around it.
fn measure(
    run: u32,
    t: &Target,
    w: Workload,
    duration: Duration,
    clk: u64,
    script: &std::path::Path,
) -> anyhow::Result<Sample> {
    let (path, connections, close) = match w {
        Workload::W1 => ("/", 64, false),
        Workload::W2 => ("/", 64, true),
        Workload::W3 => (BULK_PATH, 16, false),
        Workload::W4 => unreachable!("W4 is measured by measure_idle"),
    };
    let url = format!("http://{}{path}", t.addr);
    let before = t.pid.map(procfs::cpu_ticks);
    let r = wrk::run(&WrkArgs {
        url: &url,
        connections,
        duration,
        close,
        script: Some(script),
    })
    .with_context(|| format!("{w:?} against {}", t.kind.name()))?;
    let cpu_secs = t
        .pid
        .zip(before)
        .map(|(pid, b)| procfs::cpu_ticks(pid).saturating_sub(b) as f64 / clk as f64);
    let secs = duration.as_secs().max(1) as f64;
    let value = if w == Workload::W3 {
        r.transfer_per_sec / f64::from(1 << 20)
    } else {
        r.requests_per_sec
    };
    let bytes = r.transfer_per_sec * secs;
    Ok(Sample {
        run,
        kind: t.kind,
        workload: w,
        value,
        p50: Some(r.p50),
        p99: Some(r.p99),
        cpu_us_per_req: cpu_secs
            .filter(|_| r.requests > 0)
            .map(|c| c * 1e6 / r.requests as f64),
        cpu_s_per_gb: cpu_secs
            .filter(|_| w == Workload::W3 && bytes > 0.0)
            .map(|c| c / (bytes / f64::from(1 << 30))),
        errors: r.errors,
    })
}

/// W4: RSS of a freshly started proxy before and after it holds the idle connections.
fn measure_idle(run: u32, t: &Target, n: usize) -> anyhow::Result<Sample> {
    let pid = t.pid.context("idle workload needs a proxy")?;
    // Let the first connections' one-time allocations happen before the baseline.
    drop(idle::open(t.addr, 100)?);
    std::thread::sleep(Duration::from_millis(300));
    let before = procfs::rss_kib(pid);
    let conns = idle::open(t.addr, n)?;
    let after = settled_rss(pid);
    let closed = idle::closed(&conns);
    drop(conns);
    Ok(Sample {
        run,
        kind: t.kind,
        workload: Workload::W4,
        value: after.saturating_sub(before) as f64 / n as f64,
        p50: None,
        p99: None,
        cpu_us_per_req: None,
        cpu_s_per_gb: None,
        errors: closed as u64,
    })
}

/// RSS once it stops growing (two readings 300 ms apart within 0.5%), at most 5 s.
fn settled_rss(pid: u32) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut last = procfs::rss_kib(pid);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = procfs::rss_kib(pid);
        if now.abs_diff(last) * 200 <= last || std::time::Instant::now() > deadline {
            return now.max(last);
        }
        last = now;
    }
}

/// The trimmed stdout of a command, `?` when it cannot run.
pub fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}
