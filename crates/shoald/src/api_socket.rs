//! The API socket (`--host unix://...`): who may use it, and an accept loop
//! that outlives descriptor exhaustion.
//!
//! Whoever can connect to the socket controls the node (and so root on it),
//! so as dockerd's it is owned by root and a group (`--group`, default
//! `docker` when that group exists) with mode 0660, or root only (0600),
//! whatever the umask. Its directory, when shoald creates it, is 0755.
//!
//! When the process runs out of descriptors (a flood of mesh connections),
//! accept(2) fails with EMFILE. tonic's server stops on such an error; the
//! [`incoming`] stream instead hands a reserved descriptor back to the
//! kernel so the CLI can still connect, and otherwise retries with backoff,
//! logging once, instead of stopping or spinning.

use std::fs::{File, Permissions};
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use futures::Stream;
use nix::unistd::{Gid, Group};
use tokio::net::{UnixListener, UnixStream};

/// The group `--group` defaults to, as dockerd's.
const DEFAULT_GROUP: &str = "docker";

/// Mode of a directory shoald creates for the socket.
const SOCKET_DIR_MODE: u32 = 0o755;

/// Descriptors held back for the API socket's accepts at exhaustion.
const RESERVED_DESCRIPTORS: usize = 8;

/// First and longest wait between failed accepts.
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(10),
    longest: Duration::from_secs(1),
};

/// Waits between failed accepts: `first`, doubling up to `longest`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub longest: Duration,
}

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

/// What [`incoming`] accepts from: a Unix listener, or a fake in tests.
pub trait Acceptor: Send + 'static {
    type Conn: Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Acceptor for UnixListener {
    type Conn = UnixStream;

    async fn accept(&mut self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// The connections `acceptor` takes, for tonic's `serve_with_incoming`:
/// never an error (see the module docs), so the server never stops on one.
pub fn incoming<A: Acceptor>(acceptor: A) -> impl Stream<Item = io::Result<A::Conn>> + Send {
    let accept_loop = AcceptLoop::new(acceptor, RESERVED_DESCRIPTORS, BACKOFF);
    futures::stream::unfold(accept_loop, |mut l| async {
        let conn = l.next().await;
        Some((Ok(conn), l))
    })
}

/// The accept loop's state.
pub struct AcceptLoop<A> {
    acceptor: A,
    /// Open `/dev/null`s, closed one by one to make room for an accept at
    /// EMFILE, refilled after each accept.
    reserve: Vec<File>,
    /// How many descriptors `reserve` should hold.
    reserve_target: usize,
    /// Accepts are failing (logged once, until one succeeds).
    failing: bool,
    backoff: Backoff,
}

// === impl AcceptLoop ===

impl<A: Acceptor> AcceptLoop<A> {
    pub fn new(acceptor: A, reserve_target: usize, backoff: Backoff) -> Self {
        let mut this = AcceptLoop {
            acceptor,
            reserve: Vec::with_capacity(reserve_target),
            reserve_target,
            failing: false,
            backoff,
        };
        this.refill();
        this
    }

    /// The next connection; retries failed accepts.
    pub async fn next(&mut self) -> A::Conn {
        let mut backoff = self.backoff.first;
        loop {
            match self.acceptor.accept().await {
                Ok(conn) => {
                    if std::mem::take(&mut self.failing) {
                        tracing::info!("API socket accepts connections again");
                    }
                    self.refill();
                    return conn;
                }
                Err(err) if out_of_descriptors(&err) && self.reserve.pop().is_some() => {
                    // One descriptor back to the kernel: accept again now.
                    tracing::debug!(
                        left = self.reserve.len(),
                        "API socket: out of descriptors, accepting with a reserved one"
                    );
                }
                Err(err) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        tracing::warn!(
                            %err,
                            "API socket: accept failed; retrying with backoff until it succeeds"
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.backoff.longest);
                }
            }
        }
    }

    fn refill(&mut self) {
        while self.reserve.len() < self.reserve_target {
            match File::open("/dev/null") {
                Ok(f) => self.reserve.push(f),
                Err(_) => break,
            }
        }
    }

    /// Descriptors held in reserve now.
    #[cfg(test)]
    pub fn reserved(&self) -> usize {
        self.reserve.len()
    }
}

fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests;
