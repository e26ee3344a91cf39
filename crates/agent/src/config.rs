//! What the agent is told about its node: identity, data root, how tasks are
//! connected, and the role the cluster last gave it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// How tasks are connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// Root: each task in its own netns, veth on `bridge`, address =
    /// task.ingress_address (CIDR), default route via `gateway`. The bridge
    /// must already exist (shoald creates it).
    Netns { bridge: String, gateway: Ipv4Addr },
    /// Not root: tasks are plain processes; each target port gets an
    /// allocated free loopback port.
    Loopback,
}

/// What the cluster last told this node about its place in it, from the
/// dispatcher session: the role it should have (`node promote` / `demote`),
/// whether it is in the Raft group now, and the managers it may dial.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeDirective {
    pub role: shoal_api::pb::NodeRole,
    pub raft_member: bool,
    pub managers: Vec<String>,
}

/// What the agent needs to know about its node.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's id, sent with the session and every status report.
    pub node_id: String,
    /// Shown as the node's hostname and given to tasks (SHOAL_NODE_HOSTNAME).
    pub hostname: String,
    /// Underlay address other nodes reach this node on (SessionRequest.addr).
    pub addr: String,
    /// Task logs and metadata live under `data_root/tasks/<task id>/`.
    pub data_root: PathBuf,
    /// The shoald binary; built-ins run as `<exe> workload echo|timecheck`.
    pub workload_exe: PathBuf,
    pub network: NetworkMode,
    /// How long a stopping task gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

/// The default grace period between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
