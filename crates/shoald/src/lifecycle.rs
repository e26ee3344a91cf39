//! Start-up and the ordered shutdown. Start-up: identity, mesh, admin HTTP
//! and the node socket, then the roles this node had before a restart (or
//! `--init`, `--demo`). Shutdown, on SIGTERM/SIGINT or a failed role, runs in
//! order: the mesh stops accepting and drains (bounded), the agent stops
//! tasks, then the API, the manager and the store.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use shoal_api::pb::control_server::{Control, ControlServer};
use shoal_api::pb::dispatcher_server::DispatcherServer;
use shoal_api::pb::{CreateServiceRequest, PortConfig, ServiceSpec, SwarmInitRequest};
use shoal_manager::dispatcher::caller::Caller;
use shoal_manager::dispatcher::relay::RelayDispatcher;
use shoal_mesh::{Mesh, MeshConfig};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::config::DaemonConfig;
use crate::control::NodeControl;
use crate::daemon::Daemon;
use crate::node::{Membership, NodeIdentity};
use crate::role::Role;

pub async fn run(cfg: DaemonConfig) -> anyhow::Result<()> {
    shoal_ca::install_crypto_provider();
    crate::data_root::prepare(&cfg.data_root)?;
    let identity = NodeIdentity::load_or_create(&cfg.data_root, cfg.hostname.as_deref())?;
    let registry = Registry::new();
    let mesh = Mesh::new(
        MeshConfig {
            listen_ip: cfg.mesh_listen_ip,
            data_path: cfg.mesh_data_path,
            // The name the feed gives this node's tasks (its hostname).
            node_name: Some(identity.hostname.as_str().into()),
            keepalive: cfg.mesh_tcp_keepalive,
            udp_idle_timeout: cfg.mesh_udp_timeout,
            ..MeshConfig::default()
        },
        &registry,
    )
    .context("start the mesh")?;
    tracing::info!(data_path = %mesh.data_path(), "mesh workers started");
    let socket = cfg.socket_path()?;
    let access = crate::api_socket::SocketAccess::from_flag(cfg.group.as_deref())?;
    let listener = crate::api_socket::bind(&socket, &access).await?;
    let stop = CancellationToken::new();
    let admin = crate::admin::bind(cfg.metrics_addr, registry, mesh.clone(), stop.clone()).await?;
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
    let daemon = Arc::new(Daemon::new(
        cfg.clone(),
        identity,
        socket.clone(),
        mesh.clone(),
        fatal_tx,
    ));
    let server = Server::builder()
        .add_service(ControlServer::new(NodeControl(daemon.clone())))
        .add_service(DispatcherServer::new(RelayDispatcher::new(
            daemon.clone(),
            Caller::Local,
        )))
        .serve_with_incoming_shutdown(
            crate::api_socket::incoming(listener),
            stop.clone().cancelled_owned(),
        );
    let server = tokio::spawn(server);
    tracing::info!(node = %daemon.identity().node_id, socket = %socket.display(), metrics = %cfg.metrics_addr, "shoald started");

    daemon.resume().await?;
    if cfg.init && daemon.membership() == Membership::None {
        daemon
            .init_swarm(&SwarmInitRequest::default())
            .await
            .map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
    }
    if cfg.demo {
        create_demo(&daemon).await?;
    }

    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let failure = tokio::select! {
        _ = sigterm.recv() => None,
        _ = sigint.recv() => None,
        f = fatal_rx.recv() => f,
    };
    match &failure {
        None => tracing::info!("shutting down: draining connections"),
        Some(f) => tracing::error!("shutting down: {f}"),
    }
    mesh.shutdown(cfg.shutdown_grace).await;
    daemon.stop_tasks(Duration::from_secs(5)).await;
    // The bridge (and its route) and VXLAN device are made again at start.
    daemon.remove_host_links().await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), admin).await;
    if let Role::Manager(m) = &*daemon.role.switch(Role::None) {
        let store = m.manager.store().clone();
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), store.shutdown()).await {
            tracing::warn!("store shutdown timed out: {e}");
        }
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    match failure {
        None => Ok(()),
        Some(f) => anyhow::bail!(f),
    }
}

/// Creates the demo service unless a service named `web` exists.
async fn create_demo(daemon: &Daemon) -> anyhow::Result<()> {
    let manager = daemon
        .manager()
        .context("--demo needs a manager (use --init)")?;
    let spec = ServiceSpec {
        name: "web".into(),
        image: "shoal/echo".into(),
        replicas: 3,
        ports: vec![PortConfig {
            target_port: 80,
            published_port: 8080,
            ..Default::default()
        }],
        ..Default::default()
    };
    match manager
        .control()
        .create_service(tonic::Request::new(CreateServiceRequest {
            spec: Some(spec),
        }))
        .await
    {
        Ok(_) => tracing::info!("demo service web created: curl http://127.0.0.1:8080"),
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            tracing::info!("demo service web already exists")
        }
        Err(s) => anyhow::bail!("create demo service: {}", s.message()),
    }
    Ok(())
}
