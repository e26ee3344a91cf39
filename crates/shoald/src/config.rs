//! Command-line flags. Defaults follow dockerd where one exists.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "shoald", version, about = "The Shoal node daemon")]
pub struct Cli {
    #[command(flatten)]
    pub daemon: DaemonConfig,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a built-in workload (used as a task's process; not for humans).
    #[command(hide = true)]
    Workload {
        #[arg(value_enum)]
        name: Workload,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Workload {
    Echo,
    Timecheck,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkModeArg {
    /// Network namespaces when root, loopback ports otherwise.
    Auto,
    /// Every task in its own network namespace on the ingress bridge (root).
    Netns,
    /// Tasks are plain processes on allocated loopback ports.
    Loopback,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DaemonConfig {
    /// Where the store, node identity and task logs live.
    #[arg(long, default_value = "/var/lib/shoal", env = "SHOAL_DATA_ROOT")]
    pub data_root: PathBuf,
    /// The API socket the CLI talks to (`unix:///path.sock`).
    #[arg(
        short = 'H',
        long = "host",
        default_value = "unix:///run/shoal/shoal.sock"
    )]
    pub host: String,
    /// Group that may use the API socket besides root (a name or a GID), as
    /// dockerd's: the socket is then 0660 root:GROUP. Default: `docker` when
    /// that group exists, else root only (0600); `--group ""` for root only.
    #[arg(short = 'G', long)]
    pub group: Option<String>,
    /// Prometheus metrics and admin HTTP (`/metrics`, `/healthz`, `/routes`).
    #[arg(long, default_value = "0.0.0.0:9323")]
    pub metrics_addr: SocketAddr,
    /// Make this node a one-node cluster at start-up if it is not in one yet.
    #[arg(long)]
    pub init: bool,
    /// With --init: also create the demo service `web` (3 x shoal/echo on port 8080).
    #[arg(long)]
    pub demo: bool,
    /// Node name shown in `node ls` (default: the host name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Address (IP) other nodes reach this node on; also the VXLAN tunnel endpoint.
    #[arg(long, default_value = "127.0.0.1")]
    pub advertise_addr: String,
    /// Where a manager listens for other nodes (mTLS: dispatcher, join, Raft).
    #[arg(long, default_value = "0.0.0.0:2377")]
    pub listen_addr: std::net::SocketAddr,
    /// Name of the ingress overlay's VXLAN device (netns mode).
    #[arg(long, default_value = "shoal-vx0")]
    pub vxlan: String,
    /// Address the mesh serves published ports on; 0.0.0.0 (or ::) serves
    /// them on every IPv4 and IPv6 address (dual-stack).
    #[arg(long, default_value = "0.0.0.0")]
    pub mesh_listen_ip: IpAddr,
    /// Idle time after which the mesh sends TCP keepalive probes on both legs
    /// of a connection, so that idle connections outlive the state timeouts
    /// of firewalls and NATs on the way, and dead peers are noticed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub mesh_tcp_keepalive: Duration,
    /// How the mesh's worker threads do I/O: auto (io_uring where the kernel
    /// allows it, else epoll), epoll, or io_uring.
    #[arg(long, default_value = "auto")]
    pub mesh_data_path: shoal_mesh::DataPath,
    /// How long a UDP client flow through the mesh stays pinned to its task
    /// with no datagram either way; its next datagram after that may go to
    /// another task. 30s, as conntrack's default for unanswered UDP and
    /// far below the 300s of Swarm's IPVS: DNS, syslog and game clients send
    /// again well within it, QUIC's idle timeouts are of that order, and a
    /// forgotten flow costs a client only a possible change of task, while a
    /// kept one holds a socket. Between 100ms and 1h.
    #[arg(long, default_value = "30s", value_parser = parse_udp_timeout)]
    pub mesh_udp_timeout: Duration,
    /// How tasks are connected to the mesh.
    #[arg(long, value_enum, default_value = "auto")]
    pub network_mode: NetworkModeArg,
    /// Name of the ingress bridge tasks attach to (netns mode).
    #[arg(long, default_value = "shoal-ingress")]
    pub bridge: String,
    /// How long open mesh connections may finish on shutdown.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// How long a task gets between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub stop_grace_period: Duration,
}

/// The bounds of `--mesh-udp-timeout`.
const UDP_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// Parses `--mesh-udp-timeout`: a duration (`30s`, `2m`) within
/// [`UDP_TIMEOUT_RANGE`].
fn parse_udp_timeout(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration ({e}); use e.g. 30s or 2m"))?;
    if !UDP_TIMEOUT_RANGE.contains(&d) {
        return Err(format!(
            "{value:?} is out of range; use a duration from 100ms to 1h"
        ));
    }
    Ok(d)
}

impl DaemonConfig {
    /// The Unix socket path of `--host`.
    pub fn socket_path(&self) -> anyhow::Result<PathBuf> {
        match self.host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => anyhow::bail!(
                "--host {:?}: only unix:///path.sock is supported, e.g. unix:///run/shoal/shoal.sock",
                self.host
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::Cli;

    #[test]
    fn mesh_data_path_defaults_to_auto_and_takes_each_name() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["shoald"], args].concat());
        let data_path = |args: &[&str]| parse(args).unwrap().daemon.mesh_data_path;
        assert_eq!(data_path(&[]), shoal_mesh::DataPath::Auto);
        for (name, want) in [
            ("epoll", shoal_mesh::DataPath::Epoll),
            ("io_uring", shoal_mesh::DataPath::Uring),
            ("auto", shoal_mesh::DataPath::Auto),
        ] {
            assert_eq!(data_path(&["--mesh-data-path", name]), want);
        }
        let err = parse(&["--mesh-data-path", "kqueue"])
            .unwrap_err()
            .to_string();
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains("--mesh-data-path")
                && first.contains("kqueue")
                && first.contains("use auto, epoll or io_uring"),
            "{err}"
        );
    }

    #[test]
    fn mesh_tcp_keepalive_defaults_to_a_minute_and_takes_a_duration() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["shoald"], args].concat());
        let keepalive = |args: &[&str]| parse(args).unwrap().daemon.mesh_tcp_keepalive;
        assert_eq!(keepalive(&[]), std::time::Duration::from_secs(60));
        assert_eq!(
            keepalive(&["--mesh-tcp-keepalive", "15s"]),
            std::time::Duration::from_secs(15)
        );
        let err = parse(&["--mesh-tcp-keepalive", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--mesh-tcp-keepalive"), "{err}");
    }

    #[test]
    fn mesh_udp_timeout_defaults_to_30s_and_refuses_what_is_out_of_range() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["shoald"], args].concat());
        let timeout = |args: &[&str]| parse(args).unwrap().daemon.mesh_udp_timeout;
        assert_eq!(timeout(&[]), Duration::from_secs(30));
        assert_eq!(
            timeout(&["--mesh-udp-timeout", "2m"]),
            Duration::from_secs(120)
        );
        for bad in ["0s", "50ms", "2h", "soon"] {
            let err = parse(&["--mesh-udp-timeout", bad]).unwrap_err().to_string();
            let first = err.lines().next().unwrap_or_default();
            assert!(
                first.contains("--mesh-udp-timeout") && first.contains(bad),
                "{err}"
            );
        }
    }

    proptest::proptest! {
        /// Every whole number of milliseconds parses to itself when in range
        /// and is refused otherwise; no input panics.
        #[test]
        fn udp_timeout_parser_takes_exactly_its_range(ms in 0u64..10_000_000, junk in ".{0,12}") {
            let parsed = super::parse_udp_timeout(&format!("{ms}ms"));
            let d = Duration::from_millis(ms);
            if super::UDP_TIMEOUT_RANGE.contains(&d) {
                proptest::prop_assert_eq!(parsed, Ok(d));
            } else {
                proptest::prop_assert!(parsed.is_err());
            }
            let _ = super::parse_udp_timeout(&junk);
        }
    }
}
