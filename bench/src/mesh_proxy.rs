//! The `mesh-proxy` subcommand: Shoal's routing mesh as a standalone target.
//!
//! This is the real `shoal-mesh` data path (listener, balancer, forwarder) fed a
//! routing table with one service over the given backends, not a full cluster:
//! no manager, agent or routing feed runs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use shoal_mesh::{DataPath, Endpoint, Mesh, MeshConfig, PortRoute, Protocol, ServiceRoute};

/// Port the backends are reached on, as the service's target port.
const TARGET_PORT: u16 = 80;
/// Start of the line on which the proxy reports the data path it runs.
const DATA_PATH_LINE: &str = "shoal-mesh data path: ";

/// The data path a `mesh-proxy` child reported in its log (`<name>.log` in
/// `log_dir`), or "unknown".
pub fn reported_data_path(log_dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(log_dir.join(format!("{name}.log")))
        .ok()
        .and_then(|log| {
            log.lines()
                .find_map(|l| l.strip_prefix(DATA_PATH_LINE).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Serves `listen` until SIGTERM or Ctrl-C.
pub fn run(
    listen: SocketAddr,
    backends: Vec<SocketAddr>,
    data_path: DataPath,
    protocol: Protocol,
) -> anyhow::Result<()> {
    crate::idle::raise_nofile(crate::idle::NOFILE)?;
    // (The limit may stay below NOFILE; W4 sizes itself to what fits.)
    // The data path runs on the mesh's own worker threads (one per core); this
    // runtime only applies the routing table and waits for a signal.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the tokio runtime")?;
    rt.block_on(async {
        let registry = prometheus::Registry::new();
        let config = MeshConfig {
            listen_ip: listen.ip(),
            data_path,
            ..MeshConfig::default()
        };
        let mesh = Mesh::new(config, &registry).context("create the mesh")?;
        println!("{DATA_PATH_LINE}{}", mesh.data_path());
        let errors = mesh.apply_snapshot(vec![route(listen.port(), protocol, &backends)]);
        if let Some(e) = errors.into_iter().next() {
            return Err(e).context("apply the routing snapshot");
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("install the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        mesh.shutdown(Duration::from_secs(1)).await;
        Ok(())
    })
}

/// `--protocol tcp|udp`.
pub fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!("unknown protocol {other:?}: use tcp or udp")),
    }
}

/// One service published on `port`, with one endpoint per backend.
pub fn route(port: u16, protocol: Protocol, backends: &[SocketAddr]) -> ServiceRoute {
    ServiceRoute {
        service_id: "bench".into(),
        service_name: "bench".into(),
        ports: vec![PortRoute {
            protocol,
            ..PortRoute::tcp(port, TARGET_PORT)
        }],
        endpoints: backends
            .iter()
            .enumerate()
            .map(|(i, addr)| Endpoint {
                task_id: format!("task{i}").into(),
                task_name: format!("bench.{}.task{i}", i + 1).into(),
                slot: i as u64 + 1,
                node: "bench".into(),
                ports: vec![(TARGET_PORT, *addr)],
                draining: false,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reported_data_path_is_read_from_the_proxy_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("shoal.log"),
            format!("starting\n{DATA_PATH_LINE}io_uring\nserving\n"),
        )
        .unwrap();
        assert_eq!(reported_data_path(dir.path(), "shoal"), "io_uring");
        assert_eq!(reported_data_path(dir.path(), "absent"), "unknown");
    }
}
