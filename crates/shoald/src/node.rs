//! The node's persistent identity and membership, kept in
//! `<data-root>/node.json`, and its key material in `<data-root>/certificates/`,
//! so a restart comes back as the same node in the same cluster.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shoal_manager::NodeCertificates;

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
        let tmp = data_root.join("node.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write node identity {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("write node identity {}", path.display()))
    }
}

fn cert_dir(data_root: &Path) -> PathBuf {
    data_root.join("certificates")
}

/// Writes the node's key material (the key readable by root only). A
/// renewal replaces it while the node runs, so each file is written whole
/// to a temporary file, synced, and renamed over the old one (a crash leaves
/// the old file or the new one, never a truncated one); the three renames
/// come after all three writes.
pub fn save_certificates(data_root: &Path, certs: &NodeCertificates) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = cert_dir(data_root);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let files = [
        ("ca.pem", &certs.ca_pem, 0o644),
        ("node.pem", &certs.cert_pem, 0o644),
        ("node.key", &certs.key_pem, 0o600),
    ];
    for (name, body, mode) in files {
        let tmp = dir.join(format!("{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("write {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, body.as_bytes())
            .with_context(|| format!("write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("sync {}", tmp.display()))?;
    }
    for (name, _, _) in files {
        let (tmp, path) = (dir.join(format!("{name}.tmp")), dir.join(name));
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("replace {} with {}", path.display(), tmp.display()))?;
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {}", dir.display()))
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
