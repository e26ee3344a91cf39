//! The `udp` subcommand: request/response UDP through the mesh beside nginx's
//! `stream` UDP proxy and a direct baseline, interleaved per round.
//!
//! Three UDP echo backends (`udp-echo`, one process), then per round and
//! target: `flows` client flows, each a closed loop of one small datagram and
//! its reply, for `duration`. Reported: datagrams per second, loss, p50/p99
//! round trip, and the proxy's CPU per datagram; Shoal over nginx as per-round
//! ratios (median, rounds ahead, range). nginx runs 2 workers with
//! `reuseport`, so a flow stays on one worker, and keeps each flow's upstream
//! for its `proxy_timeout` as the mesh pins a flow to a task.
//!
//! # Layout
//! - `echo`: the backends.
//! - `load`: the load generator.

mod echo;
mod load;

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::install::{self, NGINX_STREAM_MODULE};
use crate::procfs;
use crate::procs::{self, Procs};
use crate::targets::free_port;

pub use echo::run as run_echo;

#[derive(clap::Args, Debug)]
pub struct UdpOpts {
    /// Rounds (each measures every target once, in a rotating order).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Length of each measurement.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Client flows (distinct source ports), each with one datagram in flight.
    #[arg(long, default_value_t = 64)]
    flows: usize,
    /// Request size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Smoke check: one round of 3 s.
    #[arg(long)]
    quick: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UdpKind {
    Direct,
    Shoal,
    Nginx,
}

impl UdpKind {
    fn name(self) -> &'static str {
        match self {
            UdpKind::Direct => "direct",
            UdpKind::Shoal => "shoal",
            UdpKind::Nginx => "nginx",
        }
    }
}

struct UdpTarget {
    kind: UdpKind,
    addr: SocketAddr,
    pid: Option<u32>,
}

/// One measurement.
#[derive(Debug, Clone)]
struct Round {
    round: u32,
    kind: UdpKind,
    per_sec: f64,
    loss: f64,
    p50_us: u32,
    p99_us: u32,
    cpu_us_per_datagram: Option<f64>,
}

/// Runs the comparison and prints the markdown report on stdout.
pub fn udp(opts: UdpOpts) -> anyhow::Result<()> {
    let (rounds, duration) = if opts.quick {
        (1, Duration::from_secs(3))
    } else {
        (opts.rounds.max(1), opts.duration)
    };
    install::ensure_installed()?;
    procs::stop_children_on_signal()?;
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-udp-")
        .tempdir()
        .context("create the work directory")?;
    let mut procs = Procs::default();
    let backends = start_backends(&mut procs, dir.path())?;
    let targets = [
        UdpTarget {
            kind: UdpKind::Direct,
            addr: backends[0],
            pid: None,
        },
        start_shoal(&mut procs, dir.path(), &backends)?,
        start_nginx(&mut procs, dir.path(), &backends)?,
    ];
    let clk = procfs::clock_ticks_per_sec();
    let mut all = Vec::new();
    for round in 1..=rounds {
        for i in 0..targets.len() {
            let t = &targets[(i + round as usize) % targets.len()];
            let before = t.pid.map(procfs::cpu_ticks);
            let r = load::run(t.addr, opts.flows, opts.payload, duration)
                .with_context(|| format!("UDP load against {}", t.kind.name()))?;
            let cpu = t
                .pid
                .zip(before)
                .map(|(pid, b)| procfs::cpu_ticks(pid).saturating_sub(b) as f64 / clk as f64);
            let m = Round {
                round,
                kind: t.kind,
                per_sec: r.received as f64 / duration.as_secs_f64(),
                loss: r.loss(),
                p50_us: r.quantile_us(0.5).unwrap_or(0),
                p99_us: r.quantile_us(0.99).unwrap_or(0),
                cpu_us_per_datagram: cpu
                    .filter(|_| r.received > 0)
                    .map(|c| c * 1e6 / r.received as f64),
            };
            eprintln!(
                "round {round}/{rounds} {:>6}: {:>9.0} datagrams/s, loss {:.4}%, p99 {} us",
                t.kind.name(),
                m.per_sec,
                m.loss * 100.0,
                m.p99_us
            );
            all.push(m);
        }
    }
    drop(procs);
    println!("{}", render(&all, rounds, duration, &opts));
    Ok(())
}

fn start_backends(procs: &mut Procs, dir: &Path) -> anyhow::Result<[SocketAddr; 3]> {
    let addrs = [free_udp()?, free_udp()?, free_udp()?];
    let exe = std::env::current_exe().context("find the shoal-bench binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("udp-echo").arg("--listen").arg(
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    let pid = procs.spawn("udp-echo", cmd, dir)?.pid();
    for a in addrs {
        wait_answers(procs, pid, a)?;
    }
    Ok(addrs)
}

fn start_shoal(
    procs: &mut Procs,
    dir: &Path,
    backends: &[SocketAddr; 3],
) -> anyhow::Result<UdpTarget> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let exe = std::env::current_exe().context("find the shoal-bench binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mesh-proxy")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--protocol")
        .arg("udp")
        .arg("--backends")
        .arg(
            backends
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    let pid = procs.spawn("shoal-udp", cmd, dir)?.pid();
    wait_answers(procs, pid, addr)?;
    Ok(UdpTarget {
        kind: UdpKind::Shoal,
        addr,
        pid: Some(pid),
    })
}

fn start_nginx(
    procs: &mut Procs,
    dir: &Path,
    backends: &[SocketAddr; 3],
) -> anyhow::Result<UdpTarget> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let conf = nginx_udp_config(addr, backends, dir);
    let path = dir.join("nginx-udp.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("nginx-udp.err"))
        .arg("-c")
        .arg(&path);
    let pid = procs.spawn("nginx-udp", cmd, dir)?.pid();
    wait_answers(procs, pid, addr)?;
    Ok(UdpTarget {
        kind: UdpKind::Nginx,
        addr,
        pid: Some(pid),
    })
}

/// nginx `stream` UDP proxy, 2 workers with `reuseport`, round-robin; a
/// flow keeps its upstream until idle for 30 s (the mesh's default).
fn nginx_udp_config(listen: SocketAddr, backends: &[SocketAddr; 3], dir: &Path) -> String {
    let mut servers = String::new();
    for b in backends {
        let _ = writeln!(servers, "        server {b};");
    }
    format!(
        r#"load_module {NGINX_STREAM_MODULE};
user root;
worker_processes 2;
worker_rlimit_nofile 65536;
daemon off;
pid {dir}/nginx-udp.pid;
error_log {dir}/nginx-udp.err warn;
events {{ worker_connections 16384; }}
stream {{
    upstream backends {{
{servers}    }}
    server {{
        listen {listen} udp reuseport;
        proxy_pass backends;
        proxy_timeout 30s;
    }}
}}
"#,
        dir = dir.display(),
    )
}

/// A loopback UDP port that was free a moment ago.
fn free_udp() -> anyhow::Result<SocketAddr> {
    let s = UdpSocket::bind("127.0.0.1:0").context("bind udp 127.0.0.1:0")?;
    Ok(s.local_addr()?)
}

/// Waits until `addr` echoes a datagram, failing early if the process exits.
fn wait_answers(procs: &mut Procs, pid: u32, addr: SocketAddr) -> anyhow::Result<()> {
    let probe = UdpSocket::bind("127.0.0.1:0")?;
    probe.set_read_timeout(Some(Duration::from_millis(200)))?;
    probe.connect(addr)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    loop {
        if probe.send(b"ping").is_ok() && probe.recv(&mut buf).is_ok() {
            return Ok(());
        }
        let p = procs.get_mut(pid).context("process vanished")?;
        if let Some(status) = p.exited() {
            bail!(
                "{} exited ({status}) before answering on {addr}:\n{}",
                p.name,
                p.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} does not answer on udp {addr} after 10 s:\n{}",
                p.name,
                p.log_tail()
            );
        }
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn render(all: &[Round], rounds: u32, duration: Duration, opts: &UdpOpts) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## UDP request/response ({} flows, {} B datagrams, {rounds} rounds of {duration:?}; {}, {})\n",
        opts.flows,
        opts.payload,
        crate::run::command_line("nproc", &[]),
        install::version_line("nginx", &["-v"]),
    );
    let _ = writeln!(
        md,
        "| Target | datagrams/s (median) | loss (max) | p50 / p99 µs (median) | proxy CPU µs per datagram (median) |\n|---|---|---|---|---|"
    );
    for kind in [UdpKind::Direct, UdpKind::Shoal, UdpKind::Nginx] {
        let of: Vec<&Round> = all.iter().filter(|r| r.kind == kind).collect();
        let med = |f: &dyn Fn(&Round) -> f64| median(of.iter().map(|r| f(r)).collect());
        let cpu = median(of.iter().filter_map(|r| r.cpu_us_per_datagram).collect());
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.4}% | {:.0} / {:.0} | {} |",
            kind.name(),
            med(&|r| r.per_sec).unwrap_or(0.0),
            of.iter().map(|r| r.loss).fold(0.0, f64::max) * 100.0,
            med(&|r| f64::from(r.p50_us)).unwrap_or(0.0),
            med(&|r| f64::from(r.p99_us)).unwrap_or(0.0),
            cpu.map_or("-".into(), |c| format!("{c:.1}")),
        );
    }
    let ratios: Vec<(f64, Option<f64>)> = (1..=rounds)
        .filter_map(|round| {
            let get = |k| all.iter().find(|r| r.round == round && r.kind == k);
            let (s, n) = (get(UdpKind::Shoal)?, get(UdpKind::Nginx)?);
            let cpu = s
                .cpu_us_per_datagram
                .zip(n.cpu_us_per_datagram)
                .map(|(a, b)| a / b);
            (n.per_sec > 0.0).then(|| (s.per_sec / n.per_sec, cpu))
        })
        .collect();
    if let Some(m) = median(ratios.iter().map(|r| r.0).collect()) {
        let ahead = ratios.iter().filter(|r| r.0 > 1.0).count();
        let lo = ratios.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().map(|r| r.0).fold(0.0, f64::max);
        let cpu = median(ratios.iter().filter_map(|r| r.1).collect());
        let _ = writeln!(
            md,
            "\nShoal over nginx, per round: datagrams/s {m:.2}x (median; ahead in {ahead} of {} rounds; range {lo:.2}-{hi:.2}x); CPU per datagram {}.",
            ratios.len(),
            cpu.map_or("-".into(), |c| format!("{c:.2}x")),
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_config_listens_udp_with_reuseport_over_every_backend() {
        let b: [SocketAddr; 3] = [
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:3".parse().unwrap(),
        ];
        let conf = nginx_udp_config("127.0.0.1:9".parse().unwrap(), &b, Path::new("/tmp/x"));
        assert!(conf.contains("listen 127.0.0.1:9 udp reuseport;"));
        for a in b {
            assert!(conf.contains(&format!("server {a};")));
        }
    }

    #[test]
    fn the_report_gives_per_round_ratios() {
        let r = |round, kind, per_sec| Round {
            round,
            kind,
            per_sec,
            loss: 0.0,
            p50_us: 10,
            p99_us: 20,
            cpu_us_per_datagram: Some(per_sec / 1000.0),
        };
        let all = vec![
            r(1, UdpKind::Shoal, 110.0),
            r(1, UdpKind::Nginx, 100.0),
            r(2, UdpKind::Shoal, 90.0),
            r(2, UdpKind::Nginx, 100.0),
        ];
        let opts = UdpOpts {
            rounds: 2,
            duration: Duration::from_secs(1),
            flows: 1,
            payload: 1,
            quick: false,
        };
        let md = render(&all, 2, Duration::from_secs(1), &opts);
        assert!(
            md.contains("ahead in 1 of 2 rounds; range 0.90-1.10x"),
            "{md}"
        );
    }
}
