//! The `control` subcommand: the control-plane figures on real
//! `shoald` processes in network namespaces (through `shoal-testkit`).
//!
//! 1. `create`: `service create --replicas 100 -p ...` on 1 manager + 2
//!    workers until all 100 are running and routed on every node (3 runs).
//! 2. `feed`: 200 alternating one-replica scale changes, each timed until
//!    every node's routing table shows it (p50, p99).
//! 3. `scale`: one manager against hundreds of simulated agents speaking the
//!    real dispatcher API over mTLS: join, convergence of thousands of tasks,
//!    the manager's CPU and memory, and the reschedule after a tenth of the
//!    agents vanish; sizes grow until one does not converge in time.
//!
//! # Layout
//! - `launch`: re-executes the bench beside `shoald` and `shoal` for the testkit.
//! - `cleanup`: what a Ctrl-C must remove.
//! - `routes`: per-node pollers of `/routes` inside each node's namespace.
//! - `cluster3`: parts 1 and 2.
//! - `sim`: the simulated agents.
//! - `scale`: part 3.
//! - `report`: percentiles and the markdown table.

mod cleanup;
mod cluster3;
mod launch;
mod report;
mod routes;
mod scale;
mod sim;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shoal_testkit::MultiCluster;

use crate::run;
use report::Row;
use scale::Size;

/// Which figures to produce.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// 100 replicas on 3 nodes: create → running and routed everywhere.
    Create,
    /// Feed propagation over one-replica scale changes.
    Feed,
    /// One manager against simulated agents.
    Scale,
}

#[derive(clap::Args, Debug)]
pub struct ControlOpts {
    /// Smoke check (~2 min): one create run, 20 feed changes, one small size.
    #[arg(long)]
    quick: bool,
    /// Figures to produce (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "create,feed,scale"
    )]
    parts: Vec<Part>,
    /// Runs of the 100-replica create (default 3; quick 1).
    #[arg(long)]
    create_runs: Option<u32>,
    /// Scale changes timed for the feed figures (default 200; quick 20).
    #[arg(long)]
    feed_changes: Option<u32>,
    /// Simulated cluster sizes AGENTSxTASKS, run in order until one does not
    /// converge (default 50x500,100x1000,250x2500,500x5000; quick 50x500).
    #[arg(long, value_delimiter = ',')]
    scale: Vec<Size>,
    /// Give up on a size's convergence after this long (default 150s; quick 60s).
    #[arg(long, value_parser = crate::parse_duration)]
    converge_limit: Option<Duration>,
    /// Simulated agents do not follow the discovery feed.
    #[arg(long)]
    no_sim_feed: bool,
    /// Record a perf profile of the manager while each size converges and
    /// print the hottest Shoal functions (the report keeps the largest size's).
    #[arg(long)]
    profile: bool,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs the selected parts and prints the markdown report on stdout.
pub fn control(opts: ControlOpts) -> anyhow::Result<()> {
    if let Some(code) = launch::reexec_for_testkit()? {
        std::process::exit(code);
    }
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the control bench needs root (network namespaces); run it with sudo"
    );
    cleanup::on_signal()?;
    let started = Instant::now();
    let ctx = report::Context {
        quick: opts.quick,
        nproc: run::command_line("nproc", &[]),
        cpu: cpu_model(),
        kernel: run::command_line("uname", &["-r"]),
        load: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into()),
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let wants = |p| opts.parts.contains(&p);

    if wants(Part::Create) || wants(Part::Feed) {
        let t = Instant::now();
        let c = MultiCluster::new("ctlmesh", 1, 2);
        cleanup::register_cluster(&c);
        eprintln!("3-node cluster up after {:.2?}", t.elapsed());
        if wants(Part::Create) {
            let runs = opts.create_runs.unwrap_or(if opts.quick { 1 } else { 3 });
            rows.extend(cluster3::create_100(&c, runs.max(1))?);
        }
        if wants(Part::Feed) {
            let changes = opts
                .feed_changes
                .unwrap_or(if opts.quick { 20 } else { 200 });
            rows.extend(cluster3::feed_propagation(&c, changes.max(2))?);
        }
        drop(c);
        cleanup::clear();
    }

    if wants(Part::Scale) {
        let sizes = if !opts.scale.is_empty() {
            opts.scale.clone()
        } else if opts.quick {
            vec![Size {
                agents: 50,
                tasks: 500,
            }]
        } else {
            vec![
                Size {
                    agents: 50,
                    tasks: 500,
                },
                Size {
                    agents: 100,
                    tasks: 1000,
                },
                Size {
                    agents: 250,
                    tasks: 2500,
                },
                Size {
                    agents: 500,
                    tasks: 5000,
                },
            ]
        };
        let limit = opts.converge_limit.unwrap_or(if opts.quick {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(150)
        });
        // Kept after the run, for `perf report -i <dir>/perf.data`.
        let profile_dir = if opts.profile {
            let dir = tempfile::Builder::new()
                .prefix("shoal-bench-perf-")
                .tempdir()
                .context("create the profile directory")?
                .keep();
            eprintln!("perf data goes to {}", dir.display());
            Some(dir)
        } else {
            None
        };
        let mut profile_note = None;
        for (i, size) in sizes.iter().enumerate() {
            let size_dir = match &profile_dir {
                Some(d) => {
                    let sub = d.join(format!("{}x{}", size.agents, size.tasks));
                    std::fs::create_dir_all(&sub)
                        .with_context(|| format!("create {}", sub.display()))?;
                    Some(sub)
                }
                None => None,
            };
            let outcome = scale::run(
                *size,
                &scale::ScaleOpts {
                    converge_limit: limit,
                    feed: !opts.no_sim_feed,
                    profile: size_dir.clone(),
                },
            )?;
            rows.extend(outcome.rows);
            if let (Some(p), Some(dir)) = (outcome.profile, size_dir) {
                eprintln!("perf profile of the manager, {size}:\n{p}");
                // The report keeps the largest size's profile.
                profile_note = Some(format!(
                    "perf profile of the manager over the first {} s after {size}'s `service \
                     create` calls (inclusive share of samples, `perf report --children \
                     --no-inline`; data in {}):\
                     \n\n```\n{p}\n```",
                    scale::PERF_WINDOW.as_secs(),
                    dir.join("perf.data").display()
                ));
            }
            if !outcome.converged {
                let rest: Vec<String> = sizes[i + 1..].iter().map(Size::to_string).collect();
                if !rest.is_empty() {
                    notes.push(format!(
                        "{size} did not converge within {limit:?}; not attempted: {}.",
                        rest.join(", ")
                    ));
                }
                break;
            }
        }
        notes.extend(profile_note);
    }

    notes.push(format!(
        "Whole run: {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    let md = report::render(&ctx, &rows, &notes);
    println!("{md}");
    if let Some(path) = opts.out {
        std::fs::write(&path, &md).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}
