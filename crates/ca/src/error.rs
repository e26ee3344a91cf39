//! The CA's one error type.

/// Errors of the cluster CA, token handling and TLS setup.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Key or certificate generation failed in rcgen.
    #[error("{what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// A PEM/DER input could not be parsed or is not what it should be.
    #[error("invalid {what}: {reason}")]
    Parse { what: &'static str, reason: String },
    /// The node id cannot go into a certificate.
    #[error("invalid node id {node_id:?}: must be non-empty and use only a-z, 0-9, '-' and '.'")]
    InvalidNodeId { node_id: String },
    /// The join token is malformed.
    #[error("invalid join token: must look like SWMTKN-1-<64 hex digits>-<secret>")]
    InvalidToken,
    /// A certificate was not issued by this CA, or is expired.
    #[error("certificate not trusted by the cluster CA: {reason}")]
    Untrusted { reason: String },
    /// The manager could not be reached (connect failed or timed out).
    #[error("cannot reach manager at {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// TCP connected but the TLS handshake failed.
    #[error("TLS handshake with manager at {addr} failed: {source}")]
    Handshake {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The manager's CA is not the one the join token pins.
    #[error(
        "the manager at {addr} presented a CA that does not match the join token (token for another cluster?)"
    )]
    CaMismatch { addr: String },
    /// Building a TLS configuration failed.
    #[error("build TLS config: {reason}")]
    Tls { reason: String },
}
