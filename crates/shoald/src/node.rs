//! The node's identity, created on first start and kept in
//! `<data-root>/node.json` so restarts keep the same node ID.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: String,
    pub hostname: String,
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
        std::fs::write(&path, serde_json::to_vec_pretty(&identity)?)
            .with_context(|| format!("write node identity {}", path.display()))?;
        Ok(identity)
    }
}
