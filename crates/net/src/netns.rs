//! Network namespaces held by file descriptor, and running code inside them.
//!
//! A thread's network namespace decides where its new sockets (including netlink sockets)
//! live; sockets keep their namespace after the thread leaves or exits. So "doing something
//! inside a namespace" means: spawn a fresh thread, `setns` it, do the work, let it exit. The
//! calling thread never changes namespace.

use std::any::Any;
use std::fs::File;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::thread;

use nix::sched::{unshare, CloneFlags};

use crate::error::NetError;

/// Create a new, empty network namespace (only `lo`, down) and return a descriptor to it.
///
/// The namespace lives as long as the descriptor or any process inside it. Runs
/// `unshare(CLONE_NEWNET)` on a short-lived thread, so the caller's namespace is untouched.
pub fn new_netns() -> Result<OwnedFd, NetError> {
    join_worker(
        "create network namespace",
        spawn_worker("create network namespace", unshare_netns)?,
    )
}

/// Async form of [`new_netns`]: waits for the worker thread without blocking the runtime.
pub(crate) async fn new_netns_async() -> Result<OwnedFd, NetError> {
    run_on_thread("create network namespace", unshare_netns).await
}

fn unshare_netns() -> Result<OwnedFd, NetError> {
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetError::os("create network namespace: unshare(CLONE_NEWNET)", e))?;
    let file = File::open("/proc/thread-self/ns/net")
        .map_err(|e| NetError::os("create network namespace: open /proc/thread-self/ns/net", e))?;
    Ok(OwnedFd::from(file))
}

/// Move the calling thread into the network namespace `fd` (a single `setns` syscall).
///
/// Async-signal-safe, so it can run in `Command::pre_exec` between fork and exec: the child
/// then starts inside the task's namespace. `fd` must be a network namespace descriptor, such
/// as [`TaskNetns::raw_fd`](crate::TaskNetns::raw_fd); descriptors opened here carry
/// `O_CLOEXEC`, so they stay open until the child's `exec`.
pub fn enter_netns(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns takes plain integers and touches no memory of ours; an fd that is not an
    // open network namespace makes it fail with EBADF/EINVAL, which we return.
    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Run `f` on a fresh thread inside the network namespace `fd` and return its result.
///
/// Blocks the caller until `f` returns (do not call it from an async task that must not
/// block). Sockets created by `f` stay in the namespace after it returns, so a test can bind a
/// listener here and accept on it from anywhere. `f` may build its own current-thread tokio
/// runtime; a netlink connection made there configures the namespace's links.
pub fn run_in_netns<T: Send + 'static>(
    fd: RawFd,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let op = format!("run in netns fd {fd}");
    let handle = spawn_worker(&op, move || {
        enter_netns(fd).map_err(|e| NetError::os(format!("setns into netns fd {fd}"), e))?;
        Ok(f())
    })?;
    join_worker(&op, handle)
}

/// Run `f` on a fresh thread inside the namespace `fd` and await its result without blocking
/// the runtime. The thread owns `fd`, so dropping this future early is harmless.
pub(crate) async fn run_in_netns_async<T: Send + 'static>(
    op: &str,
    fd: OwnedFd,
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    let setns_op = format!("{op}: setns into task netns");
    run_on_thread(op, move || {
        enter_netns(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(|e| NetError::os(setns_op, e))?;
        drop(fd);
        f()
    })
    .await
}

/// Run `f` on a fresh thread and await its result through a oneshot channel.
async fn run_on_thread<T: Send + 'static>(
    op: &str,
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = spawn_worker(op, move || {
        // The receiver may be gone if the caller was cancelled; the result is dropped then.
        let _ = tx.send(f());
        Ok(())
    })?;
    match rx.await {
        Ok(result) => result,
        // The sender was dropped without sending: the closure panicked.
        Err(_) => {
            let joined = tokio::task::spawn_blocking(move || handle.join()).await;
            let message = match joined {
                Ok(Err(payload)) => panic_message(payload.as_ref()),
                _ => "unknown".to_string(),
            };
            Err(NetError::ThreadPanicked {
                op: op.to_string(),
                message,
            })
        }
    }
}

fn spawn_worker<T: Send + 'static>(
    op: &str,
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<thread::JoinHandle<Result<T, NetError>>, NetError> {
    thread::Builder::new()
        .name("shoal-netns".to_string())
        .spawn(f)
        .map_err(|e| NetError::os(format!("{op}: spawn thread"), e))
}

fn join_worker<T>(
    op: &str,
    handle: thread::JoinHandle<Result<T, NetError>>,
) -> Result<T, NetError> {
    handle.join().unwrap_or_else(|payload| {
        Err(NetError::ThreadPanicked {
            op: op.to_string(),
            message: panic_message(payload.as_ref()),
        })
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
