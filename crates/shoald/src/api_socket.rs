//! The API socket (`--host unix://...`): who may use it, and an accept loop
//! that outlives descriptor exhaustion.
//!
//! Whoever can connect to the socket controls the node (and so root on it),
//! so as dockerd's it is owned by root and a group (`--group`, default
//! `docker` when that group exists) with mode 0660, or root only (0600),
//! whatever the umask. Its directory, when shoald creates it, is 0755.
//!
//! The connections the socket accepts come from [`incoming`] (see
//! [`accept`]), which outlives descriptor exhaustion.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use nix::unistd::{Gid, Group};
use tokio::net::{UnixListener, UnixStream};

pub mod accept;

pub use accept::incoming;

/// The group `--group` defaults to, as dockerd's.
const DEFAULT_GROUP: &str = "docker";

/// Mode of a directory shoald creates for the socket.
const SOCKET_DIR_MODE: u32 = 0o755;

/// Who may connect to the socket besides root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAccess {
    /// Root and this group: mode 0660.
    Group { name: String, gid: Gid },
    /// Root only: mode 0600.
    RootOnly,
}

impl SocketAccess {
    /// The socket's mode.
    pub fn mode(&self) -> u32 {
        match self {
            SocketAccess::Group { .. } => 0o660,
            SocketAccess::RootOnly => 0o600,
        }
    }

    /// From `--group`: a name or a numeric GID; empty for root only. Not
    /// given: `docker` when that group exists, else root only.
    pub fn from_flag(group: Option<&str>) -> anyhow::Result<SocketAccess> {
        let name = match group {
            Some("") => return Ok(SocketAccess::RootOnly),
            Some(name) => name,
            None => {
                return Ok(lookup(DEFAULT_GROUP)?.unwrap_or(SocketAccess::RootOnly));
            }
        };
        if let Ok(gid) = name.parse::<u32>() {
            return Ok(SocketAccess::Group {
                name: name.to_string(),
                gid: Gid::from_raw(gid),
            });
        }
        lookup(name)?.with_context(|| {
            format!(
                "--group {name:?}: no such group; create it with groupadd, \
                 or pass --group \"\" for a socket only root can use"
            )
        })
    }
}

fn lookup(name: &str) -> anyhow::Result<Option<SocketAccess>> {
    let group = Group::from_name(name).with_context(|| format!("look up group {name:?}"))?;
    Ok(group.map(|g| SocketAccess::Group {
        name: name.to_string(),
        gid: g.gid,
    }))
}

/// Binds the API socket with `access`'s group and mode, refusing to steal
/// it from a live daemon.
pub async fn bind(path: &Path, access: &SocketAccess) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            std::fs::set_permissions(dir, Permissions::from_mode(SOCKET_DIR_MODE))
                .with_context(|| format!("chmod {SOCKET_DIR_MODE:o} {}", dir.display()))?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "another shoald is already serving {}; stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    // Bound under shoald's umask (077), so it is never wider than wanted.
    let listener =
        UnixListener::bind(path).with_context(|| format!("bind API socket {}", path.display()))?;
    if let SocketAccess::Group { name, gid } = access {
        nix::unistd::chown(path, None, Some(*gid))
            .with_context(|| format!("chown API socket {} to group {name}", path.display()))?;
    }
    let mode = access.mode();
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} API socket {}", path.display()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests;
