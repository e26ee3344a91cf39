//! The mesh's settings: [`MeshConfig`] and the [`DataPath`] its worker
//! threads use.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::workers;

/// Settings of the data plane.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Address every published port is bound on. The unspecified address
    /// (`0.0.0.0` or `::`) means every address of both families: ports
    /// listen dual-stack on `[::]`, or on `0.0.0.0` where IPv6 is disabled.
    pub listen_ip: IpAddr,
    /// How long a backend connect may take before the next endpoint is tried.
    pub connect_timeout: Duration,
    /// How long an endpoint is skipped after its first connect failure;
    /// doubles with each further consecutive failure.
    pub eject_base: Duration,
    /// The longest an endpoint is skipped after consecutive connect failures.
    pub eject_max: Duration,
    /// TCP keepalive idle time on both legs, so idle flows survive stateful
    /// middleboxes and dead peers are noticed.
    pub keepalive: Duration,
    /// Data-path threads; every published port gets one listening socket per
    /// thread. Defaults to the number of cores.
    pub workers: NonZeroUsize,
    /// How the worker threads do their I/O.
    pub data_path: DataPath,
    /// This node's name, as [`Endpoint::node`](crate::Endpoint::node) names
    /// the node of a task: a host-mode port is served only while a task of
    /// its service runs on this node, and only to those tasks. `None`: no
    /// task is local, so host-mode ports are not served.
    pub node_name: Option<Arc<str>>,
    /// How long a UDP client flow stays pinned to its task with no datagram
    /// either way; after it, the client's next datagram starts a new flow
    /// (which may go to another task).
    pub udp_idle_timeout: Duration,
}

/// How the mesh's worker threads do their I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataPath {
    /// io_uring where this kernel allows it, epoll otherwise.
    #[default]
    Auto,
    /// A tokio runtime per worker (epoll readiness, a syscall per read and
    /// write).
    Epoll,
    /// An io_uring per worker (`uring`): operations complete in batches, one
    /// `io_uring_enter` per batch. Needs Linux 5.19 or later with io_uring
    /// allowed (`kernel.io_uring_disabled` 0, and a seccomp profile that
    /// permits it: Docker's default one does not).
    Uring,
}

/// The error of parsing a [`DataPath`] name.
#[derive(Debug, thiserror::Error)]
#[error("unknown data path {0:?}: use auto, epoll or io_uring")]
pub struct UnknownDataPath(String);

impl FromStr for DataPath {
    type Err = UnknownDataPath;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "epoll" => Ok(Self::Epoll),
            "io_uring" | "uring" => Ok(Self::Uring),
            other => Err(UnknownDataPath(other.to_owned())),
        }
    }
}

impl std::fmt::Display for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Epoll => "epoll",
            Self::Uring => "io_uring",
        })
    }
}

// === impl MeshConfig ===

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            connect_timeout: Duration::from_secs(1),
            eject_base: Duration::from_secs(1),
            eject_max: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            workers: workers::default_count(),
            data_path: DataPath::default(),
            node_name: None,
            udp_idle_timeout: Duration::from_secs(30),
        }
    }
}
