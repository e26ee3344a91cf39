//! The backends and the targets under test: configuration files and startup.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::install::NGINX_STREAM_MODULE;
use crate::procs::Procs;

/// Body size of the bulk workload's file.
pub const BULK_BYTES: usize = 1 << 20;
/// Path of the 1 MiB file on the backends.
pub const BULK_PATH: &str = "/1m";

/// Who is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// wrk straight to one backend: the ceiling.
    Direct,
    /// The shoal-mesh code path in a `mesh-proxy` child, on its default data
    /// path (io_uring where the kernel allows it).
    Shoal,
    /// HAProxy, tcp mode, roundrobin, nbthread 2.
    Haproxy,
    /// HAProxy with forced splice in both directions (bulk workload only).
    HaproxySplice,
    /// nginx stream module, 2 workers.
    Nginx,
    /// The shoal-mesh code path on its epoll data path (`mesh-proxy
    /// --data-path epoll`), with `--with-epoll` only.
    ShoalEpoll,
}

/// A running target: where to send traffic and whose CPU/RSS to sample.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// Root of the proxy's process tree; `None` for direct.
    pub pid: Option<u32>,
}

// === impl Kind ===

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Shoal => "shoal",
            Kind::Haproxy => "haproxy",
            Kind::HaproxySplice => "haproxy-splice",
            Kind::Nginx => "nginx",
            Kind::ShoalEpoll => "shoal-epoll",
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0 to pick a port")?;
    Ok(l.local_addr()?.port())
}

/// Starts one nginx process serving `ok` and the 1 MiB file on three ports.
/// `nofile` is the fd limit nginx workers run with.
pub fn start_backends(
    procs: &mut Procs,
    dir: &Path,
    nofile: u64,
) -> anyhow::Result<[SocketAddr; 3]> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join(&BULK_PATH[1..]), vec![b'x'; BULK_BYTES])?;
    // Hold all three until chosen so that no port is picked twice.
    let held = [
        TcpListener::bind("127.0.0.1:0"),
        TcpListener::bind("127.0.0.1:0"),
        TcpListener::bind("127.0.0.1:0"),
    ];
    let mut addrs = [SocketAddr::from(([127, 0, 0, 1], 0)); 3];
    for (a, l) in addrs.iter_mut().zip(&held) {
        let l = l
            .as_ref()
            .map_err(|e| anyhow::anyhow!("bind 127.0.0.1:0 to pick a port: {e}"))?;
        *a = l.local_addr()?;
    }
    drop(held);
    let mut listen = String::new();
    for a in addrs {
        writeln!(listen, "        listen {a} backlog=4096;")?;
    }
    let conf = format!(
        r#"user root;
worker_processes 2;
worker_rlimit_nofile {nofile};
daemon off;
pid {dir}/backend.pid;
error_log {dir}/backend.err warn;
events {{ worker_connections {conns}; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_header_timeout 300s;
    default_type application/octet-stream;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    server {{
{listen}        root {www};
        location = / {{ return 200 "ok"; }}
    }}
}}
"#,
        dir = dir.display(),
        www = www.display(),
        conns = nofile - 100,
    );
    let conf_path = dir.join("backend.conf");
    std::fs::write(&conf_path, conf)?;
    let pid = spawn_nginx(procs, "backends", dir, &conf_path)?;
    for a in addrs {
        wait_ready(procs, pid, a)?;
    }
    Ok(addrs)
}

/// Starts a proxy of `kind` over `backends` on a fresh loopback port.
pub fn start(
    procs: &mut Procs,
    kind: Kind,
    backends: &[SocketAddr; 3],
    dir: &Path,
    tag: &str,
    nofile: u64,
) -> anyhow::Result<Target> {
    if kind == Kind::Direct {
        return Ok(Target {
            kind,
            addr: backends[0],
            pid: None,
        });
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let name = format!("{}{tag}", kind.name());
    let pid = match kind {
        Kind::Direct => unreachable!(),
        Kind::Shoal | Kind::ShoalEpoll => {
            let exe = std::env::current_exe().context("find the shoal-bench binary")?;
            let list: Vec<_> = backends.iter().map(ToString::to_string).collect();
            let mut cmd = Command::new(exe);
            cmd.arg("mesh-proxy")
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--backends")
                .arg(list.join(","));
            if kind == Kind::ShoalEpoll {
                cmd.arg("--data-path").arg("epoll");
            }
            procs.spawn(&name, cmd, dir)?.pid()
        }
        Kind::Haproxy | Kind::HaproxySplice => {
            let conf = haproxy_config(addr, backends, kind == Kind::HaproxySplice, nofile);
            let path = dir.join(format!("{name}.cfg"));
            std::fs::write(&path, conf)?;
            let mut cmd = Command::new("haproxy");
            cmd.arg("-db").arg("-f").arg(&path);
            procs.spawn(&name, cmd, dir)?.pid()
        }
        Kind::Nginx => {
            let conf = nginx_stream_config(addr, backends, dir, &name, nofile);
            let path = dir.join(format!("{name}.conf"));
            std::fs::write(&path, conf)?;
            spawn_nginx(procs, &name, dir, &path)?
        }
    };
    wait_ready(procs, pid, addr)?;
    Ok(Target {
        kind,
        addr,
        pid: Some(pid),
    })
}

/// HAProxy in plain TCP mode, round-robin over the backends, 2 threads;
/// `maxconn` fits the fd limit `nofile` (two fds per proxied connection),
/// since HAProxy refuses to start when it cannot raise the limit for it.
pub fn haproxy_config(
    listen: SocketAddr,
    backends: &[SocketAddr; 3],
    splice: bool,
    nofile: u64,
) -> String {
    // Splicing also holds a pipe (two fds) for some connections (maxpipes = maxconn/4).
    let maxconn = nofile.saturating_sub(200) / if splice { 3 } else { 2 };
    let mut servers = String::new();
    for (i, b) in backends.iter().enumerate() {
        let _ = writeln!(servers, "    server s{i} {b}");
    }
    let splice = if splice {
        "    option splice-request\n    option splice-response\n"
    } else {
        ""
    };
    format!(
        "global
    nbthread 2
    maxconn {maxconn}
defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 5s
    timeout client 300s
    timeout server 300s
{splice}frontend bench
    bind {listen}
    default_backend backends
backend backends
    balance roundrobin
{servers}"
    )
}

/// nginx `stream` proxy, 2 workers, default round-robin over the backends.
pub fn nginx_stream_config(
    listen: SocketAddr,
    backends: &[SocketAddr; 3],
    dir: &Path,
    name: &str,
    nofile: u64,
) -> String {
    let mut servers = String::new();
    for b in backends {
        let _ = writeln!(servers, "        server {b};");
    }
    format!(
        r#"load_module {NGINX_STREAM_MODULE};
user root;
worker_processes 2;
worker_rlimit_nofile {nofile};
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.err warn;
events {{ worker_connections {conns}; }}
stream {{
    upstream backends {{
{servers}    }}
    server {{
        listen {listen};
        proxy_pass backends;
    }}
}}
"#,
        dir = dir.display(),
        conns = nofile - 100,
    )
}

fn spawn_nginx(procs: &mut Procs, name: &str, dir: &Path, conf: &Path) -> anyhow::Result<u32> {
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join(format!("{name}.err")))
        .arg("-c")
        .arg(conf);
    Ok(procs.spawn(name, cmd, dir)?.pid())
}

/// Waits until `addr` accepts connections, failing early if the process exits.
fn wait_ready(procs: &mut Procs, pid: u32, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        let p = procs.get_mut(pid).context("process vanished")?;
        if let Some(status) = p.exited() {
            bail!(
                "{} exited ({status}) before listening on {addr}:\n{}",
                p.name,
                p.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} does not listen on {addr} after 10 s:\n{}",
                p.name,
                p.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
