//! The node's persistent identity and membership, kept in
//! `<data-root>/node.json`, and its key material in `<data-root>/certificates/`,
//! so a restart comes back as the same node in the same cluster.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shoal_manager::NodeCertificates;

use crate::data_root::{create_private_dir, write_private_file};

/// What this node is in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    /// Not in a swarm (before `swarm init` / `swarm join`, or after `leave`).
    #[default]
    None,
    Manager,
    Worker,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: String,
    pub hostname: String,
    #[serde(default)]
    pub membership: Membership,
    /// Managers to dial (host:port), for workers.
    #[serde(default)]
    pub manager_addrs: Vec<String>,
    /// This node's bridge address on the ingress network (CIDR).
    #[serde(default)]
    pub ingress_address: String,
    #[serde(default)]
    pub ingress_vni: u32,
    #[serde(default)]
    pub data_path_port: u32,
    /// Raft id (managers only; the first manager is 1).
    #[serde(default)]
    pub raft_id: u64,
    /// The IP given by `swarm init|join --advertise-addr`; empty = shoald's
    /// `--advertise-addr`.
    #[serde(default)]
    pub advertise_addr: String,
}

impl NodeIdentity {
    pub fn load_or_create(data_root: &Path, hostname: Option<&str>) -> anyhow::Result<Self> {
        let path = data_root.join("node.json");
        let mut identity = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<NodeIdentity>(&bytes)
                .with_context(|| format!("read node identity {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeIdentity {
                node_id: shoal_api::id::new_id(),
                hostname: String::new(),
                membership: Membership::None,
                manager_addrs: Vec::new(),
                ingress_address: String::new(),
                ingress_vni: 0,
                data_path_port: 0,
                raft_id: 0,
                advertise_addr: String::new(),
            },
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        identity.hostname = match hostname {
            Some(h) => h.to_string(),
            None if !identity.hostname.is_empty() => identity.hostname,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
        };
        identity.save(data_root)?;
        Ok(identity)
    }

    pub fn save(&self, data_root: &Path) -> anyhow::Result<()> {
        let path = data_root.join("node.json");
        let body = serde_json::to_vec_pretty(self).context("encode node identity")?;
        write_private_file(&path, &body).context("write node identity")
    }
}

fn cert_dir(data_root: &Path) -> PathBuf {
    data_root.join("certificates")
}

/// Writes the node's key material, each file whole or not at all, readable
/// by root only (the data root is private, see [`crate::data_root`]). A
/// renewal replaces it while the node runs: a crash leaves the old file or
/// the new one, never a truncated one.
pub fn save_certificates(data_root: &Path, certs: &NodeCertificates) -> anyhow::Result<()> {
    let dir = cert_dir(data_root);
    create_private_dir(&dir)?;
    for (name, body) in [
        ("ca.pem", &certs.ca_pem),
        ("node.pem", &certs.cert_pem),
        ("node.key", &certs.key_pem),
    ] {
        write_private_file(&dir.join(name), body.as_bytes())?;
    }
    Ok(())
}

pub fn load_certificates(data_root: &Path) -> anyhow::Result<NodeCertificates> {
    let dir = cert_dir(data_root);
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
    };
    Ok(NodeCertificates {
        ca_pem: read("ca.pem")?,
        cert_pem: read("node.pem")?,
        key_pem: read("node.key")?,
    })
}

/// Forgets membership and key material (`swarm leave`).
pub fn remove_membership(data_root: &Path) -> anyhow::Result<()> {
    for dir in [cert_dir(data_root), data_root.join("store")] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
