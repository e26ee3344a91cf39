//! [`NetError`]: what failed, on which link/namespace/address, and the kernel's answer.

use std::io;

/// A host networking operation failed.
///
/// `op` names the operation and its subjects, e.g. `create veth sh1a2b3c4d5e on bridge
/// shoal-ingress`; the display adds the kernel's reason (`File exists (os error 17)`).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The kernel refused an rtnetlink request (or the netlink socket failed).
    #[error("{op}: {source}")]
    Netlink {
        /// The operation with the link/address it concerned.
        op: String,
        /// The kernel's errno, or a transport error.
        #[source]
        source: io::Error,
    },
    /// A syscall around namespaces failed (unshare, setns, open, thread spawn, runtime).
    #[error("{op}: {source}")]
    Os {
        /// The operation with the namespace it concerned.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A link the operation depends on does not exist.
    #[error("{op}: link {link} not found")]
    LinkNotFound {
        /// The operation that needed the link.
        op: String,
        /// The missing link's name.
        link: String,
    },
    /// A link with the bridge's name exists but is something else.
    #[error("ensure bridge {link}: link exists but is of kind {kind}, not bridge")]
    NotABridge {
        /// The link's name.
        link: String,
        /// Its actual kind (`veth`, `dummy`, `none` for a physical device, ...).
        kind: String,
    },
    /// An interface name the kernel would reject.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidLinkName {
        /// The rejected name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The worker thread running inside a namespace panicked.
    #[error("{op}: worker thread panicked: {message}")]
    ThreadPanicked {
        /// The operation the thread was running.
        op: String,
        /// The panic message, if it was a string.
        message: String,
    },
}

// === impl NetError ===

impl NetError {
    /// The errno behind this error, if the kernel gave one (e.g. `libc::EEXIST`).
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Netlink { source, .. } | NetError::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn netlink(op: impl Into<String>, err: rtnetlink::Error) -> Self {
        NetError::Netlink {
            op: op.into(),
            source: netlink_io_error(err),
        }
    }

    pub(crate) fn os(op: impl Into<String>, source: impl Into<io::Error>) -> Self {
        NetError::Os {
            op: op.into(),
            source: source.into(),
        }
    }
}

/// The kernel's errno as an `io::Error` (so it displays as "File exists"), other rtnetlink
/// failures wrapped as they are.
pub(crate) fn netlink_io_error(err: rtnetlink::Error) -> io::Error {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other),
    }
}

/// The errno of an rtnetlink error, if it is a kernel NACK.
pub(crate) fn netlink_errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io().raw_os_error(),
        _ => None,
    }
}
